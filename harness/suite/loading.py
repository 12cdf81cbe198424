"""Reading a suite file: bounded YAML in, a :class:`~harness.suite.model.Suite` out, errors as
one line each naming the file, the line and the key.

The file is read as UTF-8 text, YAML aliases may expand to at most
:data:`~harness.suite.schema.MAX_YAML_NODES` nodes, and a key may appear once per mapping.
pydantic's errors are mapped back to the YAML lines they come from (:func:`_describe`), and
:func:`sections` lists the keys of every section for the suite reference.
"""

from __future__ import annotations

import difflib
import typing
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from harness.errors import ConfigError
from harness.suite.model import Suite
from harness.suite.schema import MAX_YAML_NODES, BudgetSpec

# --- loading and validating ----------------------------------------------------------------------


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file (structure only; see :func:`check_suite` for plugins)."""
    try:
        return _load_suite(Path(path))
    except RecursionError:  # the YAML reader and the checks recurse once per level
        raise ConfigError(f"{path}: nested too deeply to read (a suite is a few levels "
                          f"deep)") from None


def _load_suite(path: Path) -> Suite:
    if not path.exists():
        raise ConfigError(f"{path}: suite file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a suite is YAML text"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_nodes(root, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark and mark and context_mark.line != mark.line:
            source = (text.splitlines()[context_mark.line:] or [""])[0].strip()[:60]
            problem += f" ({context} started at line {context_mark.line + 1}: {source!r})"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    lines = _line_index(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:{lines.get((), 1)}: (top level): a suite file is a mapping (name, tasks, "
            f"algorithms, ...), not {'empty' if data is None else type(data).__name__}"
        )
    _check_strings(data, (), path, lines)
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines, data)) from None


def _check_nodes(root: yaml.Node | None, path: Path) -> None:
    """Refuse a document whose aliases expand beyond :data:`MAX_YAML_NODES` nodes (an alias
    bomb), and a mapping that repeats a key (YAML would keep the last one silently)."""
    if root is None:
        return
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:  # nodes once aliases are expanded; each node sized once
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a node met again while being sized counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[id(node)] = total
        return total

    def duplicates(node: yaml.Node, visited: set[int]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise ConfigError(
                            f"{path}:{line}: duplicate key '{key.value[:60]}' (first at line "
                            f"{first[key.value]}); a key may appear once in a mapping"
                        )
                    first[key.value] = line
                duplicates(value, visited)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                duplicates(item, visited)

    total = size(root)
    if total > MAX_YAML_NODES:
        raise ConfigError(
            f"{path}: the YAML expands to {total:,} nodes once its aliases are expanded; at most "
            f"{MAX_YAML_NODES:,} (is an alias repeated inside another?)"
        )
    duplicates(root, set())


def _check_strings(value: Any, keys: tuple[Any, ...], path: Path, lines: dict) -> None:
    """No NUL (or other control character but tab and newline) in any key or string."""

    def bad(text: str) -> str | None:
        return next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"),
                    None)

    def fail(char: str, at: tuple[Any, ...]) -> None:
        line = _nearest_line(lines, at)
        where = f"{path}:{line}" if line else str(path)
        key = ".".join(str(k)[:40] for k in at) or "(top level)"
        raise ConfigError(f"{where}: {key}: holds the control character {char!r}")

    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (c := bad(k)):
                fail(c, (*keys, k.replace(c, "?")))
            _check_strings(v, (*keys, k), path, lines)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, (*keys, i), path, lines)
    elif isinstance(value, str) and (c := bad(value)):
        fail(c, keys)


# --- error messages with lines -------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path in the YAML document to its 1-based line (from the node marks)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, key.value)
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
                index[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return index


def _nearest_line(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _union_tag(part: Any) -> bool:
    """A part of an error location that names a member of a union (``seeds`` is a list or a
    mapping; ``compare`` a list or a mapping), not a key: ``list[...]``, ``SeedsSpec``,
    ``CompareSpec``."""
    return isinstance(part, str) and (part.startswith("list[")
                                      or part in ("SeedsSpec", "CompareSpec", "none"))


UNION_FORMS = {
    "seeds": "a list of seeds, or a mapping {instances: [...], replicates: n}",
    "compare": "a list of pairs [[a, b], ...], or a mapping {baseline: LABEL}",
}
"""What a key that takes either of two forms expects, when a value is neither."""


def _describe(exc: ValidationError, path: Path, lines: dict, data: dict) -> str:
    """One line: ``file:line: key.path: what is wrong`` (with a suggestion for unknown keys)."""
    errors = []
    for e in exc.errors():
        tagged = any(_union_tag(p) for p in e["loc"])
        if tagged and e["type"] in ("list_type", "model_type", "dict_type"):
            continue  # the other form of a union field is what was meant
        errors.append({**e, "loc": tuple(p for p in e["loc"] if not _union_tag(p))})
    if not errors:
        first = exc.errors()[0]
        errors = [{**first, "loc": tuple(p for p in first["loc"] if not _union_tag(p)),
                   "msg": UNION_FORMS.get(str(first["loc"][0]), UNION_FORMS["seeds"])}]
    # An unknown key first: a misspelt required key (``seedz``) also makes ``seeds`` missing,
    # and the misspelling, with its suggestion, is what the user has to fix.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = _nearest_line(lines, loc)
    where = f"{path}:{line}" if line else str(path)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        fields = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        allowed = f"; allowed here: {', '.join(fields)}" if fields else ""
        belongs = "" if hint else _belongs(loc, parent, data)
        return f"{where}: unknown key '{key}'{suggestion}{allowed}{belongs}"
    if err["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{where}: {key}: {message}{shown}"


def sections() -> dict[type[BaseModel], list[str]]:
    """Every pydantic model of the suite schema, in the order a suite file meets them, with the
    key paths where it appears (``tasks[].budget``: the ``budget`` of an entry of ``tasks``)."""
    found: dict[type[BaseModel], list[str]] = {Suite: [""]}

    def walk(model: type, path: str) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            for inner in _models(info.annotation, BaseModel):
                here = f"{path}.{name}" if path else name
                if _is_list_of(info.annotation, inner):
                    here += "[]"
                places = found.setdefault(inner, [])
                if here not in places:
                    places.append(here)
                    walk(inner, here)

    walk(Suite, "")
    return {model: sorted(paths, key=lambda p: (p.count("."), p)) for model, paths in
            found.items()}


def _models(annotation: Any, base: type) -> list[type]:
    """The subclasses of ``base`` inside a type annotation (``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg, base)]


