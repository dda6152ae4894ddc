"""adapt-backends on this CPU machine (gloo): DDP matches one process, two "nodes" meet through
c10d, DeepSpeed ZeRO-2 / ZeRO-3 train and save reloadable models, a failing rank stops the job,
and combinations that cannot work are refused before any worker starts. FSDP for HF tasks is
tested where CUDA GPUs exist (on the CPU it is refused); for MMEngine tasks, in the vision pack."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from adapt.testing import free_port, install_fake_plugin, resolved, run_adapt
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]  # one distributed job at a time
# no run tracking, no MLflow model: settings of adapt-mlflow, absent where it is not installed (the GPU check)
QUIET = ["--set", "tracking.enabled=false", "--set", "save_as_mlflow_model=false"] \
    if importlib.util.find_spec("adapt_mlflow") else []


def args(model: str, data: dict, output: str, *extra: str, method: str = "lora") -> list[str]:
    return ["train", "--task", "text_classification", "--method", method, "--model", model, "--train", data["train"],
            "--test", data["test"], "--output", output, "--set", "training.max_steps=3",
            "--set", "training.learning_rate=1e-2", "--set", "training.logging_steps=1", *QUIET,
            # the same batches on one process and on two: batches grouped by length are drawn per process count
            "--set", "training.group_by_length=false",
            # more evaluation batches than processes: with one batch for the whole (24-row) test set, the
            # other process evaluates padding, and the HF Trainer's gathered loss is then off (2%: accelerate)
            "--set", "training.per_device_eval_batch_size=8", *extra]


def test_ddp_two_processes_match_one_and_the_adapter_reloads_on_one(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    # no LoRA dropout: its random masks come from per-process RNG streams, the one thing that differs
    unmerged = ["--set", "method_params.merge_weights=false", "--set", "method_params.dropout=0"]
    single = run_adapt(*args(tiny_bert_dir, text_data, "single", *unmerged, "--set", "training.per_device_train_batch_size=8"),
                       cwd=tmp_path)
    assert single.returncode == 0, single
    ddp = run_adapt(*args(tiny_bert_dir, text_data, "ddp", *unmerged, "--set", "training.per_device_train_batch_size=4",
                          "--backend", "ddp", "--set", "backend_params.nproc_per_node=2", "--set", "tracking.enabled=true"),
                    cwd=tmp_path, timeout=300)
    assert ddp.returncode == 0, ddp
    assert "effective batch size: 4 per device x 2 process(es) x 1 accumulation = 8" in ddp.stderr
    one, two = (load_file(tmp_path / run / "model" / "adapter.safetensors") for run in ("single", "ddp"))
    assert one.keys() == two.keys() and any("lora" in k for k in one)
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-5, worst  # same global batch, same data order: the same weights
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
              for run in ("single", "ddp")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5), losses  # losses are averaged, not summed over ranks

    run = tmp_path / "ddp"
    assert (run / "train.log").is_file() and (run / "train.rank1.log").is_file()
    assert "rank" not in "".join(p.name for p in run.glob("*.json*"))  # metrics and status written once, by rank 0
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    from mlflow.tracking import MlflowClient  # adapt-mlflow tracks from rank 0 only: one run, each step once

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("adapt").experiment_id])
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "loss")] == [1, 2, 3]
    evaluated = run_adapt("evaluate", "ddp", "--data", text_data["test"], cwd=tmp_path)  # one process
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(json.loads((run / "test_metrics.json").read_text())["test_loss"], abs=1e-4)


def test_two_nodes_meet_through_c10d_on_localhost(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    nodes = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "adapt", *args(tiny_bert_dir, text_data, "run", "--backend", "ddp",
                   "--set", "backend_params.num_nodes=2", "--set", f"backend_params.node_rank={rank}",
                   "--set", "backend_params.rdzv_backend=c10d", "--set", f"backend_params.rdzv_endpoint={endpoint}")]
        nodes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(2)  # node 0 checks and creates the run folder first
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    run = tmp_path / "run"
    assert "2 in all" in outputs[0][1]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "train.rank1.log").is_file() and (run / "model" / "adapt.json").is_file()


@pytest.mark.parametrize(("stage", "processes"), [(2, 1), (2, 2), (3, 1), (3, 2)])
def test_deepspeed_trains_and_saves_a_model_that_reloads(stage: int, processes: int, tiny_bert_dir, text_data,
                                                          tmp_path: Path) -> None:
    # the first use JIT-compiles DeepSpeed's shared-memory communication op: allow for it
    result = run_adapt(*args(tiny_bert_dir, text_data, "run", "--backend", "deepspeed",
                             "--set", f"backend_params.deepspeed_stage={stage}",
                             "--set", f"backend_params.nproc_per_node={processes}"), cwd=tmp_path, timeout=600)
    _trained_and_reloads(result, text_data, tmp_path, tolerance=1e-4)


def _trained_and_reloads(result, text_data: dict, tmp_path: Path, tolerance: float) -> None:
    """The sharded run finished, logged 3 sane losses, and saved full weights (gathered): its model
    evaluates in one process to the run's test loss, and no empty shard placeholder reached a file."""
    assert result.returncode == 0, result
    run = tmp_path / "run"
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses), losses
    trained = json.loads((run / "test_metrics.json").read_text())["test_loss"]
    evaluated = run_adapt("evaluate", "run", "--data", text_data["test"], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated
    assert evaluated.json()["test_loss"] == pytest.approx(trained, abs=tolerance)
    saved = load_file(run / "saved" / "safetensors" / "model.safetensors")
    assert all(t.numel() > 0 for t in saved.values())  # ZeRO-3's / FSDP's partitioned placeholders never reach a file


@pytest.mark.gpu  # FSDP for HF tasks needs CUDA GPUs (refused on the CPU)
def test_fsdp_trains_on_gpus_and_saves_a_model_that_reloads_on_one_process(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    processes = min(torch.cuda.device_count(), 2)
    result = run_adapt(*args(tiny_bert_dir, text_data, "run", "--backend", "fsdp",
                             "--set", f"backend_params.nproc_per_node={processes}"), cwd=tmp_path, timeout=600)
    _trained_and_reloads(result, text_data, tmp_path, tolerance=1e-3)


FAILS_ON_RANK_1 = '''
import os
from adapt import Method, ModelError, hookimpl

class FailOnRank1(Method):
    name = "fail_on_rank1"
    description = "Fails in the worker of rank 1."

    def apply(self, model, params, run):
        if os.environ.get("RANK") == "1":
            raise ModelError("rank 1 cannot adapt this model (test)")
        for p in model.parameters():
            p.requires_grad = True
        return model

@hookimpl
def adapt_register_methods(register):
    register(FailOnRank1())
'''


def test_a_failing_rank_stops_the_job_with_its_error(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    site = install_fake_plugin(tmp_path / "site", "adapt-fails", "adapt_fails", FAILS_ON_RANK_1)
    started = time.time()
    result = run_adapt(*args(tiny_bert_dir, text_data, "run", "--backend", "ddp", "--set", "backend_params.nproc_per_node=2",
                             method="fail_on_rank1"), cwd=tmp_path, env={"PYTHONPATH": str(site)}, timeout=300)
    assert result.returncode == 2, result
    assert "rank 1 cannot adapt this model (test)" in result.stderr
    assert "worker rank 1 failed (exit code 2) and the other workers were stopped" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.time() - started < 240  # stopped, not hung


@pytest.mark.parametrize(("extra", "message"), [
    pytest.param(["--backend", "fsdp"], "backend fsdp needs CUDA GPUs",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused on the CPU only")),
    (["--backend", "deepspeed", "--set", "training.auto_find_batch_size=true"], "auto_find_batch_size does not work with backend deepspeed"),
    (["--backend", "deepspeed", "--set", "backend_params.deepspeed_stage=3", "--method", "qlora"], "cannot be sharded by ZeRO-3"),
    (["--backend", "deepspeed", "--set", "backend_params.deepspeed=missing.json"], "backend_params.deepspeed: cannot read missing.json"),
    (["--backend", "ddp", "--set", "backend_params.node_rank=3"], "node_rank: 3 is not below num_nodes (1)"),
    (["--backend", "ddp", "--set", "backend_params.rdzv_backend=etcd"], "backend_params.rdzv_backend"),
])
def test_combinations_that_cannot_work_fail_before_any_worker(extra, message, tiny_bert_dir, text_data, tmp_path) -> None:
    result = run_adapt(*args(tiny_bert_dir, text_data, "run", *extra), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_azure_ml_launch_names_are_accepted(tiny_bert_dir, text_data, tmp_path: Path) -> None:

    run = resolved({"task": "text_classification", "backend": "ddp", "model": tiny_bert_dir,
                    "data": {"train": text_data["train"]},
                    "backend_params": {"number_of_gpu_to_use_finetuning": 4, "num_nodes_finetune": 2}})
    assert (run.backend_params.nproc_per_node, run.backend_params.num_nodes) == (4, 2)


def test_launch_settings_reach_torchrun_as_its_own_options() -> None:
    from adapt_backends.launch import LaunchParams, torchrun_args
    from torch.distributed.run import get_args_parser

    params = LaunchParams(nproc_per_node=3, num_nodes=2, node_rank=1, master_addr="10.0.0.1", master_port=1234,
                          shutdown_timeout=300)
    parsed = get_args_parser().parse_args(torchrun_args(params, "run.yaml"))
    assert (parsed.nproc_per_node, parsed.nnodes, parsed.node_rank) == ("3", "2", 1)
    assert (parsed.master_addr, parsed.master_port) == ("10.0.0.1", 1234)
    assert getattr(parsed, "shutdown_timeout", 300) == 300  # torchrun has the option from torch 2.12
    assert parsed.training_script_args[-2:] == ["--config", "run.yaml"] and parsed.max_restarts == 0
