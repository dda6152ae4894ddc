"""token_classification: a tag per word (named entities, parts of speech, chunks)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from adapt import DataError, LoadedModel, Params, read_table, require_columns
from pydantic import Field

from adapt_nlp.common import TextTask

log = logging.getLogger("adapt")


class TokenClassificationParams(Params):
    tokens_column: str = Field("tokens", description="Column holding each row's list of words.")
    tags_column: str = Field("tags", description="Column holding each row's list of tags (names, or ids into `labels`); "
                                                 "where the data has no `tags` column, the subtask's of Hugging Face's "
                                                 "CoNLL layout: ner_tags, pos_tags or chunk_tags.")
    subtask: Literal["ner", "pos", "chunk"] = Field(
        "ner", description="ner / chunk: IOB tags scored by entity (seqeval); pos: plain tags scored by token.")
    labels: list[str] | None = Field(None, description="Tag names in order (ids in the data index them); None: the tags seen in training.")
    label_all_tokens: bool = Field(False, description="Label every sub-word of a word (false: only the first; the rest are ignored).")
    max_seq_length: int = Field(-1, ge=-1, description="Truncate to this many tokens (-1: the model's maximum).")


class TokenClassification(TextTask):
    name = "token_classification"
    training_defaults = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 64}
    description = "Tag each word of a text: named entities (ner), parts of speech (pos) or chunks."
    Params = TokenClassificationParams
    metrics = ("precision", "recall", "f1", "accuracy")
    auto_model = "AutoModelForTokenClassification"

    def columns(self, run: Any, split: str) -> list[str | None]:
        p = run.task_params
        return [p.tokens_column] + ([p.tags_column] if split != "predict" else [])

    def read(self, run: Any, split: str, path: str) -> Any:
        """The split's table; without a `tags` column (the default), the subtask's CoNLL-layout
        column (ner_tags / pos_tags / chunk_tags) is read as the tags."""
        p = run.task_params
        table = read_table(path, split)
        conll = f"{p.subtask}_tags"
        default = type(p).model_fields["tags_column"].default
        if (split != "predict" and p.tags_column == default and default not in table.column_names
                and conll in table.column_names):
            log.info("%s data %s: no %s column; reading the %s subtask's tags from %s", split, path, default,
                     p.subtask, conll)
            table = table.rename_column(conll, default)
        require_columns(table, self.columns(run, split), path, split)
        return table

    def _names(self, run: Any, values: list[Any]) -> list[str]:
        labels = run.task_params.labels
        if labels is not None and all(isinstance(v, int) for v in values):
            return [labels[v] if 0 <= v < len(labels) else f"<id {v}>" for v in values]
        return [str(v) for v in values]

    def inspect_data(self, run: Any) -> dict[str, Any]:
        p = run.task_params
        if p.labels:
            return {"labels": list(p.labels)}
        table = self.read(run, "train", run.config.data.train)
        if p.subtask != "pos" and any(isinstance(tag, int) for tags in table[p.tags_column][:100] for tag in tags):
            raise DataError(f"train data {run.config.data.train}, column {p.tags_column}: the tags are ids; {p.subtask} "
                            "is scored by entity from IOB tag names, so name them in task_params.labels, in id order "
                            "(CoNLL-2003's ner_tags: [O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC])")
        seen = {tag for tags in table[p.tags_column] for tag in self._names(run, tags)}
        labels = sorted(seen, key=lambda t: (t != "O", t.split("-", 1)[-1], t))
        return {"labels": labels}

    def _check(self, run: Any, table: Any, path: str, split: str, labels: list[str]) -> None:
        p = run.task_params
        allowed = set(labels)
        tags_list = table[p.tags_column] if split != "predict" else None
        for row, tokens in enumerate(table[p.tokens_column], 1):
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise DataError(f"{split} data {path}, row {row}, column {p.tokens_column}: expected a non-empty "
                                f"list of words, got {tokens!r}")
            if tags_list is None:
                continue
            tags = tags_list[row - 1]
            if not isinstance(tags, list) or len(tags) != len(tokens):
                raise DataError(f"{split} data {path}, row {row}, column {p.tags_column}: {len(tags) if isinstance(tags, list) else tags!r} "
                                f"tags for {len(tokens)} words")
            bad = [t for t in self._names(run, tags) if t not in allowed]
            if bad:
                raise DataError(f"{split} data {path}, row {row}, column {p.tags_column}: tag {bad[0]!r} is not in "
                                f"the tag set ({', '.join(labels)})")

    def _encode(self, run: Any, loaded: LoadedModel, table: Any, with_labels: bool) -> Any:
        p = run.task_params
        tokenizer = loaded.processor
        index = {name: i for i, name in enumerate(loaded.meta["labels"])}
        limit = self.max_tokens(loaded, p.max_seq_length)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out = tokenizer(batch[p.tokens_column], is_split_into_words=True, truncation=True, max_length=limit)
            if with_labels:
                out["labels"] = []
                for i, tags in enumerate(batch[p.tags_column]):
                    names, previous, labels = self._names(run, tags), None, []
                    for word in out.word_ids(i):
                        if word is None:
                            labels.append(-100)
                        elif word != previous or p.label_all_tokens:
                            labels.append(index[names[word]])
                        else:
                            labels.append(-100)
                        previous = word
                    out["labels"].append(labels)
            return out

        return table.map(encode, batched=True, batch_size=run.config.data.batch_size, remove_columns=table.column_names)

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        out = {}
        for split, (table, path) in self.read_splits(run, splits).items():
            self._check(run, table, path, split, loaded.meta["labels"])
            out[split] = self._encode(run, loaded, table, with_labels=True)
        return out

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        labels = meta["labels"]
        tokenizer = self.load_tokenizer(run, source, word_split=True)
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"model {source}: token classification needs a fast tokenizer (word alignment)")
        model = self.load_pretrained(run, source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                     label2id={n: i for i, n in enumerate(labels)},
                                     ignore_mismatched_sizes=run.training.ignore_mismatched_sizes)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return [n for n in ("classifier", "score") if getattr(model, n, None) is not None]

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(loaded.processor)

    def _tag_lists(self, logits: Any, labels: Any, names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
        import numpy as np

        preds = np.argmax(logits, axis=-1)
        truth, guess = [], []
        for p_row, l_row in zip(preds, labels, strict=True):
            keep = l_row != -100
            truth.append([names[i] for i in l_row[keep]])
            guess.append([names[i] for i in p_row[keep]])
        return truth, guess

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        names, pos = loaded.meta["labels"], run.task_params.subtask == "pos"

        def compute(prediction: Any) -> dict[str, float]:
            from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            truth, guess = self._tag_lists(logits, prediction.label_ids, names)
            if pos:  # plain tags: token-level scores
                from sklearn.metrics import f1_score as f1
                from sklearn.metrics import precision_score as prec
                from sklearn.metrics import recall_score as rec

                flat_t, flat_g = sum(truth, []), sum(guess, [])
                kw = {"average": "macro", "zero_division": 0}
                return {"precision": float(prec(flat_t, flat_g, **kw)), "recall": float(rec(flat_t, flat_g, **kw)),
                        "f1": float(f1(flat_t, flat_g, **kw)), "accuracy": float(accuracy_score(truth, guess))}
            return {"precision": float(precision_score(truth, guess, zero_division=0)),
                    "recall": float(recall_score(truth, guess, zero_division=0)),
                    "f1": float(f1_score(truth, guess, zero_division=0)), "accuracy": float(accuracy_score(truth, guess))}

        return compute

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        import torch
        from seqeval.metrics.sequence_labeling import get_entities

        p = run.task_params
        table = self.read(run, "predict", path)
        self._check(run, table, path, "predict", loaded.meta["labels"])
        tokenizer, model, names = loaded.processor, loaded.model, loaded.meta["labels"]
        device = next(model.parameters()).device
        limit = self.max_tokens(loaded, p.max_seq_length)
        rows = []
        with torch.no_grad():
            for tokens in table[p.tokens_column]:
                enc = tokenizer([tokens], is_split_into_words=True, truncation=True, max_length=limit, return_tensors="pt")
                word_ids = enc.word_ids(0)
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits[0]
                scores = torch.softmax(logits.float(), dim=-1)
                tags, confidence = ["O"] * len(tokens), [1.0] * len(tokens)
                seen = set()
                for position, word in enumerate(word_ids):
                    if word is not None and word not in seen:
                        seen.add(word)
                        best = int(scores[position].argmax())
                        tags[word], confidence[word] = names[best], float(scores[position, best])
                entities = [] if p.subtask == "pos" else [
                    {"type": kind, "start": start, "end": end + 1, "text": " ".join(tokens[start:end + 1])}
                    for kind, start, end in get_entities(tags)]
                rows.append({"tags": tags, "scores": confidence, "entities": entities})
        return rows
