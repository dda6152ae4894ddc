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
    # the validation loss of each epoch (training logs of batches grouped by length are noisier)
    losses = [r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    assert json.loads((run / "model" / "adapt.json").read_text())["format"] == fmt
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["test"]["test_loss"], abs=1e-4)


def test_plan_reports_parameters_memory_and_steps(adapt_cli, bert64, text_data) -> None:
    plans = {}
    for method in ("full", "lora", "qlora"):
        result = adapt_cli("plan", "--task", "text_classification", "--method", method, "--model", bert64,
                           "--train", text_data["train"], "--set", "training.num_train_epochs=3",
                           "--set", "training.per_device_train_batch_size=16")
        assert result.returncode == 0, result
        plans[method] = result.json()
    full, lora, qlora = plans["full"], plans["lora"], plans["qlora"]
    assert full["trainable_percent"] == 100.0 and 0 < lora["trainable_percent"] < 10
    assert all(p["total_steps"] == 18 and p["steps_per_epoch"] == 6 for p in plans.values())  # 96 rows / 16, 3 epochs
    assert lora["gradients_bytes"] == 4 * lora["trainable_parameters"]
    assert lora["optimizer_bytes"] == 8 * lora["trainable_parameters"]  # AdamW: two fp32 moments
    assert full["total_bytes"] > lora["total_bytes"] > qlora["total_bytes"]
    assert qlora["weights_bytes"] < 0.6 * lora["weights_bytes"], (qlora["weights_bytes"], lora["weights_bytes"])
    # what adapt chose and why (the epochs and batch size set above are not among them)
    assert (full["learning_rate"], lora["learning_rate"]) == (5e-5, 3e-3)
    assert lora["defaults"]["learning_rate"] == "0.003: method lora's default for transformer text models"
    assert "num_train_epochs" not in lora["defaults"] and "per_device_train_batch_size" not in lora["defaults"]


def test_small_data_trains_at_least_min_steps_unless_epochs_are_set(adapt_cli, bert64, text_data) -> None:
    common = ("--task", "text_classification", "--method", "lora", "--model", bert64, "--train", text_data["train"])
    steps = {}
    for name, extra in {"default": (), "epochs set": ("--set", "training.num_train_epochs=3"),
                        "off": ("--set", "training.min_steps=0")}.items():
        result = adapt_cli("plan", *common, *extra)
        assert result.returncode == 0, result
        steps[name] = (result.json()["steps_per_epoch"], result.json()["total_steps"])
    # 96 rows in batches of 16: 6 steps an epoch; 3 epochs are 18 steps, below min_steps (200): 34 epochs
    assert steps == {"default": (6, 204), "epochs set": (6, 18), "off": (6, 18)}, steps


def test_qlora_with_quantized_embeddings_trains_and_reloads(adapt_cli, bert64, text_data, tmp_path) -> None:
    common = ("--task", "text_classification", "--method", "qlora", "--model", bert64, "--train", text_data["train"],
              "--set", "method_params.bnb_4bit_compute_dtype=float32", "--set", "training.num_train_epochs=3",
              "--set", "training.per_device_train_batch_size=16")
    result = adapt_cli("train", *common, "--validation", text_data["validation"], "--test", text_data["test"],
                       "--output", "run", "--set", "training.learning_rate=5e-3", "--set", "training.logging_steps=3",
                       "--set", "method_params.quantize_embeddings=true")
    assert result.returncode == 0, result
    assert "quantized 3 embedding table(s) to 4 bit" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert losses[-1] < losses[0], losses
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"])  # the base is re-quantized on reload
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["test"]["test_loss"], abs=1e-4)


def test_plan_counts_rows_as_the_task_reads_them(adapt_cli, bert64, text_data) -> None:
    # 96 rows: 24 carved off as validation first, then the 72 left are limited to 60 (read_splits' order)
    result = adapt_cli("plan", "--task", "text_classification", "--method", "lora", "--model", bert64,
                       "--train", text_data["train"], "--set", "data.validation_split=0.25",
                       "--set", "data.max_train_samples=60", "--set", "training.per_device_train_batch_size=16")
    assert result.returncode == 0, result
    assert result.json()["train_rows"] == 60 and result.json()["steps_per_epoch"] == 4


