"""What every engine does the same way around its own training loop: the splits it reads, the
stop on SIGTERM / Ctrl-C, and the end of a run (test metrics, saving, metrics.json, curves)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adapt.api import LoadedModel
from adapt.errors import RunInterrupted
from adapt.run import Run, write_json, write_status

log = logging.getLogger("adapt")


def data_splits(run: Run) -> dict[str, str]:
    """The run's data files by split: train, and validation / test where given."""
    data = run.config.data
    return {k: v for k, v in (("train", data.train), ("validation", data.validation), ("test", data.test)) if v}


def log_effective_batch(run: Run, per_device: int, accumulation: int) -> None:
    log.info("effective batch size: %d per device x %d process(es) x %d accumulation = %d",
             per_device, run.world_size, accumulation, per_device * run.world_size * accumulation)


@contextmanager
def stop_on_signals(target: Any) -> Iterator[None]:
    """While training: SIGTERM / Ctrl-C set ``target.stop_requested`` to the signal's name (the
    engine's callback then saves a checkpoint and stops); the previous handlers come back after."""

    def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
        target.stop_requested = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint and stopping", target.stop_requested)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_everywhere(target: Any) -> None:
    """In a distributed run, a stop asked of any worker becomes every worker's at the same step:
    saving is collective under DeepSpeed, and a worker stopping alone would leave the others
    waiting for it. Called after each step (one one-number all-reduce)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([signal.Signals[target.stop_requested] if target.stop_requested else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and not target.stop_requested:
        target.stop_requested = signal.Signals(int(flag.item())).name


def raise_if_interrupted(run: Run, stop_requested: str | None) -> None:
    """After training: a stop that a signal asked for is recorded and reported, with how to resume."""
    if stop_requested:
        write_status(run, "interrupted", signal=stop_requested)
        raise RunInterrupted(f"stopped by {stop_requested}; the last checkpoint is in {run.path('checkpoints')}; "
                             "continue with --set training.resume_from_checkpoint=true")


def finish(run: Run, loaded: LoadedModel, model: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Record the test metrics, save the model (every worker inside the backend's gather, rank 0
    writing), then metrics.json and the curves. Evaluate before calling: merging changes rank 0's model."""
    from adapt.report import plot_curves
    from adapt.saving import save_outputs

    if "test" in metrics and run.is_main_process:
        write_json(run.path("test_metrics.json"), metrics["test"])
    loaded.model = model
    with run.backend.gather_weights(model, run):
        if run.is_main_process:
            save_outputs(run, loaded)
    if run.is_main_process:
        write_json(run.path("metrics.json"), metrics)
        plot_curves(run.path("metrics.jsonl"), run.path("curves.png"))
    return metrics
