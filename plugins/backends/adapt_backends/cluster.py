"""``adapt launch --emit slurm|kubernetes``: a run config as a cluster job. Each node runs the same
``adapt train`` a single machine would, with the ddp / fsdp / deepspeed backend's torchrun meeting
the other nodes through a c10d rendezvous on the first node:

- slurm: an sbatch script; one ``srun`` task per node, node 0 the rendezvous host;
- kubernetes: a Kubeflow Training Operator ``PyTorchJob`` (a master and num_nodes - 1 workers,
  each pod one node) and the ``ConfigMap`` holding the run config.

The config is embedded resolved (every default filled, the run folder fixed), so every node runs
exactly the same run; its paths (data, model, output) are read on the nodes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from adapt import ConfigError, run_from_config

from adapt_backends.launch import MULTI_NODE_PORT

DISTRIBUTED = ("ddp", "fsdp", "deepspeed")


def node_command(config: str, nodes: str, node_rank: str, endpoint: str, job_id: str, adapt: str = "adapt") -> str:
    """One node's ``adapt train`` (shell words; the arguments may be shell variables)."""
    sets = {"backend_params.num_nodes": nodes, "backend_params.node_rank": node_rank,
            "backend_params.rdzv_backend": "c10d", "backend_params.rdzv_endpoint": endpoint,
            "backend_params.rdzv_id": job_id}
    return f'{adapt} train --config "{config}" ' + " ".join(f'--set "{k}={v}"' for k, v in sets.items())


def _job_name(run: Any) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"adapt-{run.task.name}-{run.method.name}".lower()).strip("-")[:52]


def _checked(run: Any) -> dict[str, Any]:
    if run.backend.name not in DISTRIBUTED:
        raise ConfigError(f"adapt launch: backend {run.backend.name} runs one process on one machine; choose "
                          f"{', '.join(DISTRIBUTED)} (--set backend=ddp) and backend_params.num_nodes")
    config = run.resolved_dict(chosen=False)
    config["output"] = str(run.output_dir)  # fixed now: every node writes the same run folder
    return config


def slurm_script(run: Any, partition: str | None, time_limit: str, gpus_per_node: int | None,
                 cpus_per_task: int) -> str:
    """An sbatch script for ``run``: resources, the config written next to the script's submit
    folder (shared by the nodes), and one srun task per node."""
    config = _checked(run)
    p = run.backend_params
    gpus = p.nproc_per_node if gpus_per_node is None else gpus_per_node
    name = _job_name(run)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --nodes={p.num_nodes}",
             "#SBATCH --ntasks-per-node=1", f"#SBATCH --cpus-per-task={cpus_per_task}", f"#SBATCH --time={time_limit}",
             f"#SBATCH --output={name}-%j.log"]
    if gpus:
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        f"# adapt launch --emit slurm: task {run.task.name}, method {run.method.name}, backend {run.backend.name}, "
        f"{p.num_nodes} node(s) x {p.nproc_per_node} process(es); run folder {run.output_dir}",
        "# Submit from a folder every node sees (the run folder and this config must be shared): sbatch THIS_FILE",
        "set -euo pipefail",
        'export ADAPT_CONFIG="${ADAPT_CONFIG:-${SLURM_SUBMIT_DIR:-$PWD}/' + name + '-${SLURM_JOB_ID}.yaml}"',
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export MASTER_PORT="${{MASTER_PORT:-{p.master_port or MULTI_NODE_PORT}}}"',
        'export ADAPT="${ADAPT:-adapt}"  # the adapt command on the nodes (e.g. a venv\'s bin/adapt)',
        "cat > \"$ADAPT_CONFIG\" <<'ADAPT_RUN_CONFIG'",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "ADAPT_RUN_CONFIG",
        "# one node's command: srun runs it once per node, SLURM_NODEID being the node's rank (node 0 hosts the rendezvous)",
        "NODE_COMMAND=" + shlex.quote(node_command("$ADAPT_CONFIG", "$SLURM_NNODES", "$SLURM_NODEID",
                                                   "$MASTER_ADDR:$MASTER_PORT", "$SLURM_JOB_ID", "$ADAPT")),
        'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "$NODE_COMMAND"',
    ]
    return "\n".join(lines) + "\n"


