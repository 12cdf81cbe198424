"""Documentation generated from the code, so that it cannot drift from it.

``python -m harness.devkit.docs`` (in a source checkout) does four things:

- writes ``docs/hooks.md``, the reference of every extension point, from the hook
  specifications in :mod:`harness.hookspecs` (their signatures, docstrings and section comments)
  and the algorithm interface in :mod:`harness.algorithm`;
- writes ``docs/api.md``, the reference of what an algorithm's ``step()`` touches
  (:data:`API_CLASSES`, :mod:`harness.rl`) and the metric vocabulary of :mod:`harness.metrics`,
  from their signatures and docstrings;
- writes ``docs/suite-reference.md``, the reference of every key of a suite file, from the
  schema in :mod:`harness.suite` (each key's type, default, description, example and the places
  it may appear), with the example suite ``docs/examples/tiny-lm.yaml``;
- refreshes, in every ``docs/*.md``, each fenced code block announced by a marker line
  ``<!-- include: PATH -->`` (``PATH`` relative to the Markdown file) with that file's text, so
  that a tutorial shows its example files verbatim.

``python -m harness.devkit.docs --check`` writes nothing and exits with status 1, naming the stale
files, when either would change; the tests check the same.

**One module, over 600 lines, on purpose.** It is the one ``python -m harness.devkit.docs`` command:
its generators share the conversion of docstrings to Markdown (:func:`rst_to_markdown`) and
one ``--check`` over all the files they write (:func:`stale_files`), which the tests call.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "API_CLASSES",
    "API_PAGE",
    "HOOKS_PAGE",
    "SUITE_EXAMPLE",
    "SUITE_PAGE",
    "api_markdown",
    "hook_signature",
    "hooks_markdown",
    "hookspecs",
    "include_files",
    "main",
    "rst_to_markdown",
    "stale_files",
    "suite_reference_markdown",
    "suite_sections",
]

ROOT = Path(__file__).resolve().parents[2]
"""The source checkout this module belongs to."""

HOOKS_PAGE = "docs/hooks.md"
"""The hook reference, relative to the root of the checkout."""

API_PAGE = "docs/api.md"
"""The reference of what a ``step()`` touches, relative to the root of the checkout."""

SUITE_PAGE = "docs/suite-reference.md"
"""The reference of a suite file's keys, relative to the root of the checkout."""

SUITE_EXAMPLE = "docs/examples/tiny-lm.yaml"
"""The example suite the suite reference shows (relative to the root of the checkout)."""

API_CLASSES: tuple[str, ...] = (
    "harness.algorithm.RunContext",
    "harness.policy.Policy",
    "harness.policy.PromptBatch",
    "harness.policy.ResponseBatch",
    "harness.data.PreferenceBatches",
    "harness.algorithm.ShuffledPasses",
    "harness.algorithm.LazyRows",
    "harness.compute.ComputeMeter",
    "harness.exact.ExactProblem",
    "harness.pieces.OnlineAlgorithm",
    "harness.pieces.OfflineAlgorithm",
)
"""The classes ``docs/api.md`` documents, in its order (then :mod:`harness.rl`)."""

INCLUDE_RE = re.compile(r"^<!-- include: (?P<path>\S+) -->[ \t]*$", re.MULTILINE)
_FENCE_RE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                       re.MULTILINE | re.DOTALL)
_LANGUAGES = {".py": "python", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".md": "markdown"}


# --- hook reference ------------------------------------------------------------------------------


def hookspecs() -> list[Callable[..., Any]]:
    """The hook specifications of :mod:`harness.hookspecs`, in source order."""
    from harness import hookspecs as module

    marker = f"{module.PROJECT_NAME}_spec"
    found = [f for f in vars(module).values() if inspect.isfunction(f) and hasattr(f, marker)]
    return sorted(found, key=lambda f: f.__code__.co_firstlineno)


class _Raw(str):
    """An annotation shown as written in the source (annotations are strings here)."""

    def __repr__(self) -> str:
        return str(self)