def _is_list_of(annotation: Any, model: type) -> bool:
    if typing.get_origin(annotation) is list:
        return model in typing.get_args(annotation)
    return any(_is_list_of(a, model) for a in typing.get_args(annotation))


def _key_places() -> dict[str, list[str]]:
    """Every key of the suite schema, with the paths of the sections that have it
    (``tasks[].budget``: the budget of an entry of ``tasks``)."""
    places: dict[str, list[str]] = {}
    for model, paths in sections().items():
        for name in model.model_fields:  # type: ignore[attr-defined]
            for path in paths:
                places.setdefault(name, []).append(f"{path}.{name}" if path else name)
    return places


def _belongs(loc: tuple[Any, ...], parent: type[BaseModel] | None, data: dict) -> str:
    """``; KEY belongs in ...`` for an unknown key that is a key of another section (or a
    task's name, or ``per_task``, under ``budget``: a task's own budget goes in its entry)."""
    name = str(loc[-1])
    tasks = [t.get("name") for t in data.get("tasks") or [] if isinstance(t, dict)]
    if parent is BudgetSpec and (name == "per_task" or name in tasks):
        task = tasks[0] if tasks else "bandit"
        example = "tasks: [{name: " + str(task) + ", budget: {samples: 1000}}]"
        return (f"; a task's own budget goes in its entry of tasks, e.g. {example} (see "
                "docs/suite-reference.md)")
    places = _key_places().get(name)
    if not places:
        return ""
    return (f"; '{name}' belongs in {' or '.join(places)} (see docs/suite-reference.md)")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` in a suite."""
    model: Any = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        annotation = field.annotation
        inner = list(getattr(annotation, "__args__", None) or [])
        inner += [a for i in inner for a in getattr(i, "__args__", None) or []]
        candidates = [annotation, *inner]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model
