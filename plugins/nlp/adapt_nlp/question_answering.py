"""question_answering (extractive): find the answer span in a context; SQuAD v2 style
unanswerable questions optional. Long contexts are cut into overlapping windows (doc_stride)."""

from __future__ import annotations

import collections
import re
import string
from typing import Any

from adapt import DataError, LoadedModel, Params, examples_figure
from pydantic import Field

from adapt_nlp.common import TextTask, tokens_or_model_max


class QuestionAnsweringParams(Params):
    question_column: str = Field("question", description="Column holding the question.")
    context_column: str = Field("context", description="Column holding the context the answer is taken from.")
    answers_column: str = Field("answers", description="Column of {text: [...], answer_start: [...]} (character offsets); empty lists: unanswerable.")
    max_length: tokens_or_model_max(16) = Field(384, description="Tokens per window of question + context (-1: the model's maximum; "
                                             "else at least 16).")
    doc_stride: int = Field(128, ge=0, description="Tokens shared by consecutive windows of a long context.")
    max_answer_length: int = Field(30, ge=1, description="Longest answer in tokens.")
    n_best_size: int = Field(20, ge=1, description="Start and end candidates considered per window.")
    version_2_with_negative: bool | None = Field(
        None, description="Allow 'no answer' (SQuAD v2); None: yes when the training data has unanswerable questions.")
    null_score_diff_threshold: float = Field(0.0, description="Answer 'no answer' when its score beats the best span by more than this.")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    exact = f1 = 0.0
    for prediction, answers in zip(predictions, golds, strict=True):
        answers = answers or [""]
        exact += max(float(normalize(prediction) == normalize(a)) for a in answers)
        best = 0.0
        for answer in answers:
            p, g = normalize(prediction).split(), normalize(answer).split()
            if not p or not g:
                best = max(best, float(p == g))
                continue
            common = sum((collections.Counter(p) & collections.Counter(g)).values())
            if common:
                precision, recall = common / len(p), common / len(g)
                best = max(best, 2 * precision * recall / (precision + recall))
        f1 += best
    n = max(len(predictions), 1)
    return {"exact": 100.0 * exact / n, "f1": 100.0 * f1 / n}


