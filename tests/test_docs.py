"""The plugin author's documentation cannot rot: docs/hooks.md is what harness/hookspecs.py
generates, docs/api.md what the classes a step() touches, harness/rl.py and harness/metrics.py
generate, the tutorial's code blocks are the files of docs/example-plugin/ (online, REINFORCE)
and docs/example-offline-plugin/ (offline, SimPO), and each example plugin is discovered
through its entry point, passes the conformance kit, and runs through its tutorial suite into a
report, as docs/writing-a-plugin.md says.

An example plugin is "installed" as pip would lay out its metadata: a ``*.dist-info`` folder,
its entry points read from the example's pyproject.toml, on ``sys.path`` next to the example's
folder (where its module is); no pip, nothing written to the environment.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.devkit.docs import (
    API_CLASSES,
    API_PAGE,
    HOOKS_PAGE,
    SUITE_EXAMPLE,
    SUITE_PAGE,
    api_markdown,
    hook_signature,
    hooks_markdown,
    hookspecs,
    include_files,
    included_blocks,
    main,
    suite_reference_markdown,
    suite_sections,
)
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.testing import Conformance, check_conformance

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE = DOCS / "example-plugin"
OFFLINE = DOCS / "example-offline-plugin"
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
    from the source itself (independently of harness.devkit.docs)."""
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
        "docs/hooks.md is out of date: run python -m harness.devkit.docs"
    )


