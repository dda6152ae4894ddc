"""text_classification: contract, data formats, bad data, multi-label and text pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapt import read_table
from adapt.testing import check_task, resolved, text_classification_rows, write_jsonl
from adapt_nlp.text_classification import TextClassification


def test_contract() -> None:
    check_task(TextClassification())


def test_every_data_format_reads_the_same_rows(tmp_path: Path) -> None:
    import pandas as pd

    rows = text_classification_rows(12)
    frame = pd.DataFrame(rows)
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "d.parquet")
    table = tmp_path / "table"
    table.mkdir()
    write_jsonl(table / "part.jsonl", rows)
    (table / "MLTable").write_text("paths:\n  - file: ./part.jsonl\ntransformations:\n"
                                   "  - read_json_lines:\n      encoding: utf8\n")
    delimited = tmp_path / "delimited"
    delimited.mkdir()
    frame.to_csv(delimited / "part.csv", index=False, sep=";")
    (delimited / "MLTable").write_text("paths:\n  - pattern: ./*.csv\ntransformations:\n"
                                       "  - read_delimited:\n      delimiter: ';'\n")
    for source in ("d.jsonl", "d.json", "d.csv", "d.tsv", "d.parquet", "table", "delimited"):
        read = read_table(tmp_path / source)
        assert read["text"] == frame["text"].tolist() and read["label"] == frame["label"].tolist(), source


def _train(adapt_cli, model: str, train: str, validation: str, *extra: str):  # noqa: ANN202
    return adapt_cli("train", "--task", "text_classification", "--model", model, "--train", train,
                     "--validation", validation, "--output", "run", "--set", "training.max_steps=2", *extra)


BAD_DATA = [
    # (what the file holds, what the message must say)
    ({"text": "a b", "category": "x"}, ["missing column(s) label", "found: text, category"]),
    ({"text": "", "label": "sports"}, ["row 2, column text", "empty or missing text"]),
    ({"text": "goal match", "label": "cooking"}, ["row 2, column label", "label 'cooking' is not in the label set"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("bad_row,expected", BAD_DATA, ids=["missing-column", "empty-text", "unknown-label"])
def test_bad_validation_data_names_file_row_and_column(adapt_cli, tiny_bert_dir, text_data, tmp_path,
                                                       bad_row, expected) -> None:
    good = json.loads(Path(text_data["validation"]).read_text().splitlines()[0])
    rows = [good, bad_row] if "label" in bad_row else [bad_row]
    validation = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = _train(adapt_cli, tiny_bert_dir, text_data["train"], validation)
    assert result.returncode == 2, result
    assert str(validation) in result.stderr and "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not (tmp_path / "run").exists(), "a run that failed on bad input leaves no folder behind"


@pytest.mark.slow
def test_unreadable_and_missing_files(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    result = _train(adapt_cli, tiny_bert_dir, str(broken), text_data["validation"])
    assert result.returncode == 2 and "line 2 is not valid JSON" in result.stderr, result
    assert "Failed to load JSON" not in result.stderr  # datasets' own line: only adapt's message shows
    result = _train(adapt_cli, tiny_bert_dir, str(tmp_path / "nowhere.jsonl"), text_data["validation"])
    assert result.returncode == 2 and "nowhere.jsonl does not exist" in result.stderr, result
    result = _train(adapt_cli, str(tmp_path), text_data["train"], text_data["validation"])
    assert result.returncode == 2 and "could not be loaded for text classification" in result.stderr, result
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_multi_label(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    data = {split: write_jsonl(tmp_path / f"{split}.jsonl", text_classification_rows(n, seed=s, multi_label=True))
            for split, n, s in (("train", 96, 1), ("validation", 24, 2))}
    result = adapt_cli("train", "--task", "text_classification", "--method", "lora", "--model", tiny_bert_dir,
                       "--train", data["train"], "--validation", data["validation"], "--test", data["validation"],
                       "--output", "run", "--set", "training.num_train_epochs=3",
                       "--set", "training.learning_rate=5e-3", "--set", "training.per_device_train_batch_size=16")
    assert result.returncode == 0, result
    info = json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())
    assert info["meta"] == {"labels": ["food", "sports", "weather"], "problem_type": "multi_label"}
    test = result.json()["test"]
    assert all(0.0 <= test[f"test_{k}"] <= 1.0 for k in ("accuracy", "f1_macro", "precision_macro", "recall_macro"))
    predicted = adapt_cli("predict", "run", "--data", data["validation"])
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 24 and all(set(r) == {"labels", "scores"} for r in rows)
    assert all(set(r["labels"]) <= {"food", "sports", "weather"} for r in rows)


@pytest.mark.slow
def test_text_pairs_and_custom_columns(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    rows = [{"premise": r["text"], "hypothesis": "the very new", "category": r["label"]}
            for r in text_classification_rows(40)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = adapt_cli("train", "--task", "text_classification", "--model", tiny_bert_dir, "--train", path,
                       "--output", "run", "--set", "training.max_steps=3", "--set", "data.validation_split=0.25",
                       "--set", "task_params.text_column=premise", "--set", "task_params.text_pair_column=hypothesis",
                       "--set", "task_params.label_column=category")
    assert result.returncode == 0, result
    assert "eval_accuracy" in result.json()["validation"]


def test_row_limits_and_validation_split(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", [{**r, "id": i} for i, r in enumerate(text_classification_rows(50))])
    task = TextClassification()
    run = resolved({"task": "text_classification", "model": "m", "data": {
        "train": rows, "validation_split": 0.2, "max_train_samples": 30, "max_eval_samples": 4}})
    tables = task.read_splits(run, {"train": rows})
    assert len(tables["train"][0]) == 30 and len(tables["validation"][0]) == 4  # 40 / 10 split, then limited
    assert not set(tables["train"][0]["id"]) & set(tables["validation"][0]["id"])  # carved off, not copied


@pytest.mark.slow
def test_attention_implementations_agree_and_flash_attention_is_explained(adapt_cli, tiny_bert_dir, text_data,
                                                                          tmp_path) -> None:
    """model.attn_implementation reaches transformers: eager and sdpa compute the same model (same
    test loss after the same steps); flash attention, without its package, is one clear error."""
    common = ("train", "--task", "text_classification", "--method", "lora", "--model", tiny_bert_dir,
              "--train", text_data["train"], "--test", text_data["test"], "--set", "training.max_steps=3",
              "--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false")
    losses = {}
    for impl in ("eager", "sdpa"):
        result = adapt_cli(*common, "--output", impl, "--set", f"model.attn_implementation={impl}")
        assert result.returncode == 0, result
        metrics = json.loads((tmp_path / impl / "metrics.json").read_text())
        losses[impl] = metrics["test"]["test_loss"]
        assert metrics["device"] == "cpu, fp32"
        assert json.loads((tmp_path / impl / "model" / "adapt.json").read_text())["config"]["model"]["attn_implementation"] == impl
    assert losses["eager"] == pytest.approx(losses["sdpa"], abs=1e-5), losses
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        result = adapt_cli(*common, "--output", "flash", "--set", "model.attn_implementation=flash_attention_2")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result
        assert "model.attn_implementation flash_attention_2:" in result.stderr and "flash-attn package" in result.stderr
        assert not (tmp_path / "flash").exists()
    result = adapt_cli(*common, "--output", "bad", "--set", "model.attn_implementation=fastest")
    assert result.returncode == 2 and "attn_implementation" in result.stderr and "sdpa" in result.stderr, result
