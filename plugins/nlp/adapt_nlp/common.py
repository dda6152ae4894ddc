"""What the language tasks share: reading their splits, loading a tokenizer and model with clear
errors, batched generation, and saving."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from adapt import DataError, LoadedModel, ModelError, Task, first_line, read_table, require_columns
from pydantic import AfterValidator

log = logging.getLogger("adapt")

# Tokenizers that must be told a word-split input starts a new word (byte-level BPE).
PREFIX_SPACE_FAMILIES = {"gpt2", "roberta", "longformer", "bart", "mvp", "deberta"}


def tokens_or_model_max(minimum: int) -> Any:
    """A length in tokens: -1 (the model's maximum, as Azure ML's pipeline writes it) or at least ``minimum``."""

    def check(value: int) -> int:
        if value != -1 and value < minimum:
            raise ValueError(f"must be -1 (the model's maximum) or at least {minimum} tokens")
        return value

    return Annotated[int, AfterValidator(check)]


class TextTask(Task):
    """A Task over text tables, trained by the HF engine. Subclasses say which columns a split
    needs (:meth:`columns`) and how rows become features (:meth:`encode`)."""

    auto_model: str = "AutoModel"

    def columns(self, run: Any, split: str) -> list[str | None]:
        raise NotImplementedError

    def predict_columns(self, run: Any, columns: list[str]) -> list[str]:
        return [c for c in self.columns(run, "predict") if c and c in columns]

    def read(self, run: Any, split: str, path: str) -> Any:
        table = read_table(path, split)
        require_columns(table, self.columns(run, split), path, split)
        return table

    def read_splits(self, run: Any, splits: dict[str, str]) -> dict[str, tuple[Any, str]]:
        """Each split's table and where it came from (validation_split and row limits applied)."""
        return run.read_splits(splits, lambda split, path: self.read(run, split, path))

    def check_text(self, table: Any, column: str, path: str, split: str) -> None:
        for row, value in enumerate(table[column], 1):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{split} data {path}, row {row}, column {column}: empty or missing text ({value!r})")

    def load_tokenizer(self, run: Any, source: str, **kwargs: Any) -> Any:
        from transformers import AutoConfig, AutoTokenizer

        m = run.config.model
        common = {"revision": m.revision, "trust_remote_code": m.trust_remote_code}
        try:
            model_type = getattr(AutoConfig.from_pretrained(source, **common), "model_type", None)
            if kwargs.pop("word_split", False) and model_type in PREFIX_SPACE_FAMILIES:
                kwargs["add_prefix_space"] = True
            tokenizer = AutoTokenizer.from_pretrained(source, **common, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"model {source} could not be loaded for {self.name.replace('_', ' ')}: "
                             f"{first_line(exc)}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
        return tokenizer

    def load_pretrained(self, run: Any, source: str, **kwargs: Any) -> Any:
        """``<auto_model>.from_pretrained`` with the run's model options and the method's load
        options; failures become a ModelError naming the model and the task."""
        import transformers

        m = run.config.model
        cls = getattr(transformers, self.auto_model)
        try:
            model, info = cls.from_pretrained(source, revision=m.revision, trust_remote_code=m.trust_remote_code,
                                              output_loading_info=True, **{**run.load_options, **kwargs})
        except ImportError as exc:  # an attention implementation whose package is missing
            raise ModelError(f"model.attn_implementation {m.attn_implementation}: {first_line(exc)} (flash attention "
                             "needs a CUDA GPU and the flash-attn package; sdpa and eager run everywhere)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"model {source} could not be loaded for {self.name.replace('_', ' ')}: "
                             f"{first_line(exc)}") from None
        # transformers' loading report goes to train.log; the one line of it that is the user's business
        for kind, what in (("missing_keys", "newly initialised (not in the checkpoint)"),
                           ("mismatched_keys", "re-initialised (another shape in the checkpoint)")):
            names = sorted(k if isinstance(k, str) else k[0] for k in info.get(kind) or [])
            if names:
                shown = ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
                log.info("%s %s: %s", type(model).__name__, what, shown)
        return model

    def max_tokens(self, loaded: LoadedModel, configured: int) -> int:
        """``configured`` when positive, else the model's limit: the tokenizer's, or the model's
        position embeddings when the tokenizer has none (transformers then says ~1e30)."""
        if configured > 0:
            return configured
        limit = getattr(loaded.processor, "model_max_length", None)
        if not limit or limit > 100_000:
            limit = getattr(loaded.model.config, "max_position_embeddings", 512)
        return int(limit)

    def outputs(self, run: Any, loaded: LoadedModel, features: Any) -> Any:
        """Model outputs over prepared features, in collated batches of per_device_eval_batch_size."""
        import torch

        collate, model = self.data_collator(run, loaded), loaded.model
        device = next(model.parameters()).device
        size = run.training.per_device_eval_batch_size
        with torch.no_grad():
            for first in range(0, len(features), size):
                batch = collate([features[i] for i in range(first, min(first + size, len(features)))])
                yield model(**{k: v.to(device) for k, v in batch.items()})

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        loaded.model.save_pretrained(folder)
        loaded.processor.save_pretrained(folder)


def generate(loaded: LoadedModel, prompts: list[str], batch_size: int, max_new_tokens: int,
             num_beams: int = 1, max_length: int | None = None) -> list[str]:
    """Generated text for each prompt (decoder-only models: the continuation only)."""
    import torch

    model, tokenizer = loaded.model, loaded.processor
    decoder_only = not getattr(model.config, "is_encoder_decoder", False)
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    if decoder_only:
        tokenizer.padding_side = "left"  # generation continues from the right end
    out: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                                  truncation=max_length is not None, max_length=max_length,
                                  add_special_tokens=not decoder_only).to(device)
                batch.pop("token_type_ids", None)
                ids = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id)
                if decoder_only:
                    ids = ids[:, batch["input_ids"].shape[1]:]
                out.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return out
