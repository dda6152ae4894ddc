"""adapt-nlp: language tasks trained, evaluated and served through HF Trainer."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Task, hookimpl

from adapt_nlp.text_classification import TextClassification


@hookimpl
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    register(TextClassification())
