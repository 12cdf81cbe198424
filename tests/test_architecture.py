"""The shape of the core, read from its source: no import circles, the plugin author's API apart
from the engine, and no plugin inside the core.

The rules are checked on the import graph of ``harness/``, built with :mod:`ast` from the files
(nothing is imported). Every import statement is an edge: at module level, inside a function
(lazy imports that only put off loading torch or pandas still say which module needs which) and
under ``if TYPE_CHECKING:`` (an annotation is a dependency too; none of the rules needs an
exception for them). ``from package import name`` is an edge to ``package.name`` when that is a
module, else to ``package``. Importing ``a.b.c`` also runs ``a/b/__init__.py``, so it is an edge
to each package above ``a.b.c`` that is not also above the importer (a package's own submodules
importing one another do not loop back through its ``__init__``). ``importlib.import_module``
and ``__import__`` with a literal name count as imports.

1. **No circles.** No strongly connected component of the graph has more than one module.
2. **The public API imports no engine module**, directly or through others: what a plugin
   imports (:data:`PUBLIC_API`) must not load the runner, the store, suite files, reports and the
   rest of :data:`ENGINE`. The conformance kit :mod:`harness.testing` (a package) is the one
   public module whose checks drive the engine — they run an algorithm through
   :func:`harness.engine.runner.build_context` and a whole suite through
   :func:`harness.engine.runner.run_one` into a run store, which is what they test — so for it and
   its modules whose checks do so only the imports made when they are imported are followed
   (:data:`IMPORTED_ONLY`), wherever the chain passes through them: ``import harness.testing`` loads
no engine module, its checks do. 3. **The core imports no plugin**: no ``rlhf_harness_*`` module,
   nothing under ``plugins.``. The built-in algorithms are found through their entry points, as a
stranger's are. 4. **Each layer imports only the layers it may.** Below the public API the core is
   grouped in packages by role (:data:`LAYERS`): the models, the engine, suite files, reports, the
   developer tools and the command line, each with the set of layers it may import, as the
   paragraph opening its ``__init__`` says.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "harness"

PUBLIC_API = (
    "harness",
    "harness.algorithm",
    "harness.compute",
    "harness.config",
    "harness.data",
    "harness.errors",
    "harness.evaluators",
    "harness.exact",
    "harness.gold",
    "harness.hookspecs",
    "harness.metrics",
    "harness.pieces",
    "harness.policy",
    "harness.preference",
    "harness.reward",
    "harness.rl",
    "harness.tasks",
    "harness.tasks.base",
    "harness.testing",
)
"""What plugins import (``plugins/*/rlhf_harness_*.py``, the plugin guide and its examples) and
what the hook specifications name for a plugin to subclass (tasks, gold rewards, evaluators)."""

ENGINE = (
    "harness.cli",
    "harness.devkit",
    "harness.engine",
    "harness.report",
    "harness.suite",
)
"""What runs suites and what sits above it: the command line, the developer tools, the engine
(plugin host, annotator, runner, executors, memory plans, tuning, run store, tracking), suite
files and reports (each a package: with its modules)."""

LAYERS = {
    "harness.models": {"harness"},
    "harness.engine": {"harness", "harness.models", "harness.suite"},
    "harness.suite": {"harness", "harness.models", "harness.engine"},
    "harness.report": {"harness", "harness.engine", "harness.suite"},
    "harness.devkit": {"harness", "harness.models", "harness.engine", "harness.suite",
                       "harness.report"},
    "harness.cli": {"harness", "harness.models", "harness.engine", "harness.suite",
                    "harness.report", "harness.devkit"},
}
"""The packages below the public API, each with the layers it may import (besides itself);
``"harness"`` is the top: every module in none of these packages (the public API, the built-in
tasks, the conformance kit), whose own imports rule 2 governs. The paragraph opening each
package's ``__init__`` says the same in words."""

IMPORTED_ONLY = {"harness.testing", "harness.testing.device_checks", "harness.testing.kit",
                 "harness.testing.metric_checks"}
"""Public modules (the conformance kit and those of its modules whose checks run the engine)
whose own edges are followed only where made at import time (module level); see the module
docstring."""

PLUGIN_PREFIXES = ("rlhf_harness_", "plugins.")
"""Names of plugin modules: the built-in plugins' and any stranger's distribution."""


@dataclass(frozen=True)
class Import:
    """One import statement's target, as an absolute dotted name."""

    name: str
    line: int
    where: str
    """``"module"``, ``"function"`` or ``"TYPE_CHECKING"``."""


@dataclass(frozen=True)
class Edge:
    """``source`` imports module ``target`` at ``line``."""

    source: str
    target: str
    line: int
    where: str

    def __str__(self) -> str:
        at = "" if self.where == "module" else f", {self.where}"
        return f"{self.source} (line {self.line}{at}) → {self.target}"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, module: str) -> Iterator[Import]:
    """Every import in the file of ``module``, names made absolute (``from a import b`` gives
    ``a.b``; the caller resolves it to a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def visit(node: ast.AST, where: str) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno, where)
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = here[: len(here) - (node.level - 1)] + base
            for alias in node.names:
                yield Import(".".join([*base, alias.name]), node.lineno, where)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            yield Import(node.args[0].value, node.lineno, where)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, "TYPE_CHECKING")
            for child in node.orelse:
                yield from visit(child, where)
            return
        inner = where
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner = "function" if where == "module" else where
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner)

    yield from visit(tree, "module")


def import_graph(root: Path, package: str) -> dict[str, list[Edge]]:
    """The edges out of each module of ``package`` to modules of ``package`` (see the module
    docstring for what counts)."""
    mods = modules(root, package)
    graph: dict[str, list[Edge]] = {m: [] for m in mods}
    for source, path in mods.items():
        for imp in imports(path, source):
            target = imp.name
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if not target:
                continue
            above = target.split(".")
            mine = {".".join(source.split(".")[:i]) for i in range(1, source.count(".") + 2)}
            for i in range(1, len(above) + 1):
                name = ".".join(above[:i])
                if name != source and (name == target or name not in mine):
                    graph[source].append(Edge(source, name, imp.line, imp.where))
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted({e.target for e in graph[start]})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({e.target for e in graph[child]}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def _path(graph: dict[str, list[Edge]], start: Iterable[Edge], goal: set[str],
          within: set[str] | None = None) -> list[Edge] | None:
    """The shortest chain of edges from ``start`` to a module of ``goal`` (breadth first),
    through modules of ``within`` when given."""
    queue = deque([e] for e in start if within is None or e.target in within)
    seen: set[str] = set()
    while queue:
        chain = queue.popleft()
        last = chain[-1].target
        if last in goal:
            return chain
        if last in seen:
            continue
        seen.add(last)
        queue.extend([*chain, e] for e in graph[last] if within is None or e.target in within)
    return None


def circles(graph: dict[str, list[Edge]]) -> list[str]:
    """One line per import circle: a cycle through each strongly connected component of more
    than one module, edge by edge with the importing lines."""
    out = []
    for component in strongly_connected(graph):
        if len(component) > 1:
            first, members = component[0], set(component)
            chain = _path(graph, graph[first], {first}, members)
            assert chain is not None
            out.append(f"circle of {len(component)} modules ({', '.join(component)}): "
                       + "; ".join(map(str, chain)))
    return out


def _in(module: str, group: Iterable[str]) -> bool:
    return any(module == g or module.startswith(g + ".") for g in group)


def engine_imports(graph: dict[str, list[Edge]], public: Iterable[str], engine: Iterable[str],
                   imported_only: Iterable[str] = ()) -> list[str]:
    """One line per public module that reaches an engine module, with the chain of imports."""
    engine_modules = {m for m in graph if _in(m, engine)}
    limited = set(imported_only)
    seen = {m: [e for e in edges if m not in limited or e.where == "module"]
            for m, edges in graph.items()}
    out = []
    for module in public:
        chain = _path(seen, seen[module], engine_modules)
        if chain is not None:
            out.append(f"{module} imports the engine: " + "; ".join(map(str, chain)))
    return out


def layer_of(module: str, layers: Iterable[str], package: str = PACKAGE) -> str:
    """The package of ``layers`` that ``module`` is in, else ``package`` (the top)."""
    return next((layer for layer in layers if _in(module, [layer])), package)


def layer_imports(graph: dict[str, list[Edge]], layers: dict[str, set[str]],
                  package: str = PACKAGE) -> list[str]:
    """One line per import from a module of a layer into a layer it may not import."""
    out = []
    for source in sorted(graph):
        mine = layer_of(source, layers, package)
        if mine == package:
            continue
        for edge in graph[source]:
            theirs = layer_of(edge.target, layers, package)
            if theirs != mine and theirs not in layers[mine]:
                out.append(f"{mine} may not import {theirs}: {edge}")
    return out


def plugin_imports(root: Path, package: str) -> list[str]:
    """One line per import of a plugin module in ``package``."""
    out = []
    for module, path in modules(root, package).items():
        for imp in imports(path, module):
            if imp.name.startswith(PLUGIN_PREFIXES) or imp.name == "plugins":
                out.append(f"{module} (line {imp.line}) imports plugin module {imp.name}")
    return out


# --- the rules, on harness/ -------------------------------------------------------------------


def test_no_import_circles_in_the_core():
    found = circles(import_graph(ROOT, PACKAGE))
    assert not found, "import circles in harness/:\n" + "\n".join(found)


def test_the_public_api_imports_no_engine_module():
    graph = import_graph(ROOT, PACKAGE)
    assert set(PUBLIC_API) <= set(graph), set(PUBLIC_API) - set(graph)
    assert all(any(_in(m, [e]) for m in graph) for e in ENGINE), "an ENGINE name names nothing"
    assert not set(PUBLIC_API) & {m for m in graph if _in(m, ENGINE)}
    found = engine_imports(graph, PUBLIC_API, ENGINE, IMPORTED_ONLY)
    assert not found, "\n".join(found)


def test_imported_only_is_still_needed():
    """An exception that no longer excuses anything is removed, so the rule tightens."""
    graph = import_graph(ROOT, PACKAGE)
    for module in IMPORTED_ONLY:
        assert engine_imports(graph, [module], ENGINE), f"{module} needs no exception now"


def test_the_core_imports_no_plugin():
    found = plugin_imports(ROOT, PACKAGE)
    assert not found, "\n".join(found)


def test_each_layer_imports_only_what_it_may():
    graph = import_graph(ROOT, PACKAGE)
    assert all(any(_in(m, [layer]) for m in graph) for layer in LAYERS), "a layer names nothing"
    assert all(allowed <= {PACKAGE, *LAYERS} for allowed in LAYERS.values())
    found = layer_imports(graph, LAYERS)
    assert not found, "\n".join(found)


def test_each_new_layer_opens_with_its_rule_and_imports_nothing():
    """``harness.engine``, ``harness.models`` and ``harness.devkit`` say in their first
    paragraph what they own and what they may import, naming each layer they may import; their
    ``__init__`` loads no module, so importing one of their modules loads only that module."""
    graph = import_graph(ROOT, PACKAGE)
    for layer in ("harness.devkit", "harness.engine", "harness.models"):
        path = ROOT / layer.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and "It owns" in doc and "may import" in doc, layer
        for allowed in LAYERS[layer] - {PACKAGE}:
            assert f":mod:`{allowed}`" in doc, (layer, allowed)
        assert not graph[layer], (layer, graph[layer])


# --- the checker, on a package written for it -------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


LONG_MODULE_LINES = 600
"""A module longer than this says at its top why it is one module."""
LONG_MODULE_NOTES = ("**One module, over 600 lines, on purpose.**",
                     "**One script, over 600 lines, on purpose.**")


def test_every_long_module_says_why_it_is_one():
    """Every Python module of the core, the benchmarks and the reproductions' analysis over
    600 lines opens with the note that says why it is not split (its docstring)."""
    import ast

    files = [*(ROOT / "harness").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             ROOT / "suites" / "reproductions" / "analyse.py"]
    silent = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_MODULE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if not any(note in doc for note in LONG_MODULE_NOTES):
                silent.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not silent, "long modules that do not say why they are one: " + ", ".join(silent)


def test_the_checker_finds_circles_of_every_kind_of_import(tmp_path):
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from pkg.c import x\n",
        "pkg/c.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from . import a\n"
        ),
        "pkg/d.py": "import pkg.a\n",
        "pkg/sub/__init__.py": "from pkg.sub.low import y\n",
        "pkg/sub/low.py": "import pkg.sub.lower\n",
        "pkg/sub/lower.py": "",
        "pkg/e.py": "from pkg.sub import lower\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert {e.target for e in graph["pkg.e"]} == {"pkg.sub", "pkg.sub.lower"}
    assert {e.target for e in graph["pkg.sub.low"]} == {"pkg.sub.lower"}  # not its own package
    [found] = circles(graph)
    assert "circle of 3 modules (pkg.a, pkg.b, pkg.c)" in found
    assert "pkg.b (line 2, function) → pkg.c" in found
    assert "pkg.c (line 3, TYPE_CHECKING) → pkg.a" in found
    assert "pkg.a (line 1) → pkg.b" in found

    _package(tmp_path, {"pkg/sub/lower.py": "def g():\n    from pkg import e\n"})
    found = circles(import_graph(tmp_path, "pkg"))
    assert len(found) == 2  # the first, and one through a package's __init__
    assert any("circle of 4 modules (pkg.e, pkg.sub, pkg.sub.low, pkg.sub.lower)" in c
               for c in found)


def test_the_checker_finds_the_engine_behind_the_public_api(tmp_path):
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/api.py": "from pkg.shared import z\n",
        "pkg/shared.py": "def f():\n    import pkg.engine.run\n",
        "pkg/kit.py": "import pkg.shared\n",
        "pkg/lazy_kit.py": "import pkg.api\ndef check():\n    from pkg.engine import run\n",
        "pkg/engine/__init__.py": "",
        "pkg/engine/run.py": "",
    })
    graph = import_graph(tmp_path, "pkg")
    [found] = engine_imports(graph, ["pkg.api"], ["pkg.engine"])
    assert found == ("pkg.api imports the engine: pkg.api (line 1) → pkg.shared; "
                     "pkg.shared (line 2, function) → pkg.engine")
    assert engine_imports(graph, ["pkg.kit"], ["pkg.engine"])
    assert engine_imports(graph, ["pkg.lazy_kit"], ["pkg.engine"])
    assert engine_imports(graph, ["pkg.lazy_kit"], ["pkg.engine"], ["pkg.lazy_kit"])  # via api

    _package(tmp_path, {"pkg/shared.py": ""})
    graph = import_graph(tmp_path, "pkg")
    assert not engine_imports(graph, ["pkg.api", "pkg.kit"], ["pkg.engine"])
    assert engine_imports(graph, ["pkg.lazy_kit"], ["pkg.engine"])
    assert not engine_imports(graph, ["pkg.lazy_kit"], ["pkg.engine"], ["pkg.lazy_kit"])


def test_the_checker_finds_plugin_imports(tmp_path):
    _package(tmp_path, {
        "pkg/__init__.py": "import pkg.plugins\n",
        "pkg/plugins.py": "",
        "pkg/a.py": "def f():\n    import rlhf_harness_ppo\n",
        "pkg/b.py": "from plugins.dpo import rlhf_harness_dpo\n",
        "pkg/c.py": "import importlib\nimportlib.import_module('rlhf_harness_grpo')\n",
        "pkg/d.py": "from . import plugins\n",
    })
    found = plugin_imports(tmp_path, "pkg")
    assert found == [
        "pkg.a (line 2) imports plugin module rlhf_harness_ppo",
        "pkg.b (line 1) imports plugin module plugins.dpo.rlhf_harness_dpo",
        "pkg.c (line 2) imports plugin module rlhf_harness_grpo",
    ]


def test_the_checker_finds_imports_across_layers(tmp_path):
    _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/api.py": "import pkg.low.model\n",
        "pkg/low/__init__.py": "",
        "pkg/low/model.py": "import pkg.api\ndef f():\n    from pkg.high import run\n",
        "pkg/high/__init__.py": "",
        "pkg/high/run.py": "from pkg.low import model\nimport pkg.api\n",
    })
    graph = import_graph(tmp_path, "pkg")
    layers = {"pkg.low": {"pkg"}, "pkg.high": {"pkg", "pkg.low"}}
    assert layer_of("pkg.high.run", layers, "pkg") == "pkg.high"
    assert layer_of("pkg.api", layers, "pkg") == "pkg"
    assert layer_imports(graph, layers, "pkg") == [
        "pkg.low may not import pkg.high: pkg.low.model (line 3, function) → pkg.high",
        "pkg.low may not import pkg.high: pkg.low.model (line 3, function) → pkg.high.run",
    ]
    assert layer_imports(graph, {"pkg.low": {"pkg", "pkg.high"}, "pkg.high": {"pkg.low"}},
                         "pkg") == ["pkg.high may not import pkg: pkg.high.run (line 2) → pkg.api"]
    _package(tmp_path, {"pkg/low/model.py": "import pkg.api\n"})
    assert layer_imports(import_graph(tmp_path, "pkg"), layers, "pkg") == []
