"""DeepSpeed for the MMEngine tasks: MMEngine's FlexibleRunner with its DeepSpeedStrategy, made to
join the process group on the CPU too, and the run's training settings filled into the config."""

from __future__ import annotations

from typing import Any

from adapt_backends.launch import dist_backend

STRATEGY = "AdaptDeepSpeedStrategy"


def register() -> None:
    """Register the strategy with MMEngine (once). MMEngine's own init_dist selects a CUDA device,
    so it joins through deepspeed.init_distributed; and mmengine 0.10.7 registers DeepSpeed's
    one-bit optimizers from a module DeepSpeed 0.19 no longer has, which would fail every build."""
    import deepspeed
    import mmengine._strategy.deepspeed as mm_deepspeed
    import torch.distributed as dist
    from mmengine.registry import STRATEGIES

    if STRATEGY in STRATEGIES.module_dict:
        return
    mm_deepspeed.register_deepspeed_optimizers = lambda: []  # adapt builds torch optimizers only

    @STRATEGIES.register_module(name=STRATEGY)
    class AdaptDeepSpeedStrategy(mm_deepspeed.DeepSpeedStrategy):
        def _setup_distributed(self, launcher: str | None = None, backend: str = "nccl", **kwargs: Any) -> None:
            if not dist.is_initialized():
                deepspeed.init_distributed(dist_backend=backend)


def settings(config: dict[str, Any], run: Any) -> dict[str, Any]:
    """FlexibleRunner arguments: the strategy with ``config`` (HF-style "auto" values filled from
    the training section), joined through torchrun's environment."""
    import torch

    register()
    t, world = run.training, run.world_size
    filled = {k: v for k, v in config.items() if k not in ("optimizer", "scheduler")}  # MMEngine builds both
    autos = {"train_micro_batch_size_per_gpu": t.per_device_train_batch_size,
             "gradient_accumulation_steps": t.gradient_accumulation_steps,
             "train_batch_size": t.per_device_train_batch_size * t.gradient_accumulation_steps * world,
             "gradient_clipping": t.max_grad_norm}
    for key, value in autos.items():
        if filled.get(key, "auto") == "auto":
            filled[key] = value
    half = {"bf16": t.precision == "bf16", "fp16": t.precision == "16" and torch.cuda.is_available()}
    for key, enabled in half.items():
        if isinstance(filled.get(key), dict) and filled[key].get("enabled") == "auto":
            filled[key] = {**filled[key], "enabled": enabled}
    backend = dist_backend(run.backend_params)
    return {"launcher": "pytorch", "env_cfg": {"dist_cfg": {"backend": backend}},
            "strategy": {"type": STRATEGY, "config": filled}}
