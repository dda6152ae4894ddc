"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import Any

from adapt import Method


class FullMethod(Method):
    name = "full"
    description = "Train every parameter of the model (the most memory; no adapter to merge)."
    # learning rates: docs/benchmarks.md "Defaults" (text, cnn, vit) and docs/detection.md (detector)
    training_defaults = {"text": {"learning_rate": 5e-5}, "cnn": {"learning_rate": 1e-3},
                         "vit": {"learning_rate": 5e-5, "warmup_steps": 0.1}, "detector": {"learning_rate": 1e-3}}

    def apply(self, model: Any, params: Any, run: Any) -> Any:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
