"""Errors a user can fix: the CLI prints them as one clear message and exits with code 2."""

from __future__ import annotations


class AdaptError(Exception):
    """A problem with the user's input (config, data, model, plugin choice).

    The CLI shows ``str(error)`` without a traceback and exits with ``exit_code``.
    """

    exit_code = 2


class ConfigError(AdaptError):
    """The run configuration is invalid: a key, a type, a value or a combination."""


class HardwareError(ConfigError):
    """Settings this machine cannot run (e.g. no CUDA GPU) that are valid on another:
    ``adapt config validate`` reports them as such, training refuses them."""


class DataError(AdaptError):
    """A data file is missing, unreadable or does not match what the task expects."""


class ModelError(AdaptError):
    """A model reference cannot be loaded or does not fit the task."""


class PluginError(AdaptError):
    """A plugin name is unknown, claimed twice, or its plugin failed to load."""


class StorageError(AdaptError):
    """The disk filled up (or refused a write) while the run was saving."""


class RunInterrupted(AdaptError):
    """The run was stopped by a signal; a checkpoint was written where possible."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none): the detail a
    one-line user error quotes from a library's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
