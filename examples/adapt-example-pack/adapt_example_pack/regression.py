"""text_regression: predict a number for each text (a score, a rating, a price)."""

from __future__ import annotations

from typing import Any

from adapt import DataError, LoadedModel, ModelError, Params, Task, read_table, require_columns
from pydantic import Field


class TextRegressionParams(Params):
    text_column: str = Field("text", description="Column holding the text.")
    target_column: str = Field("target", description="Column holding the number to predict.")
    max_seq_length: int = Field(128, ge=1, description="Truncate texts to this many tokens.")


class TextRegression(Task):
    name = "text_regression"
    description = "Predict a number for each text; scored by mse, mae and r2."
    Params = TextRegressionParams
    metrics = ("mse", "mae", "r2")
    lower_is_better = frozenset({"loss", "mse", "mae"})

    def _read(self, run: Any, split: str, path: str, with_target: bool = True) -> Any:
        p = run.task_params
        table = read_table(path, split)
        require_columns(table, [p.text_column] + ([p.target_column] if with_target else []), path, split)
        for row, value in enumerate(table[p.text_column], 1):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{split} data {path}, row {row}, column {p.text_column}: empty or missing text")
        if with_target:
            for row, value in enumerate(table[p.target_column], 1):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DataError(f"{split} data {path}, row {row}, column {p.target_column}: {value!r} is not a number")
        return table

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        m = run.config.model
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=m.revision, trust_remote_code=m.trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=1, problem_type="regression", revision=m.revision,
                trust_remote_code=m.trust_remote_code, ignore_mismatched_sizes=True, **run.load_options)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {source} could not be loaded for text regression: {exc}") from None
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return [n for n in ("pre_classifier", "classifier", "score") if getattr(model, n, None) is not None]

    def _encode(self, run: Any, loaded: LoadedModel, table: Any, with_target: bool) -> Any:
        p = run.task_params

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out = loaded.processor(batch[p.text_column], truncation=True, max_length=p.max_seq_length)
            if with_target:
                out["labels"] = [float(v) for v in batch[p.target_column]]
            return out

        return table.map(encode, batched=True, batch_size=run.config.data.batch_size, remove_columns=table.column_names)

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        # run.read_splits carves data.validation_split off train and applies the row limits
        tables = run.read_splits(splits, lambda split, path: self._read(run, split, path))
        return {split: self._encode(run, loaded, table, True) for split, (table, _) in tables.items()}

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(loaded.processor)

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        def compute(prediction: Any) -> dict[str, float]:
            scores = prediction.predictions.reshape(-1)
            truth = prediction.label_ids.reshape(-1)
            return {"mse": float(mean_squared_error(truth, scores)), "mae": float(mean_absolute_error(truth, scores)),
                    "r2": float(r2_score(truth, scores))}

        return compute

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        import torch

        encoded = self._encode(run, loaded, self._read(run, "predict", path, with_target=False), False)
        collate, model = self.data_collator(run, loaded), loaded.model
        rows = []
        with torch.no_grad():
            for first in range(0, len(encoded), 16):
                batch = collate([encoded[i] for i in range(first, min(first + 16, len(encoded)))])
                rows.extend({"score": float(v)} for v in model(**batch).logits.reshape(-1))
        return rows

    def save_model(self, loaded: LoadedModel, folder: str) -> None:
        loaded.model.save_pretrained(folder)
        loaded.processor.save_pretrained(folder)
