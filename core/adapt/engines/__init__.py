"""The core's training engine (the HF Trainer), registered by :mod:`adapt.builtins`; its code
(:mod:`adapt.engines.hf`) is imported only when a run uses it. Here: the checks both need."""

from __future__ import annotations

from adapt.errors import ConfigError


def check_save_steps(save_steps: int, eval_steps: int) -> None:
    """Checkpoints at steps must fall on evaluations for the best checkpoint to be kept."""
    if save_steps % eval_steps:
        raise ConfigError(f"training.save_steps ({save_steps}) must be a multiple of the evaluation "
                          f"interval ({eval_steps} steps) so that the best checkpoint can be kept")
