"""The command line, as a user runs it: exit codes, one-line errors, no tracebacks, cheap --help.

Commands that must show what the user's terminal shows run in a subprocess; fake plugin
distributions reach it through ``PYTHONPATH``, and ``RLHF_HARNESS_PLUGINS`` restricts loading to
them, so real plugins installed in the environment do not change the outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import __version__
from harness.cli import main

TIMEOUT_S = 60


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


def good_plugin_source(algorithm: str) -> str:
    return textwrap.dedent(
        f"""
        from harness import hookimpl

        class Algo:
            pass

        @hookimpl
        def register_algorithms(register):
            register({algorithm!r}, Algo)
        """
    )


def test_version_prints_the_version(subprocess_env):
    result = run_cli("--version", env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert __version__ == "0.2.0"
    assert result.stdout.strip() == "rlhf-harness, version 0.2.0"
    assert result.stderr == ""


@pytest.mark.parametrize("flag", ["--help", "-h", "--version", "show --help"])
def test_help_and_version_do_not_import_torch(subprocess_env, flag):
    code = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        try:
            main({flag.split()!r})
            code = 0
        except SystemExit as exc:  # click may end with SystemExit; either way must mean success
            code = exc.code or 0
        heavy = sorted(m for m in ("torch", "numpy", "transformers") if m in sys.modules)
        print("RESULT", code, ",".join(heavy) or "-")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "RESULT 0 -", f"{flag} imported heavy modules or failed: {last}"
    if flag.startswith("show"):
        assert "Usage: rlhf-harness show [OPTIONS] NAME" in result.stdout
    elif flag != "--version":
        assert "Usage: rlhf-harness" in result.stdout
        assert "plugins" in result.stdout and "show" in result.stdout


def test_plugins_lists_core_preference_models(monkeypatch, capsys):
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "")  # the core only: independent of the install
    main(["plugins"])  # returns (exit status 0) when no plugin failed
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("harness.preference  (core)") + 1
    block = []  # the indented lines under that header: what the plugin registers
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    models = [line for line in block if line.startswith("preference model: ")]
    assert len(models) == 1, block
    assert {"btl", "thurstone"} <= set(models[0].split(": ", 1)[1].split(", "))


def test_plugins_json_parses(monkeypatch, capsys):
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "")
    main(["plugins", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == []
    [core] = [p for p in data["plugins"] if p["name"] == "harness.preference"]
    assert core["core"] is True
    assert core["distribution"] == "rlhf-harness"
    assert core["version"] == __version__
    assert {"btl", "thurstone"} <= set(core["registers"]["preference_model"])


def test_plugins_json_shows_an_entry_point_plugin(dist_info_path, monkeypatch, capsys):
    dist_info_path(
        "rlhf-harness-test-cli-good",
        "3.1",
        entry_points={"cli-good": "rlhf_test_cli_good_plugin"},
        modules={"rlhf_test_cli_good_plugin": good_plugin_source("cli-good-algo")},
    )
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "cli-good")
    main(["plugins", "--json"])
    data = json.loads(capsys.readouterr().out)
    [row] = [p for p in data["plugins"] if p["name"] == "cli-good"]
    assert row == {
        "name": "cli-good",
        "distribution": "rlhf-harness-test-cli-good",
        "version": "3.1",
        "entry_point": "cli-good = rlhf_test_cli_good_plugin",
        "core": False,
        "registers": {"algorithm": ["cli-good-algo"]},
    }


@pytest.fixture
def broken_and_good_plugins(tmp_path, dist_writer):
    """Two fake distributions in ``tmp_path``: one whose module raises on import, one fine."""
    dist_writer(
        tmp_path,
        "rlhf-harness-test-cli-broken",
        "0.3",
        {"cli-broken": "rlhf_test_cli_broken_plugin"},
        {"rlhf_test_cli_broken_plugin": "raise ImportError('needs a missing library')\n"},
    )
    dist_writer(
        tmp_path,
        "rlhf-harness-test-cli-good",
        "1.0",
        {"cli-good": "rlhf_test_cli_good_plugin"},
        {"rlhf_test_cli_good_plugin": good_plugin_source("cli-good-algo")},
    )
    return tmp_path


def test_plugins_with_a_broken_plugin_fails_in_one_line(broken_and_good_plugins, subprocess_env):
    env = subprocess_env(broken_and_good_plugins, RLHF_HARNESS_PLUGINS="cli-broken,cli-good")
    result = run_cli("plugins", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1
    assert failed[0].startswith("FAILED cli-broken: ")
    assert "rlhf-harness-test-cli-broken 0.3" in failed[0]
    assert "ImportError: needs a missing library" in failed[0]
    # The good plugin is still listed with what it registers.
    assert "cli-good  (rlhf-harness-test-cli-good 1.0)" in result.stdout
    assert "algorithm: cli-good-algo" in result.stdout


def test_plugins_strict_with_a_broken_plugin_is_one_error_line(
    broken_and_good_plugins, subprocess_env
):
    """``--strict`` stops at the broken plugin (RLHF_HARNESS_STRICT=1: see test_plugins)."""
    env = subprocess_env(broken_and_good_plugins, RLHF_HARNESS_PLUGINS="cli-broken,cli-good")
    result = run_cli("plugins", "--strict", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlhf-harness: error: ")
    assert "plugin 'cli-broken'" in lines[0]
    assert "ImportError: needs a missing library" in lines[0]
    assert result.stdout == ""  # nothing listed: strict mode stops before printing


def test_plugins_with_duplicate_names_is_one_error_line(tmp_path, dist_writer, subprocess_env):
    for letter in "xy":
        dist_writer(
            tmp_path,
            f"rlhf-harness-test-cli-dup-{letter}",
            "1.0",
            {f"cli-dup-{letter}": f"rlhf_test_cli_dup_{letter}_plugin"},
            {f"rlhf_test_cli_dup_{letter}_plugin": good_plugin_source("same-algo")},
        )
    env = subprocess_env(tmp_path, RLHF_HARNESS_PLUGINS="cli-dup-x,cli-dup-y")
    result = run_cli("plugins", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlhf-harness: error: Duplicate algorithm 'same-algo'")
    assert "plugin 'cli-dup-x'" in lines[0] and "plugin 'cli-dup-y'" in lines[0]


def test_unknown_command_is_a_usage_error(subprocess_env):
    result = run_cli("no-such-command", env=subprocess_env())
    assert result.returncode == 2
    assert "No such command 'no-such-command'" in result.stderr
    assert "Traceback" not in result.stderr


# --- show ----------------------------------------------------------------------------------------

TWIN_PLUGIN = """
from dataclasses import dataclass
from typing import Any, ClassVar

