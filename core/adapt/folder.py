"""The run folder on disk: refusing to overwrite another run, the resolved config and status,
atomic JSON files, and whether the engine left a checkpoint.

Run folder layout::

    config.yaml        the resolved config          run.json       status, times, versions
    train.log          the log                      metrics.jsonl  every log / evaluation
    metrics.json       final metrics                test_metrics.json  the test split's metrics
    curves.png         loss and metric curves       checkpoints/   the engine's checkpoints
    model/             the best model, reloadable by `adapt evaluate` / `adapt predict`
    saved/<saver>/     the model in each chosen saver's format
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from adapt.errors import ConfigError

log = logging.getLogger("adapt")
VERSIONS = ("adapt-core", "torch", "transformers", "peft", "datasets")  # recorded in run.json


def check_output(out: Path, training: Any) -> None:
    """Refuse to write into another run's folder unless resuming or told."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not training.resume_from_checkpoint and not training.overwrite_output_dir:
        raise ConfigError(
            f"output: {out} already holds files (an earlier run?). To continue that run set "
            "training.resume_from_checkpoint=true; to start over choose another --output, or set "
            "training.overwrite_output_dir=true")


def holds_files(out: Path) -> bool:
    """Whether ``out`` holds something already (a file where the folder should be counts)."""
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def has_checkpoint(out: Path) -> bool:
    """Whether the engine wrote a checkpoint (HF: checkpoint-N/, MMEngine: iter_N.pth)."""
    folder = out / "checkpoints"
    return any(folder.glob("checkpoint-*")) or any(folder.glob("*.pth"))


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_status(path: Path, status: str, **extra: Any) -> None:
    """Record a status in run.json; a failed write (a full disk) is logged, never raised, so it
    cannot hide the error that ended the run."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(status=status, updated=time.time(), **extra)
        if "command" not in data:
            data["command"] = sys.argv
            data["versions"] = _versions()
        write_json(path, data)
    except OSError as exc:
        log.warning("could not record status %r in %s: %s", status, path, exc)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in VERSIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out
