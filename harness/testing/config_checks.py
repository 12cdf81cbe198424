"""The ``config`` check: ``Config`` is a dataclass whose every field has a default and a
docstring, and every setting it accepts (each numeric field set in turn to each of
:data:`SETTING_PROBES`) builds the algorithm.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.algorithm import Algorithm
from harness.config import build_config
from harness.errors import HarnessError
from harness.testing.common import (
    _GLOBAL_SEEDS,
    _global_rng,
    _names,
    _one_thread,
    _raised,
    field_docstrings,
)

SETTING_PROBES: dict[type, tuple[Any, ...]] = {
    int: (-1, 0, 1, 2, 3),
    float: (-1.0, 0.0, 0.5, 1.0, 1.5),
}
"""Values the ``config`` check gives each ``int`` or ``float`` field of ``Config`` in turn: a
value the Config accepts must build (a value it cannot take is refused in ``__post_init__``)."""


class ConfigChecks:
    """The ``config`` check of :class:`~harness.testing.kit.Conformance`: a documented ``Config``
    whose every accepted setting builds the algorithm."""

    def _check_config(self, cls: type[Algorithm]) -> str | None:
        config_cls = getattr(cls, "Config", None)
        if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
            return (f"{cls.__name__}.Config must be a dataclass (decorate it with "
                    f"@dataclasses.dataclass), got {config_cls!r}")
        fields = dataclasses.fields(config_cls)
        no_default = [
            f.name for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if no_default:
            return (f"Config field(s) {_names(no_default)} have no default: every "
                    f"hyperparameter needs one, so that a suite may omit it")
        try:
            docs = field_docstrings(config_cls)
        except OSError:
            return (f"cannot read the source of {config_cls.__qualname__} to find its field "
                    f"docstrings (define it in a module file, not with exec or in a REPL)")
        undocumented = [f.name for f in fields if f.name not in docs]
        if undocumented:
            return (f"Config field(s) {_names(undocumented)} have no docstring: write a string "
                    f"literal on the line after each field saying what it is and where its "
                    f"default comes from")
        try:
            build_config(config_cls, {}, where="its defaults")
        except HarnessError as exc:
            return f"Config's defaults do not validate: {exc}"
        return self._settings_problem(cls, config_cls)

    def _settings_problem(self, cls: type[Algorithm], config_cls: type) -> str | None:
        """The first setting that the Config accepts (so ``rlhf-harness validate`` says ok)
        and building the algorithm rejects: each numeric field of the kit's config set in
        turn to each of :data:`SETTING_PROBES` (and ``None`` where the field allows it)."""
        import typing

        try:
            hints = typing.get_type_hints(config_cls)
        except Exception:  # unresolvable annotations: nothing to probe
            return None
        for f in dataclasses.fields(config_cls):
            for value in _probes(hints.get(f.name)):
                values = {**self.config, f.name: value}
                try:
                    build_config(config_cls, values)
                except Exception:
                    continue  # refused where validate sees it: as it should be
                with _global_rng(_GLOBAL_SEEDS[0]), _one_thread():
                    try:
                        self.build(config=values)
                    except Exception as exc:
                        return (f"Config accepts {f.name}={value!r} (rlhf-harness validate "
                                f"says ok) but building the algorithm with it {_raised(exc)}: "
                                f"check the setting in Config.__post_init__ (raise "
                                f"ValueError), where validate sees it")
        return None


def _probes(hint: Any) -> tuple[Any, ...]:
    """:data:`SETTING_PROBES` for a field annotated ``hint`` (``int``, ``float``, or one of them
    or ``None``); nothing for other fields, whose values may depend on the task."""
    import types
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Annotated:
        return _probes(args[0])
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and members[0] in SETTING_PROBES and len(args) == 2:
            return (*SETTING_PROBES[members[0]], None)
        return ()
    return SETTING_PROBES.get(hint, ())
