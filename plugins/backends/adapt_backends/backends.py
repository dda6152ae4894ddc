"""The three backends. Each relaunches the run under torchrun (:mod:`adapt_backends.launch`),
then, in the workers, tells the engine what it needs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from adapt import Backend, ConfigError
from pydantic import Field

from adapt_backends.launch import LaunchParams, hf_ddp_settings, mmengine_ddp_settings, relaunch


class _Launched(Backend):
    Params = LaunchParams
    engines: tuple[str, ...] = ("hf",)  # the engines this backend can drive

    def launch(self, run_in_worker: Callable[[], Any], run: Any) -> Any:
        if run.launched:
            return run_in_worker()
        self._check_engine(run.task.engine, run)
        self.check(run)
        from adapt.run import setup_logging

        setup_logging()
        return relaunch(run, run.backend_params)

    def check(self, run: Any) -> None:
        """Refuse, before starting any worker, what cannot work with this backend."""

    def _check_engine(self, engine: str, run: Any) -> None:
        if engine not in self.engines:
            raise ConfigError(f"backend {self.name} does not drive the {engine} engine of task {run.task.name} yet "
                              "(MMEngine tasks: use backend ddp, deepspeed or fsdp)")

    def engine_settings(self, engine: str, run: Any) -> dict[str, Any]:
        self._check_engine(engine, run)
        return hf_ddp_settings(run.backend_params)


class DDPParams(LaunchParams):
    find_unused_parameters: bool = Field(False, description="Let DDP tolerate parameters that get no gradient in a step (slower).")


class DDPBackend(_Launched):
    name = "ddp"
    description = "Distributed data parallel: one full copy of the model per process, gradients averaged (torchrun)."
    Params = DDPParams
    engines = ("hf", "mmengine")

    def engine_settings(self, engine: str, run: Any) -> dict[str, Any]:
        if engine == "mmengine":
            return mmengine_ddp_settings(run.backend_params, run.backend_params.find_unused_parameters)
        settings = super().engine_settings(engine, run)
        settings["ddp_find_unused_parameters"] = run.backend_params.find_unused_parameters
        return settings


class FSDPParams(LaunchParams):
    """Names as in spec/adapt-algorithms.md (accelerate's FSDP plugin)."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = Field(
        "FULL_SHARD", description="What is sharded: FULL_SHARD (weights, gradients, optimizer state), SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD.")
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"] = Field(
        "TRANSFORMER_BASED_WRAP", description="How the model is split into FSDP units (MMEngine tasks: the whole model is one unit; SIZE_BASED_WRAP is refused there).")
    transformer_layer_cls_to_wrap: list[str] | None = Field(None, description="Layer classes wrapped as units (None: the model's _no_split_modules).")
    min_num_params: int = Field(100_000_000, ge=0, description="SIZE_BASED_WRAP: parameters per unit.")
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"] = Field("BACKWARD_PRE", description="FSDP1: applied on MMEngine tasks; HF tasks run FSDP2 (transformers 5), which always prefetches in backward: only BACKWARD_PRE is accepted there.")
    forward_prefetch: bool = Field(False, description="FSDP1: applied on MMEngine tasks; FSDP2 (HF tasks) prefetches implicitly: only false is accepted there.")
    cpu_ram_efficient_loading: bool = Field(False, description="Load the pretrained weights on rank 0 only (HF tasks; MMEngine tasks load them on every rank: only false is accepted there).")
    offload_params: bool = Field(False, description="Keep parameters and gradients in CPU memory.")
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = Field("FULL_STATE_DICT", description="Checkpoint format.")
    sync_module_states: bool = Field(True, description="FSDP1: applied on MMEngine tasks on GPUs (on the CPU every rank loads the same weights); FSDP2 (HF tasks): only true is accepted.")
    use_orig_params: bool = Field(True, description="FSDP1 name; adapt trains part of the model and reads the original parameters: only true is accepted.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="FSDP1: parameter, reduction and buffer dtype on MMEngine tasks; FSDP2 (HF tasks) follows training.precision: only no is accepted there.")


class FSDPBackend(_Launched):
    name = "fsdp"
    description = "Fully sharded data parallel: weights, gradients and optimizer state sharded across processes (torchrun)."
    Params = FSDPParams
    engines = ("hf", "mmengine")

    def check(self, run: Any) -> None:
        import torch

        if run.task.engine == "mmengine":
            from adapt_backends.mmengine_strategies import check_fsdp

            check_fsdp(run)
        elif not torch.cuda.is_available():
            # measured with torch 2.14 / transformers 5.23 / accelerate 1.15: on CPU the run completes but the
            # model is never sharded (accelerate runs it as plain multi-CPU data parallel), so refuse
            raise ConfigError("backend fsdp needs CUDA GPUs: on the CPU, accelerate does not shard the model "
                              "(the run would silently be plain data parallel). On CPU use backend ddp, or "
                              "deepspeed for ZeRO sharding")
        if run.training.auto_find_batch_size:
            raise ConfigError("training.auto_find_batch_size does not work with backend fsdp; set the batch size")

    def engine_settings(self, engine: str, run: Any) -> dict[str, Any]:
        if engine == "mmengine":  # MMEngine's FSDPStrategy: torch's FSDP1, on GPUs or the CPU (gloo)
            from adapt_backends.mmengine_strategies import fsdp_settings

            return fsdp_settings(run)
        settings = super().engine_settings(engine, run)
        p = run.backend_params
        # transformers 5 runs FSDP2 (fully_shard); FSDP1's knobs below have no FSDP2 counterpart
        fsdp1_only = {"backward_prefetch": "BACKWARD_PRE", "forward_prefetch": False, "use_orig_params": True,
                      "sync_module_states": True}
        changed = [k for k, default in fsdp1_only.items() if getattr(p, k) != default]
        if changed:
            raise ConfigError(f"backend_params.{changed[0]}: an FSDP1 setting; transformers 5 runs FSDP2, which always "
                              "prefetches, keeps the original parameters and starts every rank from the same weights "
                              "(cpu_ram_efficient_loading: load on rank 0 and broadcast)")
        if p.sharding_strategy in ("NO_SHARD", "HYBRID_SHARD"):
            raise ConfigError(f"backend_params.sharding_strategy {p.sharding_strategy}: not offered by FSDP2 in "
                              "transformers 5; use FULL_SHARD or SHARD_GRAD_OP (or backend ddp for no sharding)")
        if p.mixed_precision != "no":
            raise ConfigError("backend_params.mixed_precision: FSDP2 follows training.precision; set that instead")
        config: dict[str, Any] = {
            "version": 2, "reshard_after_forward": p.sharding_strategy == "FULL_SHARD", "cpu_offload": p.offload_params,
            "auto_wrap_policy": p.auto_wrap_policy, "cpu_ram_efficient_loading": p.cpu_ram_efficient_loading,
            "state_dict_type": p.state_dict_type}
        if p.auto_wrap_policy == "SIZE_BASED_WRAP":
            config["min_num_params"] = p.min_num_params
        elif p.transformer_layer_cls_to_wrap:
            config["transformer_layer_cls_to_wrap"] = p.transformer_layer_cls_to_wrap
        settings.update(fsdp=True, fsdp_config=config)
        return settings

    def gather_weights(self, model: Any, run: Any) -> AbstractContextManager[Any]:
        return _unsharded(model)


@contextmanager
def _unsharded(model: Any) -> Iterator[None]:
    """FSDP2: every rank all-gathers each sharded unit (fully_shard modules) for saving. FSDP1
    (MMEngine's strategy wraps the model): the root wrapper's full parameters, summoned."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    from adapt_backends.mmengine_strategies import ROOTS

    if model in ROOTS:
        with FSDP1.summon_full_params(ROOTS[model], writeback=False):
            for param in model.parameters():  # own storage: views of one flat buffer cannot be saved as safetensors
                param.data = param.data.clone()
            yield  # FSDP points the parameters back at their shards on leaving
        return

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


SHIPPED = Path(__file__).parent / "deepspeed"


class DeepSpeedParams(LaunchParams):
    deepspeed_stage: Literal[2, 3] = Field(2, description="ZeRO stage of the shipped config: 2 (optimizer state and gradients sharded) "
                                                          "or 3 (weights too). Ignored when `deepspeed` names a config file.")
    deepspeed: str | None = Field(None, description="A DeepSpeed JSON config file of your own (HF 'auto' values are filled in).")


class DeepSpeedBackend(_Launched):
    name = "deepspeed"
    description = "DeepSpeed ZeRO stage 2 or 3 (shipped configs, or your own), launched through torchrun."
    Params = DeepSpeedParams
    engines = ("hf", "mmengine")

    def _config(self, run: Any) -> dict[str, Any]:
        p = run.backend_params
        path = Path(p.deepspeed) if p.deepspeed else SHIPPED / f"zero{p.deepspeed_stage}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"backend_params.deepspeed: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"backend_params.deepspeed: {path} is not valid JSON: {exc}") from None

    def check(self, run: Any) -> None:
        config = self._config(run)
        if run.training.auto_find_batch_size:
            raise ConfigError("training.auto_find_batch_size does not work with backend deepspeed (DeepSpeed fixes "
                              "the batch size when it starts); set per_device_train_batch_size")
        if _zero_stage(config) == 3 and run.method.name.startswith("q"):
            raise ConfigError(f"method {run.method.name} (bitsandbytes-quantized weights) cannot be sharded by ZeRO-3; "
                              "use deepspeed_stage: 2, or backend ddp")

    def engine_settings(self, engine: str, run: Any) -> dict[str, Any]:
        if engine == "mmengine":
            from adapt_backends.mmengine_strategies import deepspeed_settings

            return deepspeed_settings(self._config(run), run)
        settings = super().engine_settings(engine, run)
        settings["deepspeed"] = self._config(run)
        return settings

    def gather_weights(self, model: Any, run: Any) -> AbstractContextManager[Any]:
        if _zero_stage(self._config(run)) != 3:
            return _own_storage(model)
        return _gathered(model)


def _zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


@contextmanager
def _gathered(model: Any) -> Iterator[None]:
    """ZeRO-3: every rank gathers the full weights (each rank then holds them for a moment)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None), _own_storage(model):
        yield


@contextmanager
def _own_storage(model: Any) -> Iterator[None]:
    """ZeRO keeps the weights as views into one flat buffer, which savers such as safetensors
    refuse; give each parameter its own storage (tied parameters are one object: they stay tied)."""
    for param in model.parameters():
        param.data = param.data.clone()
    yield
