"""The plugin author's documentation cannot rot: docs/hooks.md is what harness/hookspecs.py
generates, the tutorial's code blocks are the files of docs/example-plugin/, and that example
plugin is discovered through its entry point, passes the conformance kit, and runs through the
tutorial's suite into a report, as docs/writing-a-plugin.md says.

The example plugin is "installed" as pip would lay out its metadata: a ``*.dist-info`` folder,
its entry points read from the example's pyproject.toml, on ``sys.path`` next to the example's
folder (where its module is); no pip, nothing written to the environment.
"""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.docs import (
    HOOKS_PAGE,
    hook_signature,
    hooks_markdown,
    hookspecs,
    include_files,
    included_blocks,
    main,
)
from harness.plugins import get_plugin_host
from harness.store import RunStore
from harness.testing import check_conformance

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE = DOCS / "example-plugin"
TUTORIAL = DOCS / "writing-a-plugin.md"


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text(encoding="utf-8"))


# --- docs/hooks.md -------------------------------------------------------------------------------


def declared_hookspecs() -> dict[str, str]:
    """``{name: "def name(params) -> Return"}`` of every ``@hookspec`` function, read with ast
    from the source itself (independently of harness.docs)."""
    tree = ast.parse((ROOT / "harness" / "hookspecs.py").read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Name) and d.id == "hookspec" for d in node.decorator_list
        ):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            found[node.name] = f"def {node.name}({ast.unparse(node.args)}){returns}"
    return found


def test_every_hook_is_documented_with_its_exact_signature():
    page = (ROOT / HOOKS_PAGE).read_text(encoding="utf-8")
    declared = declared_hookspecs()
    assert len(declared) >= 5
    assert [f.__name__ for f in hookspecs()] == list(declared)
    for name, signature in declared.items():
        assert f"### `{name}`" in page, f"docs/hooks.md does not document the hook {name}"
        assert signature in page, f"docs/hooks.md does not show {signature}"
        assert f"def {hook_signature(getattr(sys.modules['harness.hookspecs'], name))}" == (
            signature
        )


def test_hooks_page_is_what_the_code_generates():
    assert (ROOT / HOOKS_PAGE).read_text(encoding="utf-8") == hooks_markdown(), (
        "docs/hooks.md is out of date: run python -m harness.docs"
    )


def test_the_check_command_names_stale_pages(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    assert main(["--check", "--root", str(tmp_path)]) == 0
    hooks = tmp_path / HOOKS_PAGE
    hooks.write_text(hooks.read_text().replace("### `register_tasks`", "### `tasks`"))
    tutorial = tmp_path / "docs" / TUTORIAL.name
    tutorial.write_text(tutorial.read_text().replace("kl_coef: float = 0.05", "kl_coef = 0.1"))
    assert main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{hooks}: out of date" in err and f"{tutorial}: out of date" in err
    assert main(["--root", str(tmp_path)]) == 0  # regenerates both
    assert main(["--check", "--root", str(tmp_path)]) == 0
    assert hooks.read_text() == (ROOT / HOOKS_PAGE).read_text()
    assert tutorial.read_text() == TUTORIAL.read_text()


# --- the tutorial and its files ------------------------------------------------------------------


def example_files() -> list[str]:
    skip = {"__pycache__", "build", ".pytest_cache"}
    return sorted(
        str(p.relative_to(DOCS)) for p in EXAMPLE.rglob("*")
        if p.is_file() and not skip & set(p.parts) and ".egg-info" not in str(p)
    )


def test_the_tutorial_shows_every_example_file_verbatim():
    blocks = included_blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert sorted(path for path, _ in blocks) == example_files()
    for path, body in blocks:
        assert body == (DOCS / path).read_text(encoding="utf-8"), (
            f"the block of {path} in {TUTORIAL.name} differs from the file: run "
            f"python -m harness.docs"
        )


def test_include_files_replaces_or_adds_the_block(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.yaml").write_text("k: v\n")
    text = (
        "# T\n<!-- include: a.py -->\n```python\nold\n```\nmiddle\n"
        "<!-- include: b.yaml -->\nafter\n"
    )
    assert include_files(text, tmp_path) == (
        "# T\n<!-- include: a.py -->\n```python\nx = 1\n```\nmiddle\n"
        "<!-- include: b.yaml -->\n```yaml\nk: v\n```\nafter\n"
    )
    assert included_blocks(include_files(text, tmp_path)) == [("a.py", "x = 1\n"),
                                                               ("b.yaml", "k: v\n")]


def test_the_tutorial_names_every_step_s_command():
    text = TUTORIAL.read_text(encoding="utf-8")
    for command in [
        "pip install -e docs/example-plugin", "rlhf-harness plugins", "pytest --rlhf-conformance",
        "rlhf-harness run docs/example-plugin/suite.yaml",
        "rlhf-harness report runs/reinforce-tutorial", "reports/reinforce-tutorial/index.md",
        "rlhf-harness new-plugin",
    ]:
        assert command in text


# --- the example plugin, installed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin as an installed distribution (dist-info from its pyproject.toml)."""
    project = read_toml(EXAMPLE / "pyproject.toml")["project"]
    site = tmp_path_factory.mktemp("site")
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["rlhf_harness"]
    (dist_info / "entry_points.txt").write_text(
        "[rlhf_harness]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        mp.syspath_prepend(str(site))
        mp.delenv("RLHF_HARNESS_PLUGINS", raising=False)
        mp.setenv("RLHF_HARNESS_WANDB", "0")
        importlib.invalidate_caches()
        yield project
    sys.modules.pop("rlhf_harness_reinforce", None)
    importlib.invalidate_caches()


def test_the_example_plugin_is_found_through_its_entry_point(installed):
    host = get_plugin_host()
    registration = host.registration("algorithm", "reinforce")
    assert registration.plugin.distribution == installed["name"] == "rlhf-harness-reinforce"
    assert registration.plugin.entry_point == "reinforce = rlhf_harness_reinforce"
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["reinforce"]["distribution"] == "rlhf-harness-reinforce"
    assert listed["reinforce"]["registers"] == {"algorithm": ["reinforce"]}


def test_the_example_plugin_conforms(installed):
    check_conformance("reinforce", {"learning_rate": 0.1})


def test_the_tutorial_suite_runs_and_its_report_shows_the_plugin(installed, tmp_path):
    runner = CliRunner()
    suite = EXAMPLE / "suite.yaml"
    result = runner.invoke(cli, ["validate", str(suite)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [
        "run", str(suite), "--root", str(tmp_path / "runs"), "--report-dir",
        str(tmp_path / "reports"), "--no-wandb", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "reinforce-tutorial: 4 runs: done 4; 0 already finished" in result.output
    records = list(RunStore(tmp_path / "runs", "reinforce-tutorial").records())
    assert sorted((r.spec["algorithm"], r.state) for r in records) == [
        ("ppo", "done"), ("ppo", "done"), ("reinforce", "done"), ("reinforce", "done")
    ]
    first = (tmp_path / "reports" / "reinforce-tutorial" / "index.md").read_text()
    assert "reinforce" in first and "ppo" in first

    result = runner.invoke(cli, ["report", str(tmp_path / "runs" / "reinforce-tutorial"),
                                 "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "again" / "index.md").read_text()
    assert "| reinforce | reinforce |" in report
