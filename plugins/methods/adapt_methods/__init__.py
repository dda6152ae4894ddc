"""adapt-methods: adaptation methods that act on any ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Method, hookimpl

from adapt_methods.adapters import ADAPTER_METHODS
from adapt_methods.full import FullMethod
from adapt_methods.last_layer import LastLayerMethod
from adapt_methods.lora import DoraMethod, LoraMethod, QDoraMethod, QLoraMethod
from adapt_methods.ssf import QSSFMethod, SSFMethod

METHODS = (FullMethod, LastLayerMethod, LoraMethod, DoraMethod, SSFMethod, QLoraMethod, QDoraMethod, QSSFMethod,
           *ADAPTER_METHODS)


@hookimpl
def adapt_register_methods(register: Callable[[Method], None]) -> None:
    for method in METHODS:
        register(method())
