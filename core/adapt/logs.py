"""Logging: adapt's messages on stderr, a run's log in its folder, and the libraries' notices that
say nothing about the run kept off the terminal."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

RUN_LOGGERS = ("adapt", "transformers", "peft", "py.warnings")  # what a run's train.log records
VERBOSE_ENV = "ADAPT_VERBOSE"  # adapt train --verbose: the libraries' notices on the terminal too
log = logging.getLogger("adapt")


def progress_bars() -> bool:
    """Whether to draw progress bars: on a terminal; a pipe or a file (CI, ``| tee``) gets the
    run's log lines alone, one per line."""
    return sys.stderr.isatty()


class _AboveProgressBars(logging.StreamHandler):
    """adapt's terminal lines, printed above any progress bar (tqdm.write), never inside one."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # no progress bars without tqdm
            return super().emit(record)
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


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
        stream = _AboveProgressBars(sys.stderr)
        stream.setFormatter(logging.Formatter("adapt: %(message)s"))
        stream._adapt = True  # type: ignore[attr-defined]
        log.addHandler(stream)


def log_to_file(path: Path, rank: int = 0) -> logging.Handler:
    """Also write the run's log (adapt's, transformers' and peft's records, Python warnings) to
    ``path``. The libraries' notices (transformers' weight-loading report, deprecation warnings)
    go there only, unless ADAPT_VERBOSE is set (``adapt train --verbose``); ranks other than 0
    show only their warnings on the terminal (their progress is rank 0's)."""
    setup_logging()
    if rank:
        next(h for h in log.handlers if getattr(h, "_adapt", False)).setLevel(logging.WARNING)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler._adapt_run_file = True  # type: ignore[attr-defined] - found by route_library_logger
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in RUN_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    if not os.environ.get(VERBOSE_ENV):
        _libraries_to_file_only(True)
    return handler


def _libraries_to_file_only(on: bool) -> None:
    """transformers' own terminal handler off (its records still reach the run's file handler) and
    Python warnings into logging (the py.warnings logger, which then writes only to train.log)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        hf_logging = None
    if hf_logging is not None:
        (hf_logging.disable_default_handler if on else hf_logging.enable_default_handler)()
        if not progress_bars():  # its weight loading / writing bars
            (hf_logging.disable_progress_bar if on else hf_logging.enable_progress_bar)()
    logging.captureWarnings(on)
    logging.getLogger("py.warnings").propagate = not on


_routed: list[logging.Logger] = []  # libraries' own loggers given the run's file handler


def route_library_logger(logger: logging.Logger) -> None:
    """Treat a library's own logger (one outside the logging tree, such as MMEngine's MMLogger) as
    transformers' is: its records also go to the run's train.log, and its terminal handlers show
    errors only, unless ADAPT_VERBOSE is set (``adapt train --verbose``)."""
    for handler in logging.getLogger("adapt").handlers:
        if getattr(handler, "_adapt_run_file", False) and handler not in logger.handlers:
            logger.addHandler(handler)
            _routed.append(logger)
    if not os.environ.get(VERBOSE_ENV):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.ERROR))


def close_file_log(handler: logging.Handler) -> None:
    for name in RUN_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    while _routed:
        _routed.pop().removeHandler(handler)
    handler.close()
    if not os.environ.get(VERBOSE_ENV):
        _libraries_to_file_only(False)
