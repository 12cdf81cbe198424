"""The plugin host: discovery, validation, registries and lookups with clear errors.

``get_plugin_host()`` is a factory: each call builds a fresh :class:`pluggy.PluginManager`, loads
the core's own plugins and every entry point in the group ``rlhf_harness``, then calls the
registration hooks (see :mod:`harness.hookspecs`) and keeps what each plugin registered. Tests pass
their own in-memory plugins with ``plugins=[(name, module_or_object)]`` and no entry points.

Failures are named and contained. A plugin that fails to import, whose hooks do not validate, or
whose registration hook raises is recorded as a :class:`LoadFailure` naming its distribution and
entry point, and the other plugins still load — unless strict mode is asked for
(``strict=True`` or ``RLHF_HARNESS_STRICT=1``), in which case the first failure raises
:class:`~harness.errors.PluginError`. Two plugins registering one name always raise
:class:`~harness.errors.DuplicateNameError` naming both: the harness will not pick one silently.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import DuplicateNameError, PluginError, UnknownNameError

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
ONLY_ENV = "RLHF_HARNESS_PLUGINS"
STRICT_ENV = "RLHF_HARNESS_STRICT"

CORE_PLUGINS: tuple[str, ...] = (
    "harness.preference",
    "harness.tasks.builtin",
    "harness.gold",
    "harness.evaluators",
)
"""Modules of the core that register built-ins through the same hooks as any plugin."""

KINDS: dict[str, str] = {
    "algorithm": "register_algorithms",
    "task": "register_tasks",
    "preference_model": "register_preference_models",
    "evaluator": "register_evaluators",
    "gold_reward": "register_gold_rewards",
}
"""Each kind of registered thing, and the registration hook that provides it."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from."""

    name: str
    """The plugin's name: its entry point's name, or the core module's."""
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    """``name = value`` as declared in the distribution's metadata."""
    core: bool = False

    def describe(self) -> str:
        """A short phrase naming the plugin and where it comes from, for error messages."""
        if self.core:
            return f"plugin '{self.name}' (rlhf-harness core)"
        if self.distribution:
            return f"plugin '{self.name}' ({self.distribution} {self.version})"
        return f"plugin '{self.name}'"


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered."""

    kind: str
    name: str
    obj: Any
    plugin: PluginInfo


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that could not be loaded; the message is one line."""

    plugin: PluginInfo
    message: str


