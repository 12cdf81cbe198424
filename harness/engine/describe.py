"""``rlhf-harness show NAME``: everything a suite author needs to know about one registered thing.

:func:`describe` gathers, for an algorithm, task, evaluator, preference model or gold reward: the
plugin that registered it (name, distribution, version), its class and summary, what it needs
(algorithms), every setting (a ``Config`` or ``Params`` dataclass field, or a keyword argument
of the constructor) with its type, default and documentation, the settings it suggests per
policy kind (:attr:`harness.algorithm.Algorithm.suggested`) and its metrics with their
meanings. :func:`render_text` prints it for people; the dict itself is the ``--format json``
output.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from typing import Any

from harness.engine.plugins import PluginHost, Registration
from harness.errors import UnknownNameError

__all__ = ["describe", "find", "render_text", "settings"]

SETTINGS_CLASS = {"algorithm": "Config", "task": "Params"}
"""The dataclass of settings of a kind, where the kind has one (others: constructor keywords)."""


def find(host: PluginHost, name: str, kind: str | None = None) -> Registration:
    """The registration of ``name``; ``kind`` is needed only when two kinds use the name.

    :raises UnknownNameError: no such name (with the nearest), or a name of several kinds.
    """
    if kind is not None:
        return host.registration(kind, name)
    found = [r for r in host.registrations() if r.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        kinds = ", ".join(r.kind for r in found)
        raise UnknownNameError(
            f"'{name}' is registered as several kinds ({kinds}): pass --kind "
            f"({' or '.join(r.kind for r in found)})"
        )
    everything = sorted({r.name for r in host.registrations()})
    hint = difflib.get_close_matches(name, everything, n=1)
    suggestion = f" Did you mean '{hint[0]}'?" if hint else ""
    raise UnknownNameError(
        f"Nothing is registered as '{name}'.{suggestion} rlhf-harness plugins lists what is."
    )


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(?:typing|collections\.abc)\.", "", str(annotation)).replace("NoneType",
                                                                                    "None")


def _param_docs(doc: str | None) -> dict[str, str]:
    """``{name: text}`` of the ``:param name: text`` lines of a docstring."""
    found: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^:param (\w+):\s*(.*)$", lines[i])
        i += 1
        if not match:
            continue
        parts = [match.group(2)]
        while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
            parts.append(lines[i].strip())
            i += 1
        found[match.group(1)] = " ".join(parts)
    return found


def settings(reg: Registration) -> tuple[str | None, list[dict[str, Any]]]:
    """``(where the settings come from, [{name, type, default, doc}, ...])`` of a registration."""
    from harness.testing import field_docstrings

    obj = reg.obj
    holder = SETTINGS_CLASS.get(reg.kind)
    cls = getattr(obj, holder, None) if holder else None
    rows: list[dict[str, Any]] = []
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        try:
            docs = field_docstrings(cls)
        except OSError:
            docs = {}
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            rows.append({
                "name": f.name,
                "type": _type_name(hints.get(f.name, f.type)),
                "default": default,
                "required": f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING,
                "doc": _plain(docs.get(f.name, "")),
            })
        return f"{cls.__qualname__}", rows
    if not isinstance(obj, type):
        return None, rows
    try:
        signature = inspect.signature(obj.__init__)
    except (TypeError, ValueError):
        return None, rows
    docs = {**_param_docs(obj.__init__.__doc__), **_param_docs(obj.__doc__)}
    try:
        hints = typing.get_type_hints(obj.__init__)
    except Exception:
        hints = {}
    for p in list(signature.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        rows.append({
            "name": p.name,
            "type": _type_name(hints.get(p.name, p.annotation))
            if p.annotation is not p.empty else "",
            "default": None if p.default is p.empty else p.default,
            "required": p.default is p.empty,
            "doc": _plain(docs.get(p.name, "")),
        })
    return f"{obj.__qualname__}(...)" if rows else None, rows


def _summary(obj: Any) -> str:
    """The first paragraph of the class's own docstring (not a base class's), else ""."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else None
    return _plain(inspect.cleandoc(doc or "").split("\n\n")[0])


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``x`` and :role:`x` → x; whitespace collapsed."""
    text = re.sub(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`", r"\1", text)
    return " ".join(re.sub(r"``([^`]+)``", r"\1", text).split())


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in (sorted(value) if isinstance(value, set | frozenset)
                                       else value)]
    return repr(value)


def describe(host: PluginHost, name: str, kind: str | None = None) -> dict[str, Any]:
    """What ``show`` prints about ``name`` (see the module docstring), JSON-able."""
    from harness.algorithm import declared_metrics
    from harness.metrics import VOCABULARY

    reg = find(host, name, kind)
    obj, plugin = reg.obj, reg.plugin
    source, rows = settings(reg)
    out: dict[str, Any] = {
        "name": reg.name,
        "kind": reg.kind,
        "plugin": {
            "name": plugin.name,
            "distribution": plugin.distribution or ("rlhf-harness" if plugin.core else None),
            "version": plugin.version or (_core_version() if plugin.core else None),
            "core": plugin.core,
        },
        "object": f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}",
        "summary": _summary(obj),
        "settings_from": source,
        "settings": [{**r, "default": _jsonable(r["default"])} for r in rows],
    }
    if reg.kind == "algorithm":
        needs = sorted(getattr(obj, "needs", ()))
        out["needs"] = needs
        suggested = getattr(obj, "suggested", None) or {}
        out["suggested"] = _jsonable(suggested if isinstance(suggested, dict) else {})
        space = getattr(obj, "tuning_space", None)
        out["tuning_space"] = {kind: _jsonable(space(kind)) for kind in ("tabular", "neural")
                               if callable(space) and space(kind)}
        from harness.testing import required_metrics

        declared = declared_metrics(obj)
        shared = set(required_metrics(obj)) if isinstance(obj, type) else set()
        shared |= {m for m in declared if m in VOCABULARY}
        out["metrics"] = {
            "shared": {m: VOCABULARY[m].meaning for m in sorted(shared)},
            "own": {m: text for m, text in declared.items() if m not in VOCABULARY},
        }
    elif reg.kind == "evaluator":
        metric = VOCABULARY.get(reg.name)
        out["metrics"] = {"shared": {reg.name: metric.meaning} if metric else {}, "own": {}}
    return out


def _core_version() -> str:
    from harness import __version__

    return __version__


def _show(value: Any) -> str:
    """A value as a suite file (YAML) would write it: null, true, 0.05, 'adam', [1, 2]."""
    import json

    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def render_text(info: dict[str, Any], width: int = 100) -> str:
    """``info`` (from :func:`describe`) as text for a terminal, lines wrapped at ``width``."""
    import textwrap

    plugin = info["plugin"]
    origin = "core" if plugin["core"] else f"{plugin['distribution']} {plugin['version']}"
    kind = info["kind"].replace("_", " ")
    lines = [f"{info['name']}  ({kind}; plugin {plugin['name']}, {origin})"]
    if info["summary"]:
        lines += textwrap.wrap(info["summary"], width, initial_indent="  ",
                               subsequent_indent="  ")
    if "needs" in info:
        needs = ", ".join(info["needs"]) or "nothing"
        how = {"reward": "online: samples, scored by the reward model",
               "preferences": "offline: learns from the preference pairs"}
        detail = "; ".join(how[n] for n in info["needs"] if n in how)
        lines += ["", f"needs: {needs}" + (f" ({detail})" if detail else "")]
    where = info["settings_from"]
    lines += ["", f"settings ({where}):" if where else "settings: none"]
    for row in info["settings"]:
        default = "(required)" if row["required"] else _show(row["default"])
        typed = f": {row['type']}" if row["type"] else ""
        lines.append(f"  {row['name']}{typed} = {default}")
        if row["doc"]:
            lines += textwrap.wrap(row["doc"], width, initial_indent="      ",
                                   subsequent_indent="      ")
    if "suggested" in info:
        lines += ["", "suggested settings on the built-in tasks (the defaults are the paper's):"]
        if not info["suggested"]:
            lines.append("  none declared")
        for policy_kind, values in info["suggested"].items():
            text = ", ".join(f"{k}: {_show(v)}" for k, v in values.items())
            lines.append(f"  {policy_kind}: {{{text}}}")
    if info.get("tuning_space"):
        lines += ["", "search space of a suite's tuning: section (unless the suite gives one):"]
        for policy_kind, space in info["tuning_space"].items():
            text = ", ".join(
                f"{k}: {v['choices']}" if "choices" in v else
                f"{k}: {v['low']:g}–{v['high']:g}{' log' if v.get('log') else ''}"
                for k, v in space.items())
            lines.append(f"  {policy_kind}: {{{text}}}")
    if "metrics" in info:
        lines += ["", "metrics:"]
        for name, meaning in info["metrics"]["shared"].items():
            lines += textwrap.wrap(f"{name} (shared): {meaning}", width, initial_indent="  ",
                                   subsequent_indent="      ")
        for name, meaning in info["metrics"]["own"].items():
            lines += textwrap.wrap(f"{name}: {meaning or '(undocumented)'}", width,
                                   initial_indent="  ", subsequent_indent="      ")
    if info["kind"] == "algorithm":
        lines += ["", f"override in a suite: algorithms: [{{name: {info['name']}, config: "
                      f"{{FIELD: VALUE}}, per_task: {{TASK: {{FIELD: VALUE}}}}}}]"]
    elif info["kind"] == "task":
        lines += ["", f"override in a suite: tasks: [{{name: {info['name']}, params: "
                      f"{{FIELD: VALUE}}}}]"]
    return "\n".join(lines)

