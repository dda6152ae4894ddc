"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import Any

from adapt import Method


class FullMethod(Method):
    name = "full"
    description = "Train every parameter of the model (the most memory; no adapter to merge)."

    def apply(self, model: Any, params: Any, run: Any) -> Any:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
