"""Every language task end to end through the `adapt` command on tiny random models: the loss
falls, metrics are computed and in range, predictions have their documented shape, and the saved
model reloads and reproduces the run's test metrics. NER and QA must clearly beat an untrained
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapt.testing import (
    question_answering_rows,
    read_metrics,
    seq2seq_rows,
    text_generation_rows,
    tiny_causal_lm,
    tiny_seq2seq,
    token_classification_rows,
    write_jsonl,
)

pytestmark = pytest.mark.slow
COMMON = ["--set", "training.per_device_train_batch_size=8", "--set", "training.per_device_eval_batch_size=8",
          "--set", "training.learning_rate=5e-3", "--set", "training.logging_steps=2"]


def splits(folder: Path, make, n: int = 96, **kwargs) -> dict[str, str]:  # noqa: ANN001
    return {split: write_jsonl(folder / f"{split}.jsonl", make(size, seed=seed, **kwargs))
            for split, size, seed in (("train", n, 1), ("validation", 24, 2), ("test", 24, 3))}


def train(adapt_cli, task: str, model: str, data: dict[str, str], output: str, *extra: str, method: str = "full"):  # noqa: ANN001, ANN201
    result = adapt_cli("train", "--task", task, "--method", method, "--model", model, "--train", data["train"],
                       "--validation", data["validation"], "--test", data["test"], "--output", output, *COMMON, *extra)
    assert result.returncode == 0, result
    return result


def check_run(adapt_cli, tmp_path: Path, output: str, data: dict[str, str]) -> dict:  # noqa: ANN001
    """Loss fell; evaluate on the saved model reproduces the run's test metrics."""
    run = tmp_path / output
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    trained = json.loads((run / "test_metrics.json").read_text())
    evaluated = adapt_cli("evaluate", output, "--data", data["test"])
    assert evaluated.returncode == 0, evaluated
    for key, value in trained.items():
        if key.endswith(("_runtime", "_per_second", "epoch", "preparation_time")):
            continue
        assert evaluated.json()[key] == pytest.approx(value, abs=1e-4), key
    return trained