def hook_signature(function: Callable[..., Any]) -> str:
    """``name(param: Type, ...) -> Return``, with the annotations as written in the source."""
    sig = inspect.signature(function)
    params = [
        p.replace(annotation=_Raw(p.annotation) if isinstance(p.annotation, str) else p.annotation)
        for p in sig.parameters.values()
    ]
    ret = sig.return_annotation
    sig = sig.replace(
        parameters=params, return_annotation=_Raw(ret) if isinstance(ret, str) else ret
    )
    return f"{function.__name__}{sig}"


def rst_to_markdown(text: str) -> str:
    """The docstring conventions of this code base, as Markdown: ````x```` → `` `x` ``, roles
    (``:class:`~a.B``` → `` `B` ``), ``:param p:`` lists, and ``::`` literal blocks → fences."""
    text = inspect.cleandoc(text)
    text = re.sub(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`",
                  lambda m: f"`{_short(m.group(0), m.group(1))}`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        param = re.match(r"^:param (\w+):\s*(.*)$", line)
        if param:
            parts = [param.group(2)]
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                parts.append(lines[i].strip())
                i += 1
            out.append(f"- **`{param.group(1)}`**: {' '.join(parts)}")
            continue
        if line.rstrip().endswith("::"):
            lead = line.rstrip()[:-2].rstrip()
            if lead:
                out.append(lead + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            out += ["", "```", *inspect.cleandoc("\n".join(block)).splitlines(), "```", ""]
            continue
        out.append(line)
        i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _short(role: str, target: str) -> str:
    return target.rsplit(".", 1)[-1] if "~" in role else target


def _sections(module: Any) -> list[tuple[int, str]]:
    """``(line, title)`` of the ``# --- title ---`` comments that group the hooks."""
    lines = inspect.getsource(module).splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        match = re.match(r"^# --- (.+?) -+\s*$", line)
        if match:
            found.append((number, match.group(1)))
    return found


def hooks_markdown() -> str:
    """The text of ``docs/hooks.md``."""
    from harness import algorithm
    from harness import hookspecs as module

    parts = [
        "# Hook reference",
        "",
        "<!-- Generated by `python -m harness.devkit.docs` from harness/hookspecs.py and "
        "harness/algorithm.py: edit their docstrings, then regenerate. A test fails when this "
        "page differs from what they generate. -->",
        "",
        rst_to_markdown(module.__doc__ or ""),
        "",
        "A hook implementation may take fewer arguments than its specification (pluggy passes "
        "only those it names), never other ones: a misspelt hook or argument name is a load "
        "failure naming the plugin. The tutorial `docs/writing-a-plugin.md` builds a complete "
        "algorithm plugin.",
    ]
    sections = _sections(module)
    current = None
    for spec in hookspecs():
        line = spec.__code__.co_firstlineno
        title = next((t for n, t in reversed(sections) if n < line), None)
        if title and title != current:
            current = title
            parts += ["", f"## {title[0].upper()}{title[1:]}"]
        parts += [
            "",
            f"### `{spec.__name__}`",
            "",
            "```python",
            "@hookimpl",
            f"def {hook_signature(spec)}: ...",
            "```",
            "",
            rst_to_markdown(spec.__doc__ or "(undocumented)"),
        ]
    parts += ["", *_algorithm_interface(algorithm)]
    return "\n".join(parts).rstrip() + "\n"


