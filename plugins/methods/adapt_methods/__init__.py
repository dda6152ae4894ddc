"""adapt-methods: adaptation methods that act on any ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Method, hookimpl

from adapt_methods.full import FullMethod
from adapt_methods.lora import LoraMethod


@hookimpl
def adapt_register_methods(register: Callable[[Method], None]) -> None:
    register(FullMethod())
    register(LoraMethod())
