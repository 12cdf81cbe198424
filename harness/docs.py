"""Documentation generated from the code, so that it cannot drift from it.

``python -m harness.docs`` (in a source checkout) does three things:

- writes ``docs/hooks.md``, the reference of every extension point, from the hook
  specifications in :mod:`harness.hookspecs` (their signatures, docstrings and section comments)
  and the algorithm interface in :mod:`harness.algorithm`;
- writes ``docs/api.md``, the reference of what an algorithm's ``step()`` touches
  (:data:`API_CLASSES`, :mod:`harness.rl`) and the metric vocabulary of :mod:`harness.metrics`,
  from their signatures and docstrings;
- refreshes, in every ``docs/*.md``, each fenced code block announced by a marker line
  ``<!-- include: PATH -->`` (``PATH`` relative to the Markdown file) with that file's text, so
  that a tutorial shows its example files verbatim.

``python -m harness.docs --check`` writes nothing and exits with status 1, naming the stale
files, when either would change; the tests check the same.
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
    "api_markdown",
    "hook_signature",
    "hooks_markdown",
    "hookspecs",
    "include_files",
    "main",
    "rst_to_markdown",
    "stale_files",
]

ROOT = Path(__file__).resolve().parents[1]
"""The source checkout this module belongs to."""

HOOKS_PAGE = "docs/hooks.md"
"""The hook reference, relative to the root of the checkout."""

API_PAGE = "docs/api.md"
"""The reference of what a ``step()`` touches, relative to the root of the checkout."""

API_CLASSES: tuple[str, ...] = (
    "harness.algorithm.RunContext",
    "harness.policy.Policy",
    "harness.policy.PromptBatch",
    "harness.policy.ResponseBatch",
    "harness.data.PreferenceBatches",
    "harness.algorithm.ShuffledPasses",
    "harness.algorithm.LazyRows",
    "harness.compute.ComputeMeter",
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
        "<!-- Generated by `python -m harness.docs` from harness/hookspecs.py and "
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
        if isinstance(value, classmethod):
            value = value.__func__
        if inspect.isfunction(value):
            signature = hook_signature(value).replace("(self, ", "(").replace("(self)", "()")
            signature = signature.replace("(cls, ", "(")
            text = " ".join(rst_to_markdown(value.__doc__ or "").split())
            yield f"- `{signature}` — {text}"
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
        "<!-- Generated by `python -m harness.docs` from the docstrings of the classes below, "
        "harness/rl.py and harness/metrics.py: edit those, then regenerate. A test fails when "
        "this page differs from what they generate. -->",
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
    files = {root / HOOKS_PAGE: hooks_markdown(), root / API_PAGE: api_markdown()}
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
    """``python -m harness.docs [--check] [--root DIR]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.docs", description=__doc__.split("\n\n")[0]
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
            print(f"{path}: out of date: run python -m harness.docs", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated(args.root).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
