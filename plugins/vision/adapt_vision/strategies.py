"""DeepSpeed and FSDP for the MMEngine tasks: MMEngine's FlexibleRunner with its DeepSpeedStrategy
or FSDPStrategy, in the process group the engine joined (on the CPU too), with the settings a
backend hands over (:class:`adapt.Parallel`). They live beside the engine that runs them (they
need mmengine, and deepspeed where the DeepSpeed strategy is used: adapt-vision[deepspeed]);
adapt-backends launches the workers and knows nothing of MMEngine."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adapt import ConfigError, FSDPOptions, Parallel

log = logging.getLogger("adapt")
DEEPSPEED, FSDP = "AdaptDeepSpeedStrategy", "AdaptFSDPStrategy"
ROOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its FSDP root wrapper (for gathering)


def _joined(self: Any, launcher: str | None = None, backend: str = "nccl", **kwargs: Any) -> None:
    """Both strategies' process-group setup: adapt's MMEngine engine has already joined the group
    torchrun set up (MMEngine's own init_dist would select a CUDA device, failing on a CPU)."""


def _sync_buffers_like_ddp(wrapped: Any) -> None:
    """FSDP leaves buffers (BatchNorm's running statistics) to each rank, so each rank's drift with
    its own batches and the evaluation's predictions depend on the rank. DDP broadcasts rank 0's
    buffers before every training forward: do the same, so fsdp trains and evaluates as ddp does."""
    import torch
    import torch.distributed as dist
    from torch.distributed.utils import _sync_params_and_buffers

    if dist.get_world_size() == 1 or next(wrapped.buffers(), None) is None:
        return
    group = dist.distributed_c10d._get_default_group()

    def before_forward(module: Any, _args: Any) -> None:
        if module.training and torch.is_grad_enabled():
            # read each time: FSDP's mixed precision may replace buffers by cast copies; DDP's default bucket size
            _sync_params_and_buffers(group, [b.detach() for b in module.buffers()], 250 * 2**20, 0)

    wrapped.register_forward_pre_hook(before_forward)


def register() -> None:
    """Register both strategies with MMEngine (once). mmengine 0.10.7 registers DeepSpeed's
    one-bit optimizers from a module DeepSpeed 0.19 no longer has, which would fail every
    DeepSpeed build: adapt builds torch optimizers only, so that step is skipped."""
    import mmengine._strategy.deepspeed as mm_deepspeed
    import torch
    from mmengine._strategy.fsdp import FSDPStrategy
    from mmengine.registry import STRATEGIES
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullyShardedDataParallel

    if DEEPSPEED in STRATEGIES.module_dict:
        return
    mm_deepspeed.register_deepspeed_optimizers = lambda: []

    @STRATEGIES.register_module(name=DEEPSPEED)
    class AdaptDeepSpeedStrategy(mm_deepspeed.DeepSpeedStrategy):
        _setup_distributed = _joined  # deepspeed.initialize wraps the joined group

        def load_checkpoint(self, filename: str, **kwargs: Any) -> dict:
            if os.path.isfile(filename):  # a weights-only save (the best checkpoint under ZeRO-2), not a folder
                from mmengine.runner.checkpoint import load_checkpoint

                return load_checkpoint(self.model.module, filename, map_location="cpu", logger="silent")
            return super().load_checkpoint(filename, **kwargs)

    @STRATEGIES.register_module(name=FSDP)
    class AdaptFSDPStrategy(FSDPStrategy):
        _setup_distributed = _joined

        def _wrap_model(self, model: Any) -> Any:
            if not torch.cuda.is_available():  # MMEngine passes the local rank as a CUDA device id; torch syncs
                # module states on GPUs only (every rank loads the same weights here anyway)
                self.model_wrapper = {**(self.model_wrapper or {"type": "MMFullyShardedDataParallel"}),
                                      "device_id": torch.device("cpu"), "sync_module_states": False}
            total = sum(p.numel() for p in model.parameters())
            wrapped = super()._wrap_model(model)
            ROOTS[model] = wrapped
            _sync_buffers_like_ddp(wrapped)
            held = sum(p.numel() for p in wrapped.parameters())  # this rank's shards (use_orig_params: views)
            log.info("fsdp: %d FSDP unit(s); this rank holds %s of %s parameters",
                     len(FullyShardedDataParallel.fsdp_modules(wrapped)), f"{held:,}", f"{total:,}")
            return wrapped

        def _init_state_dict_cfg(self, state_dict_cfg: Any) -> None:
            super()._init_state_dict_cfg(state_dict_cfg)
            if not torch.cuda.is_available() and isinstance(self.optim_state_dict_config, FullOptimStateDictConfig):
                # torch 2.14 gathers every optimizer state (exp_avg, exp_avg_sq...) of a unit into one reused
                # buffer and copies it out only by offloading to the CPU, a no-op for CPU tensors: the saved
                # exp_avg would be exp_avg_sq. Without offloading the gathered states are cloned.
                self.optim_state_dict_config = FullOptimStateDictConfig(
                    rank0_only=self.optim_state_dict_config.rank0_only, offload_to_cpu=False)

        def load_optim_state_dict(self, state_dict: dict) -> None:
            # mmengine 0.10.7 passes the arguments in the order of an older torch (state dict first)
            self.optim_wrapper.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(
                self.model, self.optim_wrapper.optimizer, state_dict))

        def build_optim_wrapper(self, optim_wrapper: Any, model: Any = None) -> Any:
            built = super().build_optim_wrapper(optim_wrapper, model)
            if getattr(built, "clip_grad_kwargs", None):  # the norm of the whole gradient, not of this rank's shard
                built.clip_func = lambda params, **kwargs: self.model.clip_grad_norm_(**kwargs)  # noqa: ARG005
            return built