def _algorithm_interface(module: Any) -> Iterator[str]:
    """What an algorithm class registered with ``register_algorithms`` implements and gets."""
    from harness.testing import field_docstrings

    yield "## The algorithm interface"
    yield ""
    yield rst_to_markdown(module.__doc__ or "")
    cls = module.Algorithm
    yield ""
    yield f"### `{cls.__module__}.{cls.__name__}`"
    yield ""
    yield ("Constructed by the runner as `cls(config, context)`, with `config` an instance of "
           "`cls.Config` built from the suite file and `context` a `RunContext`; an override of "
           "`__init__` calls `super().__init__(config, context)`, which sets `self.config`, "
           "`self.ctx` and `self.finished`.")
    yield ""
    members = ["name", "Config", "needs", "suggested", "metrics", "finished", "step",
               "eval_policy", "fixed_point", "models_resident", "tuning_space"]
    field_docs = field_docstrings(cls)
    docs = {
        "name": "The registered name (set it; the runner and messages use it).",
        "Config": "The hyperparameters: a dataclass, every field with a default and a "
        "docstring (the conformance kit checks both); checks of values in its "
        "`__post_init__`, raising `ValueError` (see `harness.config`).",
        "needs": 'What it needs from the suite: `"reward"` (online) and/or `"preferences"` '
        '(offline), and `"unpaired"` or `"label_noise"` for data of those kinds (see '
        "`harness.algorithm.NEEDS`).",
        "suggested": field_docs.get("suggested", ""),
        "metrics": field_docs.get("metrics", ""),
        "finished": inspect.cleandoc(_attribute_doc(cls.__init__, "finished")),
    }
    for member in members:
        value = inspect.getattr_static(cls, member, None)
        kind = ""
        if isinstance(value, classmethod):
            value = value.__func__
            kind = (" (**class method**: an override is decorated with `@classmethod` and "
                    "takes `cls`; an instance method there raises `TypeError`)")
        if inspect.isfunction(value):
            signature = hook_signature(value).replace("(self, ", "(").replace("(self)", "()")
            signature = signature.replace("(cls, ", "(")
            text = " ".join(rst_to_markdown(value.__doc__ or "").split())
            yield f"- `{signature}`{kind} — {text}"
        else:
            yield f"- `{member}` — {' '.join(rst_to_markdown(docs[member]).split())}"
    context = module.RunContext
    yield ""
    yield f"### `{context.__module__}.{context.__name__}`"
    yield ""
    yield rst_to_markdown(context.__doc__ or "")
    yield ""
    field_docs = field_docstrings(context)
    for f in dataclasses.fields(context):
        text = " ".join(rst_to_markdown(field_docs.get(f.name, "")).split())
        yield f"- `{f.name}: {f.type}`" + (f" — {text}" if text else "")
    yield "- `device` — the policy's device."
    yield ""
    yield ("The conformance kit, `harness.testing`, checks an algorithm against this interface: "
           "a documented `Config`, the shared metric names, determinism under a seed, finite "
           "metrics, an improvement of the exact objective J_β on the `bandit` task, and a run "
           "on a GPU (a stand-in on the CPU) that keeps its tensors on the device.")


def _attribute_doc(function: Callable[..., Any], name: str) -> str:
    """The docstring after ``self.<name> = ...`` in ``function``'s body."""
    import ast
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        targets = getattr(stmt, "targets", None) or [getattr(stmt, "target", None)]
        if any(isinstance(t, ast.Attribute) and t.attr == name for t in targets) and (
            isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
        ):
            return str(nxt.value.value)
    return ""


# --- API reference -------------------------------------------------------------------------------


