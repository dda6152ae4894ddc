"""Running out of resources: a disk that fills up while saving, and a batch that does not fit in
memory with auto_find_batch_size."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from adapt.testing import install_fake_plugin, run_adapt

pytestmark = pytest.mark.slow


def train_args(model: str, data: dict, output: str, epochs: int) -> list[str]:
    return ["train", "--task", "text_classification", "--model", model, "--train", data["train"],
            "--validation", data["validation"], "--output", output, "--set", f"training.num_train_epochs={epochs}",
            "--set", "training.per_device_train_batch_size=16", "--set", "training.learning_rate=5e-3",
            "--set", "tracking.enabled=false"]  # the tracking store would live on the small disk too


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_keeps_earlier_checkpoints_and_resumes(small_disk: Path, tiny_bert_dir, text_data, tmp_path) -> None:
    # measure one checkpoint, then give the run room for two and a half
    probe = run_adapt(*train_args(tiny_bert_dir, text_data, "probe", 1), cwd=tmp_path)
    assert probe.returncode == 0, probe
    size = sum(p.stat().st_size for p in (tmp_path / "probe" / "checkpoints").rglob("*") if p.is_file())
    subprocess.run(["mount", "-o", f"remount,size={int(2.5 * size) // 1024 + 40}k", str(small_disk)], check=True)

    full = run_adapt(*train_args(tiny_bert_dir, text_data, "run", 4), cwd=small_disk)
    assert full.returncode == 2, full
    assert "no space left on the device" in full.stderr and "Traceback" not in full.stderr
    assert "the last complete checkpoint, run/checkpoints/checkpoint-12, is intact" in full.stderr
    for step in (6, 12):
        state = json.loads((small_disk / "run" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == step

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # room again
    resumed = run_adapt(*train_args(tiny_bert_dir, text_data, "run", 4), "--set", "training.resume_from_checkpoint=true",
                        cwd=small_disk)
    assert resumed.returncode == 0, resumed
    assert "resuming from run/checkpoints/checkpoint-12" in resumed.stderr
    assert json.loads((small_disk / "run" / "run.json").read_text())["status"] == "finished"


OOM = '''
import torch
from adapt import Method, hookimpl

class TightMemory(Method):
    """Trains everything, but a forward pass on more than 4 rows runs out of memory."""
    name = "tight_memory"
    description = "full fine-tuning on a device that holds 4 rows at a time"

    def apply(self, model, params, run):
        def check(module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is not None and ids.shape[0] > 4:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 81604378624 bytes.")
        model.register_forward_pre_hook(check, with_kwargs=True)
        return model

@hookimpl
def adapt_register_methods(register):
    register(TightMemory())
'''


def test_auto_find_batch_size_halves_until_it_fits(tiny_bert_dir, text_data, tmp_path) -> None:
    site = install_fake_plugin(tmp_path / "site", "adapt-tight-memory", "adapt_tight_memory", OOM)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    args = [*train_args(tiny_bert_dir, text_data, "run", 1), "--method", "tight_memory",
            "--set", "training.per_device_eval_batch_size=4"]
    without = run_adapt(*args, cwd=tmp_path, env=env)
    assert without.returncode != 0 and "can't allocate memory" in without.stderr  # the simulated OOM is real

    result = run_adapt(*args, "--output", "run2", "--set", "training.auto_find_batch_size=true", cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    assert "per_device_train_batch_size 16 did not fit in memory; trained with 4" in result.stderr
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert metrics["train_batch_size"] == 4 and metrics["train"]["epoch"] == 1
