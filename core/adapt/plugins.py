"""Finding, loading and validating plugins, and the registry of what they provide.

Built-ins (``DEFAULT_PLUGINS``) are registered through the same hooks as installed packs, which
are found through the ``adapt`` entry-point group. Environment variables:

- ``ADAPT_LOAD_PLUGINS``: comma-separated allowlist of plugin or distribution names to load
  (empty: load no installed plugin);
- ``ADAPT_DISABLE_PLUGINS``: ``1`` / ``all`` to load none, or a comma-separated list to skip;
- ``ADAPT_TRACE_PLUGINS``: print every hook call to stderr.

A plugin that fails to import, implements a hook that has no spec, or raises while registering
is recorded with its error (``adapt plugins`` shows it) and never breaks the other plugins.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from adapt import hookspecs
from adapt.api import Backend, Method, Saver, Task
from adapt.errors import PluginError

ENTRY_POINT_GROUP = "adapt"
DEFAULT_PLUGINS = ("adapt.builtins",)
KINDS: dict[str, type] = {"task": Task, "method": Method, "backend": Backend, "saver": Saver}

# Names our own packs provide, so an unknown name can say which distribution to install.
KNOWN_PROVIDERS: dict[str, dict[str, str]] = {
    "task": {
        **dict.fromkeys(
            ["text_classification", "token_classification", "question_answering",
             "summarization", "translation", "text_generation"], "adapt-nlp"),
        **dict.fromkeys(
            ["image_classification", "image_classification_multilabel", "object_detection",
             "instance_segmentation", "pose_detection"], "adapt-vision"),
    },
    "method": dict.fromkeys(
        ["full", "last_layer", "lora", "dora", "ssf", "qlora", "qdora", "qssf"], "adapt-methods"),
    "backend": dict.fromkeys(["ddp", "fsdp", "deepspeed"], "adapt-backends"),
    "saver": {"mlflow": "adapt-mlflow"},
}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin: where it comes from and what it registered."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.distribution or self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "module": self.module, "distribution": self.distribution,
            "version": self.version, "hooks": self.hooks,
            **{f"{kind}s": self.registered.get(kind, []) for kind in KINDS},
            "errors": self.errors,
        }


def _split_env(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _trace(message: str) -> None:
    if os.environ.get("ADAPT_TRACE_PLUGINS"):
        print(f"[adapt trace] {message}", file=sys.stderr)


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Registry:
    """Everything the loaded plugins provide, by kind and name, with their owners."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("adapt")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.owners: dict[tuple[str, str], PluginInfo] = {}
        self.conflicts: dict[tuple[str, str], list[PluginInfo]] = {}

    # loading -------------------------------------------------------------------------------
    def load(self) -> Registry:
        for module_name in DEFAULT_PLUGINS:
            info = PluginInfo(name=module_name, module=module_name, distribution="adapt-core",
                              version=_version("adapt-core"))
            self._register_module(info, lambda m=module_name: importlib.import_module(m))
        allow = _split_env("ADAPT_LOAD_PLUGINS")
        deny = _split_env("ADAPT_DISABLE_PLUGINS") or set()
        if deny & {"1", "all", "true"}:
            allow = set()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            names = {ep.name, dist} - {None}
            if (allow is not None and not names & allow) or names & deny:
                _trace(f"skipping plugin {ep.name} ({dist}): disabled by environment")
                continue
            info = PluginInfo(name=ep.name, module=ep.value, distribution=dist,
                              version=ep.dist.version if ep.dist else None)
            self._register_module(info, ep.load)
        for kind in KINDS:
            self._collect(kind)
        return self

    def _register_module(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        self.plugins[info.name] = info
        try:
            module = load()
        except Exception as exc:  # a broken plugin must not break the CLI
            info.errors.append(f"failed to import {info.module}: {_error_text(exc)}")
            return
        try:
            self.pm.register(module, name=info.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            known = ", ".join(sorted(h for h in dir(hookspecs) if h.startswith("adapt_")))
            info.errors.append(f"invalid hook implementation: {exc} (known hooks: {known})")
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])

    def call_each(self, hook: str, **kwargs: Any) -> Iterator[tuple[PluginInfo, Any]]:
        """Call every implementation of ``hook`` separately, yielding (plugin, result or error),
        so that one plugin's failure is reported against it and does not stop the others."""
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            info = self.plugins[impl.plugin_name]
            _trace(f"{hook}({', '.join(kwargs)}) -> {info.name}")
            try:
                yield info, impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                yield info, exc

    def _collect(self, kind: str) -> None:
        for info, error in self._register_calls(kind):
            if error is not None:
                info.errors.append(f"adapt_register_{kind}s raised {_error_text(error)}")

    def _register_calls(self, kind: str) -> Iterator[tuple[PluginInfo, Any]]:
        hook = f"adapt_register_{kind}s"
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            info = self.plugins[impl.plugin_name]
            _trace(f"{hook}(register) -> {info.name}")
            try:
                impl.function(self._registrar(kind, info))
                yield info, None
            except Exception as exc:
                yield info, exc

    def _registrar(self, kind: str, info: PluginInfo) -> Callable[[Any], None]:
        base = KINDS[kind]

        def register(obj: Any) -> None:
            if isinstance(obj, type):
                raise TypeError(f"register() takes a {base.__name__} instance, not the class {obj.__name__}")
            if not isinstance(obj, base):
                raise TypeError(f"register() takes a {base.__name__} (adapt.{base.__name__}), got {obj!r}")
            name = obj.name
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{base.__name__} {obj!r} needs a name that is a Python identifier, got {name!r}")
            key = (kind, name)
            if key in self.owners and self.owners[key] is not info:
                first = self.owners[key]
                self.conflicts.setdefault(key, [first]).append(info)
                message = (f"{kind} {name!r} is registered by two plugins: {first.label} ({first.name}) "
                           f"and {info.label} ({info.name}); uninstall one, or disable one with "
                           f"ADAPT_DISABLE_PLUGINS={info.name}")
                for owner in (first, info):
                    owner.errors.append(message)
                return
            self.objects[kind][name] = obj
            self.owners[key] = info
            info.registered.setdefault(kind, []).append(name)

        return register

    # lookup --------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.objects[kind])

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name``, or a PluginError saying what is installed and
        which distribution would provide it."""
        if (kind, name) in self.conflicts:
            owners = " and ".join(f"{p.label} ({p.name})" for p in self.conflicts[(kind, name)])
            raise PluginError(f"{kind} {name!r} is registered by two plugins: {owners}; uninstall "
                              "one, or disable one with ADAPT_DISABLE_PLUGINS=<plugin name>")
        if name in self.objects[kind]:
            return self.objects[kind][name]
        installed = ", ".join(self.names(kind)) or "none"
        message = f"unknown {kind} {name!r}. Installed {kind}s: {installed}."
        provider = KNOWN_PROVIDERS.get(kind, {}).get(name)
        if provider:
            message += f" {name!r} is provided by the {provider} distribution: pip install {provider}"
        broken = [p for p in self.plugins.values() if p.errors and not p.registered]
        if broken:
            message += " Plugins that failed to load: " + "; ".join(
                f"{p.label}: {p.errors[0]}" for p in broken) + " (see `adapt plugins`)."
        raise PluginError(message)

    def owner(self, kind: str, name: str) -> PluginInfo | None:
        return self.owners.get((kind, name))

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a failing plugin is warned about, not fatal."""
        import logging

        for info, outcome in self.call_each(hook, **kwargs):
            if isinstance(outcome, Exception):
                logging.getLogger("adapt").warning(
                    "plugin %s failed in %s: %s", info.label, hook, _error_text(outcome))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = Registry().load()
    return _registry


def reset_registry() -> None:
    """Forget the loaded plugins (tests, or after installing a pack in-process)."""
    global _registry
    _registry = None