@pytest.mark.parametrize("method", ["ia3", "loha", "lokr", "oft", "boft", "vera", "adalora", "fourierft", "hra",
                                    "ln_tuning", "peft"])
def test_peft_adapter_families_end_to_end(method: str, adapt_cli, bert64, text_data, tmp_path) -> None:
    """Each of peft's other families through `adapt train` at its own default learning rate: the
    validation loss falls, the merged model reloads to the same test loss."""
    extra = ["--set", "method_params.peft_type=IA3"] if method == "peft" else []
    result = adapt_cli("train", "--task", "text_classification", "--method", method, "--model", bert64,
                       "--train", text_data["train"], "--validation", text_data["validation"],
                       "--test", text_data["test"], "--output", "run", "--set", "training.num_train_epochs=3",
                       "--set", "training.per_device_train_batch_size=16", *extra)
    assert result.returncode == 0, result
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["trainable_percent"] < 100
    losses = [r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    assert json.loads((run / "model" / "adapt.json").read_text())["format"] == "native"
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["test"])
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["test"]["test_loss"], abs=1e-4)


def test_loraplus_trains_the_b_matrices_faster_through_the_hf_engine(bert64, tmp_path) -> None:
    """The method's learning-rate multipliers become the optimizer's parameter groups (every
    trainable parameter once, the B matrices at ratio x the rate); weight decay groups are kept."""
    from adapt.engines.hf import _Trainer
    from adapt.testing import method_run
    from adapt_methods.lora import LoraMethod
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    method = LoraMethod()
    params = method.Params(loraplus_lr_ratio=16)
    model = method.apply(AutoModelForSequenceClassification.from_pretrained(bert64, num_labels=2), params,
                         method_run(["classifier"]))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, use_cpu=True,
                             report_to="none")
    trainer = _Trainer(model=model, args=args)
    trainer.multipliers = method.learning_rate_multipliers(params)
    optimizer = trainer.create_optimizer()
    rates = [(id(p), g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]]
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(r[0] for r in rates) == sorted(trainable)
    for pid, lr, _ in rates:
        assert lr == pytest.approx(16e-3 if "lora_B" in trainable[pid] else 1e-3), trainable[pid]
    assert {wd for *_, wd in rates} == {0.0, 0.1}


def test_compare_reports_runs_side_by_side_and_names_the_best(adapt_cli, bert64, text_data, tmp_path) -> None:
    """Two real runs (lora, ia3) compared: the table has each run's test metric and footprint, the
    best run per criterion is named, the HTML page holds the table and the curves, bad input exits 2."""
    for method in ("lora", "ia3"):
        result = adapt_cli("train", "--task", "text_classification", "--method", method, "--model", bert64,
                           "--train", text_data["train"], "--validation", text_data["validation"],
                           "--test", text_data["test"], "--output", method, "--set", "training.num_train_epochs=1")
        assert result.returncode == 0, result
    report = adapt_cli("compare", "lora", "ia3", "--output", "cmp", "--json")
    assert report.returncode == 0, report
    data = report.json()
    assert data["metric"] == "test_accuracy" and [r["method"] for r in data["rows"]] == ["lora", "ia3"]
    accuracy = {r["method"]: r["test"]["test_accuracy"] for r in data["rows"]}
    for method in ("lora", "ia3"):
        saved = json.loads((tmp_path / method / "metrics.json").read_text())
        assert accuracy[method] == saved["test"]["test_accuracy"]
    shares = {r["method"]: r["trainable_percent"] for r in data["rows"]}
    assert data["best"]["trainable_percent"] == min(shares, key=shares.get)  # the run folder is named as given
    assert all(r["s_per_step"] > 0 and r["adapter_mib"] > 0 for r in data["rows"])
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "ia3" in page
    assert "| run | method | test_accuracy |" in (tmp_path / "cmp" / "compare.md").read_text()
    one = adapt_cli("compare", "lora")
    assert one.returncode == 2 and "at least two run folders" in one.stderr and "Traceback" not in one.stderr
    missing = adapt_cli("compare", "lora", "nowhere")
    assert missing.returncode == 2 and "nowhere is not a finished run folder" in missing.stderr


