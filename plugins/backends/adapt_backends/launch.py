"""Relaunching a run under torchrun (``torch.distributed.run``, in this process): the parent
checks the run folder, writes the resolved config, and starts the workers, which run ``adapt
train --config <output>/config.yaml`` with RANK / WORLD_SIZE set by torchrun. torchrun's agent
watches them: when one fails, the others are stopped and the parent exits with its error."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from adapt import AdaptError, ConfigError, Params, RunInterrupted
from pydantic import AliasChoices, Field

log = logging.getLogger("adapt")
MULTI_NODE_PORT = 29500  # node 0's port when several nodes meet and none is given (torchrun's default)


class LaunchParams(Params):
    """Where the workers run (torchrun's options; Azure ML names accepted as aliases)."""

    nproc_per_node: int = Field(1, ge=1, validation_alias=AliasChoices("nproc_per_node", "number_of_gpu_to_use_finetuning"),
                                description="Worker processes per node (one per GPU; on CPU, any number). "
                                            "Spec name: number_of_gpu_to_use_finetuning.")
    num_nodes: int = Field(1, ge=1, validation_alias=AliasChoices("num_nodes", "num_nodes_finetune"),
                           description="Nodes (machines) taking part. Spec name: num_nodes_finetune.")
    node_rank: int = Field(0, ge=0, description="This node's rank, 0 .. num_nodes-1 (static: its place; c10d: node 0 checks the run folder).")
    master_addr: str = Field("127.0.0.1", description="Address of node 0 (static rendezvous).")
    master_port: int | None = Field(None, ge=1, le=65535, description="Port on node 0 (None: a free port on one node, 29500 on several).")
    rdzv_backend: str = Field("static", pattern="^(static|c10d)$", description="static (master_addr / node_rank) or c10d (rdzv_endpoint; ranks assigned on arrival).")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous (default master_addr:master_port).")
    rdzv_id: str = Field("adapt", coerce_numbers_to_str=True, description="Job id shared by every node of one c10d rendezvous.")
    dist_backend: str | None = Field(None, pattern="^(nccl|gloo)$", description="Communication backend (None: nccl on GPUs, gloo on CPU).")
    shutdown_timeout: int = Field(120, ge=1, description="Seconds the workers get, after a stop signal (SIGTERM, Ctrl-C), to save "
                                  "their checkpoint before torchrun kills them (torchrun's --shutdown-timeout, torch >= 2.12; its own default, and "
                                  "before 2.12 its fixed time, is 30).")


def _torchrun_has(option: str) -> bool:
    from torch.distributed.run import get_args_parser

    return any(option in action.option_strings for action in get_args_parser()._actions)


def torchrun_args(p: LaunchParams, config_path: str) -> list[str]:
    from torch.distributed.elastic.utils.distributed import get_free_port

    port = p.master_port or (get_free_port() if p.num_nodes == 1 else MULTI_NODE_PORT)
    args = ["--nproc_per_node", str(p.nproc_per_node), "--nnodes", str(p.num_nodes), "--max_restarts", "0",
            "--rdzv_backend", p.rdzv_backend]
    if _torchrun_has("--shutdown-timeout"):  # torch >= 2.12; before, workers get torchrun's fixed 30 s
        args += ["--shutdown-timeout", str(p.shutdown_timeout)]
    elif p.shutdown_timeout != LaunchParams.model_fields["shutdown_timeout"].default:
        log.warning("backend_params.shutdown_timeout: this torch's torchrun has no --shutdown-timeout (torch 2.12 "
                    "added it); workers get its fixed 30 s to save after a stop signal")
    if p.rdzv_backend == "static":
        if p.node_rank >= p.num_nodes:
            raise ConfigError(f"backend_params.node_rank: {p.node_rank} is not below num_nodes ({p.num_nodes})")
        args += ["--node_rank", str(p.node_rank), "--master_addr", p.master_addr, "--master_port", str(port)]
    else:
        args += ["--rdzv_endpoint", p.rdzv_endpoint or f"{p.master_addr}:{port}", "--rdzv_id", p.rdzv_id]
    return args + ["--module", "adapt", "train", "--config", config_path]


@contextmanager
def _workers_print_to_stderr() -> Iterator[None]:
    """Workers inherit stderr as their stdout: the launching command alone prints the result
    (rank 0's `adapt train` would print it too)."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def relaunch(run: Any, params: LaunchParams) -> dict[str, Any]:
    """Start the workers under torchrun and wait for them; return rank 0's metrics."""
    import json

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    config_path = run.output_dir / f".launch-config.node{params.node_rank}.yaml"
    arguments = torchrun_args(params, str(config_path))  # checks the launch settings first
    first_node = params.node_rank == 0  # the node that checks the run folder (set node_rank under c10d too)
    if first_node:
        run.check_output()
    fresh = run.is_new_folder()
    run.output_dir.mkdir(parents=True, exist_ok=True)
    # the training values nobody set are chosen again in each worker, as here (run.defaults, min_steps)
    config_path.write_text(yaml.safe_dump(run.resolved_dict(chosen=False), sort_keys=False), encoding="utf-8")
    world = params.nproc_per_node * params.num_nodes
    log.info("%s: starting %d worker process(es) on this node, %d in all (torchrun, %s rendezvous)",
             run.backend.name, params.nproc_per_node, world, params.rdzv_backend)
    workers = run.launch_environment(fresh)
    os.environ.update(workers)
    started = time.time()
    try:
        with _workers_print_to_stderr():
            torchrun(get_args_parser().parse_args(arguments))
    except SignalException as exc:  # torchrun passed the signal on and waited (shutdown_timeout) for the workers to save
        raise RunInterrupted(f"stopped by {signal.Signals(exc.sigval).name}; the last checkpoint is in "
                             f"{run.path('checkpoints')}; continue with --set training.resume_from_checkpoint=true") from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        if code in (130, -2, -15):
            raise RunInterrupted(f"worker rank {rank} was interrupted; continue with "
                                 "--set training.resume_from_checkpoint=true") from None
        log_name = "train.log" if rank == 0 else f"train.rank{rank}.log"
        error = AdaptError(f"worker rank {rank} failed (exit code {code}) and the other workers were stopped; "
                           f"its error is above and in {run.path(log_name)}")
        error.exit_code = 2 if code == 2 else 1
        if fresh and code == 2 and first_node and not run.has_checkpoint():
            import shutil

            shutil.rmtree(run.output_dir, ignore_errors=True)  # bad input: leave nothing behind
        else:
            run.write_status("failed", failed_rank=rank, finished=time.time())
        raise error from None
    finally:
        for name in workers:
            os.environ.pop(name, None)
        config_path.unlink(missing_ok=True)
    log.info("%s: workers finished in %.1f s", run.backend.name, time.time() - started)
    metrics = run.path("metrics.json")
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def dist_backend(params: LaunchParams) -> str:
    import torch

    return params.dist_backend or ("nccl" if torch.cuda.is_available() else "gloo")
