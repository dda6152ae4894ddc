"""Logging: adapt's messages on stderr, a run's log in its folder, and the libraries' notices that
say nothing about the run kept off the terminal."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

RUN_LOGGERS = ("adapt", "transformers", "peft")  # what a run's train.log records
log = logging.getLogger("adapt")


def _not_cpu_choice(record: logging.LogRecord) -> bool:
    return "Setting accelerator to CPU" not in record.getMessage()


def setup_logging(level: int = logging.INFO) -> None:
    """Log adapt's messages to stderr (once per process), with the libraries' known noise filtered."""
    log.setLevel(level)
    # bitsandbytes warns at import on CPUs with AVX512-bf16 that it cannot fetch an optional
    # kernel from the hub; adapt keeps 4-bit layers off that path anyway (adapt-methods).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # DeepSpeed, imported by transformers / MMEngine whether used or not, warns on every start
    # without a GPU that it chose the CPU; its logger sets its own level, so filter the message
    deepspeed = logging.getLogger("DeepSpeed")
    if _not_cpu_choice not in deepspeed.filters:
        deepspeed.addFilter(_not_cpu_choice)
    if not any(getattr(h, "_adapt", False) for h in log.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("adapt: %(message)s"))
        stream._adapt = True  # type: ignore[attr-defined]
        log.addHandler(stream)


def log_to_file(path: Path, rank: int = 0) -> logging.Handler:
    """Also write the run's log (adapt's, transformers' and peft's records) to ``path``; ranks other
    than 0 show only their warnings on the terminal (their progress is rank 0's)."""
    setup_logging()
    if rank:
        next(h for h in log.handlers if getattr(h, "_adapt", False)).setLevel(logging.WARNING)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in RUN_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return handler


def close_file_log(handler: logging.Handler) -> None:
    for name in RUN_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
