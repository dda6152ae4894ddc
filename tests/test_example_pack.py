"""A stranger's pack: pip-install examples/adapt-example-pack (into a folder of its own), see it
in `adapt plugins`, train with it, and run its own tests (contract checks included). That it
uses only the public API is checked for every pack in tests/test_layout.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from adapt.testing import run_adapt

PACK = Path(__file__).resolve().parent.parent / "examples" / "adapt-example-pack"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PACK)], check=True, capture_output=True)
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_pack_installs_and_is_listed(installed: dict[str, str]) -> None:
    result = run_adapt("plugins", "--json", env=installed)
    assert result.returncode == 0, result
    pack = next(p for p in json.loads(result.stdout) if p["distribution"] == "adapt-example-pack")
    assert (pack["version"], pack["tasks"], pack["methods"], pack["errors"]) == ("0.1.0", ["text_regression"], ["bitfit"], [])


def test_pack_own_tests_pass(installed: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **installed, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(PACK),
                             str(PACK / "tests")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


def test_pack_gets_validation_split_and_row_limits_from_the_core(installed: dict[str, str], tiny_bert_dir: str,
                                                                  tmp_path: Path) -> None:
    """The pack reads its splits through run.read_splits: data.validation_split and the row limits
    hold for it as for our tasks, and `adapt plan` counts the same steps the run takes."""
    from adapt.testing import PEOPLE, write_jsonl

    rows = [{"text": f"{name} and the others", "target": float(i % 3)} for i, name in enumerate(PEOPLE * 14)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:80])
    common = ["--task", "text_regression", "--method", "bitfit", "--model", tiny_bert_dir, "--train", train,
              "--set", "data.validation_split=0.25", "--set", "data.max_train_samples=30",
              "--set", "data.max_eval_samples=8", "--set", "training.per_device_train_batch_size=8",
              "--set", "training.num_train_epochs=1"]
    plan = run_adapt("plan", *common, env=installed, cwd=tmp_path)
    assert plan.returncode == 0, plan
    assert (plan.json()["train_rows"], plan.json()["steps_per_epoch"]) == (30, 4)
    result = run_adapt("train", *common, "--output", "run", "--set", "training.logging_steps=1",
                       "--set", "tracking.enabled=false", env=installed, cwd=tmp_path)
    assert result.returncode == 0, result
    assert "eval_mse" in result.json()["validation"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == plan.json()["total_steps"] == 4, steps
