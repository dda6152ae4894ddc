"""MLflow tracking of adapt runs through the lifecycle hooks: the resolved config as parameters,
every logged / evaluated metric at its step, and the run folder's files as artefacts, in a
tracking store that defaults to SQLite in the working folder (no server needed). Only rank 0
tracks. A tracker that fails warns once and stops tracking that run; training goes on."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

log = logging.getLogger("adapt")
DEFAULT_STORE = "mlflow.db"
ARTIFACTS = ("config.yaml", "run.json", "metrics.json", "test_metrics.json", "metrics.jsonl", "curves.png", "train.log")
STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_active: dict[str, tuple[Any, str]] = {}  # run folder -> (MlflowClient, mlflow run id)


def tracking_uri(uri: str | None = None) -> str:
    """The store: the config's uri, else MLFLOW_TRACKING_URI, else SQLite in the working folder."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_STORE}"


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a down server fails fast
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    # mlflow's INFO lines (creating / migrating the sqlite store's tables) are not the user's business
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # a local store keeps artefacts beside it
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"training": {"seed": 1}}`` -> ``{"training.seed": "1"}`` (MLflow parameters are flat strings)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def _key(run: Any) -> str:
    return str(Path(run.output_dir).resolve())


def _fail(run: Any, what: str, exc: Exception) -> None:
    _active.pop(_key(run), None)
    log.warning("mlflow tracking stopped for this run: could not %s (%s: %s)", what, type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "")


def started(run: Any) -> None:
    cfg = run.config.tracking
    if not cfg.enabled or not run.is_main_process:
        return
    from mlflow.entities import Param

    uri = tracking_uri(cfg.uri)
    try:
        client = _client(uri)
        experiment = _experiment(client, uri, cfg.experiment_name)
        tags = {"adapt.output": _key(run), "adapt.task": run.task.name, "adapt.method": run.method.name,
                "adapt.backend": run.backend.name, "mlflow.runName": cfg.run_name or Path(run.output_dir).name}
        tracked = client.create_run(experiment, tags=tags)
        run_id = tracked.info.run_id
        params = [Param(k[:250], v[:6000]) for k, v in flatten(run.resolved_dict()).items()]
        for first in range(0, len(params), 100):
            client.log_batch(run_id, params=params[first:first + 100])
    except Exception as exc:  # the tracker must never stop training
        _fail(run, f"start tracking in {uri}", exc)
        return
    _active[_key(run)] = (client, run_id)
    log.info("mlflow: tracking run %s in %s (experiment %s)", run_id, uri, cfg.experiment_name)


def metrics_logged(run: Any, metrics: dict[str, Any], step: int) -> None:
    active = _active.get(_key(run))
    if active is None:
        return
    from mlflow.entities import Metric

    client, run_id = active
    now = int(time.time() * 1000)
    values = [Metric(k, float(v), now, step) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    try:
        if values:
            client.log_batch(run_id, metrics=values)
    except Exception as exc:
        _fail(run, "log metrics", exc)


def finished(run: Any, result: dict[str, Any]) -> None:
    active = _active.pop(_key(run), None)
    if active is None:
        return
    client, run_id = active
    try:
        for name in ARTIFACTS:
            if run.path(name).is_file():
                client.log_artifact(run_id, str(run.path(name)))
        if run.path("pictures").is_dir():  # the task's pictures of predictions (a confusion matrix...)
            client.log_artifacts(run_id, str(run.path("pictures")), "pictures")
        model = run.path("saved") / "mlflow"
        if not model.is_dir():
            model = run.path("model")
        if model.is_dir():
            client.log_artifacts(run_id, str(model), "model")
        client.set_terminated(run_id, STATUS.get(result.get("status"), "FAILED"))
    except Exception as exc:
        _active[_key(run)] = active
        _fail(run, "record the end of the run", exc)


def runs_command(
    uri: Annotated[str | None, typer.Option("--uri", help="Tracking store or server (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")] = None,
    experiment: Annotated[str, typer.Option("--experiment", "-e", help="Experiment name.")] = "adapt",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent tracked runs (adapt-mlflow) with their status and key metrics."""
    from adapt import ConfigError

    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no tracking store at {uri}: no run has been tracked here yet (or give --uri)")
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no experiment {experiment!r} in {uri}")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    rows = []
    for r in runs:
        metrics = {k: v for k, v in r.data.metrics.items() if (k.startswith(("eval_", "test_")) or k == "loss")
                   and not k.endswith(("_runtime", "_per_second"))}
        rows.append({"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.info.start_time / 1000)),
                     "task": r.data.tags.get("adapt.task"), "method": r.data.tags.get("adapt.method"),
                     "output": r.data.tags.get("adapt.output"), "metrics": metrics})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no runs in experiment {experiment!r} of {uri}")
    for row in rows:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(row["metrics"].items()))
        typer.echo(f"{row['started']}  {row['status']:<8} {row['name']}  {row['task']}/{row['method']}  {shown}")
