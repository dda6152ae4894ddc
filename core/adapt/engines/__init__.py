"""Training engines of the core. Each is imported only when a run uses it."""

from __future__ import annotations

import importlib
from types import ModuleType


def get_engine(name: str) -> ModuleType:
    """The engine module (``train(run)``, ``evaluate(...)``, ``predict(...)``) named by a task."""
    return importlib.import_module(f"adapt.engines.{name}")
