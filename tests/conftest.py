"""Shared fixtures: plugin hosts built from in-memory plugins, and fake installed distributions.

A fake distribution is a ``NAME-VERSION.dist-info/`` folder (``METADATA`` and
``entry_points.txt``) next to the plugin's module file, in a directory on ``sys.path``;
``importlib.metadata`` (and so the harness's entry-point discovery) treats it exactly like an
installed distribution.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch

from harness.engine.plugins import ONLY_ENV, STRICT_ENV, PluginHost, get_plugin_host

HARNESS_ENV_VARS = (ONLY_ENV, STRICT_ENV)

# The tests use tiny tensors, for which one intra-op thread is fastest: on a loaded 2-core machine
# extra OpenMP threads slow small training loops down many times over.
torch.set_num_threads(1)


def _load_mutated_plugins() -> None:
    """Under mutation testing (``make mutation``), make the built-in plugins the mutated copies.

    mutmut copies the sources to ``mutants/`` and names a mutant after its file's path, e.g.
    ``plugins.dpo.rlhf_harness_dpo.x_dpo_loss__mutmut_1``; it switches that mutant on only in a
    module imported under that path name. The installed plugin module ``rlhf_harness_dpo`` is
    the original file, so each copy is imported under its path name and registered under the
    installed name too: the tests and the entry points then run the mutated code.
    """
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.glob("plugins/*/rlhf_harness_*.py")):
        module = importlib.import_module(f"plugins.{path.parent.name}.{path.stem}")
        sys.modules[path.stem] = module


if "MUTANT_UNDER_TEST" in os.environ:
    _load_mutated_plugins()


SHARED_SCOPES = ("module", "class")
"""Fixture scopes shared by the tests of one module: built once per worker that runs one."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (``make test``), keep together the tests of a module that share
    a module- or class-scoped fixture, so that pytest-xdist builds it once rather than on every
    worker that gets one of them; the other tests are spread one by one.

    Each such test gets an ``xdist_group`` mark named after its module. pytest-xdist (3.8) sends
    the group to its scheduler as a ``@group`` suffix of the test's id, set on an attribute that
    pytest >= 9.2 no longer reads (``_nodeid``): the suffix is set here on the one it reads
    (``_id``), on xdist's workers only. Without xdist the mark does nothing.
    """
    loadgroup = bool(config.getoption("loadgroup", False))  # set on xdist's workers only
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        if any(d.scope in SHARED_SCOPES for defs in info.name2fixturedefs.values() for d in defs):
            group = item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(group))
            if loadgroup and hasattr(item, "_id") and not item.nodeid.endswith(f"@{group}"):
                from _pytest.nodeid import NodeId

                item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.fixture(autouse=True)
def _clean_harness_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own RLHF_HARNESS_* settings must not change what a test sees."""
    for var in HARNESS_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def plugin_module(name: str, source: str) -> types.ModuleType:
    """An in-memory plugin module whose body is ``source`` (``hookimpl`` is pre-imported)."""
    module = types.ModuleType(name)
    exec("from harness import hookimpl\n" + textwrap.dedent(source), module.__dict__)
    return module


def write_distribution(
    root: Path,
    name: str,
    version: str,
    entry_points: Mapping[str, str],
    modules: Mapping[str, str],
) -> Path:
    """Write a distribution as ``pip install`` would lay it out in ``root``; return its dist-info.

    :param entry_points: ``{entry point name: value}`` in group ``rlhf_harness``.
    :param modules: ``{module name: source}``, each written to ``root/<module>.py``.
    """
    root.mkdir(parents=True, exist_ok=True)
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[rlhf_harness]", *(f"{ep} = {value}" for ep, value in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return dist_info


DistWriter = Callable[..., Path]


@pytest.fixture
def dist_info_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DistWriter]:
    """A factory writing fake installed distributions into a directory put first on sys.path.

    ``dist_info_path(name, version, entry_points, modules)`` returns the dist-info folder. On
    teardown the modules written (and any submodules) are dropped from ``sys.modules``, and the
    import and metadata caches are invalidated, so the next test starts clean.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    written: list[str] = []

    def write(
        name: str,
        version: str = "1.0",
        entry_points: Mapping[str, str] | None = None,
        modules: Mapping[str, str] | None = None,
    ) -> Path:
        modules = dict(modules or {})
        written.extend(modules)
        dist_info = write_distribution(site, name, version, entry_points or {}, modules)
        importlib.invalidate_caches()  # path finders and importlib.metadata cache directories
        return dist_info

    yield write

    for module in written:
        for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[loaded]
    importlib.invalidate_caches()


@pytest.fixture
def dist_writer() -> Callable[..., Path]:
    """:func:`write_distribution` itself, for distributions used by a subprocess (PYTHONPATH)."""
    return write_distribution


@pytest.fixture
def make_host() -> Callable[..., PluginHost]:
    """``make_host(("name", plugin), ..., strict=..., only=...)``: core plus in-memory plugins."""

    def make(*plugins: tuple[str, object], **kwargs: object) -> PluginHost:
        return get_plugin_host(entry_points=False, plugins=list(plugins), **kwargs)

    return make


@pytest.fixture
def make_plugin() -> Callable[[str, str], types.ModuleType]:
    """``make_plugin(name, source)``: an in-memory plugin module (see :func:`plugin_module`)."""
    return plugin_module


@pytest.fixture
def subprocess_env() -> Callable[..., dict[str, str]]:
    """``subprocess_env(pythonpath=None, **overrides)``: this environment, minus RLHF_HARNESS_*.

    ``pythonpath`` is put in front of ``PYTHONPATH``; keyword overrides set variables.
    """

    def env(pythonpath: Path | None = None, **overrides: str) -> dict[str, str]:
        result = {k: v for k, v in os.environ.items() if k not in HARNESS_ENV_VARS}
        if pythonpath is not None:
            parts = [str(pythonpath), result.get("PYTHONPATH", "")]
            result["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
        result.update(overrides)
        return result

    return env
