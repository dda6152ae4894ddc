"""adapt-backends on this CPU machine (gloo): DDP matches one process, an emitted sbatch script
trains across two "nodes" meeting through c10d, an emitted PyTorchJob is one the operator accepts, DeepSpeed ZeRO-2 / ZeRO-3 train and save reloadable models, a failing rank stops the job,
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


FAKE_SRUN = """#!/bin/bash
# srun as SLURM runs a job's step: the command (bash -c's last argument) once per node, SLURM_NODEID set
command="${@: -1}"
pids=()
for ((id = 0; id < SLURM_NNODES; id++)); do
  SLURM_NODEID=$id bash -c "$command" & pids+=($!)
  sleep 2  # node 0 checks and creates the run folder first
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def test_an_emitted_sbatch_script_trains_one_run_across_two_nodes(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    """adapt launch --emit slurm, then the script itself with srun / scontrol standing in for SLURM's:
    two "nodes" (two adapt train processes, SLURM_NODEID 0 and 1) meet through c10d on localhost."""
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "task": "text_classification", "method": "lora", "backend": "ddp", "model": {"path": tiny_bert_dir},
        "data": {"train": text_data["train"], "test": text_data["test"]}, "output": "run",
        "backend_params": {"num_nodes": 2},
        "training": {"max_steps": 3, "learning_rate": 1e-2, "logging_steps": 1, "group_by_length": False,
                     "per_device_eval_batch_size": 8}}))
    script = tmp_path / "job.sbatch"
    emitted = run_adapt("launch", "--emit", "slurm", "--config", str(config), "-o", str(script), "--gpus-per-node", "0",
                        *QUIET, "--partition", "cpu", "--time", "00:20:00")
    assert emitted.returncode == 0, emitted.stderr
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=cpu", "#SBATCH --time=00:20:00",
                 'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1'):
        assert line in text, line
    assert "#SBATCH --gpus-per-node" not in text  # CPU nodes ask for no GPU
    assert "backend_params.rdzv_backend=c10d" in text and "backend_params.node_rank=$SLURM_NODEID" in text
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_SRUN)
    (fake / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "SLURM_JOB_ID": "4242",
           "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[0-1]", "SLURM_SUBMIT_DIR": str(tmp_path),
           "MASTER_PORT": str(free_port()), "ADAPT": f"{sys.executable} -m adapt"}
    job = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    run = tmp_path / "run"
    assert "2 in all" in job.stderr and "c10d rendezvous" in job.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert (run / "train.rank1.log").is_file() and (run / "model" / "adapt.json").is_file()
    assert (tmp_path / "adapt-text-classification-lora-4242.yaml").is_file()  # the config the nodes read


def test_an_emitted_pytorchjob_is_valid_for_the_training_operator(tiny_bert_dir, text_data, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"task": "text_classification", "method": "lora", "backend": "deepspeed",
                                  "model": {"path": "/workspace/models/bert"}, "data": {"train": "data/train.jsonl"},
                                  "backend_params": {"num_nodes": 3, "nproc_per_node": 4}}))
    emitted = run_adapt("launch", "--emit", "kubernetes", "--config", str(config), "--image", "registry.local/adapt:1",
                        "--namespace", "ml", "--claim", "shared", "--memory", "64Gi", "--set", "output=runs/k8s")
    assert emitted.returncode == 0, emitted.stderr
    config_map, job = list(yaml.safe_load_all(emitted.stdout))
    assert config_map["kind"] == "ConfigMap" and job["kind"] == "PyTorchJob"
    embedded = yaml.safe_load(config_map["data"]["run.yaml"])
    assert (embedded["backend"], embedded["output"], embedded["backend_params"]["nproc_per_node"]) == ("deepspeed", "runs/k8s", 4)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"], job["spec"]["nprocPerNode"]) == (1, 2, "4")
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 4, "memory": "64Gi"}
    assert "backend_params.num_nodes=3" in container["args"][0] and "${PET_NODE_RANK:-$RANK}" in container["args"][0]
    kubeflow = pytest.importorskip("kubeflow.training.api_client")

    class Response:
        data = json.dumps(job)

    parsed = kubeflow.ApiClient().deserialize(Response(), "KubeflowOrgV1PyTorchJob")  # the operator's own models
    assert parsed.spec.pytorch_replica_specs["Worker"].template.spec.containers[0].image == "registry.local/adapt:1"
    assert parsed.spec.pytorch_replica_specs["Master"].template.spec.volumes[1].persistent_volume_claim.claim_name == "shared"


@pytest.mark.parametrize(("extra", "message"), [
    (["--emit", "slurm", "--set", "backend=single"], "backend single runs one process"),
    (["--emit", "kubernetes"], "--image: kubernetes needs the container image"),
    (["--emit", "pbs"], "--emit: 'pbs' is not slurm or kubernetes"),
])
def test_launch_refuses_what_cannot_run_on_a_cluster(extra, message, tiny_bert_dir, text_data, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"task": "text_classification", "backend": "ddp", "model": {"path": tiny_bert_dir},
                                  "data": {"train": text_data["train"]}}))
    result = run_adapt("launch", "--config", str(config), *extra)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


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