@dataclass
class PluginHost:
    """The loaded plugins and everything they registered, by kind and name."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    _registry: dict[str, dict[str, Registration]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind`` (one of :data:`KINDS`)."""
        return sorted(self._kind(kind))

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` for ``kind``; an unknown name lists the available."""
        registry = self._kind(kind)
        if name in registry:
            return registry[name].obj
        label = kind.replace("_", " ")
        available = ", ".join(sorted(registry)) or "none"
        hint = difflib.get_close_matches(name, list(registry), n=1)
        suggestion = f" Did you mean '{hint[0]}'?" if hint else ""
        raise UnknownNameError(f"Unknown {label} '{name}'.{suggestion} Available: {available}")

    def registration(self, kind: str, name: str) -> Registration:
        """The full registration (including the plugin that made it) of ``name``."""
        self.get(kind, name)
        return self._kind(kind)[name]

    def registrations(self, kind: str | None = None) -> Iterator[Registration]:
        """Every registration, or those of one kind, in name order."""
        for k in KINDS if kind is None else [kind]:
            for name in sorted(self._kind(k)):
                yield self._registry[k][name]

    def algorithm(self, name: str) -> Any:
        return self.get("algorithm", name)

    def task(self, name: str) -> Any:
        return self.get("task", name)

    def preference_model(self, name: str) -> Any:
        return self.get("preference_model", name)

    def evaluator(self, name: str) -> Any:
        return self.get("evaluator", name)

    def gold_reward(self, name: str) -> Any:
        return self.get("gold_reward", name)

    def _kind(self, kind: str) -> dict[str, Registration]:
        if kind not in self._registry:
            raise UnknownNameError(
                f"Unknown kind of plugin object '{kind}'. Available: {', '.join(KINDS)}"
            )
        return self._registry[kind]


def get_plugin_host(
    *,
    entry_points: bool = True,
    plugins: Iterable[tuple[str, object]] = (),
    only: Iterable[str] | None = None,
    strict: bool | None = None,
) -> PluginHost:
    """Build a plugin host: core plugins, entry points, then ``plugins`` given in memory.

    :param entry_points: discover plugins through the entry-point group ``rlhf_harness``.
    :param plugins: extra ``(name, plugin)`` pairs, e.g. test plugins defined in a module.
    :param only: load only these entry points (default: ``$RLHF_HARNESS_PLUGINS`` if set).
    :param strict: raise on the first plugin failure (default: ``$RLHF_HARNESS_STRICT``).
    """
    plugins = list(plugins)  # iterated twice below: a generator must not be used up by the first
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes"}
    if only is None and ONLY_ENV in os.environ:
        only = [n.strip() for n in os.environ[ONLY_ENV].split(",") if n.strip()]
    only_set = None if only is None else set(only)

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm=pm)

    def fail(info: PluginInfo, message: str) -> None:
        message = " ".join(message.split())  # always one line
        if strict:
            raise PluginError(message)
        host.failures.append(LoadFailure(info, message))

    def add(info: PluginInfo, plugin: object) -> None:
        try:
            pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            if pm.is_registered(plugin):  # pluggy < 1.7 can leave it partly registered
                pm.unregister(plugin)
            fail(info, f"Invalid {info.describe()}: {exc}")
            return
        except ValueError as exc:  # name already registered
            other = host.plugins.get(info.name)
            with_whom = f" {other.describe()} already uses that name" if other else f" {exc}"
            fail(info, f"Cannot register {info.describe()}:{with_whom}.")
            return
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=info.name)
            fail(info, f"Invalid {info.describe()}: {_unknown_hook_message(exc)}")
            return
        if not pm.get_hookcallers(plugin):
            pm.unregister(name=info.name)
            fail(
                info,
                f"Invalid {info.describe()}: it implements no {hookspecs.PROJECT_NAME} hook "
                f"(hooks are functions marked with @harness.hookimpl, named one of: "
                f"{', '.join(KINDS.values())}).",
            )
            return
        host.plugins[info.name] = info

    for module_name in CORE_PLUGINS:
        info = PluginInfo(name=module_name, core=True)
        add(info, importlib.import_module(module_name))

    if entry_points:
        found: set[str] = set()
        for info, ep in _entry_points():
            found.add(info.name)
            if only_set is not None and info.name not in only_set:
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the host down
                fail(info, f"Error importing {_where(info)}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(plugin, type):
                fail(
                    info,
                    f"Invalid {_where(info)}: it names the class {plugin.__name__}; an entry "
                    f"point must name a module or a module-level object.",
                )
                continue
            add(info, plugin)
        if only_set is not None:
            for missing in sorted(only_set - found - {p for p, _ in plugins}):
                fail(
                    PluginInfo(name=missing),
                    f"{ONLY_ENV} names '{missing}', but no installed distribution has an entry "
                    f"point of that name in group '{ENTRY_POINT_GROUP}'. "
                    f"Installed: {', '.join(sorted(found)) or 'none'}",
                )

    for name, plugin in plugins:
        add(PluginInfo(name=name), plugin)

    _collect_registrations(host, fail)
    return host


def _entry_points() -> Iterator[tuple[PluginInfo, metadata.EntryPoint]]:
    """Entry points of group ``rlhf_harness`` in installed distributions, each once."""
    seen: set[tuple[str, str]] = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            key = (re.sub(r"[-_.]+", "-", dist_name).lower(), ep.name)
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            yield (
                PluginInfo(
                    name=ep.name,
                    distribution=dist_name,
                    version=dist.version,
                    entry_point=f"{ep.name} = {ep.value}",
                ),
                ep,
            )


def _where(info: PluginInfo) -> str:
    return f"plugin '{info.name}' (entry point '{info.entry_point}' of {info.distribution} " \
        f"{info.version})"


def _unknown_hook_message(exc: pluggy.PluginValidationError) -> str:
    text = str(exc)
    match = re.search(r"unknown hook '([^']+)'", text)
    if match:
        hint = difflib.get_close_matches(match.group(1), KINDS.values(), n=1)
        if hint:
            text += f" (did you mean '{hint[0]}'?)"
    return text


def _collect_registrations(host: PluginHost, fail: Any) -> None:
    """Call every registration hook, one implementation at a time, to know who registered what."""
    for kind, hook_name in KINDS.items():
        caller = getattr(host.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order (pluggy calls them reversed)
            info = host.plugins[impl.plugin_name]
            made: list[Registration] = []

            def register(name: str, obj: Any, *, _info: PluginInfo = info, _kind: str = kind,
                         _made: list[Registration] = made) -> None:
                if not isinstance(name, str) or not _NAME_RE.match(name):
                    raise PluginError(
                        f"{_info.describe()} registered the {_kind.replace('_', ' ')} name "
                        f"{name!r}: names are lower-case letters, digits, '-', '_' and '.'."
                    )
                _made.append(Registration(_kind, name, obj, _info))

            try:
                impl.function(register=register)
            except Exception as exc:
                if isinstance(exc, PluginError) and not isinstance(exc, DuplicateNameError):
                    fail(info, str(exc))
                else:
                    fail(info, f"{info.describe()} raised in {hook_name}: "
                               f"{type(exc).__name__}: {exc}")
                continue
            registry = host._registry[kind]
            for reg in made:
                if reg.name in registry:
                    first = registry[reg.name].plugin
                    if first.name == reg.plugin.name:
                        raise DuplicateNameError(
                            f"{first.describe()} registers the {kind.replace('_', ' ')} "
                            f"'{reg.name}' twice."
                        )
                    raise DuplicateNameError(
                        f"Duplicate {kind.replace('_', ' ')} '{reg.name}': registered by "
                        f"{first.describe()} and by {reg.plugin.describe()}. Uninstall one, or "
                        f"limit loading with {ONLY_ENV}."
                    )
                registry[reg.name] = reg
