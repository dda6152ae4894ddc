"""adapt-nlp: language tasks trained, evaluated and served through HF Trainer."""

from __future__ import annotations

from collections.abc import Callable

from adapt import Task, hookimpl

from adapt_nlp.question_answering import QuestionAnswering
from adapt_nlp.seq2seq import Summarization, Translation
from adapt_nlp.text_classification import TextClassification
from adapt_nlp.text_generation import TextGeneration
from adapt_nlp.token_classification import TokenClassification

TASKS = (TextClassification, TokenClassification, QuestionAnswering, Summarization, Translation, TextGeneration)


@hookimpl
def adapt_register_tasks(register: Callable[[Task], None]) -> None:
    for task in TASKS:
        register(task())