from harness import hookimpl
from harness.algorithm import Algorithm
from harness.tasks.bandit import BanditTask


@dataclass
class Config:
    \"\"\"Settings of the twin algorithm.\"\"\"

    learning_rate: float = 1e-6
    \"\"\"Step size (the paper's).\"\"\"
    group: int = 4
    \"\"\"Samples per prompt.\"\"\"


class TwinAlgorithm(Algorithm):
    \"\"\"An algorithm that shares its name with a task.\"\"\"

    name = "twin"
    Config = Config
    needs = frozenset({"reward"})
    suggested: ClassVar[dict[str, dict[str, Any]]] = {"tabular": {"learning_rate": 0.1}}
    metrics: ClassVar[dict[str, str]] = {"spread": "std of the group's rewards"}

    def step(self):
        return {}


class TwinTask(BanditTask):
    \"\"\"A task that shares its name with an algorithm.\"\"\"


@hookimpl
def register_algorithms(register):
    register("twin", TwinAlgorithm)


@hookimpl
def register_tasks(register):
    register("twin", TwinTask)
"""


@pytest.fixture
def twin(dist_info_path, monkeypatch):
    dist_info_path("rlhf-harness-twin", "0.3", entry_points={"twin": "rlhf_test_twin_plugin"},
                   modules={"rlhf_test_twin_plugin": TWIN_PLUGIN})
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "twin")


def test_show_needs_kind_for_a_name_of_two_kinds(twin, capsys):
    with pytest.raises(SystemExit) as info:
        main(["show", "twin"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == ("rlhf-harness: error: 'twin' is registered as several kinds (algorithm, "
                   "task): pass --kind (algorithm or task)\n")


def test_show_prints_settings_defaults_docs_suggestions_and_metrics(twin, capsys):
    main(["show", "twin", "--kind", "algorithm"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "twin  (algorithm; plugin twin, rlhf-harness-twin 0.3)"
    assert lines[1] == "  An algorithm that shares its name with a task."
    for expected in [
        "needs: reward (online: samples, scored by the reward model)",
        "settings (Config):",
        "  learning_rate: float = 1e-06",
        "      Step size (the paper's).",
        "  group: int = 4",
        "  tabular: {learning_rate: 0.1}",
        "  spread: std of the group's rewards",
        "override in a suite: algorithms: [{name: twin, config: {FIELD: VALUE}, per_task: "
        "{TASK: {FIELD: VALUE}}}]",
    ]:
        assert expected in lines, (expected, out)
    assert any(line.startswith("  reward (shared): mean r̂(x, y)") for line in lines)
    main(["show", "twin", "--kind", "task"])
    task = capsys.readouterr().out
    assert task.startswith("twin  (task; plugin twin, rlhf-harness-twin 0.3)\n")
    assert "settings (BanditParams):" in task and "  num_arms: int = 16" in task


def test_show_json_is_for_tools(twin, capsys):
    main(["show", "twin", "--kind", "algorithm", "--format", "json"])
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "algorithm" and info["needs"] == ["reward"]
    assert info["plugin"] == {"name": "twin", "distribution": "rlhf-harness-twin",
                              "version": "0.3", "core": False}
    assert info["settings"] == [
        {"name": "learning_rate", "type": "float", "default": 1e-6, "required": False,
         "doc": "Step size (the paper's)."},
        {"name": "group", "type": "int", "default": 4, "required": False,
         "doc": "Samples per prompt."},
    ]
    assert info["suggested"] == {"tabular": {"learning_rate": 0.1}}
    assert info["metrics"]["own"] == {"spread": "std of the group's rewards"}
    assert set(info["metrics"]["shared"]) == {"loss", "reward", "kl_ref", "response_length",
                                              "entropy"}


@pytest.mark.parametrize(("name", "kind", "first"), [
    ("btl", "preference_model", "btl  (preference model; plugin harness.preference, core)"),
    ("kl_ref", "evaluator", "kl_ref  (evaluator; plugin harness.evaluators, core)"),
    ("length", "gold_reward", "length  (gold reward; plugin harness.gold, core)"),
])
def test_show_describes_every_kind(monkeypatch, capsys, name, kind, first):
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "")
    main(["show", name, "--format", "json"])
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == kind
    main(["show", name])
    assert capsys.readouterr().out.splitlines()[0] == first
    if kind == "preference_model":
        assert info["settings"][0]["name"] == "scale" and info["settings"][0]["default"] == 1.0


def test_show_an_unknown_name_suggests_the_nearest(monkeypatch, capsys):
    monkeypatch.setenv("RLHF_HARNESS_PLUGINS", "")
    with pytest.raises(SystemExit) as info:
        main(["show", "bandt"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "rlhf-harness: error: Nothing is registered as 'bandt'. Did you mean 'bandit'? "
        "rlhf-harness plugins lists what is.\n"
    )


def test_every_shipped_algorithm_suggests_settings_that_its_config_accepts():
    """The suggestions are suite settings: each validates against the plugin's Config, and every
    shipped plugin suggests some, for tabular or neural policies."""
    from harness.algorithm import POLICY_KINDS
    from harness.config import build_config
    from harness.engine.plugins import get_plugin_host

    host = get_plugin_host()
    shipped = {"ppo", "grpo", "dpo", "ipo", "rloo", "bon"}
    assert shipped <= set(host.names("algorithm"))
    for name in sorted(shipped):
        cls = host.algorithm(name)
        assert cls.suggested and set(cls.suggested) <= set(POLICY_KINDS), name
        for kind, values in cls.suggested.items():
            build_config(cls.Config, values, where=f"{name}.suggested[{kind}]")


COPIED = """\
name: copied
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 64}
reward_model: {epochs: 1}
algorithms:
  - name: dpo
    config: {learning_rate: 0.05, optimizer: adam, batch_size: 8, warmup_steps: 0}