def _runner_args(parallel: Parallel, strategy: dict[str, Any]) -> dict[str, Any]:
    register()
    return {"launcher": "pytorch", "env_cfg": {"dist_cfg": {"backend": parallel.dist_backend}}, "strategy": strategy}


def deepspeed_settings(parallel: Parallel, run: Any, optimizer: dict[str, Any]) -> dict[str, Any]:
    """FlexibleRunner arguments for DeepSpeed: the backend's config with its HF-style "auto" values
    filled from the training section, its optimizer and scheduler sections dropped (MMEngine
    builds both), and DeepSpeed's optimizer wrapper (it owns the step, clipping, accumulation)."""
    import torch

    t, world = run.training, run.world_size
    filled = {k: v for k, v in parallel.deepspeed_config.items() if k not in ("optimizer", "scheduler")}
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
    return {**_runner_args(parallel, {"type": DEEPSPEED, "config": filled}),
            "optim_wrapper": {"type": "DeepSpeedOptimWrapper", "optimizer": optimizer}}


def check_fsdp(p: FSDPOptions, task: str) -> None:
    """Refuse, before any worker starts, the FSDP settings MMEngine tasks cannot use."""
    if p.auto_wrap_policy == "SIZE_BASED_WRAP" or p.transformer_layer_cls_to_wrap:
        # OpenMMLab models call their parts through methods other than forward (a head's loss(),
        # predict()), which an FSDP unit does not gather for; and saving nested units needs collectives
        field = "auto_wrap_policy" if p.auto_wrap_policy == "SIZE_BASED_WRAP" else "transformer_layer_cls_to_wrap"
        raise ConfigError(f"backend_params.{field}: MMEngine tasks ({task}) are sharded as one FSDP unit "
                          "(OpenMMLab models call their heads through loss() / predict(), which nested units do "
                          "not gather for); leave auto_wrap_policy at TRANSFORMER_BASED_WRAP without layer "
                          "classes, or NO_WRAP")
    if p.state_dict_type != "FULL_STATE_DICT":
        raise ConfigError("backend_params.state_dict_type: MMEngine tasks save full state dicts (rank 0 writes "
                          "them; resume and the best checkpoint read them): use FULL_STATE_DICT")
    if p.cpu_ram_efficient_loading:
        raise ConfigError("backend_params.cpu_ram_efficient_loading: MMEngine tasks load the pretrained weights on "
                          "every rank (one FSDP unit); set it to false")
    if not p.use_orig_params:
        raise ConfigError("backend_params.use_orig_params: MMEngine tasks need true (adapt's methods train part "
                          "of the model, and adapt reads and saves the original parameters)")


def fsdp_settings(parallel: Parallel) -> dict[str, Any]:
    """FlexibleRunner arguments for FSDP: torch's FullyShardedDataParallel (FSDP1, so the backend's
    FSDP1 parameters apply) through MMEngine's wrapper, the whole model one unit."""
    p = parallel.fsdp
    wrapper: dict[str, Any] = {"type": "MMFullyShardedDataParallel", "sharding_strategy": p.sharding_strategy,
                               "cpu_offload": p.offload_params, "backward_prefetch": p.backward_prefetch,
                               "forward_prefetch": p.forward_prefetch, "sync_module_states": p.sync_module_states,
                               "use_orig_params": p.use_orig_params}
    if p.mixed_precision != "no":
        wrapper["mixed_precision"] = {"param_dtype": p.mixed_precision, "reduce_dtype": p.mixed_precision,
                                      "buffer_dtype": p.mixed_precision}
    return _runner_args(parallel, {"type": FSDP, "model_wrapper": wrapper, "state_dict_cfg": "full"})


@contextmanager
def unsharded(model: Any) -> Iterator[None]:
    """The FSDP1 root wrapper's full parameters, summoned on every rank for saving."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    with FSDP1.summon_full_params(ROOTS[model], writeback=False):
        for param in model.parameters():  # own storage: views of one flat buffer cannot be saved as safetensors
            param.data = param.data.clone()
        yield  # FSDP points the parameters back at their shards on leaving