def _resolve(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _one_line(text: str | None) -> str:
    return " ".join(rst_to_markdown(text or "").split())


def _member_signature(name: str, function: Callable[..., Any]) -> str:
    signature = hook_signature(function)
    signature = signature.replace("(self, ", "(").replace("(self)", "()")
    return name + signature[len(function.__name__):]


def _class_section(cls: type) -> Iterator[str]:
    """A class: its docstring, its documented attributes or fields, its public methods."""
    from harness.testing import field_docstrings

    yield f"### `{cls.__module__}.{cls.__name__}`"
    yield ""
    yield rst_to_markdown(cls.__doc__ or "(undocumented)")
    try:
        docs = field_docstrings(cls)
    except OSError:
        docs = {}
    own = inspect.get_annotations(cls)
    if dataclasses.is_dataclass(cls):
        attributes = [(f.name, f.type) for f in dataclasses.fields(cls) if not
                      f.name.startswith("_")]
        title = "Fields"
    else:
        attributes = [(n, t) for n, t in own.items() if not n.startswith("_")]
        title = "Attributes"
    if attributes:
        yield ""
        yield f"{title}:"
        yield ""
        for name, annotation in attributes:
            text = _one_line(docs.get(name))
            yield f"- `{name}: {annotation}`" + (f" — {text}" if text else "")
    methods = []
    for name, value in cls.__dict__.items():
        if name.startswith("_") and name != "__len__":
            continue
        if isinstance(value, property):
            getter = value.fget
            annotation = getter.__annotations__.get("return", "") if getter else ""
            returns = f": {annotation}" if annotation else ""
            methods.append(f"- `{name}{returns}` (property) — {_one_line(getter.__doc__)}"
                           if getter and getter.__doc__ else f"- `{name}{returns}` (property)")
            continue
        kind = ""
        if isinstance(value, staticmethod | classmethod):
            kind = " (static)" if isinstance(value, staticmethod) else " (class method)"
            value = value.__func__
        if not inspect.isfunction(value):
            continue
        signature = _member_signature(name, value).replace("(cls, ", "(").replace("(cls)", "()")
        text = _one_line(value.__doc__)
        methods.append(f"- `{signature}`{kind}" + (f" — {text}" if text else ""))
    if methods:
        yield ""
        yield "Methods:"
        yield ""
        yield from methods


def _rl_section() -> Iterator[str]:
    from harness import rl

    yield "## `harness.rl`: the shared toolkit"
    yield ""
    yield rst_to_markdown(rl.__doc__ or "")
    for name in rl.__all__:
        value = getattr(rl, name)
        if not inspect.isfunction(value):
            continue
        yield ""
        yield f"### `rl.{name}`"
        yield ""
        yield "```python"
        yield f"def {hook_signature(value)}: ..."
        yield "```"
        yield ""
        yield rst_to_markdown(value.__doc__ or "(undocumented)")


def _vocabulary_section() -> Iterator[str]:
    from harness import metrics

    yield "## Metric vocabulary"
    yield ""
    yield rst_to_markdown(metrics.__doc__ or "")
    yield ""
    yield "| name | reported by | meaning | unit |"
    yield "| --- | --- | --- | --- |"
    for metric in metrics.VOCABULARY.values():
        cells = [f"`{metric.name}`", ", ".join(metric.sources), metric.meaning, metric.unit]
        yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def api_markdown() -> str:
    """The text of ``docs/api.md``."""
    parts = [
        "# API reference: what a `step()` touches",
        "",
        "<!-- Generated by `python -m harness.devkit.docs` from the docstrings of the classes "
        "below, harness/rl.py and harness/metrics.py: edit those, then regenerate. A test fails "
        "when this page differs from what they generate. -->",
        "",
        "An algorithm's `step()` works on what the runner hands it in `self.ctx`, a `RunContext`:"
        " the trainable policy and the frozen reference (`Policy`), batches of prompts and "
        "responses (`PromptBatch`, `ResponseBatch`), the preference pairs of offline methods "
        "(`PreferenceBatches`, minibatches drawn with `ShuffledPasses`, per-pair reference values "
        "kept by `LazyRows`), the compute meter "
        "(`ComputeMeter`) and the shared toolkit `harness.rl`. The metrics it returns use the "
        "[vocabulary](#metric-vocabulary) below. The tutorial `docs/writing-a-plugin.md` uses "
        "them all; `docs/hooks.md` lists the hooks and the algorithm interface.",
        "",
        "Shapes: `B` rows (prompts or responses), `Lp` prompt columns (left-padded), `T` "
        "response tokens (right-padded), `V` the vocabulary.",
        "",
        "## Classes",
    ]
    for path in API_CLASSES:
        parts += ["", *_class_section(_resolve(path))]
    parts += ["", *_rl_section(), "", *_vocabulary_section()]
    return "\n".join(parts).rstrip() + "\n"


# --- suite reference -----------------------------------------------------------------------------


def _where(path: str) -> str:
    """Which runs a section at ``path`` applies to: the suite's, one task's, one algorithm's."""
    if path.startswith("tasks[]"):
        return "per task"
    if path.startswith("algorithms[]"):
        return "per algorithm"
    return "suite-wide"


def suite_sections() -> dict[type, list[str]]:
    """The sections of the suite schema with their key paths (:func:`harness.suite.sections`)."""
    from harness.suite import sections

    return sections()


def _type_text(annotation: Any, metadata: list[Any]) -> str:
    """A key's type in words: ``integer ≥ 1``, ``one of fp32, bf16``, ``list of strings``."""
    import types
    import typing

    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0], [*metadata, *args[1:]])
    bounds = []
    for item in metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{symbol} {value:g}")
        if getattr(item, "min_length", None):
            bounds.append(f"at least {item.min_length}")
    suffix = (" " + ", ".join(bounds)) if bounds else ""
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        parts = [_type_text(a, metadata) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_plural(_type_text(args[0], []))}{suffix}"
    if origin is dict:
        return f"mapping to {_type_text(args[1], [])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))) + suffix


