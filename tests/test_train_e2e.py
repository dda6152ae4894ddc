"""End to end through the real `adapt` command on a tiny random BERT: learning, the run folder,
reloading saved models, resuming, best-checkpoint keeping, early stopping, evaluation cadence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from adapt.testing import read_metrics

pytestmark = pytest.mark.slow

FAST = ["--set", "training.per_device_train_batch_size=16", "--set", "training.per_device_eval_batch_size=16",
        "--set", "training.learning_rate=5e-3", "--set", "training.logging_steps=2"]


def train_args(model: str, data: dict[str, str], output: str, *extra: str, method: str = "full") -> list[str]:
    return ["train", "--task", "text_classification", "--method", method, "--model", model,
            "--train", data["train"], "--validation", data["validation"], "--test", data["test"],
            "--output", output, *FAST, *extra]


def test_a_first_run_says_what_adapt_chose(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    """Only task, method, model and data (and a step cap): the method's and the task's defaults,
    named in config.yaml and train.log; a value the user sets is not."""
    result = adapt_cli("train", "--task", "text_classification", "--method", "lora", "--model", tiny_bert_dir,
                       "--train", text_data["train"], "--validation", text_data["validation"], "--output", "run",
                       "--set", "training.max_steps=4", "--set", "training.per_device_eval_batch_size=8")
    assert result.returncode == 0, result
    config = (tmp_path / "run" / "config.yaml").read_text()
    head = config.split("task:", 1)[0]
    assert "# training.learning_rate: 0.003, method lora's default for transformer text models" in head
    assert "# training.per_device_train_batch_size: 16, task text_classification's default" in head
    assert "per_device_eval_batch_size" not in head and "max_steps" not in head
    import yaml

    training = yaml.safe_load(config)["training"]
    assert (training["learning_rate"], training["per_device_train_batch_size"], training["per_device_eval_batch_size"]) \
        == (3e-3, 16, 8)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "defaults chosen (set them to change): " in log and "learning_rate 0.003 (method lora's default" in log
    assert "training batches grouped by length" in log  # the fixture's texts vary in length


def logits_of(model_dir: Path, texts: list[str]):  # noqa: ANN201
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model, tokenizer, model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_full_fine_tune_learns_and_writes_the_run_folder(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=6",
                                   "--set", "training.metric_for_best_model=accuracy"))
    assert result.returncode == 0, result
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "train.log", "metrics.jsonl", "metrics.json", "test_metrics.json",
                 "model/adapt.json", "model/config.json", "saved/safetensors/model.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from adapt.report import read_curves

    # the curve of validation losses ends at the last evaluation during training; the re-evaluation of the
    # best checkpoint after it, and the test split, are points of their own (not the end of the line)
    during, after = read_curves(run / "metrics.jsonl")
    assert len(during["eval_loss"]) == 6 and len(after["eval_loss"]) == 1 and "test_loss" not in during
    assert any(abs(v - after["eval_loss"][0][1]) < 1e-4 for _, v in during["eval_loss"]), (during, after)
    assert "train_loss" not in during and "train_loss" not in after  # the run's mean is no point of a curve
    assert (run / "pictures" / "test_confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from collections import Counter

    labels = Counter(json.loads(line)["label"] for line in Path(text_data["test"]).read_text().splitlines())
    baseline = json.loads((run / "metrics.json").read_text())["baseline"]["test"]["test_accuracy"]
    assert baseline == pytest.approx(max(labels.values()) / sum(labels.values()))  # always the most frequent class
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    records = read_metrics(run)
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(losses) >= 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert evals[-1] < evals[0], evals
    test = json.loads((run / "test_metrics.json").read_text())
    for key in ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro"):
        assert 0.0 <= test[key] <= 1.0
    assert -1.0 <= test["test_mcc"] <= 1.0
    assert test["test_accuracy"] > 0.5, test  # 3 balanced classes: chance is 1/3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_percent"] == 100.0 and metrics["trainable_parameters"] > 0
    assert result.json()["test"]["test_accuracy"] == test["test_accuracy"]
    assert "trainable" in (run / "train.log").read_text()


def test_saved_models_reload_with_equal_outputs(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    import torch
    from adapt.plugins import get_registry

    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=2",
                                   "--saver", "safetensors", "--saver", "state_dict", "--saver", "save_pretrained",
                                   "--saver", "full_torch_model", method="lora"))
    assert result.returncode == 0, result
    run = tmp_path / "run"
    texts = [json.loads(line)["text"] for line in Path(text_data["test"]).read_text().splitlines()]
    model, tokenizer, reference = logits_of(run / "model", texts)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    registry = get_registry()
    for name in ("safetensors", "state_dict", "save_pretrained", "full_torch_model"):
        fresh = type(model)(model.config)
        restored = registry.get("saver", name).load(str(run / "saved" / name), like=fresh).eval()
        with torch.no_grad():
            assert torch.allclose(restored(**inputs).logits, reference, atol=1e-5), name

    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"])
    assert evaluated.returncode == 0, evaluated
    trained = json.loads((run / "test_metrics.json").read_text())
    assert evaluated.json()["test_accuracy"] == trained["test_accuracy"]
    assert evaluated.json()["test_loss"] == pytest.approx(trained["test_loss"], abs=1e-5)

    predicted = adapt_cli("predict", "run", "--data", text_data["test"], "--output", "preds.jsonl")
    assert predicted.returncode == 0, predicted
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(rows) == len(texts)
    probabilities = torch.softmax(reference, dim=-1)
    labels = [model.config.id2label[i] for i in range(probabilities.shape[1])]
    for row, probs in zip(rows, probabilities, strict=True):
        assert row["label"] == labels[int(probs.argmax())]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert set(row["scores"]) == set(labels)


def test_unmerged_adapter_reloads(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=2",
                                   "--set", "method_params.merge_weights=false", method="lora"))
    assert result.returncode == 0, result
    info = json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())
    assert info["format"] == "adapter" and (tmp_path / "run" / "model" / "adapter.safetensors").is_file()
    evaluated = adapt_cli("evaluate", "run/model", "--data", text_data["test"])
    assert evaluated.returncode == 0, evaluated
    trained = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert evaluated.json()["test_loss"] == pytest.approx(trained["test_loss"], abs=1e-5)


def test_resumed_run_ends_like_an_uninterrupted_one(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    args = train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=3")
    assert (first := adapt_cli(*args)).returncode == 0, first
    run = tmp_path / "run"
    uninterrupted = json.loads((run / "test_metrics.json").read_text())
    weights = (run / "saved" / "safetensors" / "model.safetensors").read_bytes()
    # Make it as if the run had stopped after its second epoch's checkpoint.
    checkpoints = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3
    shutil.rmtree(checkpoints[-1])
    for name in ("model", "saved", "metrics.json", "test_metrics.json"):
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    refused = adapt_cli(*args)
    assert refused.returncode == 2 and "resume_from_checkpoint=true" in refused.stderr

    resumed = adapt_cli(*args, "--set", "training.resume_from_checkpoint=true")
    assert resumed.returncode == 0, resumed
    assert f"resuming from run/checkpoints/{checkpoints[1].name}" in resumed.stderr
    again = json.loads((run / "test_metrics.json").read_text())
    assert again["test_loss"] == pytest.approx(uninterrupted["test_loss"], abs=1e-6)
    assert again["test_accuracy"] == uninterrupted["test_accuracy"]
    assert (run / "saved" / "safetensors" / "model.safetensors").read_bytes() == weights


def test_save_total_limit_keeps_the_best_checkpoint(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=4",
                                   "--set", "training.save_total_limit=1",
                                   "--set", "training.metric_for_best_model=accuracy"))
    assert result.returncode == 0, result
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"])
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert (tmp_path / best).is_dir() and best.name in kept and len(kept) <= 2, (best, kept)
    evals = [r["eval_accuracy"] for r in read_metrics(tmp_path / "run") if "eval_accuracy" in r]
    assert metrics["best_metric"] == max(evals)


def test_early_stopping_and_fractional_evaluation(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    # 96 rows / 16 = 6 steps per epoch; evaluating every half epoch means every 3 steps. A
    # threshold no evaluation can beat stops training after patience (2) evaluations.
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=10",
                                   "--set", "training.evaluation_steps_interval=0.5",
                                   "--set", "training.apply_early_stopping=true",
                                   "--set", "training.early_stopping_patience=2",
                                   "--set", "training.early_stopping_threshold=5.0"))
    assert result.returncode == 0, result
    eval_steps = [r["step"] for r in read_metrics(tmp_path / "run") if "eval_loss" in r]
    assert eval_steps[:3] == [3, 6, 9], eval_steps
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["epoch"] == pytest.approx(1.5), "stopped after 3 evaluations (patience 2)"


def test_precision_and_memory_options_run(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    """precision 16 (bf16 on the CPU, with a notice), auto_find_batch_size, gradient
    checkpointing and sgd with extra_optim_args, together on a short run."""
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.max_steps=4",
                                   "--set", "training.precision=16", "--set", "training.auto_find_batch_size=true",
                                   "--set", "training.gradient_checkpointing=true", "--set", "training.optim=sgd",
                                   "--set", "training.extra_optim_args=momentum=0.9; nesterov=True"))
    assert result.returncode == 0, result
    assert "training in bf16 on the CPU instead" in result.stderr
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # logged and not NaN


def test_peak_tensor_memory_is_recorded_when_asked(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    """training.skip_memory_metrics false: the peak of the first two steps holds at least the weights,
    gradients and Adam state `adapt plan` counts (all alive at the second optimizer step), and not
    wildly more; by default on the CPU nothing is traced or recorded."""
    plan = adapt_cli("plan", "--task", "text_classification", "--method", "full", "--model", tiny_bert_dir,
                     "--train", text_data["train"], "--set", "training.optim=adamw_torch")
    assert plan.returncode == 0, plan
    counted = plan.json()["total_mib"]
    traced = adapt_cli(*train_args(tiny_bert_dir, text_data, "traced", "--set", "training.max_steps=3",
                                   "--set", "training.optim=adamw_torch", "--set", "training.skip_memory_metrics=false"))
    assert traced.returncode == 0, traced
    peak = json.loads((tmp_path / "traced" / "metrics.json").read_text())["peak_tensor_memory_mib"]
    assert counted <= peak < 20 * counted, (counted, peak)
    default = adapt_cli(*train_args(tiny_bert_dir, text_data, "default", "--set", "training.max_steps=2"))
    assert default.returncode == 0, default
    assert "peak_tensor_memory_mib" not in json.loads((tmp_path / "default" / "metrics.json").read_text())


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_the_run_resumes(signame: str, tiny_bert_dir, text_data, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    args = train_args(tiny_bert_dir, text_data, "run", "--set", "training.num_train_epochs=12")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "adapt", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 120
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"{signame} received" in stderr and "resume_from_checkpoint=true" in stderr
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == signame
    saved = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert saved and saved[-1] < 72, saved  # stopped before the 12 epochs' 72 steps

    resumed = subprocess.run([sys.executable, "-m", "adapt", *args, "--set", "training.resume_from_checkpoint=true"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from run/checkpoints/checkpoint-{saved[-1]}" in resumed.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["epoch"] == 12


def test_the_confusion_matrix_counts_every_row_once() -> None:
    from adapt import confusion_matrix_figure

    truth, predicted = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2]
    fig = confusion_matrix_figure(truth, predicted, ["a", "b", "c"])
    counts = [[int(t.get_text()) for t in fig.axes[0].texts][i:i + 3] for i in (0, 3, 6)]
    assert counts == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]  # rows: true class, columns: predicted
    assert "6 rows, accuracy 0.667" in fig.axes[0].get_title()


def test_evaluate_writes_an_evaluation_folder(adapt_cli, tiny_bert_dir, text_data, tmp_path) -> None:
    """adapt evaluate --results: metrics.json (the same as printed), one prediction per input row,
    the task's pictures; an existing folder with files is refused, nothing in it lost."""
    result = adapt_cli(*train_args(tiny_bert_dir, text_data, "run", "--set", "training.max_steps=4"))
    assert result.returncode == 0, result
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"], "--results", "eval")
    assert evaluated.returncode == 0, evaluated
    folder = tmp_path / "eval"
    assert json.loads((folder / "metrics.json").read_text()) == evaluated.json()
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(Path(text_data["test"]).read_text().splitlines()) and all("label" in r for r in rows)
    assert (folder / "pictures" / "test_confusion_matrix.png").is_file()
    assert json.loads((folder / "evaluation.json").read_text())["rows"] == len(rows)
    again = adapt_cli("evaluate", "run", "--data", text_data["test"], "--results", "eval")
    assert again.returncode == 2 and "already holds files" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((folder / "metrics.json").read_text()) == evaluated.json()
