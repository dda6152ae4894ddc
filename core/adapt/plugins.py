"""Finding, loading and validating plugins, and the registry of what they provide.

Built-ins (``DEFAULT_PLUGINS``) are registered through the same hooks as installed packs, which
are found through the ``adapt`` entry-point group. Environment variables:

- ``ADAPT_LOAD_PLUGINS``: comma-separated allowlist of plugin or distribution names to load
  (empty: load no installed plugin);
- ``ADAPT_DISABLE_PLUGINS``: ``1`` / ``all`` to load none, or a comma-separated list to skip;
- ``ADAPT_TRACE_PLUGINS``: print every hook call to stderr.

Every hook is called through pluggy (so ``wrapper``, ``tryfirst`` and ``firstresult`` work), with
each plugin's implementation guarded: a plugin that fails to import, implements a hook that has
no spec, or raises in a hook is recorded with its error (``adapt plugins`` shows it) or warned
about, and never stops the other plugins. Only ``adapt_model_source`` lets errors through: the
pack that claimed a model reference reports why it cannot read it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from adapt import hookspecs
from adapt.api import Backend, Engine, Method, Saver, Task
from adapt.errors import PluginError

ENTRY_POINT_GROUP = "adapt"
DEFAULT_PLUGINS = ("adapt.builtins",)
KINDS: dict[str, type] = {"task": Task, "method": Method, "backend": Backend, "saver": Saver, "engine": Engine}
CONFIG_SECTIONS = (None, "model", "data", "training")  # where packs may add config keys (None: the top level)
PASS_ERRORS = frozenset({"adapt_model_source"})  # hooks whose errors reach the user

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
    "engine": {"hf": "adapt-core", "mmengine": "adapt-vision"},
    "config": dict.fromkeys(["save_as_mlflow_model", "tracking", "model.mlflow_model_path"], "adapt-mlflow"),
}

log = logging.getLogger("adapt")


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
            "config": self.registered.get("config", []), "errors": self.errors,
        }


@dataclass
class ConfigFields:
    """Config keys a plugin added (``adapt_register_config``): the model holding them, where they go."""

    model: type
    section: str | None
    owner: PluginInfo


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
        if os.environ.get("ADAPT_TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(self._trace_call, lambda *args: None)
        self.plugins: dict[str, PluginInfo] = {}
        self.objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.owners: dict[tuple[str, str], PluginInfo] = {}
        self.conflicts: dict[tuple[str, str], list[PluginInfo]] = {}
        self.config_fields: list[ConfigFields] = []
        self._caller: PluginInfo | None = None  # the plugin whose hook implementation is running

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
            getattr(self.pm.hook, f"adapt_register_{kind}s")(register=self._registrar(kind))
        self.pm.hook.adapt_register_config(register=self._add_config)
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
        callers = self.pm.get_hookcallers(module) or []
        info.hooks = sorted(caller.name for caller in callers)
        for caller in callers:
            for impl in caller.get_hookimpls():
                if impl.plugin is module and not (impl.wrapper or impl.hookwrapper):
                    impl.function = self._guarded(info, caller.name, impl.function)  # type: ignore[misc]

    def _guarded(self, info: PluginInfo, hook: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (a plugin's implementation of ``hook``) as pluggy calls it: its failure is
        recorded against the plugin (registration hooks) or warned about (the others), and the
        call goes on with the next plugin."""

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            caller, self._caller = self._caller, info
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                if hook in PASS_ERRORS:
                    raise
                if hook.startswith("adapt_register_"):
                    info.errors.append(f"{hook} raised {_error_text(exc)}")
                else:
                    log.warning("plugin %s failed in %s: %s", info.label, hook, _error_text(exc))
                return None
            finally:
                self._caller = caller

        return call

    def _trace_call(self, hook: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        for impl in reversed(impls):  # pluggy calls the last registered first
            _trace(f"{hook}({', '.join(kwargs)}) -> {impl.plugin_name}")

    def _registrar(self, kind: str) -> Callable[[Any], None]:
        base = KINDS[kind]

        def register(obj: Any) -> None:
            info = self._caller
            if info is None:
                raise TypeError("register() is for the plugin's own registration hook")
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

    def _add_config(self, fields: type, section: str | None = None) -> None:
        """``register`` of ``adapt_register_config``: the fields of a pydantic model become keys
        of the run config, at the top level or in a core section."""
        from pydantic import BaseModel

        info = self._caller
        if info is None:
            raise TypeError("register() is for the plugin's own adapt_register_config hook")
        if not (isinstance(fields, type) and issubclass(fields, BaseModel)):
            raise TypeError(f"register() takes a pydantic model class whose fields are config keys, got {fields!r}")
        if section not in CONFIG_SECTIONS:
            raise ValueError(f"register(section={section!r}): packs add keys to the top level (None) or to "
                             f"{', '.join(s for s in CONFIG_SECTIONS if s)}")
        prefix = f"{section}." if section else ""
        for other in self.config_fields:
            shared = set(fields.model_fields) & set(other.model.model_fields)
            if other.section == section and shared:
                key = prefix + sorted(shared)[0]
                message = (f"config key {key} is added by two plugins: {other.owner.label} ({other.owner.name}) "
                           f"and {info.label} ({info.name}); uninstall one, or disable one with "
                           f"ADAPT_DISABLE_PLUGINS={info.name}")
                for owner in (other.owner, info):
                    owner.errors.append(message)
                return
        self.config_fields.append(ConfigFields(fields, section, info))
        info.registered.setdefault("config", []).extend(prefix + name for name in fields.model_fields)

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
        """The plugin that registered ``name`` (its distribution, version...), if any."""
        return self.owners.get((kind, name))

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a failing plugin is warned about, not fatal."""
        getattr(self.pm.hook, hook)(**kwargs)


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