seeds: [0]
budget: {steps: 2}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref]}
device: cpu
"""


def test_a_copied_suite_that_keeps_its_name_is_warned_of_the_shared_store(tmp_path, monkeypatch):
    """The copy's runs join the original's store, whose runs then go stale (and gc would
    remove them): run says so, naming both files; the same file again, or an identical copy,
    is not warned of."""
    from click.testing import CliRunner

    from harness.cli import SUITE_SOURCE, cli, store_clash

    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    original = tmp_path / "original.yaml"
    original.write_text(COPIED)
    twin = tmp_path / "twin.yaml"
    twin.write_text(COPIED)
    copy = tmp_path / "copy.yaml"
    copy.write_text(COPIED.replace("learning_rate: 0.05", "learning_rate: 0.1"))
    root = tmp_path / "runs"
    runner = CliRunner()

    def run(path: Path) -> str:
        result = runner.invoke(cli, ["run", str(path), "--root", str(root), "--no-report",
                                     "--no-progress", "--no-wandb"])
        assert result.exit_code == 0, result.output
        return result.stderr

    assert "warning" not in run(original)
    assert (root / "copied" / SUITE_SOURCE).read_text() == str(original.resolve())
    assert "warning" not in run(original)
    assert "warning" not in run(twin)  # the same content: nothing goes stale
    warned = run(copy)
    assert warned.count("warning: name:") == 1, warned
    assert f"{copy}: warning: name: the store {root / 'copied'} holds the runs of the suite " \
           f"file {twin.resolve()}, which has the same name" in warned
    assert "'rlhf-harness gc' would remove them" in warned
    assert store_clash(root / "copied", str(copy)) is None  # it is now the copy's store
    assert store_clash(tmp_path / "new-store", str(copy)) is None
