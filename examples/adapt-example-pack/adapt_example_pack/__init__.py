"""adapt-example-pack: a text_regression task and a bitfit method, registered like any pack."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Method, Task, hookimpl

from adapt_example_pack.bitfit import BitFit
from adapt_example_pack.regression import TextRegression


@hookimpl
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    register(TextRegression())


@hookimpl
def adapt_register_methods(register: Callable[[Method], None]) -> None:
    register(BitFit())