def _plural(text: str) -> str:
    first, _, rest = text.partition(" ")
    plural = {"integer": "integers", "number": "numbers", "string": "strings",
              "boolean": "booleans", "mapping": "mappings"}.get(first, first)
    return f"{plural} {rest}".strip()


def _default_text(info: Any) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    if value is PydanticUndefined or value is None:
        return "none"
    return f"`{_flow(value)}`"


def _flow(value: Any) -> str:
    """A value as YAML flow style on one line (``{a: 1}``, ``[0, 1]``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.strip().removesuffix("...").strip()


def _example(name: str, info: Any) -> str:
    from pydantic import BaseModel

    examples = info.examples or []
    if examples:
        value = examples[0]
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{_flow({name: value})[1:-1]}`"


def suite_reference_markdown(root: Path = ROOT) -> str:
    """The text of ``docs/suite-reference.md``."""
    import textwrap

    from harness import suite as module

    example = (root / SUITE_EXAMPLE).read_text(encoding="utf-8")
    parts = [
        "# Suite file reference",
        "",
        "<!-- Generated by `python -m harness.devkit.docs` from the schema in harness/suite/: edit "
        "its field descriptions, then regenerate. A test fails when this page differs from what "
        "it generates. -->",
        "",
        "A suite file is YAML: the tasks, how preference data are simulated and r̂ is fitted, "
        "the algorithms with their settings, the seeds, the budget and the evaluation. "
        "`rlhf-harness validate FILE` checks one (a mistake is one line naming the file, the "
        "line and the key; a key in the wrong place names where it belongs); "
        "`rlhf-harness show NAME` lists an algorithm's or a task's own settings, which go under "
        "`config` (or `per_task`, `sweep`) and `params`.",
        "",
        "Where a key may appear: **suite-wide** (the file's top level and its sections, for "
        "every run), **per task** (in an entry of `tasks`, for that task's runs) and **per "
        "algorithm** (in an entry of `algorithms`). Three things may be set in two places, "
        "the narrower winning: the budget (`budget`, or a task's `tasks[].budget`), the "
        "policy section (`policy`, or an algorithm's `algorithms[].policy`) and an algorithm's "
        "settings (`algorithms[].config`, or for one task `algorithms[].per_task.TASK`).",
        "",
        f"An example, [`{Path(SUITE_EXAMPLE).relative_to('docs')}`]"
        f"({Path(SUITE_EXAMPLE).relative_to('docs')}), on the tiny language model:",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
    ]
    sections = suite_sections()
    parts += ["", "## Sections", ""]
    for paths in sections.values():
        parts.append(f"- [{_title(paths)}](#{_anchor(paths)}) — "
                     + ", ".join(dict.fromkeys(_where(p) for p in paths)))
    for model, paths in sections.items():
        parts += ["", f"## {_title(paths)}", ""]
        places = "; ".join(f"`{p}`: {_where(p)}" for p in paths) if paths != [""] else \
            "suite-wide"
        parts.append(f"Where: {places}.")
        doc = inspect.getdoc(model) or ""
        if doc and not doc.startswith(("Usage docs:", "!!! abstract")):
            parts += ["", rst_to_markdown(doc)]
        parts += ["", "| key | type | default | meaning | example |",
                  "| --- | --- | --- | --- | --- |"]
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            kind = _type_text(info.annotation, list(info.metadata))
            inner = _models(info.annotation)
            if inner:
                link = f"[{_title(sections[inner[0]])}](#{_anchor(sections[inner[0]])})"
                kind = kind.replace("(below)", f"({link})")
            example = _example(name, info) or f"see {link}"
            cells = [f"`{name}`", kind, _default_text(info),
                     " ".join((info.description or "").split()), example]
            parts.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    parts += ["", textwrap.dedent("""\
        ## Default claims

        Without a `claims` key, a suite that has `ppo`, `grpo` and `dpo` tests the lecture's two
        claims (from PPO to GRPO to DPO, stability increases and computation decreases); any
        other suite tests none, and its report says so once. `claims: []` tests none;
        a list replaces the default. Each names labels (or algorithm names: the best
        configuration of that algorithm on a task) in the claimed order.

        A computation claim is judged on the cost to reach a result: the samples and FLOPs a
        configuration spends before it first reaches half of a fixed target (half the gap to
        π*_β on exact tasks, half a gold gain of 1 r* unit elsewhere), paired by instance, a
        run that never reaches it counting as twice the most any run on the task spent.
        `computation: per_step` in a claim judges the CPU seconds and FLOPs of a run at its
        fixed budget instead; the report says which each claim used. Bytes of model state are
        printed in the report's compute table as a property of the design, not judged.""").rstrip()]
    del module
    return "\n".join(parts).rstrip() + "\n"


