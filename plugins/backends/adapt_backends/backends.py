"""The three backends. Each relaunches the run under torchrun (:mod:`adapt_backends.launch`),
then, in the workers, hands the engine its data-parallel settings (:class:`adapt.Parallel`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from adapt import Backend, ConfigError, FSDPOptions, Parallel
from pydantic import AliasChoices, Field, field_validator

from adapt_backends.launch import LaunchParams, dist_backend, relaunch


class _Launched(Backend):
    Params = LaunchParams

    def launch(self, run_in_worker: Callable[[], Any], run: Any) -> Any:
        if run.launched:
            return run_in_worker()
        return relaunch(run, run.backend_params)

    def parallel(self, run: Any) -> Parallel:
        return Parallel(strategy=self.strategy, dist_backend=dist_backend(run.backend_params))


class DDPParams(LaunchParams):
    find_unused_parameters: bool = Field(False, description="Let DDP tolerate parameters that get no gradient in a step (slower).")


class DDPBackend(_Launched):
    name = "ddp"
    description = "Distributed data parallel: one full copy of the model per process, gradients averaged (torchrun)."
    Params = DDPParams
    strategy = "ddp"

    def parallel(self, run: Any) -> Parallel:
        return Parallel(strategy="ddp", dist_backend=dist_backend(run.backend_params),
                        find_unused_parameters=run.backend_params.find_unused_parameters)


class FSDPParams(FSDPOptions, LaunchParams):
    """torchrun's options and FSDP's (accelerate's FSDP plugin names)."""


class FSDPBackend(_Launched):
    name = "fsdp"
    description = "Fully sharded data parallel: weights, gradients and optimizer state sharded across processes (torchrun)."
    Params = FSDPParams
    strategy = "fsdp"

    def check(self, run: Any) -> None:
        if run.training.auto_find_batch_size:
            raise ConfigError("training.auto_find_batch_size does not work with backend fsdp; set the batch size")

    def parallel(self, run: Any) -> Parallel:
        p = run.backend_params
        options = FSDPOptions(**{name: getattr(p, name) for name in FSDPOptions.model_fields})
        return Parallel(strategy="fsdp", dist_backend=dist_backend(p), fsdp=options)

    def gather_weights(self, model: Any, run: Any) -> AbstractContextManager[Any]:
        return _unsharded(model)


@contextmanager
def _unsharded(model: Any) -> Iterator[None]:
    """FSDP2 (the HF engine's): every rank all-gathers each sharded unit (fully_shard modules) for saving."""
    from torch.distributed.fsdp import FSDPModule

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
                                                          "or 3 (weights too; \"3\" as Azure ML passes it). Ignored when `deepspeed` "
                                                          "names a config file.")
    deepspeed: str | None = Field(None, validation_alias=AliasChoices("deepspeed", "deepspeed_config"),
                                  description="A DeepSpeed JSON config file of your own (HF 'auto' values are filled in). "
                                              "Azure ML name: deepspeed_config (image components).")

    @field_validator("deepspeed_stage", mode="before")
    @classmethod
    def _stage_text(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip() in ("2", "3") else value


class DeepSpeedBackend(_Launched):
    name = "deepspeed"
    description = "DeepSpeed ZeRO stage 2 or 3 (shipped configs, or your own), launched through torchrun."
    Params = DeepSpeedParams
    strategy = "deepspeed"

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

    def parallel(self, run: Any) -> Parallel:
        return Parallel(strategy="deepspeed", dist_backend=dist_backend(run.backend_params),
                        deepspeed_config=self._config(run))

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
