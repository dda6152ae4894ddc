"""adapt-backends: ``ddp``, ``fsdp`` and ``deepspeed``, each launched through torchrun (PyTorch's
elastic launcher; NCCL on GPUs, gloo on CPU) and mapped onto the engine's own distributed
settings; ``adapt launch`` writes a run as a SLURM or Kubernetes job. Nothing here imports torch
until a run starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapt import Backend, hookimpl

from adapt_backends.backends import DDPBackend, DeepSpeedBackend, FSDPBackend


@hookimpl
def adapt_register_backends(register: Callable[[Backend], None]) -> None:
    for backend in (DDPBackend(), FSDPBackend(), DeepSpeedBackend()):
        register(backend)


@hookimpl
def adapt_register_commands(cli: Any) -> None:
    from adapt_backends.cluster import launch_command

    cli.command("launch")(launch_command)