def _title(paths: list[str]) -> str:
    """The heading of the section found at ``paths``."""
    return " and ".join(f"`{p}`" for p in paths) if paths != [""] else "The top level"


def _anchor(paths: list[str]) -> str:
    """GitHub's anchor of the section heading of ``paths``."""
    return re.sub(r"[^\w\- ]", "", _title(paths).lower()).replace(" ", "-")


def _models(annotation: Any) -> list[type]:
    """The pydantic models inside a type annotation (``X | None``, ``list[X]``)."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


# --- included files ------------------------------------------------------------------------------


def include_files(markdown: str, base: Path) -> str:
    """``markdown`` with the fenced block after each ``<!-- include: PATH -->`` marker replaced
    by the text of ``base / PATH``; a marker without a block right after it gets one.

    :raises FileNotFoundError: a marker names a file that does not exist.
    """
    out: list[str] = []
    pos = 0
    for marker in INCLUDE_RE.finditer(markdown):
        path = base / marker.group("path")
        text = path.read_text(encoding="utf-8")
        fence = "```"
        while fence in text:
            fence += "`"
        block = f"{fence}{_LANGUAGES.get(path.suffix, '')}\n{text}"
        block += ("" if text.endswith("\n") else "\n") + fence
        out.append(markdown[pos : marker.end()])
        rest = markdown[marker.end() :]
        following = _FENCE_RE.match(rest.removeprefix("\n"))
        out.append("\n" + block)
        pos = marker.end() + (1 + following.end() if following and rest.startswith("\n") else 0)
    out.append(markdown[pos:])
    return "".join(out)


def included_blocks(markdown: str) -> list[tuple[str, str | None]]:
    """``(PATH, body of the fenced block right after the marker, or None)`` for each marker."""
    found = []
    for marker in INCLUDE_RE.finditer(markdown):
        rest = markdown[marker.end() :]
        following = _FENCE_RE.match(rest.removeprefix("\n")) if rest.startswith("\n") else None
        found.append((marker.group("path"), following.group("body") if following else None))
    return found


# --- command -------------------------------------------------------------------------------------


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path and the text it should have."""
    files = {root / HOOKS_PAGE: hooks_markdown(), root / API_PAGE: api_markdown(),
             root / SUITE_PAGE: suite_reference_markdown(root)}
    for page in sorted((root / "docs").glob("*.md")):
        if page in files:
            continue
        text = page.read_text(encoding="utf-8")
        if INCLUDE_RE.search(text):
            files[page] = include_files(text, page.parent)
    return files


def stale_files(root: Path = ROOT) -> list[Path]:
    """The generated files whose text differs from what the code generates."""
    return [
        path for path, text in generated(root).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.devkit.docs [--check] [--root DIR]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.devkit.docs", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the files that are out of date")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the source checkout (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.root / "docs").is_dir():
        print(f"{args.root}: no docs/ folder: run this in a source checkout", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            print(f"{path}: out of date: run python -m harness.devkit.docs", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated(args.root).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
