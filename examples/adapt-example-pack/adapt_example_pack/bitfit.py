"""BitFit: train only the bias terms (and the task head); nothing to merge."""

from __future__ import annotations

from typing import Any

from adapt import ConfigError, Method, Params
from pydantic import Field


class BitFitParams(Params):
    train_head: bool = Field(True, description="Also train the task head (the run's head modules).")


class BitFit(Method):
    name = "bitfit"
    description = "Train only the biases, and the task head: about 0.1% of a transformer's parameters."
    Params = BitFitParams

    def apply(self, model: Any, params: BitFitParams, run: Any) -> Any:
        for name, param in model.named_parameters():
            param.requires_grad_(name.endswith(".bias"))
        if params.train_head:
            for head in run.head_modules or []:
                for param in model.get_submodule(head).parameters():
                    param.requires_grad_(True)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"method bitfit: {type(model).__name__} has no bias to train")
        return model
