"""The example pack's own tests: adapt's contract checks, then a real run through `adapt`."""

from __future__ import annotations

import json
import random

import pytest
import torch
from adapt.testing import PEOPLE, check_method, check_task, read_metrics, write_jsonl
from adapt_example_pack.bitfit import BitFit
from adapt_example_pack.regression import TextRegression


def rows(n: int, seed: int) -> list[dict]:
    """A number to learn: how many people a text names."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        people = rng.sample(PEOPLE, rng.randint(0, 3))
        words = people + rng.sample(["the", "we", "saw", "today", "and", "it", "was"], 4)
        rng.shuffle(words)
        out.append({"text": " ".join(words), "target": float(len(people))})
    return out


def test_task_contract() -> None:
    check_task(TextRegression())


def test_bitfit_contract(tiny_bert_dir: str) -> None:
    from transformers import AutoModelForSequenceClassification

    def make():  # noqa: ANN202
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=1)
        return model, {"input_ids": torch.randint(5, 40, (3, 8))}

    report = check_method(BitFit(), make, head_modules=["classifier"])
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in report["trainable"])


@pytest.mark.slow
def test_train_evaluate_predict(adapt_cli, tiny_bert_dir, tmp_path) -> None:
    data = {s: write_jsonl(tmp_path / f"{s}.jsonl", rows(n, seed)) for s, n, seed in
            (("train", 96, 1), ("validation", 24, 2), ("test", 24, 3))}
    result = adapt_cli("train", "--task", "text_regression", "--method", "bitfit", "--model", tiny_bert_dir,
                       "--train", data["train"], "--validation", data["validation"], "--test", data["test"],
                       "--output", "run", "--set", "training.num_train_epochs=4", "--set", "training.learning_rate=1e-2",
                       "--set", "training.per_device_train_batch_size=8", "--set", "training.metric_for_best_model=mse",
                       "--set", "training.logging_steps=4")
    assert result.returncode == 0, result
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert losses[-1] < losses[0], losses
    test = result.json()["test"]
    assert test["test_mse"] >= 0 and test["test_mae"] >= 0 and test["test_r2"] <= 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 < metrics["trainable_percent"] < 10
    predicted = adapt_cli("predict", "run", "--data", data["test"])
    assert [set(json.loads(line)) for line in predicted.stdout.splitlines()] == [{"score"}] * 24
