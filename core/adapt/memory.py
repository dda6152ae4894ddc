"""Peak tensor memory of training steps: weights, gradients, optimizer state and activations alive
at once, recorded in the run's metrics as ``peak_tensor_memory_mib``. On a GPU what
``torch.cuda.max_memory_allocated`` reports over the whole run (free, always); on the CPU, which
keeps no such count, what torch's MemTracker sees over the first two training steps (the second
holds the optimizer state, so for a steady batch shape it is the run's peak), only when
``training.skip_memory_metrics`` is false: a traced step takes several times longer."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

log = logging.getLogger("adapt")


def _frozen_not_hooked() -> Any:
    """MemTracker hooks every parameter's gradient, which fails for frozen ones (they never get one)."""
    from torch.utils.weak import WeakIdKeyDictionary

    no_hook = SimpleNamespace(remove=lambda: None)

    class FrozenNotHooked(WeakIdKeyDictionary):
        def get(self, key: Any, default: Any = None) -> Any:
            return (no_hook, no_hook) if not key.requires_grad else super().get(key, default)

    return FrozenNotHooked()


def _quantization_constants(model: Any) -> list[Any]:
    """bitsandbytes keeps a 4-bit weight's scales in its quant_state (nested with double quantization)."""
    import torch

    constants = []
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        while state is not None:
            constants += [t for t in vars(state).values() if isinstance(t, torch.Tensor)]
            state = getattr(state, "state2", None)
    return constants


def peak_memory(run: Any, model: Any, optimizer: Any, traceable: bool = True) -> PeakTensorMemory | None:
    """The run's tracker, or None where nothing is measured: ``skip_memory_metrics`` true, or on
    the CPU unless it is false, in one process, where ``traceable`` (not through a strategy's engine)."""
    skip = run.training.skip_memory_metrics
    if skip is True:
        return None
    memory = PeakTensorMemory(model, getattr(optimizer, "optimizer", optimizer))  # accelerate wraps the optimizer
    if memory.cuda or (skip is False and traceable and run.world_size == 1 and optimizer is not None):
        return memory
    return None


class PeakTensorMemory:
    """Call ``before_step`` / ``after_step`` around each training step; ``mib`` is the peak (None
    when it could not be measured). ``steps``: how many CPU steps are traced (each costs more time
    than an untraced one); on a GPU every step counts, at no cost."""

    def __init__(self, model: Any, optimizer: Any, steps: int = 2) -> None:
        import torch

        self.model, self.optimizer, self.steps = model, optimizer, steps
        self.cuda = torch.cuda.is_available() and any(p.is_cuda for p in model.parameters())
        self.tracker: Any = None
        self.traced = 0
        self.peak_bytes: float | None = None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def before_step(self) -> None:
        if self.cuda or self.traced >= self.steps:
            return
        try:
            from torch.distributed._tools.mem_tracker import MemTracker

            if self.tracker is None:
                self.tracker = MemTracker()
                self.tracker._param_to_grad_hook_handles = _frozen_not_hooked()  # noqa: SLF001
                self.tracker.track_external(self.model, self.optimizer, *_quantization_constants(self.model))
            self.tracker.__enter__()
        except Exception as exc:  # noqa: BLE001 - a measurement never stops a run
            log.debug("peak tensor memory not measured: %s", exc)
            self.traced = self.steps
            self.tracker = None

    def after_step(self) -> None:
        import torch

        if self.cuda:
            self.peak_bytes = float(torch.cuda.max_memory_allocated())
            return
        if self.tracker is None or self.traced >= self.steps:
            return
        self.tracker.__exit__(None, None, None)
        self.tracker.reset_mod_stats()  # per-module stats only; the peak stays
        self.traced += 1
        peak = self.tracker.get_tracker_snapshot("peak")
        self.peak_bytes = float(sum(device["Total"] for device in peak.values()))

    @property
    def mib(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 2)
