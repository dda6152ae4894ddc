"""text_classification: one label (multi-class) or several (multi-label) per text or text pair."""

from __future__ import annotations

from typing import Any, Literal

from adapt import DataError, LoadedModel, Params, confusion_matrix_figure, majority_class_accuracy
from pydantic import Field

from adapt_nlp.common import TextTask

HEAD_NAMES = ("pre_classifier", "classifier", "score")


class TextClassificationParams(Params):
    text_column: str = Field("text", description="Column holding the text.")
    text_pair_column: str | None = Field(None, description="Column holding the second text of a pair (None: single texts).")
    label_column: str = Field("label", description="Column holding the label (multi-class) or the list of labels (multi-label).")
    labels: list[str] | None = Field(None, description="Label names in order (None: every label seen in the training data, sorted).")
    problem_type: Literal["auto", "single_label", "multi_label"] = Field(
        "auto", description="auto: multi_label when the label column holds lists.")
    max_seq_length: int = Field(-1, ge=-1, description="Truncate texts to this many tokens (-1: the model's maximum).")
    pad_to_max_length: bool = Field(False, description="Pad every text to max_seq_length (false: pad each batch to its longest).")


def _label_text(value: Any) -> str:
    return str(value)


def _sorted_labels(values: set[str]) -> list[str]:
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


