"""Typed configuration: build a documented dataclass from a user's mapping, or say what is wrong.

Algorithm ``Config``s and task ``Params`` are plain dataclasses. :func:`build_config` validates a
mapping against one with pydantic (types are coerced only where lossless, e.g. ``1`` → ``1.0``),
rejects unknown keys suggesting the nearest field, and raises :class:`~harness.errors.ConfigError`
whose message names where the mapping came from and the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
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
    try:
        return pydantic.TypeAdapter(cls).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{prefix}'{loc}': {err['msg']} (got {err.get('input')!r})") from None


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as a plain JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_hash(obj: Any, length: int = 12) -> str:
    """A stable short hash of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
