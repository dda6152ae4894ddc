"""summarization and translation: text to text with an encoder-decoder (T5, BART, Marian...),
evaluated on generated text (Seq2SeqTrainer with predict_with_generate)."""

from __future__ import annotations

from typing import Any

from adapt import DataError, LoadedModel, Params, examples_figure
from pydantic import Field

from adapt_nlp.common import TextTask, generate

ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Seq2SeqParams(Params):
    max_input_length: int = Field(512, ge=-1, description="Truncate inputs to this many tokens (-1: the model's maximum).")
    max_target_length: int = Field(128, ge=1, description="Truncate targets to this many tokens.")
    generation_max_length: int = Field(128, ge=1, description="Longest generated output (evaluation and predict).")
    generation_num_beams: int = Field(1, ge=1, description="Beam search width for generation (1: greedy).")
    prefix: str = Field("", description="Text put before every input (T5-style task prefixes, e.g. 'summarize: ').")


class SummarizationParams(Seq2SeqParams):
    document_column: str = Field("document", description="Column holding the text to summarise.")
    summary_column: str = Field("summary", description="Column holding the reference summary.")


class TranslationParams(Seq2SeqParams):
    max_input_length: int = Field(128, ge=-1, description="Truncate inputs to this many tokens (-1: the model's maximum).")
    max_target_length: int = Field(128, ge=1, description="Truncate targets to this many tokens.")
    source_lang: str = Field("en", description="Source language code (the key in a translation dict column).")
    target_lang: str = Field("ro", description="Target language code.")
    source_column: str = Field("source", description="Column of source texts (when there is no translation column).")
    target_column: str = Field("target", description="Column of target texts.")
    translation_column: str = Field("translation", description="Column of {source_lang: ..., target_lang: ...} dicts (used when present).")


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=True)
    totals = dict.fromkeys(ROUGE, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for key, score in scorer.score(reference, prediction).items():
            totals[key] += score.fmeasure
    return {key: value / max(len(predictions), 1) for key, value in totals.items()}


def bleu_score(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu) of generated texts against one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


class Seq2SeqTask(TextTask):
    training_defaults = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16}
    auto_model = "AutoModelForSeq2SeqLM"

    def pairs(self, run: Any, table: Any, path: str, split: str) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    def column_pairs(self, table: Any, path: str, split: str, source: str, target: str) -> tuple[list[str], list[str]]:
        """Checked (input, target) texts from two columns; predict data needs no target."""
        self.check_text(table, source, path, split)
        if split == "predict":
            return table[source], [""] * len(table)
        self.check_text(table, target, path, split)
        return table[source], table[target]

    def generation_settings(self, run: Any) -> dict[str, Any]:
        p = run.task_params
        return {"generation_max_length": p.generation_max_length, "generation_num_beams": p.generation_num_beams}

    def _encode(self, run: Any, loaded: LoadedModel, table: Any, path: str, split: str) -> Any:
        """Checked pairs, tokenized in batches of data.batch_size."""
        import datasets

        p, tokenizer = run.task_params, loaded.processor
        inputs, targets = self.pairs(run, table, path, split)
        pairs = datasets.Dataset.from_dict({"_input": list(inputs), "_target": list(targets)})

        def encode(batch: dict[str, list]) -> dict[str, list]:
            features = tokenizer([p.prefix + text for text in batch["_input"]], truncation=True,
                                 max_length=self.max_tokens(loaded, p.max_input_length))
            features["labels"] = tokenizer(text_target=batch["_target"], truncation=True,
                                           max_length=p.max_target_length)["input_ids"]
            features.pop("token_type_ids", None)
            return features

        return pairs.map(encode, batched=True, batch_size=run.config.data.batch_size, remove_columns=["_input", "_target"])

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        return {split: self._encode(run, loaded, table, path, split)
                for split, (table, path) in self.read_splits(run, splits).items()}

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        tokenizer = self.load_tokenizer(run, source)
        model = self.load_pretrained(run, source)
        if not getattr(model.config, "is_encoder_decoder", False):
            raise DataError(f"model {source} is not an encoder-decoder model ({type(model).__name__}); "
                            f"{self.name} needs one such as T5 or BART")
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return []  # the LM head is tied to the shared embeddings

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(loaded.processor, model=loaded.model, label_pad_token_id=-100)

    def decoded(self, loaded: LoadedModel, prediction: Any) -> tuple[list[str], list[str]]:
        import numpy as np

        tokenizer = loaded.processor
        preds = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
        labels = np.where(prediction.label_ids < 0, tokenizer.pad_token_id, prediction.label_ids)
        decode = lambda ids: [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]  # noqa: E731
        return decode(preds), decode(labels)

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        """The task's metrics of generated texts against the references."""
        raise NotImplementedError

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        def compute(prediction: Any) -> dict[str, float]:
            predictions, references = self.decoded(loaded, prediction)
            return {**self.scores(predictions, references),
                    "gen_len": sum(len(p.split()) for p in predictions) / max(len(predictions), 1)}

        return compute

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """The split's first generated texts beside their references."""
        generated, references = self.decoded(loaded, predictions)
        return {"examples": examples_figure({"generated": generated, "reference": references},
                                            f"{self.name}: the first rows of the split")}

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        p = run.task_params
        inputs, _ = self.pairs(run, self.read(run, "predict", path), path, "predict")
        texts = generate(loaded, [p.prefix + t for t in inputs], run.training.per_device_eval_batch_size,
                         p.generation_max_length, p.generation_num_beams,
                         max_length=self.max_tokens(loaded, p.max_input_length))
        return [{"input": i, "generated_text": t} for i, t in zip(inputs, texts, strict=True)]