def test_token_classification_learns_ner(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    data = splits(tmp_path / "data", token_classification_rows, n=120)
    train(adapt_cli, "token_classification", tiny_bert_dir, data, "untrained", "--set", "training.max_steps=1",
          "--set", "training.learning_rate=1e-12")
    train(adapt_cli, "token_classification", tiny_bert_dir, data, "run", "--set", "training.num_train_epochs=4",
          "--set", "training.metric_for_best_model=f1")
    before = json.loads((tmp_path / "untrained" / "test_metrics.json").read_text())
    after = check_run(adapt_cli, tmp_path, "run", data)
    assert all(0 <= after[f"test_{k}"] <= 1 for k in ("precision", "recall", "f1", "accuracy"))
    assert after["test_f1"] > before["test_f1"] + 0.3 and after["test_f1"] > 0.6, (before["test_f1"], after["test_f1"])
    rows = [json.loads(x) for x in adapt_cli("predict", "run", "--data", data["test"]).stdout.splitlines()]
    tokens = [json.loads(x)["tokens"] for x in Path(data["test"]).read_text().splitlines()]
    assert len(rows) == len(tokens) and all(len(r["tags"]) == len(t) for r, t in zip(rows, tokens, strict=True))
    entities = [e for r in rows for e in r["entities"]]
    assert entities and all(set(e) == {"type", "start", "end", "text"} and e["type"] in ("PER", "LOC") for e in entities)


def test_question_answering_learns_with_lora_and_windows(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    data = splits(tmp_path / "data", question_answering_rows, n=120, unanswerable=0.15)
    windows = ["--set", "task_params.max_length=24", "--set", "task_params.doc_stride=8"]  # several windows per context
    train(adapt_cli, "question_answering", tiny_bert_dir, data, "untrained", *windows, "--set", "training.max_steps=1",
          "--set", "training.learning_rate=1e-12", method="lora")
    train(adapt_cli, "question_answering", tiny_bert_dir, data, "run", *windows, "--set", "training.num_train_epochs=5",
          "--set", "training.metric_for_best_model=f1", method="lora")
    before = json.loads((tmp_path / "untrained" / "test_metrics.json").read_text())
    after = check_run(adapt_cli, tmp_path, "run", data)
    assert 0 <= after["test_exact"] <= 100 and 0 <= after["test_f1"] <= 100
    assert (tmp_path / "run" / "pictures" / "test_examples.png").is_file()  # predicted beside true answers
    assert after["test_f1"] > before["test_f1"] + 30, (before["test_f1"], after["test_f1"])
    info = json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())
    assert info["meta"] == {"version_2_with_negative": True}
    rows = [json.loads(x) for x in adapt_cli("predict", "run", "--data", data["test"]).stdout.splitlines()]
    contexts = [json.loads(x)["context"] for x in Path(data["test"]).read_text().splitlines()]
    assert len(rows) == len(contexts)
    for row, context in zip(rows, contexts, strict=True):
        assert set(row) == {"answer", "start", "end", "score"}
        assert row["answer"] == ("" if row["start"] is None else context[row["start"]:row["end"]])


@pytest.mark.parametrize("task,family", [("summarization", "t5"), ("translation", "bart")])
def test_seq2seq(task: str, family: str, adapt_cli, tmp_path) -> None:
    model = tiny_seq2seq(tmp_path / family, family=family)
    data = splits(tmp_path / "data", seq2seq_rows, kind=task)
    train(adapt_cli, task, model, data, "run", "--set", "training.num_train_epochs=4",
          "--set", "task_params.generation_max_length=6", method="lora")
    trained = check_run(adapt_cli, tmp_path, "run", data)
    assert all(0 <= trained[f"test_{k}"] <= 1 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    assert (tmp_path / "run" / "pictures" / "test_examples.png").is_file()  # generated beside reference
    assert 0 <= trained["test_bleu"] <= 100  # summarization too (nyuntam's eval_metric: bleu)
    rows = [json.loads(x) for x in adapt_cli("predict", "run", "--data", data["test"]).stdout.splitlines()]
    assert len(rows) == 24 and all(set(r) == {"input", "generated_text"} for r in rows)


@pytest.mark.parametrize("family,kind,method", [("gpt2", "prompt_completion", "lora"), ("llama", "text", "ssf")])
def test_text_generation(family: str, kind: str, method: str, adapt_cli, tmp_path) -> None:
    model = tiny_causal_lm(tmp_path / family, family=family)
    data = splits(tmp_path / "data", text_generation_rows, kind=kind)
    train(adapt_cli, "text_generation", model, data, "run", "--set", "training.num_train_epochs=3",
          "--set", "task_params.max_seq_length=32", "--set", "task_params.max_new_tokens=5", method=method)
    trained = check_run(adapt_cli, tmp_path, "run", data)
    assert trained["test_perplexity"] > 1
    rows = [json.loads(x) for x in adapt_cli("predict", "run", "--data", data["test"]).stdout.splitlines()]
    assert len(rows) == 24 and all(set(r) == {"prompt", "generated_text"} for r in rows)


def test_chats_need_a_chat_template(adapt_cli, tmp_path) -> None:
    model = tiny_causal_lm(tmp_path / "gpt2")
    data = splits(tmp_path / "data", text_generation_rows, kind="messages")
    result = adapt_cli("train", "--task", "text_generation", "--model", model, "--train", data["train"], "--output", "run")
    assert result.returncode == 2 and "has no chat template" in result.stderr, result


def test_bad_answers_and_tags_name_file_row_and_column(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    rows = question_answering_rows(4)
    rows[2]["answers"]["answer_start"] = [0]
    bad = write_jsonl(tmp_path / "qa.jsonl", rows)
    result = adapt_cli("train", "--task", "question_answering", "--model", tiny_bert_dir, "--train", bad, "--output", "run")
    assert result.returncode == 2 and f"train data {bad}, row 3, column answers: answer_start 0" in result.stderr, result
    rows = token_classification_rows(4)
    rows[1]["tags"] = rows[1]["tags"][:-1]
    bad = write_jsonl(tmp_path / "ner.jsonl", rows)
    result = adapt_cli("train", "--task", "token_classification", "--model", tiny_bert_dir, "--train", bad, "--output", "run")
    assert result.returncode == 2 and f"train data {bad}, row 2, column tags" in result.stderr, result
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_token_classification_reads_hugging_faces_conll_layout(tmp_path: Path) -> None:
    """tokens + ner_tags / pos_tags / chunk_tags (no `tags` column): the subtask's column is the tags;
    tags that are ids need their names for entity scoring."""
    from adapt import DataError
    from adapt.testing import resolved

    rows = [{"tokens": r["tokens"], "ner_tags": r["tags"], "pos_tags": ["NN"] * len(r["tokens"])}
            for r in token_classification_rows(8)]
    path = write_jsonl(tmp_path / "conll.jsonl", rows)
    for subtask, expected in (("ner", "B-PER"), ("pos", "NN")):
        run = resolved({"task": "token_classification", "model": "m", "data": {"train": path},
                        "task_params": {"subtask": subtask}})
        assert expected in run.task.inspect_data(run)["labels"]
    ids = write_jsonl(tmp_path / "ids.jsonl", [{"tokens": ["alice", "lives"], "ner_tags": [1, 0]}])
    run = resolved({"task": "token_classification", "model": "m", "data": {"train": ids}})
    with pytest.raises(DataError, match="the tags are ids; ner is scored by entity"):
        run.task.inspect_data(run)
    named = resolved({"task": "token_classification", "model": "m", "data": {"train": ids},
                      "task_params": {"labels": ["O", "B-PER"]}})
    assert named.task.inspect_data(named)["labels"] == ["O", "B-PER"]


def test_lengths_take_minus_one_for_the_models_maximum() -> None:
    """As Azure ML's pipeline writes max_seq_length: -1 is the model's maximum; other values have a floor."""
    from adapt_nlp.question_answering import QuestionAnsweringParams
    from adapt_nlp.seq2seq import SummarizationParams
    from adapt_nlp.text_generation import TextGenerationParams
    from pydantic import ValidationError

    assert QuestionAnsweringParams(max_length=-1).max_length == -1
    assert TextGenerationParams(max_seq_length=-1).max_seq_length == -1
    assert SummarizationParams(max_input_length=-1).max_input_length == -1
    with pytest.raises(ValidationError, match="at least 16 tokens"):
        QuestionAnsweringParams(max_length=8)
    with pytest.raises(ValidationError, match="at least 8 tokens"):
        TextGenerationParams(max_seq_length=4)
