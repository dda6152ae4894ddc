"""The hooks a plugin may implement (pluggy project ``adapt``, entry-point group ``adapt``).

A plugin is a module with functions decorated by :data:`adapt.hookimpl` whose names match the
specs below. Registration hooks receive a ``register`` callable, so one pack can register many
objects and the core keeps one registry it can validate and list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:

    from adapt.api import Backend, Engine, Method, Saver, Task
    from adapt.run import Run

hookspec = pluggy.HookspecMarker("adapt")
hookimpl = pluggy.HookimplMarker("adapt")


@hookspec
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    """Register tasks: call ``register(task)`` once for each :class:`adapt.Task` instance."""


@hookspec
def adapt_register_methods(register: Callable[[Method], None]) -> None:
    """Register adaptation methods: call ``register(method)`` for each :class:`adapt.Method`."""


@hookspec
def adapt_register_backends(register: Callable[[Backend], None]) -> None:
    """Register backends: call ``register(backend)`` for each :class:`adapt.Backend`."""


@hookspec
def adapt_register_savers(register: Callable[[Saver], None]) -> None:
    """Register savers: call ``register(saver)`` for each :class:`adapt.Saver`."""


@hookspec
def adapt_register_engines(register: Callable[[Engine], None]) -> None:
    """Register training engines: call ``register(engine)`` for each :class:`adapt.Engine`; a task
    names the engine that trains it (``Task.engine``)."""


@hookspec
def adapt_register_config(register: Callable[..., None]) -> None:
    """Add keys to the run config: ``register(fields)`` adds the fields of the pydantic model
    ``fields`` as top-level keys, ``register(fields, section="model")`` to a core section (model,
    data, training). They are validated, listed by ``adapt config show`` and documented in the
    configuration reference like the core's own; ``run.config.<key>`` reads them."""


@hookspec
def adapt_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``adapt`` command line: ``cli`` is its ``typer.Typer`` app
    (``@cli.command()``). Keep the module light: import heavy libraries inside the command."""


@hookspec(firstresult=True)
def adapt_model_source(run: Run, reference: dict[str, Any]) -> str | None:
    """Turn the run's model reference (``reference``: its ``model`` section, with the keys packs
    added to it, e.g. ``mlflow_model_path``) into a local folder the task loads; None: not yours
    (the task then loads ``model.path`` itself). Asked before every model load."""


@hookspec
def adapt_run_started(run: Run) -> None:
    """Called once the run folder exists and the config is resolved, before training starts."""


@hookspec
def adapt_metrics_logged(run: Run, metrics: dict[str, Any], step: int) -> None:
    """Called each time the engine logs training or evaluation metrics (``step`` = global step)."""


@hookspec
def adapt_run_finished(run: Run, result: dict[str, Any]) -> None:
    """Called when the run ends; ``result["status"]`` is ``finished``, ``failed`` or ``interrupted``."""