def test_sweep_trains_each_method_and_writes_the_comparison(adapt_cli, bert64, text_data, tmp_path) -> None:
    """`adapt sweep --methods` runs one config per method (each at its own default learning rate) into
    one folder and writes adapt compare's report there; a bad method list exits 2 before training."""
    common = ["--task", "text_classification", "--model", bert64, "--train", text_data["train"],
              "--validation", text_data["validation"], "--test", text_data["test"],
              "--set", "training.num_train_epochs=1", "--set", "tracking.enabled=false"]
    result = adapt_cli("sweep", "--methods", "ssf,vera", "--output", "sweep", *common)
    assert result.returncode == 0, result
    assert "| ssf |" in result.stdout and "| vera |" in result.stdout and "best test_accuracy" in result.stdout
    for method, rate in (("ssf", 5e-3), ("vera", 1e-2)):  # each method's documented default
        assert f"training.learning_rate: {rate:g}, method {method}'s default" in (tmp_path / "sweep" / method / "config.yaml").read_text()
    assert (tmp_path / "sweep" / "compare.html").is_file()
    bad = adapt_cli("sweep", "--methods", "lora,nosuch", *common)
    assert bad.returncode == 2 and "nosuch not installed" in bad.stderr and not (tmp_path / "runs").exists()
    grid = adapt_cli("sweep", "--methods", "lora", "--learning-rates", "1e-3,x", *common)
    assert grid.returncode == 2 and "--learning-rates" in grid.stderr


@pytest.mark.parametrize("optim", ["galore_adamw", "apollo_adamw"])
def test_projected_gradient_optimizers_fine_tune_in_full(optim: str, adapt_cli, bert64, text_data, tmp_path) -> None:
    """GaLore / APOLLO (packages galore-torch / apollo-torch) through training.optim: a full fine-tune
    whose validation loss falls; with an adapter method, one clear error before training."""
    common = ["--task", "text_classification", "--model", bert64, "--train", text_data["train"],
              "--validation", text_data["validation"], "--set", f"training.optim={optim}",
              "--set", "training.num_train_epochs=3", "--set", "training.learning_rate=1e-3"]
    result = adapt_cli("train", "--method", "full", "--output", "run", *common)
    assert result.returncode == 0, result
    losses = [r["eval_loss"] for r in read_metrics(tmp_path / "run") if "eval_loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    refused = adapt_cli("train", "--method", "lora", "--output", "lora", *common)
    assert refused.returncode == 2 and "use it with method full" in refused.stderr and "Traceback" not in refused.stderr



def test_qssf_in_8_bit_trains_on_the_cpu_and_keeps_its_best_checkpoint(adapt_cli, bert64, text_data, tmp_path) -> None:
    """bitsandbytes leaves 8-bit layers unquantized on the CPU and cannot load their int8 state
    there: the HF Trainer's reload of the best checkpoint failed at the end of the run (found by
    the GPU check's dry run). The frozen weights never change, so adapt reloads the trainable ones."""
    result = adapt_cli("train", "--task", "text_classification", "--method", "qssf", "--model", bert64,
                       "--train", text_data["train"], "--validation", text_data["validation"], "--test", text_data["test"],
                       "--output", "run", "--set", "method_params.load_in_8bit=true", "--set", "training.num_train_epochs=2",
                       "--set", "training.per_device_train_batch_size=16", "--set", "training.learning_rate=5e-3")
    assert result.returncode == 0, result
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_checkpoint"]
    evaluated = adapt_cli("evaluate", "run", "--data", text_data["validation"])
    assert evaluated.returncode == 0, evaluated
    # the model evaluated after training is the best checkpoint's: its validation loss is the best one
    assert evaluated.json()["test_loss"] == pytest.approx(metrics["validation"]["eval_loss"], abs=1e-4)
