"""adapt-ui: ``adapt ui``, a local web app to configure, plan, start, watch, stop, browse, compare
and try runs. Gradio is imported only when the command starts, never at plugin load, and the
app drives the same ``adapt`` command a terminal would (train, plan, compare, predict)."""

from __future__ import annotations

from typing import Any

from adapt import hookimpl

from adapt_ui.command import ui_command


@hookimpl
def adapt_register_commands(cli: Any) -> None:
    cli.command("ui")(ui_command)
