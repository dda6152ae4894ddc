"""Engines are plugins: a third party's engine (a plain PyTorch loop, tests/plugins/adapt_torchloop.py)
installed as a distribution trains a task of its pack end to end through `adapt`, with our methods;
pairings and missing engines are refused with one clear message."""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

import pytest
from adapt.testing import check_engine, check_task, install_fake_plugin, read_metrics, run_adapt, write_jsonl

PLUGIN = Path(__file__).resolve().parent / "plugins" / "adapt_torchloop.py"
pytestmark = pytest.mark.slow


def plugin_module():  # noqa: ANN201 - the test plugin, imported from its file
    spec = importlib.util.spec_from_file_location("adapt_torchloop", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The pack installed into a site folder, a 'pretrained' MLP and data of y = x . w + 0.5."""
    import torch
    from safetensors.torch import save_model

    root = tmp_path_factory.mktemp("toy")
    site = install_fake_plugin(root / "site", "adapt-torchloop", "adapt_torchloop", PLUGIN.read_text(), version="0.3")
    torch.manual_seed(0)
    (root / "mlp").mkdir()
    save_model(plugin_module().mlp(), str(root / "mlp" / "model.safetensors"))
    rng, w = random.Random(0), [1.0, -2.0, 0.5, 1.5]
    files = {}
    for split, n in (("train", 128), ("validation", 32), ("test", 32)):
        rows = []
        for _ in range(n):
            x = [rng.gauss(0, 1) for _ in range(4)]
            rows.append({"x": x, "y": sum(a * b for a, b in zip(x, w, strict=True)) + 0.5 + rng.gauss(0, 0.05)})
        files[split] = write_jsonl(root / f"{split}.jsonl", rows)
    return {"site": str(site), "model": str(root / "mlp"), **files}


def env(toy: dict[str, str]) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([toy["site"], os.environ.get("PYTHONPATH", "")])}


def test_a_third_party_engine_is_listed_and_passes_the_contract_checks(toy: dict[str, str]) -> None:
    listed = run_adapt("plugins", "--json", env=env(toy))
    assert listed.returncode == 0, listed
    pack = next(p for p in listed.json() if p["distribution"] == "adapt-torchloop")
    assert (pack["version"], pack["engines"], pack["tasks"], pack["errors"]) == ("0.3", ["torchloop"], ["toy_regression"], [])
    module = plugin_module()
    check_engine(module.TorchLoop())
    with pytest.raises(AssertionError, match="engine 'torchloop' is not installed"):
        check_task(module.ToyRegression())  # this process's registry does not hold the pack


def test_a_third_party_engine_trains_with_our_methods_and_reloads(toy: dict[str, str], tmp_path: Path) -> None:
    result = run_adapt("train", "--task", "toy_regression", "--method", "lora", "--model", toy["model"],
                       "--train", toy["train"], "--validation", toy["validation"], "--test", toy["test"],
                       "--output", "run", "--set", "training.num_train_epochs=25", "--set", "training.learning_rate=0.02",
                       "--set", "training.per_device_train_batch_size=16", "--set", "training.logging_steps=8",
                       "--set", "tracking.enabled=false", cwd=tmp_path, env=env(toy))
    assert result.returncode == 0, result
    assert "method lora: " in result.stderr and "Traceback" not in result.stderr
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 25 and losses[-1] < losses[0] / 5, losses
    ys = [json.loads(line)["y"] for line in Path(toy["test"]).read_text().splitlines()]
    variance = sum((y - sum(ys) / len(ys)) ** 2 for y in ys) / len(ys)
    test_loss = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["test_loss"]
    assert test_loss < variance / 10, (test_loss, variance)  # far better than predicting the mean
    info = json.loads((tmp_path / "run" / "model" / "adapt.json").read_text())
    assert (info["format"], info["method"]) == ("native", "lora")  # merged by the method, saved by the task

    evaluated = run_adapt("evaluate", "run", "--data", toy["test"], cwd=tmp_path, env=env(toy))
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(test_loss, abs=1e-6)
    predicted = run_adapt("predict", "run", "--data", toy["test"], cwd=tmp_path, env=env(toy))
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == len(ys)
    assert sum((r["y"] - y) ** 2 for r, y in zip(rows, ys, strict=True)) / len(ys) == pytest.approx(test_loss, rel=1e-4)


def test_a_backend_the_engine_does_not_drive_is_refused_before_any_worker(toy: dict[str, str], tmp_path: Path) -> None:
    result = run_adapt("train", "--task", "toy_regression", "--model", toy["model"], "--train", toy["train"],
                       "--backend", "ddp", "--set", "backend_params.nproc_per_node=2", "--output", "run",
                       cwd=tmp_path, env=env(toy))
    assert result.returncode == 2, result
    assert "backend ddp (ddp) does not drive the torchloop engine of task toy_regression" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


ORPHAN = '''
from adapt import Task, hookimpl

class OrphanDetection(Task):
    name = "orphan_detection"
    description = "A task whose engine comes from a pack that is not installed."
    engine = "mmengine"

@hookimpl
def adapt_register_tasks(register):
    register(OrphanDetection())
'''


def test_a_task_whose_engine_is_not_installed_names_the_distribution(tmp_path: Path) -> None:
    site = install_fake_plugin(tmp_path / "site", "adapt-orphan", "adapt_orphan", ORPHAN)
    result = run_adapt("train", "--task", "orphan_detection", "--model", "m", "--train", "t.json",
                       env={"PYTHONPATH": str(site), "ADAPT_LOAD_PLUGINS": "adapt-orphan,adapt-methods"}, cwd=tmp_path)
    assert result.returncode == 2, result
    assert ("task 'orphan_detection' runs on engine 'mmengine', which is not installed (provided by the adapt-vision "
            "distribution: pip install adapt-vision); installed engines: hf") in result.stderr
    assert "Traceback" not in result.stderr
