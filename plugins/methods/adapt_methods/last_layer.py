"""Last-layer tuning: only the head trains (a classifier, a bbox head, a keypoint head...)."""

from __future__ import annotations

from typing import Any

from adapt import ConfigError, Method, Params
from pydantic import Field

from adapt_methods.common import freeze_all_but, head_of


class LastLayerParams(Params):
    head_modules: list[str] | None = Field(
        None, description="Modules to train (None: the task's head, else the last Linear / Conv layer).")


class LastLayerMethod(Method):
    name = "last_layer"
    description = "Freeze the model and train only its head: the cheapest method, a strong baseline for vision."
    Params = LastLayerParams
    training_defaults = {"text": {"learning_rate": 5e-2}, "cnn": {"learning_rate": 3e-3},
                         "vit": {"learning_rate": 1e-2}, "detector": {"learning_rate": 1e-2}}

    def apply(self, model: Any, params: LastLayerParams, run: Any) -> Any:
        head = head_of(model, run, params.head_modules)
        if not head:
            raise ConfigError(f"method last_layer: found no head in {type(model).__name__}; "
                              "name it in method_params.head_modules")
        freeze_all_but(model, head)
        return model
