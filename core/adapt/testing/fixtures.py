"""pytest fixtures for adapt and plugin authors: ``pytest_plugins = ["adapt.testing.fixtures"]``; it also
registers the ``gpu`` marker (tests that skip without CUDA)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapt import testing


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT encoder and its tokenizer, saved once per test session."""
    return testing.tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """train / validation / test jsonl files for text_classification (3 learnable topics)."""
    return testing.text_classification_data(tmp_path_factory.mktemp("text-data"))


@pytest.fixture
def adapt_cli(tmp_path: Path) -> Callable[..., testing.AdaptResult]:
    """Run the real ``adapt`` command in a fresh process, in this test's temporary folder."""

    def run(*args: str, **kwargs: object) -> testing.AdaptResult:
        kwargs.setdefault("cwd", tmp_path)
        return testing.run_adapt(*args, **kwargs)  # type: ignore[arg-type]

    return run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one (bench/gpu.sh runs them on a GPU)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    """Tests marked ``gpu`` skip where CUDA is not available, so a suite without a GPU stays green."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import os

    import torch

    if torch.cuda.is_available() or os.environ.get("ADAPT_RUN_GPU_TESTS") == "1":  # 1: a dry run on the CPU
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu.sh runs these on one)")
    for item in marked:
        item.add_marker(skip)
