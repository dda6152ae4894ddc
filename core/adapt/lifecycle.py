"""One run, end to end: the checks before any worker starts, the backend's workers, each worker's
run folder, log and lifecycle hooks around the engine's training; and the saved model's
evaluation and prediction."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from adapt.errors import AdaptError, ConfigError, HardwareError, RunInterrupted
from adapt.folder import write_json
from adapt.logs import close_file_log, log_to_file, setup_logging
from adapt.resolve import saved_run
from adapt.run import Run

log = logging.getLogger("adapt")


def train(run: Run) -> dict[str, Any]:
    """Train a resolved run and return its final metrics: the engine and the backend refuse what
    they cannot run, then the backend runs :func:`train_here` in each of its worker processes
    (the ``single`` backend: in this one)."""
    setup_logging()
    if not run.launched:
        run.engine.check(run)
        run.backend.check(run)
    return run.backend.launch(lambda: train_here(run), run) or {}


def validate(run: Run) -> list[str]:
    """Everything training would refuse that follows from the config and the installed packs (the
    engine's and the backend's checks); returns what only this machine refuses (no GPU...)."""
    machine = []
    for check in (run.engine.check, run.backend.check):
        try:
            check(run)
        except HardwareError as exc:
            machine.append(str(exc))
    return machine


def _prepare_output(run: Run) -> None:
    """Create the run folder (checked first, unless a launcher checked it before starting this
    worker) and record the resolved config and the status."""
    if not run.launched:
        run.check_output()
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if run.is_main_process:
        head = "".join(f"# training.{name}: {getattr(run.training, name)!r}, {why}\n" for name, why in run.defaults.items())
        head = "# chosen by adapt (not set in the config):\n" + head if head else ""
        text = head + yaml.safe_dump(run.resolved_dict(), sort_keys=False)
        run.path("config.yaml").write_text(text, encoding="utf-8")
        run.write_status("running", started=time.time())


def train_here(run: Run) -> dict[str, Any]:
    """Train in this process (one worker of the run) and record what happened."""
    is_new = run.is_new_folder()
    _prepare_output(run)
    handler = log_to_file(run.path("train.log" if run.rank == 0 else f"train.rank{run.rank}.log"), run.rank)
    log.info("run folder: %s", run.output_dir)
    if run.defaults:
        log.info("defaults chosen (set them to change): %s", "; ".join(
            f"{name} {getattr(run.training, name)} ({why})" for name, why in run.defaults.items()))
    run.registry.notify("adapt_run_started", run=run)
    status, result = "failed", {}
    try:
        result = run.engine.train(run) or {}
        status = "finished"
        return result
    except (KeyboardInterrupt, RunInterrupted):
        status = "interrupted"
        raise
    except AdaptError:
        # Bad input found before anything was trained: leave no folder that would block the
        # corrected rerun ("already holds files"). Anything else stays for inspection.
        if is_new and run.is_main_process and not run.has_checkpoint():
            shutil.rmtree(run.output_dir, ignore_errors=True)
            status = "removed"
        raise
    finally:
        if status != "removed":
            run.write_status(status, finished=time.time())
        reported = "failed" if status == "removed" else status
        run.registry.notify("adapt_run_finished", run=run, result={"status": reported, **result})
        close_file_log(handler)


def saved_model(path: Path, overrides: list[str], purpose: str) -> tuple[Run, Path]:
    """The Run of a model saved by a training run (a run folder or its model/ folder)."""
    model_dir = path / "model" if (path / "model" / "adapt.json").is_file() else path
    run = saved_run(model_dir, overrides or (), purpose)
    setup_logging()
    return run, model_dir


def evaluate(path: Path, data: str, overrides: list[str], results: Path | None = None) -> dict[str, Any]:
    """Metrics of a saved model on one data file; with ``results``, also an evaluation folder as
    Azure ML's model evaluation writes one: metrics.json, predictions.jsonl (one row per input
    row) and pictures/ (the task's, e.g. a confusion matrix)."""
    run, model_dir = saved_model(path, overrides, "evaluate")
    if results is None:
        return run.engine.evaluate(run, str(model_dir), data)
    if results.exists() and (not results.is_dir() or any(results.iterdir())):
        raise ConfigError(f"--results: {results} already holds files; choose an empty or new folder")
    results.mkdir(parents=True, exist_ok=True)
    run.pictures_dir = results / "pictures"
    metrics = run.engine.evaluate(run, str(model_dir), data)
    rows = run.engine.predict(run, str(model_dir), data)
    write_json(results / "metrics.json", metrics)
    (results / "predictions.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
    write_json(results / "evaluation.json", {"model": str(model_dir), "data": str(data), "rows": len(rows),
                                             "task": run.task.name, "finished": time.time()})
    log.info("evaluation written to %s (metrics.json, predictions.jsonl%s)", results,
             ", pictures/" if run.pictures_dir.is_dir() else "")
    return metrics


def predict(path: Path, data: str, overrides: list[str]) -> list[dict[str, Any]]:
    """Predictions of a saved model on one data file, one dict per input row."""
    run, model_dir = saved_model(path, overrides, "predict")
    return run.engine.predict(run, str(model_dir), data)
