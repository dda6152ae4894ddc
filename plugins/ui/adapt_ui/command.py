"""``adapt ui``: serve the web app on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def ui_command(
    runs: Annotated[Path, typer.Option("--runs", help="Folder of the run folders to browse; new runs go here too.")] = Path("runs"),
    host: Annotated[str, typer.Option("--host", help="Address to serve on. The app has no authentication: "
                                      "anyone who can reach it can start runs and read files this user can.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on (0: a free one).")] = 7860,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser.")] = False,
) -> None:
    """A local web app: configure, plan, start, watch and stop runs; browse, compare and try them."""
    from adapt import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is not a port number (0 to 65535)")
    if host not in LOCAL_HOSTS:
        typer.echo(f"warning: serving on {host}: the app has no authentication; anyone who can reach "
                   f"{host}:{port} can start runs and read the files this user can", err=True)
    runs = runs.resolve()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"--runs: {runs} is a file; give a folder (it is created if missing)")
    runs.mkdir(parents=True, exist_ok=True)
    if port == 0:
        import socket

        with socket.socket() as probe:  # a port free now
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    from adapt_ui.app import build

    app = build(runs)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"adapt ui: http://{shown}:{port} (runs in {runs}); Ctrl-C to stop", err=True)
    app.queue().launch(server_name=host, server_port=port, inbrowser=open_browser, share=False,
                       quiet=True, allowed_paths=[str(runs)], show_error=True, footer_links=[])