class TextClassification(TextTask):
    name = "text_classification"
    training_defaults = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 64}
    description = "Classify texts or text pairs into one label (multi-class) or several (multi-label)."
    Params = TextClassificationParams
    metrics = ("accuracy", "f1_macro", "mcc", "precision_macro", "recall_macro")
    auto_model = "AutoModelForSequenceClassification"

    # data ---------------------------------------------------------------------------------
    def columns(self, run: Any, split: str) -> list[str | None]:
        p = run.task_params
        return [p.text_column, p.text_pair_column] + ([p.label_column] if split != "predict" else [])

    def inspect_data(self, run: Any) -> dict[str, Any]:
        p, data = run.task_params, run.config.data
        seen: set[str] = set()
        multi = False
        for value in self.read(run, "train", data.train)[p.label_column]:
            if isinstance(value, list):
                multi = True
                seen.update(_label_text(v) for v in value)
            elif value is not None:
                seen.add(_label_text(value))
        problem = p.problem_type if p.problem_type != "auto" else ("multi_label" if multi else "single_label")
        labels = list(p.labels) if p.labels else _sorted_labels(seen)
        if len(labels) < 2 and problem == "single_label":
            raise DataError(f"train data {data.train}: column {p.label_column} holds {len(labels)} distinct "
                            "label(s); classification needs at least 2")
        return {"labels": labels, "problem_type": problem}

    def _check_rows(self, table: Any, path: str, split: str, run: Any, meta: dict[str, Any]) -> None:
        p = run.task_params
        for column in (p.text_column, p.text_pair_column):
            if column:
                self.check_text(table, column, path, split)
        if split == "predict":
            return
        allowed = set(meta["labels"])
        multi = meta["problem_type"] == "multi_label"
        for row, value in enumerate(table[p.label_column], 1):
            values = value if isinstance(value, list) else [value]
            if not multi and isinstance(value, list):
                raise DataError(f"{split} data {path}, row {row}, column {p.label_column}: a list of labels, "
                                "but the task is single_label (set task_params.problem_type: multi_label)")
            bad = [v for v in values if v is None or _label_text(v) not in allowed]
            if bad:
                raise DataError(f"{split} data {path}, row {row}, column {p.label_column}: label {bad[0]!r} "
                                f"is not in the label set ({', '.join(meta['labels'])})")

    def _encode(self, run: Any, loaded: LoadedModel, table: Any, with_labels: bool) -> Any:
        p = run.task_params
        tokenizer, meta = loaded.processor, loaded.meta
        index = {name: i for i, name in enumerate(meta["labels"])}
        multi = meta["problem_type"] == "multi_label"
        max_length = self.max_tokens(loaded, p.max_seq_length)
        padding = "max_length" if p.pad_to_max_length else False

        def encode(batch: dict[str, list]) -> dict[str, list]:
            args = [batch[p.text_column]] + ([batch[p.text_pair_column]] if p.text_pair_column else [])
            out = tokenizer(*args, truncation=True, max_length=max_length, padding=padding)
            if with_labels:
                if multi:
                    out["labels"] = [[1.0 if name in {_label_text(v) for v in values} else 0.0
                                      for name in meta["labels"]] for values in batch[p.label_column]]
                else:
                    out["labels"] = [index[_label_text(v)] for v in batch[p.label_column]]
            return out

        return table.map(encode, batched=True, batch_size=run.config.data.batch_size,
                         remove_columns=table.column_names)

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        out = {}
        for split, (table, path) in self.read_splits(run, splits).items():
            self._check_rows(table, path, split, run, loaded.meta)
            out[split] = self._encode(run, loaded, table, with_labels=True)
        return out

    # model --------------------------------------------------------------------------------
    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        labels = meta["labels"]
        tokenizer = self.load_tokenizer(run, source)
        model = self.load_pretrained(
            run, source, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)}, problem_type=f"{meta['problem_type']}_classification",
            ignore_mismatched_sizes=run.training.ignore_mismatched_sizes)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        import torch

        return [name for name in HEAD_NAMES if isinstance(getattr(model, name, None), torch.nn.Module)]

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(loaded.processor)

    def baselines(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, float]:
        """The accuracy of always predicting the split's most frequent class (single-label)."""
        return {} if loaded.meta["problem_type"] == "multi_label" else majority_class_accuracy(predictions.label_ids)

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """A confusion matrix of the split (single-label classification)."""
        import numpy as np

        if loaded.meta["problem_type"] == "multi_label":
            return {}
        logits = predictions.predictions[0] if isinstance(predictions.predictions, tuple) else predictions.predictions
        labels = [str(x) for x in loaded.meta["labels"]]
        return {"confusion_matrix": confusion_matrix_figure(predictions.label_ids, np.argmax(logits, axis=-1), labels)}

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        import numpy as np

        multi = loaded.meta["problem_type"] == "multi_label"
        n = len(loaded.meta["labels"])

        def compute(prediction: Any) -> dict[str, float]:
            # imported at the first evaluation: a run without one skips scikit-learn's import (~1 s)
            from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, precision_score, recall_score
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            labels = prediction.label_ids
            if multi:
                preds, truth = (logits > 0).astype(int), labels.astype(int)
                mcc = matthews_corrcoef(truth.ravel(), preds.ravel())
                kw: dict[str, Any] = {"average": "macro", "zero_division": 0}
            else:
                preds, truth = np.argmax(logits, axis=-1), labels
                mcc = matthews_corrcoef(truth, preds)
                kw = {"average": "macro", "zero_division": 0, "labels": list(range(n))}
            return {"accuracy": float(accuracy_score(truth, preds)), "f1_macro": float(f1_score(truth, preds, **kw)),
                    "mcc": float(mcc), "precision_macro": float(precision_score(truth, preds, **kw)),
                    "recall_macro": float(recall_score(truth, preds, **kw))}

        return compute

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        import torch

        table = self.read(run, "predict", path)
        self._check_rows(table, path, "predict", run, loaded.meta)
        encoded = self._encode(run, loaded, table, with_labels=False)
        labels, multi = loaded.meta["labels"], loaded.meta["problem_type"] == "multi_label"
        rows: list[dict[str, Any]] = []
        for output in self.outputs(run, loaded, encoded):
            logits = output.logits.float()
            probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
            for p in probs.cpu().tolist():
                scores = dict(zip(labels, p, strict=True))
                if multi:
                    rows.append({"labels": [name for name, s in scores.items() if s > 0.5], "scores": scores})
                else:
                    best = max(range(len(p)), key=p.__getitem__)
                    rows.append({"label": labels[best], "score": p[best], "scores": scores})
        return rows