def kubernetes_manifest(run: Any, image: str, namespace: str, claim: str, gpus_per_node: int | None,
                        cpus: str | None, memory: str | None) -> str:
    """A PyTorchJob (Kubeflow Training Operator v1) and the ConfigMap of its run config: a master
    pod and num_nodes - 1 worker pods, each one node running ``adapt train``; the volume claim
    mounted at /workspace (the working folder: data, model and run folder paths resolve there)."""
    config = _checked(run)
    p = run.backend_params
    gpus = p.nproc_per_node if gpus_per_node is None else gpus_per_node
    name = _job_name(run)
    limits: dict[str, Any] = {**({"nvidia.com/gpu": gpus} if gpus else {}), **({"cpu": cpus} if cpus else {}),
                              **({"memory": memory} if memory else {})}
    # the operator sets MASTER_ADDR / MASTER_PORT (the master pod's service) and each pod's node rank
    command = node_command("/etc/adapt/run.yaml", str(p.num_nodes), "${PET_NODE_RANK:-$RANK}",
                           "$MASTER_ADDR:$MASTER_PORT", name)

    def replica(count: int) -> dict[str, Any]:
        container = {"name": "pytorch", "image": image, "workingDir": "/workspace", "command": ["/bin/sh", "-c"],
                     "args": [f"exec {command}"],
                     "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/adapt", "readOnly": True},
                                      {"name": "workspace", "mountPath": "/workspace"},
                                      {"name": "shm", "mountPath": "/dev/shm"}],
                     **({"resources": {"limits": limits}} if limits else {})}
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": {
            "containers": [container],
            "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}},
                        {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}},
                        {"name": "shm", "emptyDir": {"medium": "Memory"}}]}}}

    specs = {"Master": replica(1), **({"Worker": replica(p.num_nodes - 1)} if p.num_nodes > 1 else {})}
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name, "namespace": namespace},
           "spec": {"nprocPerNode": str(p.nproc_per_node), "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 0},
                    "pytorchReplicaSpecs": specs}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config", "namespace": namespace},
                  "data": {"run.yaml": yaml.safe_dump(config, sort_keys=False)}}
    head = (f"# adapt launch --emit kubernetes: task {run.task.name}, method {run.method.name}, backend "
            f"{run.backend.name}, {p.num_nodes} node(s) x {p.nproc_per_node} process(es)\n"
            f"# needs the Kubeflow Training Operator and the claim {claim} (ReadWriteMany: every pod writes there);"
            " kubectl apply -f THIS_FILE\n")
    return head + yaml.safe_dump_all([config_map, job], sort_keys=False)


def launch_command(
    emit: Annotated[str, typer.Option("--emit", help="slurm (an sbatch script) or kubernetes (a PyTorchJob manifest).")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config YAML (backend ddp, fsdp or deepspeed).")],
    set_: Annotated[list[str], typer.Option("--set", help="Override any config key (repeatable).")] = [],  # noqa: B006 - typer reads the defaults
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it to this file (default: stdout).")] = None,
    gpus_per_node: Annotated[int | None, typer.Option("--gpus-per-node", help="GPUs each node asks for "
                                                      "(default: backend_params.nproc_per_node; 0 on CPU nodes).")] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="slurm: the partition.")] = None,
    time_limit: Annotated[str, typer.Option("--time", help="slurm: the job's time limit.")] = "24:00:00",
    cpus_per_task: Annotated[int, typer.Option("--cpus-per-task", help="slurm: CPUs per node's task.")] = 8,
    image: Annotated[str | None, typer.Option("--image", help="kubernetes: the container image with adapt and its "
                                              "packs installed (required).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="kubernetes: the namespace.")] = "default",
    claim: Annotated[str, typer.Option("--claim", help="kubernetes: the PersistentVolumeClaim mounted at /workspace "
                                       "(data, models, run folders).")] = "adapt-workspace",
    cpus: Annotated[str | None, typer.Option("--cpus", help="kubernetes: CPU limit per pod (e.g. 8).")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="kubernetes: memory limit per pod (e.g. 64Gi).")] = None,
) -> None:
    """Write a cluster job for a run config: a SLURM sbatch script or a Kubernetes PyTorchJob."""
    if emit not in ("slurm", "kubernetes"):
        raise ConfigError(f"--emit: {emit!r} is not slurm or kubernetes")
    if gpus_per_node is not None and gpus_per_node < 0:
        raise ConfigError(f"--gpus-per-node: {gpus_per_node} is negative")
    if output is not None and output.is_dir():
        raise ConfigError(f"--output: {output} is a folder; give a file name")
    run = run_from_config(config, set_, purpose="validate")
    if emit == "slurm":
        text = slurm_script(run, partition, time_limit, gpus_per_node, cpus_per_task)
    else:
        if not image:
            raise ConfigError("--image: kubernetes needs the container image the pods run (with adapt installed)")
        text = kubernetes_manifest(run, image, namespace, claim, gpus_per_node, cpus, memory)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    if emit == "slurm":
        output.chmod(0o755)
    typer.echo(f"wrote {output} ({'sbatch ' if emit == 'slurm' else 'kubectl apply -f '}{output})", err=True)