def test_the_check_command_names_stale_pages(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    assert main(["--check", "--root", str(tmp_path)]) == 0
    hooks = tmp_path / HOOKS_PAGE
    hooks.write_text(hooks.read_text().replace("### `register_tasks`", "### `tasks`"))
    api = tmp_path / API_PAGE
    api.write_text(api.read_text().replace("### `rl.gae`", "### `rl.gea`"))
    tutorial = tmp_path / "docs" / TUTORIAL.name
    tutorial.write_text(tutorial.read_text().replace("kl_coef: float = 0.05", "kl_coef = 0.1")
                        .replace("gamma: float = 1.0", "gamma: float = 2.0"))
    assert main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for page in (hooks, api, tutorial):
        assert f"{page}: out of date" in err
    assert main(["--root", str(tmp_path)]) == 0  # regenerates all three
    assert main(["--check", "--root", str(tmp_path)]) == 0
    for page in (hooks, api, tutorial):
        assert page.read_text() == (DOCS / page.name).read_text()


# --- docs/api.md ---------------------------------------------------------------------------------


def test_api_page_is_what_the_code_generates():
    assert (ROOT / API_PAGE).read_text(encoding="utf-8") == api_markdown(), (
        "docs/api.md is out of date: run python -m harness.devkit.docs"
    )


def test_api_page_documents_what_a_step_touches():
    """Every class of API_CLASSES with each public method and field, every function of
    harness.rl's __all__ with its signature, every shared metric; nothing undocumented."""
    from harness import metrics, rl
    from harness.devkit.docs import _resolve

    page = (ROOT / API_PAGE).read_text(encoding="utf-8")
    names = {path.rsplit(".", 1)[1] for path in API_CLASSES}
    assert {"RunContext", "Policy", "PromptBatch", "ResponseBatch", "PreferenceBatches",
            "ComputeMeter"} <= names
    for path in API_CLASSES:
        cls = _resolve(path)
        assert f"### `{path}`" in page
        for name, value in vars(cls).items():
            if inspect.isfunction(value) and not name.startswith("_"):
                assert f"- `{name}(" in page, f"{path}.{name} is not in docs/api.md"
    functions = [n for n in rl.__all__ if inspect.isfunction(getattr(rl, n))]
    assert len(functions) >= 10
    for name in functions:
        assert f"### `rl.{name}`" in page
        assert f"def {hook_signature(getattr(rl, name))}: ..." in page
    for name in metrics.VOCABULARY:
        assert f"| `{name}` |" in page
    assert "(undocumented)" not in page
    undocumented = re.findall(r"^- `[^`]+`$", page, re.MULTILINE)
    assert not undocumented, f"entries without documentation: {undocumented}"
    assert "they need not be adjacent" in page  # where repeated prompts are computed once


def test_hooks_page_marks_class_methods_and_api_page_documents_exact_problem():
    """tuning_space is a class method (an instance-method override raises TypeError): the page
    says so. fixed_point's argument, ExactProblem, is in api.md with the evaluation's β."""
    hooks = (ROOT / HOOKS_PAGE).read_text(encoding="utf-8")
    line = next(row for row in hooks.splitlines() if row.startswith("- `tuning_space("))
    assert "(**class method**" in line and "@classmethod" in line
    fixed = next(row for row in hooks.splitlines() if row.startswith("- `fixed_point("))
    assert "class method" not in fixed and "exact.beta" in fixed
    api = (ROOT / API_PAGE).read_text(encoding="utf-8")
    assert "### `harness.exact.ExactProblem`" in api
    assert "- `beta: float | None`" in api and "- `optimal_logprobs(beta: float)" in api


# --- docs/suite-reference.md ---------------------------------------------------------------------


def test_suite_reference_is_what_the_schema_generates():
    assert (ROOT / SUITE_PAGE).read_text(encoding="utf-8") == suite_reference_markdown(), (
        "docs/suite-reference.md is out of date: run python -m harness.devkit.docs"
    )


def table_rows(page: str) -> dict[str, dict[str, list[str]]]:
    """``{section heading: {key: [type, default, meaning, example]}}`` of the reference."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in page.splitlines():
        if line.startswith("## "):
            section = line[3:]
            out[section] = {}
        elif section and line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[section][cells[0].strip("`")] = cells[1:]
    return out


def test_suite_reference_gives_every_key_its_type_default_place_and_example():
    from harness.suite import Suite

    page = (ROOT / SUITE_PAGE).read_text(encoding="utf-8")
    rows = table_rows(page)
    sections = suite_sections()
    assert Suite in sections and len(sections) >= 14
    for model, paths in sections.items():
        title = " and ".join(f"`{p}`" for p in paths) if paths != [""] else "The top level"
        assert title in rows, f"no section {title}"
        assert set(rows[title]) == set(model.model_fields), title
        for key, (kind, default, meaning, example) in rows[title].items():
            assert kind and default and meaning, f"{title}.{key}: {kind!r} {meaning!r}"
            if example.startswith("see [`"):  # a section of its own: a link to it
                assert kind.startswith("mapping ([`") and "](#" in example, example
            else:
                assert example.startswith(f"`{key}: "), f"{title}.{key}: {example!r}"
    # Where each section may appear: suite-wide, per task, per algorithm.
    assert "Where: `budget`: suite-wide; `tasks[].budget`: per task." in page
    assert "Where: `policy`: suite-wide; `algorithms[].policy`: per algorithm." in page
    assert rows["`tuning`"]["instances"][0] == "list of integers at least 1"
    assert rows["The top level"]["preferences"][0] == "mapping ([`preferences`](#preferences))"
    assert rows["`seeds` and `tasks[].seeds`"]["replicates"][1] == "`1`"
    assert rows["The top level"]["precision"][0] == "one of `fp32`, `bf16`"
    assert rows["The top level"]["budget"][1] == "required"


def test_the_tiny_lm_example_suite_validates_and_is_on_the_reference_page():
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    path = ROOT / SUITE_EXAMPLE
    suite = load_suite(path)
    assert [t.name for t in suite.tasks] == ["tiny-lm"]
    runs = check_suite(suite, path, get_plugin_host())
    assert len(runs) == 2 * 2 * 2  # 2 algorithms × 2 instances × 2 replicates
    page = (ROOT / SUITE_PAGE).read_text(encoding="utf-8")
    assert f"```yaml\n{path.read_text(encoding='utf-8')}```" in page


def test_a_stale_suite_reference_is_named_and_regenerated(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / SUITE_PAGE
    page.write_text(page.read_text().replace("| `num_pairs` |", "| `pairs` |"))
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert f"{page}: out of date" in capsys.readouterr().err
    assert main(["--root", str(tmp_path)]) == 0
    assert page.read_text() == (ROOT / SUITE_PAGE).read_text()


# --- docstrings cite files that exist ------------------------------------------------------------

CITED = re.compile(r"(?<![\w./-])((?:tests|harness|plugins|docs|suites|scripts|benchmarks|reports)"
                   r"/[\w./-]*\w\.(?:py|md|yaml|toml|csv|json|sh))")


def docstrings(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every string that stands as a statement in ``path`` (module, class,
    function and attribute docstrings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            yield node.lineno, node.value.value


def test_every_path_a_docstring_cites_exists():
    sources = sorted([*ROOT.glob("harness/**/*.py"), *ROOT.glob("plugins/*/*.py"),
                      *ROOT.glob("docs/example*/**/*.py")])
    assert len(sources) > 40
    cited, missing = 0, []
    for source in sources:
        for line, text in docstrings(source):
            for path in CITED.findall(text):
                if "MODULE" in path or "<" in path:  # a template's placeholder
                    continue
                cited += 1
                if not (ROOT / path).exists():
                    missing.append(f"{source.relative_to(ROOT)}:{line}: {path}")
    assert cited >= 20
    assert not missing, "docstrings cite files that do not exist:\n" + "\n".join(missing)


def test_the_citation_pattern_finds_what_a_docstring_names():
    text = ("(``tests/test_kto.py`` measures it), see plugins/grpo and suites/quickstart.yaml; "
            "not a/tests/x.py")
    assert CITED.findall(text) == ["tests/test_kto.py", "suites/quickstart.yaml"]


# --- the tutorial and its files ------------------------------------------------------------------


def example_files() -> list[str]:
    skip = {"__pycache__", "build", ".pytest_cache"}
    return sorted(
        str(p.relative_to(DOCS)) for folder in (EXAMPLE, OFFLINE) for p in folder.rglob("*")
        if p.is_file() and not skip & set(p.parts) and ".egg-info" not in str(p)
    )


def test_the_tutorial_shows_every_example_file_verbatim():
    blocks = included_blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert sorted(path for path, _ in blocks) == example_files()
    for path, body in blocks:
        assert body == (DOCS / path).read_text(encoding="utf-8"), (
            f"the block of {path} in {TUTORIAL.name} differs from the file: run "
            f"python -m harness.devkit.docs"
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
        "rlhf-harness new-plugin", "pip install -e docs/example-offline-plugin",
        "rlhf-harness show my-simpo", "pytest docs/example-offline-plugin/tests",
        "rlhf-harness run docs/example-offline-plugin/suite.yaml",
        "rlhf-harness report runs/simpo-tutorial", "--offline",
    ]:
        assert command in text


# --- the example plugin, installed ---------------------------------------------------------------


@contextlib.contextmanager
def install(example: Path, site: Path) -> Iterator[dict]:
    """An example plugin as an installed distribution (dist-info from its pyproject.toml)."""
    project = read_toml(example / "pyproject.toml")["project"]
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["rlhf_harness"]
    (dist_info / "entry_points.txt").write_text(
        "[rlhf_harness]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )
    modules = read_toml(example / "pyproject.toml")["tool"]["setuptools"]["py-modules"]
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(example))
        mp.syspath_prepend(str(site))
        mp.delenv("RLHF_HARNESS_PLUGINS", raising=False)
        mp.setenv("RLHF_HARNESS_WANDB", "0")
        importlib.invalidate_caches()
        yield project
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The online example plugin (REINFORCE), installed."""
    with install(EXAMPLE, tmp_path_factory.mktemp("site")) as project:
        yield project


@pytest.fixture(scope="module")
def installed_offline(tmp_path_factory):
    """The offline example plugin (SimPO), installed."""
    with install(OFFLINE, tmp_path_factory.mktemp("site")) as project:
        yield project


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


def test_the_example_s_config_check_is_reported_by_validate(installed, tmp_path):
    """REINFORCE checks baseline_decay in Config.__post_init__, as the tutorial teaches: validate
    names the file, the line and the key, before anything runs."""
    text = (EXAMPLE / "suite.yaml").read_text().replace(
        "config: {learning_rate: 0.1, batch_size: 32}",
        "config: {learning_rate: 0.1, batch_size: 32, baseline_decay: 1.5}",
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "baseline_decay" in row)
    result = CliRunner().invoke(cli, ["validate", str(suite)])
    assert result.exit_code != 0
    assert str(result.exception) == (
        f"{suite}:{line}: algorithms.0.config.baseline_decay (reinforce): 'baseline_decay': "
        f"baseline_decay must be in [0, 1), got 1.5"
    )


# --- the offline example plugin, installed -------------------------------------------------------


def test_the_offline_example_is_found_and_shown(installed_offline):
    registration = get_plugin_host().registration("algorithm", "my-simpo")
    assert registration.plugin.distribution == installed_offline["name"] == "rlhf-harness-my-simpo"
    assert registration.obj.needs == frozenset({"preferences"})
    result = CliRunner().invoke(cli, ["show", "my-simpo", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["plugin"]["distribution"] == "rlhf-harness-my-simpo"
    assert info["suggested"] == {"tabular": {"learning_rate": 0.05, "batch_size": 64}}
    assert [s["name"] for s in info["settings"]] == ["beta", "gamma", "learning_rate",
                                                     "batch_size", "max_grad_norm"]
    assert "logp_chosen" in info["metrics"]["shared"] or "avg_logp_chosen" in (
        info["metrics"]["own"]
    )


def test_the_offline_example_conforms(installed_offline):
    from rlhf_harness_my_simpo import SimPO

    check_conformance("my-simpo", SimPO.suggested["tabular"])


def test_a_draft_reporting_per_token_means_as_logp_chosen_fails_as_the_tutorial_shows(
    installed_offline,
):
    from rlhf_harness_my_simpo import SimPO

    class DraftSimPO(SimPO):
        def step(self) -> dict[str, float]:
            metrics = super().step()
            metrics["logp_chosen"] = metrics["avg_logp_chosen"]
            metrics["logp_rejected"] = metrics["avg_logp_rejected"]
            return metrics

    kit = Conformance(DraftSimPO, SimPO.suggested["tabular"])
    failures = kit.failures()
    assert list(failures) == ["vocabulary"]
    assert f"```text\n{failures['vocabulary']}\n```" in TUTORIAL.read_text(encoding="utf-8")


def test_the_offline_suite_runs_with_progress_lines_and_namespaces_clashing_metrics(
    installed_offline, tmp_path
):
    from harness.report.data import load_store

    runner = CliRunner()
    suite = OFFLINE / "suite.yaml"
    assert runner.invoke(cli, ["validate", str(suite)]).exit_code == 0
    result = runner.invoke(cli, ["run", str(suite), "--root", str(tmp_path / "runs"),
                                 "--report-dir", str(tmp_path / "reports"), "--no-wandb"])
    assert result.exit_code == 0, result.output
    assert "simpo-tutorial: 4 runs: done 4; 0 already finished" in result.stdout
    # Not a terminal: one line per finished run on stderr, with what is left.
    lines = [row for row in result.stderr.splitlines() if row.startswith("[")]
    assert len(lines) == 4, result.stderr
    assert re.fullmatch(r"\[1/4\] done in [0-9.]+ s: my-simpo · bandit · seed 0; 3 left, ETA .+ s",
                        lines[0]), lines[0]
    assert lines[-1].startswith("[4/4] done in ") and lines[-1].endswith("; 0 left")
    report = (tmp_path / "reports" / "simpo-tutorial" / "index.md").read_text()
    assert "my-simpo" in report and "dpo" in report
    # Both document a reward_chosen, with different meanings: the report keeps them apart.
    data = load_store(tmp_path / "runs" / "simpo-tutorial")
    names = set(data.metrics.loc[data.metrics["source"] == "train", "metric"])
    assert {"my-simpo:reward_chosen", "dpo:reward_chosen", "my-simpo:reward_margin",
            "dpo:reward_margin"} <= names
    assert "reward_chosen" not in names
    assert {"logp_chosen", "reward_accuracy", "loss"} <= names  # shared: one meaning, one name
