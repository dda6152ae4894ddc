"""kill -9 at several points of a run, then resume_from_checkpoint: true. Every resumed run ends
with the same test metrics and the same weights, byte for byte, as an uninterrupted one (with
enable_full_determinism); a checkpoint cut off mid-write is never picked up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from adapt.testing import install_fake_plugin, run_adapt

pytestmark = pytest.mark.slow

KILLER = '''
import os, signal
from adapt import hookimpl

@hookimpl
def adapt_metrics_logged(run, metrics, step):
    kind, _, at = os.environ.get("ADAPT_TEST_KILL", ":").partition(":")
    if at and step == int(at) and ("eval_loss" in metrics) == (kind == "eval"):
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no checkpoint: like a power cut
'''


def args(model: str, data: dict[str, str], output: str) -> list[str]:
    # 96 rows / 16 = 6 steps an epoch; 3 epochs; evaluate and checkpoint every epoch
    return ["train", "--task", "text_classification", "--method", "lora", "--model", model, "--train", data["train"],
            "--validation", data["validation"], "--test", data["test"], "--output", output,
            "--set", "training.num_train_epochs=3", "--set", "training.per_device_train_batch_size=16",
            "--set", "training.learning_rate=5e-3", "--set", "training.logging_steps=1",
            "--set", "training.enable_full_determinism=true", "--set", "training.save_total_limit=2"]


def outcome(run: Path) -> tuple[dict, bytes]:
    metrics = json.loads((run / "test_metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.endswith(("runtime", "per_second"))}, \
        (run / "saved" / "safetensors" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir: str, text_data: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, bytes]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = run_adapt(*args(tiny_bert_dir, text_data, "run"), cwd=folder)
    assert result.returncode == 0, result
    return outcome(folder / "run")


@pytest.mark.parametrize("kill_at,resumes_from", [
    ("train:8", 6),    # during the second epoch's steps
    ("eval:12", 6),    # after the second evaluation, before its checkpoint is written
    ("train:14", 6),   # in the third epoch, with checkpoint-12 then cut off mid-write (below)
])
def test_killed_run_resumes_to_the_same_end(kill_at: str, resumes_from: int, uninterrupted, tiny_bert_dir, text_data,
                                             tmp_path: Path) -> None:
    site = install_fake_plugin(tmp_path / "site", "adapt-test-killer", "adapt_test_killer", KILLER)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "ADAPT_TEST_KILL": kill_at}
    killed = run_adapt(*args(tiny_bert_dir, text_data, "run"), cwd=tmp_path, env=env)
    assert killed.returncode == -9, killed
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # nobody could say otherwise
    if kill_at == "train:14":
        # what a kill during the write of checkpoint-12 leaves: trainer_state.json cut short
        state = run / "checkpoints" / "checkpoint-12" / "trainer_state.json"
        state.write_text(state.read_text()[:40])
    else:
        assert not (run / "checkpoints" / "checkpoint-12").exists()

    resumed = run_adapt(*args(tiny_bert_dir, text_data, "run"), "--set", "training.resume_from_checkpoint=true",
                        cwd=tmp_path, env={"PYTHONPATH": env["PYTHONPATH"]})
    assert resumed.returncode == 0, resumed
    assert f"resuming from run/checkpoints/checkpoint-{resumes_from}" in resumed.stderr
    if kill_at == "train:14":
        assert "skipping run/checkpoints/checkpoint-12: it was not completely written" in resumed.stderr
    metrics, weights = outcome(run)
    assert metrics == uninterrupted[0]
    assert weights == uninterrupted[1], "resumed weights differ from the uninterrupted run's"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_a_half_written_checkpoint_is_refused_by_path(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 3, "log_hist')
    result = run_adapt(*args(tiny_bert_dir, text_data, "run"), "--set",
                       f"training.resume_from_checkpoint={checkpoint}", cwd=tmp_path)
    assert result.returncode == 2 and "was not completely written" in result.stderr, result
    shutil.rmtree(tmp_path / "run")
