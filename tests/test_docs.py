"""The docs stay true: the generated config reference is current, every hook is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from adapt import hookspecs
from adapt.confdoc import reference_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_reference_is_up_to_date() -> None:
    current = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), "docs/config-reference.md is stale: run `make docs`"


def test_every_hook_is_documented_in_the_plugin_guide() -> None:
    """With its signature: `adapt_x(arg, ...)` as the hookspec declares it."""
    guide = (DOCS / "plugin-guide.md").read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspecs) if name.startswith("adapt_")]
    signatures = [f"`{h}({', '.join(inspect.signature(getattr(hookspecs, h)).parameters)})`" for h in hooks]
    assert hooks and all(f"`{name}" in guide for name in hooks), [h for h in hooks if f"`{h}" not in guide]
    assert all(s in guide for s in signatures), [s for s in signatures if s not in guide]


def test_every_hook_has_a_test() -> None:
    folder = DOCS.parent / "tests"
    tests = "\n".join(p.read_text(encoding="utf-8") for p in [*folder.rglob("test_*.py"), *folder.glob("plugins/*.py")])
    hooks = [name for name in dir(hookspecs) if name.startswith("adapt_")]
    untested = [h for h in hooks if f"def {h}(" not in tests]
    assert not untested, f"hooks without a test plugin implementing them: {untested}"
