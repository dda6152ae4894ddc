"""adapt-mlflow: the ``mlflow`` saver (an MLflow model of every task), MLflow model folders as a
model source (``model.mlflow_model_path``), tracking of every run (the ``tracking`` section), and
``adapt runs``.

mlflow itself is imported only when a run saves, loads or tracks, never at plugin load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapt import Saver, hookimpl

from adapt_mlflow import tracking
from adapt_mlflow.saver import MlflowSaver
from adapt_mlflow.settings import MlflowModelSettings, MlflowRunSettings
from adapt_mlflow.source import model_source


@hookimpl
def adapt_register_savers(register: Callable[[Saver], None]) -> None:
    register(MlflowSaver())


@hookimpl
def adapt_register_config(register: Callable[..., None]) -> None:
    register(MlflowRunSettings)
    register(MlflowModelSettings, section="model")


@hookimpl
def adapt_model_source(run: Any, reference: dict[str, Any]) -> str | None:
    return model_source(run, reference)


@hookimpl
def adapt_register_commands(cli: Any) -> None:
    cli.command("runs")(tracking.runs_command)


@hookimpl
def adapt_run_started(run: Any) -> None:
    tracking.started(run)


@hookimpl
def adapt_metrics_logged(run: Any, metrics: dict[str, Any], step: int) -> None:
    tracking.metrics_logged(run, metrics, step)


@hookimpl
def adapt_run_finished(run: Any, result: dict[str, Any]) -> None:
    tracking.finished(run, result)