class Summarization(Seq2SeqTask):
    name = "summarization"
    description = "Summarise documents with an encoder-decoder model; scored by ROUGE (and BLEU) on generated summaries."
    Params = SummarizationParams
    metrics = ROUGE + ("bleu", "gen_len")
    lower_is_better = frozenset({"loss", "gen_len"})

    def columns(self, run: Any, split: str) -> list[str | None]:
        p = run.task_params
        return [p.document_column] + ([p.summary_column] if split != "predict" else [])

    def pairs(self, run: Any, table: Any, path: str, split: str) -> tuple[list[str], list[str]]:
        p = run.task_params
        return self.column_pairs(table, path, split, p.document_column, p.summary_column)

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {**rouge_scores(predictions, references), "bleu": bleu_score(predictions, references)}


class Translation(Seq2SeqTask):
    name = "translation"
    description = "Translate text with an encoder-decoder model; scored by sacrebleu (and ROUGE) on generated text."
    Params = TranslationParams
    metrics = ("bleu",) + ROUGE + ("gen_len",)
    lower_is_better = frozenset({"loss", "gen_len"})

    def columns(self, run: Any, split: str) -> list[str | None]:
        return []  # a translation dict column or source / target columns: checked in pairs

    def predict_columns(self, run: Any, columns: list[str]) -> list[str]:
        p = run.task_params
        return [p.translation_column if p.translation_column in columns else p.source_column]

    def pairs(self, run: Any, table: Any, path: str, split: str) -> tuple[list[str], list[str]]:
        p = run.task_params
        if p.translation_column in table.column_names:
            sources, targets = [], []
            for row, pair in enumerate(table[p.translation_column], 1):
                if not isinstance(pair, dict) or p.source_lang not in pair or (split != "predict" and p.target_lang not in pair):
                    raise DataError(f"{split} data {path}, row {row}, column {p.translation_column}: expected a dict with "
                                    f"keys {p.source_lang!r} and {p.target_lang!r} (source_lang / target_lang)")
                sources.append(pair[p.source_lang])
                targets.append(pair.get(p.target_lang, ""))
            return sources, targets
        needed = [p.source_column] + ([p.target_column] if split != "predict" else [])
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise DataError(f"{split} data {path}: missing column(s) {', '.join(missing)} (found: "
                            f"{', '.join(table.column_names)}); give source / target columns or a translation column")
        return self.column_pairs(table, path, split, p.source_column, p.target_column)

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"bleu": bleu_score(predictions, references), **rouge_scores(predictions, references)}
