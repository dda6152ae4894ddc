"""Methods through the real `adapt train`: trainable share reported, loss falls, the saved model
(merged, or the adapter on a quantized base) reloads and reproduces the test metrics."""

from __future__ import annotations

import json

import pytest
from adapt.testing import read_metrics, tiny_bert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bert64(tmp_path_factory: pytest.TempPathFactory) -> str:
    # 64 wide: bitsandbytes' CPU 4-bit kernels need in_features divisible by 64
    return tiny_bert(tmp_path_factory.mktemp("bert64"), hidden_size=64)


@pytest.mark.parametrize("method,fmt", [("ssf", "native"), ("dora", "native"), ("last_layer", "native"),
                                        ("qlora", "adapter"), ("qssf", "adapter")])
def test_method_end_to_end(method: str, fmt: str, adapt_cli, bert64, text_data, tmp_path) -> None:
    result = adapt_cli("train", "--task", "text_classification", "--method", method, "--model", bert64,
                       "--train", text_data["train"], "--validation", text_data["validation"],
                       "--test", text_data["test"], "--output", "run", "--set", "training.num_train_epochs=3",
                       "--set", "training.learning_rate=5e-3", "--set", "training.per_device_train_batch_size=16",
                       "--set", "training.logging_steps=3", "--set", "method_params.bnb_4bit_compute_dtype=float32"
                       if method.startswith("q") else "training.seed=42")
    assert result.returncode == 0, result
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["trainable_percent"] < 100 and metrics["trainable_parameters"] > 0
    assert f"method {method}:" in result.stderr and "parameters trainable" in result.stderr
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert losses[-1] < losses[0], losses
    assert json.loads((run / "model" / "adapt.json").read_text())["format"] == fmt
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["test"]["test_loss"], abs=1e-4)
