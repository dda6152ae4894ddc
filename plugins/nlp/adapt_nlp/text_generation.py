"""text_generation: causal language modelling on text, prompt / completion pairs or chats."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from adapt import DataError, LoadedModel, ModelError, Params
from pydantic import AliasChoices, Field

from adapt_nlp.common import TextTask, generate, tokens_or_model_max


class TextGenerationParams(Params):
    text_column: str = Field("text", validation_alias=AliasChoices("text_column", "dataset_text_field"),
                             description="Column of plain text (spec name: dataset_text_field).")
    prompt_column: str = Field("prompt", description="Column of prompts (prompt / completion data: the loss is on the completion only).")
    completion_column: str = Field("completion", description="Column of completions.")
    messages_column: str = Field("messages", description="Column of chats: lists of {role, content}, rendered by the tokenizer's chat template.")
    data_format: Literal["auto", "text", "prompt_completion", "messages"] = Field(
        "auto", description="auto: messages if that column exists, else prompt / completion, else text.")
    packing: bool = Field(True, description="Concatenate examples and cut them into max_seq_length blocks (no padding).")
    max_seq_length: tokens_or_model_max(8) = Field(512, description="Longest training sequence in tokens (-1: the model's maximum; else "
                                                 "at least 8).")
    max_new_tokens: int = Field(64, ge=1, description="Tokens generated per prompt by adapt predict.")
    flash_attention2: bool = Field(False, description="Use FlashAttention-2 (a CUDA GPU and the flash-attn package).")


class TextGeneration(TextTask):
    name = "text_generation"
    training_defaults = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8}
    description = "Causal language modelling: continue text, answer prompts, or chat (with the model's chat template)."
    Params = TextGenerationParams
    metrics = ("perplexity",)
    lower_is_better = frozenset({"loss", "perplexity"})
    auto_model = "AutoModelForCausalLM"

    def _format(self, run: Any, table: Any) -> str:
        p = run.task_params
        return p.data_format if p.data_format != "auto" else self._auto_format(run, table.column_names)

    def _auto_format(self, run: Any, columns: list[str]) -> str:
        """messages if that column exists, else prompt / completion (a prompt column alone, for
        predict, counts when there is no text column), else text."""
        p = run.task_params
        if p.messages_column in columns:
            return "messages"
        if p.prompt_column in columns and (p.completion_column in columns or p.text_column not in columns):
            return "prompt_completion"
        return "text"

    def columns(self, run: Any, split: str) -> list[str | None]:
        return []  # which columns depends on the format found: checked in _rows

    def predict_columns(self, run: Any, columns: list[str]) -> list[str]:
        p = run.task_params
        fmt = p.data_format if p.data_format != "auto" else self._auto_format(run, columns)
        return [{"messages": p.messages_column, "prompt_completion": p.prompt_column, "text": p.text_column}[fmt]]

    def _rows(self, run: Any, loaded: LoadedModel, table: Any, path: str, split: str) -> tuple[list[str], list[str]]:
        """(prompt part, completion part) of each row; the loss covers the completion part."""
        p, fmt = run.task_params, self._format(run, table)
        needed = {"text": [p.text_column], "prompt_completion": [p.prompt_column, p.completion_column],
                  "messages": [p.messages_column]}[fmt]
        if split == "predict" and fmt == "prompt_completion":
            needed = [p.prompt_column]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise DataError(f"{split} data {path}: missing column(s) {', '.join(missing)} for {fmt} data "
                            f"(found: {', '.join(table.column_names)}); name yours in task_params")
        if fmt == "messages":
            tokenizer = loaded.processor
            if not getattr(tokenizer, "chat_template", None):
                raise ModelError(f"{split} data {path} holds chats but the model's tokenizer has no chat template; "
                                 "use prompt / completion columns instead")
            prompts, completions = [], []
            for row, chat in enumerate(table[p.messages_column], 1):
                if not isinstance(chat, list) or not chat or not all(isinstance(m, dict) and "content" in m for m in chat):
                    raise DataError(f"{split} data {path}, row {row}, column {p.messages_column}: expected a list of "
                                    "{role, content} messages")
                history = chat[:-1] if chat[-1].get("role") == "assistant" else chat
                prompts.append(tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True))
                completions.append(chat[-1]["content"] if history is not chat else "")
            return prompts, completions
        if fmt == "prompt_completion":
            self.check_text(table, p.prompt_column, path, split)
            completions = table[p.completion_column] if p.completion_column in table.column_names else [""] * len(table)
            return table[p.prompt_column], completions
        self.check_text(table, p.text_column, path, split)
        return ([""] * len(table), table[p.text_column]) if split != "predict" else (table[p.text_column], [""] * len(table))

    def _encode(self, run: Any, loaded: LoadedModel, prompts: list[str], completions: list[str]) -> Any:
        """Tokenize in batches of data.batch_size; the loss covers only the completion part;
        packing then concatenates rows and cuts max_seq_length blocks."""
        import datasets

        p, tokenizer = run.task_params, loaded.processor
        limit = self.max_tokens(loaded, p.max_seq_length)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        rows = datasets.Dataset.from_dict({"_prompt": list(prompts), "_completion": list(completions)})

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [], "labels": []}
            for prompt, completion in zip(batch["_prompt"], batch["_completion"], strict=True):
                head = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
                tail = tokenizer((" " if prompt else "") + completion, add_special_tokens=False)["input_ids"] + [eos]
                ids, labels = head + tail, [-100] * len(head) + tail
                out["input_ids"].append(ids if p.packing else ids[:limit])
                out["labels"].append(labels if p.packing else labels[:limit])
            return out

        def pack(batch: dict[str, list]) -> dict[str, list]:
            size = limit
            flat = {key: [t for row in batch[key] for t in row] for key in ("input_ids", "labels")}
            blocks = max(1, len(flat["input_ids"]) // size)
            return {key: [values[i * size:(i + 1) * size] for i in range(blocks)] for key, values in flat.items()}

        batch_size = run.config.data.batch_size
        encoded = rows.map(encode, batched=True, batch_size=batch_size, remove_columns=["_prompt", "_completion"])
        if p.packing:
            encoded = encoded.map(pack, batched=True, batch_size=batch_size)
        return encoded.map(lambda row: {"attention_mask": [1] * len(row["input_ids"])})

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        return {split: self._encode(run, loaded, *self._rows(run, loaded, table, path, split))
                for split, (table, path) in self.read_splits(run, splits).items()}

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        extra = {}
        if run.task_params.flash_attention2:
            import torch

            if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
                raise ModelError("task_params.flash_attention2 needs a CUDA GPU and the flash-attn package "
                                 "(model.attn_implementation sdpa is the kernel without it)")
            extra["attn_implementation"] = "flash_attention_2"
        tokenizer = self.load_tokenizer(run, source)
        model = self.load_pretrained(run, source, **extra)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return []  # the LM head is (usually) tied to the input embeddings: no separate head

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(loaded.processor, padding=True, label_pad_token_id=-100)

    def preprocess_logits(self, run: Any, loaded: LoadedModel) -> Any:
        import torch

        def token_losses(logits: Any, labels: Any) -> Any:
            logits = logits[0] if isinstance(logits, tuple) else logits
            shifted, targets = logits[:, :-1].float(), labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=-100,
                                                       reduction="none")
            return torch.where(targets == -100, torch.full_like(losses, -100.0), losses)

        return token_losses

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        import math

        import numpy as np

        def compute(prediction: Any) -> dict[str, float]:
            losses = np.asarray(prediction.predictions)
            kept = losses[losses >= 0]
            mean = float(kept.mean()) if kept.size else float("nan")
            return {"perplexity": math.exp(min(mean, 50.0))}

        return compute

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        table = self.read(run, "predict", path)
        prompts, _ = self._rows(run, loaded, table, path, "predict")
        texts = generate(loaded, prompts, run.training.per_device_eval_batch_size, run.task_params.max_new_tokens)
        return [{"prompt": prompt, "generated_text": text} for prompt, text in zip(prompts, texts, strict=True)]