class QuestionAnswering(TextTask):
    name = "question_answering"
    training_defaults = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "num_train_epochs": 2}
    description = "Extractive question answering: the answer is a span of the context (SQuAD, optionally v2)."
    Params = QuestionAnsweringParams
    metrics = ("exact", "f1")
    auto_model = "AutoModelForQuestionAnswering"
    label_names = ("start_positions", "end_positions")

    def columns(self, run: Any, split: str) -> list[str | None]:
        p = run.task_params
        return [p.question_column, p.context_column] + ([p.answers_column] if split != "predict" else [])

    def inspect_data(self, run: Any) -> dict[str, Any]:
        p = run.task_params
        if p.version_2_with_negative is not None:
            return {"version_2_with_negative": p.version_2_with_negative}
        table = self.read(run, "train", run.config.data.train)
        return {"version_2_with_negative": any(not (a or {}).get("text") for a in table[p.answers_column])}

    def _answers(self, run: Any, table: Any, path: str, split: str) -> list[list[tuple[str, int]]]:
        p = run.task_params
        out = []
        for row, (answers, context) in enumerate(zip(table[p.answers_column], table[p.context_column], strict=True), 1):
            where = f"{split} data {path}, row {row}, column {p.answers_column}"
            if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) or \
                    not isinstance(answers.get("answer_start"), list) or len(answers["text"]) != len(answers["answer_start"]):
                raise DataError(f"{where}: expected {{text: [...], answer_start: [...]}} of equal lengths, got {answers!r}")
            pairs = list(zip(answers["text"], answers["answer_start"], strict=True))
            for text, start in pairs:
                if context[start:start + len(text)] != text:
                    raise DataError(f"{where}: answer_start {start} does not point at {text!r} in the context "
                                    f"(found {context[start:start + len(text)]!r})")
            out.append(pairs)
        return out

    def _windows(self, run: Any, loaded: LoadedModel, questions: list[str], contexts: list[str]) -> Any:
        p, tokenizer = run.task_params, loaded.processor
        pad_right = tokenizer.padding_side == "right"
        return tokenizer([q.lstrip() for q in questions] if pad_right else contexts,
                         contexts if pad_right else [q.lstrip() for q in questions],
                         truncation="only_second" if pad_right else "only_first",
                         max_length=self.max_tokens(loaded, p.max_length),
                         stride=p.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)

    def _features(self, run: Any, loaded: LoadedModel, table: Any, answers: list[list[tuple[str, int]]] | None) -> tuple[Any, dict]:
        """Model features (with start / end positions when answers are known) and what
        post-processing needs: each window's example and the context offsets of its tokens."""
        import datasets

        p = run.task_params
        questions, contexts = list(table[p.question_column]), list(table[p.context_column])
        size = run.config.data.batch_size
        columns: dict[str, list] = collections.defaultdict(list)
        example_of, offsets_all, sequence_ids_all = [], [], []
        for first in range(0, len(questions), size):  # tokenized in batches of data.batch_size
            enc = self._windows(run, loaded, questions[first:first + size], contexts[first:first + size])
            example_of.extend(first + e for e in enc.pop("overflow_to_sample_mapping"))
            offsets_all.extend(enc.pop("offset_mapping"))
            sequence_ids_all.extend(enc.sequence_ids(i) for i in range(len(enc["input_ids"])))
            for key, values in enc.items():
                columns[key].extend(values)
        starts, ends, offsets = [], [], []
        for i, example in enumerate(example_of):
            sequence_ids = sequence_ids_all[i]
            context_id = 1 if loaded.processor.padding_side == "right" else 0
            offsets.append([o if sequence_ids[k] == context_id else None for k, o in enumerate(offsets_all[i])])
            if answers is None:
                continue
            ids = columns["input_ids"][i]
            cls = ids.index(loaded.processor.cls_token_id) if loaded.processor.cls_token_id in ids else 0
            if not answers[example]:
                starts.append(cls)
                ends.append(cls)
                continue
            text, char_start = answers[example][0]
            char_end = char_start + len(text)
            tokens = [k for k, o in enumerate(offsets[-1]) if o is not None]
            if not tokens or offsets[-1][tokens[0]][0] > char_start or offsets[-1][tokens[-1]][1] < char_end:
                starts.append(cls)
                ends.append(cls)
                continue
            start = next(k for k in tokens if offsets[-1][k][1] > char_start)
            end = next(k for k in reversed(tokens) if offsets[-1][k][0] < char_end)
            starts.append(start)
            ends.append(end)
        if answers is not None:
            columns["start_positions"], columns["end_positions"] = starts, ends
        context = {"example_of": list(example_of), "offsets": offsets, "contexts": contexts,
                   "golds": [[a for a, _ in pairs] for pairs in answers] if answers is not None else None}
        return datasets.Dataset.from_dict(dict(columns)), context

    @staticmethod
    def _key(starts: Any, ends: Any) -> tuple:
        import numpy as np

        return (len(starts), hash(np.asarray(starts).tobytes()), hash(np.asarray(ends).tobytes()))

    def load_data(self, run: Any, loaded: LoadedModel, splits: dict[str, str]) -> dict[str, Any]:
        out = {}
        registry = loaded.state.setdefault("qa_contexts", {})
        for split, (table, path) in self.read_splits(run, splits).items():
            self.check_text(table, run.task_params.question_column, path, split)
            self.check_text(table, run.task_params.context_column, path, split)
            features, context = self._features(run, loaded, table, self._answers(run, table, path, split))
            # compute_metrics only sees the labels: they tell which split's windows it scores
            registry[self._key(features["start_positions"], features["end_positions"])] = context
            out[split] = features
        return out

    def _best_answers(self, run: Any, loaded: LoadedModel, context: dict, start_logits: Any, end_logits: Any) -> list[dict[str, Any]]:
        import numpy as np

        p = run.task_params
        v2 = loaded.meta.get("version_2_with_negative", False)
        by_example = collections.defaultdict(list)
        for window, example in enumerate(context["example_of"]):
            by_example[example].append(window)
        answers = []
        for example, text in enumerate(context["contexts"]):
            best, null = None, None
            for window in by_example[example]:
                s_logits, e_logits, offsets = start_logits[window], end_logits[window], context["offsets"][window]
                score_null = float(s_logits[0] + e_logits[0])
                null = score_null if null is None else min(null, score_null)
                for s in np.argsort(s_logits)[-1:-p.n_best_size - 1:-1]:
                    for e in np.argsort(e_logits)[-1:-p.n_best_size - 1:-1]:
                        if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                            continue
                        if e < s or e - s + 1 > p.max_answer_length:
                            continue
                        score = float(s_logits[s] + e_logits[e])
                        if best is None or score > best["score"]:
                            best = {"answer": text[offsets[s][0]:offsets[e][1]], "start": int(offsets[s][0]),
                                    "end": int(offsets[e][1]), "score": score}
            if best is None or (v2 and null is not None and null - best["score"] > p.null_score_diff_threshold):
                best = {"answer": "", "start": None, "end": None, "score": null}
            answers.append(best)
        return answers

    def compute_metrics(self, run: Any, loaded: LoadedModel) -> Any:
        def compute(prediction: Any) -> dict[str, float]:
            start_logits, end_logits = prediction.predictions[:2]
            starts, ends = prediction.label_ids
            context = loaded.state["qa_contexts"][self._key(starts, ends)]
            answers = self._best_answers(run, loaded, context, start_logits, end_logits)
            return squad_scores([a["answer"] for a in answers], context["golds"])

        return compute

    def figures(self, run: Any, loaded: LoadedModel, predictions: Any) -> dict[str, Any]:
        """The split's first predicted answers beside the true ones (and the start of the context)."""
        start_logits, end_logits = predictions.predictions[:2]
        context = loaded.state["qa_contexts"][self._key(*predictions.label_ids)]
        answers = self._best_answers(run, loaded, context, start_logits, end_logits)
        return {"examples": examples_figure(
            {"context": [c[:200] for c in context["contexts"]], "predicted": [a["answer"] or "(no answer)" for a in answers],
             "true": [" | ".join(g) or "(no answer)" for g in context["golds"]]},
            "question answering: the first rows of the split")}

    def load_model(self, run: Any, source: str, meta: dict[str, Any]) -> LoadedModel:
        tokenizer = self.load_tokenizer(run, source)
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"model {source}: question answering needs a fast tokenizer (character offsets)")
        model = self.load_pretrained(run, source, ignore_mismatched_sizes=run.training.ignore_mismatched_sizes)
        return LoadedModel(model, tokenizer, dict(meta))

    def head_modules(self, model: Any) -> list[str]:
        return [n for n in ("qa_outputs",) if getattr(model, n, None) is not None]

    def data_collator(self, run: Any, loaded: LoadedModel) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(loaded.processor)

    def predict(self, run: Any, loaded: LoadedModel, path: str) -> list[dict[str, Any]]:
        p = run.task_params
        table = self.read(run, "predict", path)
        self.check_text(table, p.question_column, path, "predict")
        self.check_text(table, p.context_column, path, "predict")
        features, context = self._features(run, loaded, table, None)
        starts, ends = [], []
        for out in self.outputs(run, loaded, features):
            starts.extend(out.start_logits.float().cpu().numpy())
            ends.extend(out.end_logits.float().cpu().numpy())
        return self._best_answers(run, loaded, context, starts, ends)
