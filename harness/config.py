"""Typed configuration: build a documented dataclass from a user's mapping, or say what is wrong.

Algorithm ``Config``s and task ``Params`` are plain dataclasses. :func:`build_config` validates a
mapping against one with pydantic (types are coerced only where lossless, e.g. ``1`` → ``1.0``),
rejects unknown keys suggesting the nearest field, and raises :class:`~harness.errors.ConfigError`
whose message names where the mapping came from and the offending key.

**Validation hook.** Checks that involve values — a range, two fields that must agree — go in
the dataclass's ``__post_init__``, raising :class:`ValueError` (or :class:`TypeError`) with a
message naming the field. :func:`build_config` turns one into a :class:`ConfigError` naming the
key (the field the message names, among those given; :func:`rejected_key` finds it), so
``rlhf-harness validate`` reports it with the suite file's line before anything runs.

:func:`check_space` validates a search space over a config's fields, for tuning.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any] | None, *, where: str = "") -> T:
    """An instance of dataclass ``cls`` from ``values`` (missing fields take their defaults)."""
    import pydantic

    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    prefix = f"{where}: " if where else ""
    for key in values:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"{prefix}unknown key '{key}'{suggestion}; {cls.__qualname__} accepts: "
                f"{', '.join(names)}"
            )
    for key, value in values.items():
        if isinstance(value, bool) and not _accepts_bool(cls, key):
            raise ConfigError(
                f"{prefix}'{key}': expected a number, not the boolean {str(value).lower()}"
            )
    try:
        return pydantic.TypeAdapter(cls).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ").removeprefix("Type error, ")
        if loc:
            raise ConfigError(f"{prefix}'{loc}': {message} (got {err.get('input')!r})") from None
        # No field: __post_init__ raised. Name the field its message names, if any.
        key = _named_field(cls, values, message)
        named = f"'{key}': " if key else ""
        raise ConfigError(f"{prefix}{named}{message}") from None


def _named_field(cls: type, values: Mapping[str, Any], message: str) -> str | None:
    """The field a ``__post_init__`` message names: the first it names (in the message's
    order) among those given in ``values``, else the first it names."""
    import re

    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    found = {n: m.start() for n in names
             if (m := re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message))}
    named = sorted(found, key=found.__getitem__)
    given = [n for n in named if n in values]
    return (given or named or [None])[0]


def rejected_key(cls: type, values: Mapping[str, Any]) -> str | None:
    """The key of ``values`` that :func:`build_config` rejects first, if any: an unknown key, a
    value of the wrong type, or the field a ``__post_init__`` check names (for its line)."""
    import pydantic

    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in values if k not in names]
    if unknown:
        return str(unknown[0])
    for key, value in values.items():
        if isinstance(value, bool) and not _accepts_bool(cls, key):
            return str(key)
    try:
        pydantic.TypeAdapter(cls).validate_python(dict(values), strict=False)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        if err["loc"]:
            return str(err["loc"][0])
        return _named_field(cls, values, str(err["msg"]))
    return None


def _accepts_bool(cls: type, key: str) -> bool:
    """Whether field ``key`` of ``cls`` takes booleans (pydantic's lax mode would turn ``true``
    into 1 for an int or float field: a YAML slip, not a setting)."""
    import typing

    try:
        hint = typing.get_type_hints(cls)[key]
    except Exception:  # unresolvable annotations: leave the value to pydantic
        return True

    def takes(t: Any) -> bool:
        if t is bool or t is Any or t is object:
            return True
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            return takes(typing.get_args(t)[0])
        if origin is typing.Literal:
            return any(isinstance(a, bool) for a in typing.get_args(t))
        if origin is typing.Union or type(t).__name__ == "UnionType":
            return any(takes(a) for a in typing.get_args(t))
        return t not in (int, float, type(None))

    return takes(hint)


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as a plain JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_hash(obj: Any, length: int = 12) -> str:
    """A stable short hash of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def check_space(space: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Validate a search space ``{field: {low, high, log?, int?} | {choices: [...]}}``: a
    suite's ``tuning.space`` or a plugin's :meth:`~harness.algorithm.Algorithm.tuning_space`,
    whose fields :mod:`harness.engine.tuning` samples."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: empty search space; give at least one field")
    out: dict[str, dict[str, Any]] = {}
    for name, dist in space.items():
        at = f"{where}.{name}"
        if not isinstance(dist, dict):
            raise ConfigError(f"{at}: a range {{low, high, log}} or {{choices: [...]}}")
        unknown = set(dist) - {"low", "high", "log", "int", "choices"}
        if unknown:
            raise ConfigError(f"{at}: unknown key '{sorted(unknown)[0]}' (use low, high, log, "
                              f"int or choices)")
        if "choices" in dist:
            choices = dist["choices"]
            if set(dist) != {"choices"} or not isinstance(choices, list) or not choices:
                raise ConfigError(f"{at}: choices is a non-empty list, alone")
            out[name] = {"choices": list(choices)}
            continue
        low, high = dist.get("low"), dist.get("high")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not numbers:
            raise ConfigError(f"{at}: low and high are numbers (got {low!r}, {high!r})")
        if not math.isfinite(low) or not math.isfinite(high) or low >= high:
            raise ConfigError(f"{at}: low ({low}) must be below high ({high})")
        log = bool(dist.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{at}: a log range needs low > 0 (got {low})")
        out[name] = {"low": low, "high": high, "log": log, "int": bool(dist.get("int", False))}
    return out
