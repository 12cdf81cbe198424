"""Suite files: grid expansion into run specs, and one-line errors naming file, line and key.

Every malformed suite is written to ``tmp_path`` and must be rejected by ``load_suite`` +
``check_suite`` with a single line holding ``<file>:<line>:`` (the line computed from the YAML
written) and the offending key; a few go through ``rlhf-harness validate`` in a subprocess, as a
user would see them (exit status 2, one line on stderr, no traceback).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.suite import (
    check_suite,
    default_claims,
    expand,
    load_suite,
    missing_lecture_algorithms,
)

TIMEOUT_S = 120

GRID = """\
name: grid
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
  - name: token
    params: {num_prompts: 3, vocab_size: 3, max_len: 3}
preferences: {num_pairs: 500, preference_model: thurstone, scale: 0.5, flip_rate: 0.1}
reward_model: {preference_model: btl, epochs: 3}
algorithms:
  - name: dpo
    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam}
  - name: ppo
    label: ppo-kl
    config: {rollout_batch_size: 32, num_ppo_epochs: 2}
    sweep:
      learning_rate: [0.01, 0.05]
      kl_coef: [0.1, 0.2, 0.3]
  - name: grpo
    config: {learning_rate: 0.05}
    sweep: {beta: [0.0, 0.04]}
seeds: [0, 1, 2]
budget: {samples: 2000}
evaluation: {every: 5, samples_per_prompt: 2}
"""


@pytest.fixture(scope="module")
def host():
    return get_plugin_host()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def specs_of(path: Path, host) -> list:
    return check_suite(load_suite(path), path, host)


# --- grid expansion ------------------------------------------------------------------------------


def test_grid_expands_tasks_seeds_algorithms_and_sweep_points(tmp_path, host):
    path = write(tmp_path, "grid.yaml", GRID)
    specs = specs_of(path, host)
    # 2 tasks × 3 seeds × (dpo + 2·3 ppo sweep points + 2 grpo sweep points)
    assert len(specs) == 2 * 3 * (1 + 6 + 2) == 54
    ppo_labels = {
        f"ppo-kl[learning_rate={lr},kl_coef={kl}]"
        for lr in (0.01, 0.05)
        for kl in (0.1, 0.2, 0.3)
    }
    expected_labels = {"dpo", *ppo_labels, "grpo[beta=0.0]", "grpo[beta=0.04]"}
    for task in ("bandit", "token"):
        for seed in (0, 1, 2):
            labels = [s.label for s in specs if s.task == task and s.seed == seed]
            assert sorted(labels) == sorted(expected_labels)
    assert Counter(s.algorithm for s in specs) == {"dpo": 6, "ppo": 36, "grpo": 12}
    assert Counter(s.task for s in specs) == {"bandit": 27, "token": 27}
    assert Counter(s.seed for s in specs) == {0: 18, 1: 18, 2: 18}

    # One budget, one preference set-up, one reward model, one evaluation for every run.
    first = specs[0]
    assert first.budget == {"samples": 2000.0}
    assert first.preferences["num_pairs"] == 500
    assert first.preferences["preference_model"] == "thurstone"
    assert first.preferences["flip_rate"] == 0.1
    assert first.reward_model["epochs"] == 3
    for spec in specs:
        assert spec.suite == "grid"
        assert spec.budget == first.budget
        assert spec.preferences == first.preferences
        assert spec.reward_model == first.reward_model
        assert spec.evaluation == first.evaluation
        assert spec.divergence == first.divergence
    # Task params are resolved (defaults filled in) and identical across algorithms.
    bandit = {s.task_params["num_arms"] for s in specs if s.task == "bandit"}
    assert bandit == {8}
    assert all(s.task_params["reward"] == "normal" for s in specs if s.task == "bandit")
    assert {s.task_params["vocab_size"] for s in specs if s.task == "token"} == {3}


def test_sweep_points_are_merged_into_the_config(tmp_path, host):
    specs = specs_of(write(tmp_path, "grid.yaml", GRID), host)
    ppo = [s for s in specs if s.algorithm == "ppo" and s.task == "bandit" and s.seed == 0]
    points = {(s.sweep_point["learning_rate"], s.sweep_point["kl_coef"]) for s in ppo}
    assert points == {(lr, kl) for lr in (0.01, 0.05) for kl in (0.1, 0.2, 0.3)}
    for spec in ppo:
        cfg = spec.algorithm_config
        assert cfg["learning_rate"] == spec.sweep_point["learning_rate"]
        assert cfg["kl_coef"] == spec.sweep_point["kl_coef"]
        assert cfg["rollout_batch_size"] == 32  # the fixed config is kept
        assert cfg["num_ppo_epochs"] == 2
        assert cfg["cliprange"] == 0.2  # and the Config's defaults are filled in
    [dpo] = [s for s in specs if s.algorithm == "dpo" and s.task == "bandit" and s.seed == 0]
    assert dpo.sweep_point == {}
    assert dpo.algorithm_config["beta"] == 0.5
    assert dpo.algorithm_config["optimizer"] == "adam"
    assert dpo.algorithm_config["batch_size"] == 64  # DPO's default
    grpo = [s for s in specs if s.algorithm == "grpo" and s.task == "token" and s.seed == 2]
    assert sorted(s.algorithm_config["beta"] for s in grpo) == [0.0, 0.04]


def test_run_ids_are_distinct_and_stable(tmp_path, host):
    path = write(tmp_path, "grid.yaml", GRID)
    ids = [s.run_id for s in specs_of(path, host)]
    assert len(set(ids)) == len(ids)
    # The same file, loaded again (or copied elsewhere), gives the same ids in the same order.
    assert [s.run_id for s in specs_of(path, host)] == ids
    (tmp_path / "elsewhere").mkdir()
    copy = write(tmp_path / "elsewhere", "other-name.yaml", GRID)
    assert [s.run_id for s in specs_of(copy, host)] == ids
    # Ids name the run: label, task, seed.
    spec = specs_of(path, host)[0]
    assert spec.run_id.startswith(f"{spec.label}-{spec.task}-s{spec.seed}-")
    # Adding a seed keeps the existing runs' ids (a grown suite resumes); changing the budget,
    # which every run depends on, changes them all.
    grown = write(tmp_path, "grown.yaml", GRID.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 2, 3]"))
    grown_ids = [s.run_id for s in specs_of(grown, host)]
    assert len(grown_ids) == 72
    assert set(ids) < set(grown_ids)
    budget = write(tmp_path, "budget.yaml", GRID.replace("{samples: 2000}", "{samples: 2001}"))
    assert not set(ids) & {s.run_id for s in specs_of(budget, host)}


def test_per_task_budget_and_config_apply_to_that_task_only(tmp_path, host):
    text = GRID.replace(
        "    params: {num_prompts: 3, vocab_size: 3, max_len: 3}\n",
        "    params: {num_prompts: 3, vocab_size: 3, max_len: 3}\n    budget: {steps: 7}\n",
    ).replace(
        "    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam}\n",
        "    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam}\n"
        "    per_task: {token: {learning_rate: 0.2}}\n",
    )
    specs = specs_of(write(tmp_path, "per-task.yaml", text), host)
    assert len(specs) == 54
    for spec in specs:
        # Equal budgets within a task: every algorithm of a task gets the same one.
        assert spec.budget == ({"steps": 7.0} if spec.task == "token" else {"samples": 2000.0})
    dpo = {s.task: s.algorithm_config["learning_rate"] for s in specs if s.algorithm == "dpo"}
    assert dpo == {"bandit": 0.05, "token": 0.2}
    assert {s.algorithm_config["beta"] for s in specs if s.algorithm == "dpo"} == {0.5}


def test_expand_without_check_gives_the_same_specs(tmp_path, host):
    path = write(tmp_path, "grid.yaml", GRID)
    assert expand(load_suite(path), host) == specs_of(path, host)


# --- malformed suites ----------------------------------------------------------------------------

BASE = """\
name: bad
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences:
  num_pairs: 100
  flip_rate: 0.0
reward_model: {epochs: 5}
algorithms:
  - name: dpo
    config:
      beta: 0.5
  - name: ppo
    sweep:
      learning_rate: [0.01, 0.05]
seeds: [0, 1]
budget:
  steps: 3
evaluation:
  every: 5
  evaluators: [gold_reward, kl_ref]
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based number of the line holding the ``occurrence``-th ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} not in the suite text"
    return hits[occurrence - 1]


def edit(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return apply


@dataclass(frozen=True)
class Bad:
    id: str
    make: Callable[[str], str]
    key: str
    """A key (or key path) the message must name."""
    at: str | int | tuple[str, int]
    """The expected line: a number, a text whose first line in the suite is it, or
    ``(text, n)``: the line of its n-th occurrence."""
    says: tuple[str, ...] = ()
    """Further substrings the message must hold."""


BAD = [
    Bad("unknown-top-level-key", edit("seeds: [0, 1]", "seedz: [0, 1]"), "seedz", "seedz:",
        ("unknown key", "did you mean 'seeds'?")),
    Bad("unknown-optional-top-level-key", edit("evaluation:\n", "evalution:\n"), "evalution",
        "evalution:", ("unknown key", "did you mean 'evaluation'?")),
    Bad("unknown-nested-key", edit("  num_pairs: 100", "  num_pair: 100"),
        "preferences.num_pair", "num_pair:", ("did you mean 'num_pairs'?", "allowed here")),
    Bad("unknown-key-in-a-list-item", edit("  - name: ppo\n", "  - name: ppo\n    lable: x\n"),
        "algorithms.1.lable", "lable:", ("did you mean 'label'?",)),
    Bad("wrong-type", edit("seeds: [0, 1]", 'seeds: "abc"'), "seeds", "seeds:",
        ("a list of seeds, or a mapping {instances", "'abc'")),
    Bad("zero-replicates", edit("seeds: [0, 1]", "seeds:\n  instances: [0, 1]\n  replicates: 0"),
        "seeds.replicates", "replicates: 0", ("greater than or equal to 1", "0")),
    Bad("duplicate-instances", edit("seeds: [0, 1]", "seeds: {instances: [3, 1, 3]}"),
        "seeds.instances", "seeds:", ("instance seeds must be distinct", "3 repeated")),
    Bad("unknown-key-in-seeds", edit("seeds: [0, 1]", "seeds:\n  instances: [0]\n  replicate: 2"),
        "seeds.replicate", "replicate: 2", ("unknown key", "did you mean 'replicates'?")),
    Bad("claim-naming-an-unknown-label",
        lambda text: text + "claims:\n  - aspect: reward\n    order: [dpo, pop]\n",
        "claims.0.order.1", "order: [dpo, pop]", ("no algorithm labelled or named 'pop'",
                                                   "labels: dpo, ppo")),
    Bad("claim-with-an-unknown-aspect",
        lambda text: text + "claims:\n  - aspect: speed\n    order: [dpo, ppo]\n",
        "claims.0.aspect", "aspect: speed", ("'stability', 'reward' or 'computation'",)),
    Bad("wrong-item-type", edit("seeds: [0, 1]", "seeds: [0, abc]"), "seeds.1", "seeds:",
        ("valid integer", "'abc'")),
    Bad("missing-budget", edit("budget:\n  steps: 3\n", ""), "budget", 1,
        ("missing required key",)),
    Bad("two-budgets", edit("  steps: 3\n", "  steps: 3\n  samples: 10\n"), "budget", "budget:",
        ("exactly one budget", "steps, samples")),
    Bad("no-budget-kind", edit("budget:\n  steps: 3\n", "budget: {}\n"), "budget", "budget:",
        ("exactly one budget", "got none")),
    Bad("negative-num-pairs", edit("num_pairs: 100", "num_pairs: -5"), "preferences.num_pairs",
        "num_pairs:", ("greater than or equal to 1", "-5")),
    Bad("flip-rate-above-one", edit("flip_rate: 0.0", "flip_rate: 1.5"), "preferences.flip_rate",
        "flip_rate:", ("less than or equal to 1", "1.5")),
    Bad("unknown-algorithm", edit("  - name: ppo", "  - name: ppoo"), "algorithms.1.name",
        "name: ppoo", ("Unknown algorithm 'ppoo'", "Did you mean 'ppo'?", "Available:",
                       "dpo, grpo", "ppo")),
    Bad("unknown-task", edit("  - name: bandit", "  - name: bandits"), "tasks.0.name",
        "name: bandits", ("Unknown task 'bandits'", "Did you mean 'bandit'?", "Available:",
                          "token")),
    Bad("unknown-preference-model",
        edit("  num_pairs: 100", "  num_pairs: 100\n  preference_model: luce"),
        "preferences.preference_model", "preference_model: luce",
        ("Unknown preference model 'luce'", "Available: btl, thurstone")),
    Bad("unknown-reward-model-likelihood",
        edit("reward_model: {epochs: 5}", "reward_model: {epochs: 5, preference_model: bt}"),
        "reward_model.preference_model", "reward_model:", ("Unknown preference model 'bt'",)),
    Bad("unknown-evaluator",
        edit("  evaluators: [gold_reward, kl_ref]", "  evaluators:\n    - gold_reward\n    - nope"),
        "evaluation.evaluators.1", "- nope", ("Unknown evaluator 'nope'", "Available:")),
    Bad("bad-algorithm-config-key", edit("      beta: 0.5", "      betaa: 0.5"), "betaa",
        "betaa:", ("algorithms.0.config.betaa (dpo)", "did you mean 'beta'?", "Config accepts:")),
    Bad("bad-algorithm-config-type", edit("      beta: 0.5", "      beta: high"), "beta",
        "beta: high", ("algorithms.0.config.beta (dpo)", "valid number", "'high'")),
    Bad("bad-swept-value-type", edit("[0.01, 0.05]", "[0.01, fast]"), "learning_rate",
        "learning_rate:", ("algorithms.1.sweep.learning_rate (ppo)", "valid number", "'fast'")),
    Bad("boolean-swept-value", edit("[0.01, 0.05]", "[0.01, true]"), "learning_rate",
        "learning_rate:", ("algorithms.1.sweep.learning_rate (ppo)", "not the boolean true")),
    Bad("config-typo-beside-per-task-is-at-the-config-line",
        edit("      beta: 0.5\n", "      betaa: 0.5\n    per_task:\n      bandit: {beta: 0.2}\n"),
        "algorithms.0.config.betaa", "betaa:", ("did you mean 'beta'?",)),
    Bad("per-task-key-typo-is-at-its-own-line",
        edit("      beta: 0.5\n", "      beta: 0.5\n    per_task:\n      bandit:\n"
             "        learning_rate: 0.05\n        optimiser: adam\n"),
        "algorithms.0.per_task.bandit.optimiser", "optimiser:",
        ("did you mean 'optimizer'?", "task bandit")),
    Bad("per-task-type-error-is-at-its-own-line",
        edit("      beta: 0.5\n", "      beta: 0.5\n    per_task:\n      bandit:\n"
             "        batch_size: many\n"),
        "algorithms.0.per_task.bandit.batch_size", "batch_size: many", ("'many'",)),
    Bad("task-name-typo-in-per-task-suggests-the-task",
        edit("      beta: 0.5\n", "      beta: 0.5\n    per_task:\n      bandt: {beta: 0.2}\n"),
        "algorithms.0.per_task.bandt", "bandt:",
        ("no task 'bandt' in this suite", "did you mean 'bandit'?", "tasks: bandit")),
    Bad("task-typo-is-named-at-the-task-not-at-per-task",
        lambda text: text.replace("  - name: bandit\n", "  - name: bandt\n").replace(
            "      beta: 0.5\n", "      beta: 0.5\n    per_task:\n      bandit: {beta: 0.2}\n"),
        "tasks.0.name", "name: bandt", ("Unknown task 'bandt'", "Did you mean 'bandit'?")),
    Bad("bad-task-param", edit("num_arms: 8}", "num_armz: 8}"), "num_armz", "num_armz",
        ("tasks.0.params (bandit)", "did you mean 'num_arms'?")),
    Bad("bad-task-param-type",
        edit("    params: {num_prompts: 4, num_arms: 8}",
             "    params:\n      num_prompts: 4\n      num_arms: many"),
        "num_arms", "num_arms: many", ("tasks.0.params (bandit)", "'many'")),
    Bad("duplicate-labels", edit("  - name: ppo", "  - name: dpo"), "label", ("  - name: dpo", 2),
        ("algorithms.1", "two algorithms are labelled 'dpo'")),
    Bad("swept-key-also-in-config",
        edit("  - name: ppo\n", "  - name: ppo\n    config: {learning_rate: 0.1}\n"),
        "algorithms.1.sweep.learning_rate", "learning_rate: [", ("also set in config",)),
    Bad("duplicate-seeds", edit("seeds: [0, 1]", "seeds: [0, 1, 0]"), "seeds", "seeds:",
        ("distinct",)),
    Bad("invalid-yaml", edit("seeds: [0, 1]", "seeds: [0, 1"), "seeds", "budget:",
        ("invalid YAML", f"started at line {line_of(BASE, 'seeds:')}")),
    Bad("not-a-mapping", lambda text: "- name: bandit\n- name: token\n", "(top level)", 1,
        ("a suite file is a mapping", "not list")),
    Bad("bf16-on-cpu", lambda text: text + "device: cpu\nprecision: bf16\n", "precision",
        "precision:", ("bf16 needs a CUDA device",)),
    Bad("gpus-on-cpu", lambda text: text + "device: cpu\ngpus_per_run: 1\n", "gpus_per_run",
        "gpus_per_run:", ("a CPU run needs no GPU",)),
    Bad("empty-sweep", edit("[0.01, 0.05]", "[]"), "algorithms.1.sweep", "sweep:",
        ("sweep 'learning_rate' has no values",)),
    Bad("per-task-for-a-task-not-in-the-suite",
        edit("      beta: 0.5\n", "      beta: 0.5\n    per_task:\n      token: {beta: 0.2}\n"),
        "per_task.token", "token: {beta", ("no task 'token' in this suite",)),
    Bad("per-task-budget-under-budget-says-where-it-belongs",
        edit("budget:\n  steps: 3\n", "budget:\n  steps: 3\n  per_task: {bandit: {steps: 5}}\n"),
        "budget.per_task", "per_task:",
        ("unknown key", "a task's own budget goes in its entry of tasks",
         "tasks: [{name: bandit, budget: {samples: 1000}}]")),
    Bad("task-name-under-budget-says-where-it-belongs",
        edit("budget:\n  steps: 3\n", "budget:\n  steps: 3\n  bandit: {steps: 5}\n"),
        "budget.bandit", "bandit: {steps", ("a task's own budget goes in its entry of tasks",)),
    Bad("per-task-in-a-task-entry-belongs-to-an-algorithm",
        edit("    params: {num_prompts: 4, num_arms: 8}\n",
             "    params: {num_prompts: 4, num_arms: 8}\n    per_task: {}\n"),
        "tasks.0.per_task", "per_task: {}", ("'per_task' belongs in algorithms[].per_task",)),
    Bad("a-tuning-key-at-the-top-level-says-where-it-belongs",
        lambda text: text + "trials: 8\n", "trials", "trials: 8",
        ("unknown key 'trials'", "'trials' belongs in tuning.trials")),
    Bad("dpo-negative-beta-is-refused-by-validate", edit("      beta: 0.5", "      beta: -0.4"),
        "algorithms.0.config.beta", "beta: -0.4", ("(dpo)", "beta must be > 0", "-0.4")),
    Bad("dpo-zero-batch-is-refused-by-validate",
        edit("      beta: 0.5", "      beta: 0.5\n      batch_size: 0"),
        "algorithms.0.config.batch_size", "batch_size: 0", ("batch_size must be >= 1",)),
    Bad("dpo-negative-learning-rate-is-refused-by-validate",
        edit("      beta: 0.5", "      beta: 0.5\n      learning_rate: -0.1"),
        "algorithms.0.config.learning_rate", "learning_rate: -0.1",
        ("learning_rate must be > 0",)),
    Bad("ppo-cliprange-above-one-is-refused-by-validate",
        edit("  - name: ppo\n", "  - name: ppo\n    config: {cliprange: 1.5}\n"),
        "algorithms.1.config.cliprange", "cliprange: 1.5", ("cliprange must be in [0, 1)",)),
    Bad("ppo-mini-batches-not-dividing-the-batch-are-refused-by-validate",
        edit("  - name: ppo\n", "  - name: ppo\n    config: {rollout_batch_size: 10, "
             "num_mini_batches: 3}\n"),
        "algorithms.1.config.num_mini_batches", "num_mini_batches: 3",
        ("must be >= 1 and divide rollout_batch_size",)),
    Bad("empty-task-list", edit(
        "tasks:\n  - name: bandit\n    params: {num_prompts: 4, num_arms: 8}\n", "tasks: []\n"),
        "tasks", "tasks:", ("at least 1",)),
]


def expected_line(bad: Bad, text: str) -> int:
    if isinstance(bad.at, int):
        return bad.at
    if isinstance(bad.at, tuple):
        return line_of(text, *bad.at)
    return line_of(text, bad.at)


def rejection(path: Path, host) -> str:
    with pytest.raises(ConfigError) as info:
        check_suite(load_suite(path), path, host)
    return str(info.value)


def test_base_suite_is_valid(tmp_path, host):
    assert len(specs_of(write(tmp_path, "base.yaml", BASE), host)) == 2 * (1 + 2)


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_malformed_suite_is_one_line_naming_file_line_and_key(tmp_path, host, bad):
    text = bad.make(BASE)
    assert text != BASE
    path = write(tmp_path, f"{bad.id}.yaml", text)
    message = rejection(path, host)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{expected_line(bad, text)}: "), message
    assert bad.key in message, message
    for part in bad.says:
        assert part in message, message


def test_there_are_many_distinct_malformed_cases():
    assert len(BAD) >= 15
    assert len({b.make(BASE) for b in BAD}) == len(BAD)


def test_a_missing_suite_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found") as info:
        load_suite(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


# --- the validate command ------------------------------------------------------------------------

CLI_CASES = ["unknown-top-level-key", "wrong-type", "unknown-algorithm",
             "bad-algorithm-config-key", "invalid-yaml"]


def test_validate_command_reports_one_line_with_exit_status_2(tmp_path, subprocess_env):
    """Several ``rlhf-harness validate`` processes at once (each pays Python's start-up)."""
    env = subprocess_env()
    procs = {}
    for bad in (b for b in BAD if b.id in CLI_CASES):
        text = bad.make(BASE)
        path = write(tmp_path, f"{bad.id}.yaml", text)
        procs[bad.id] = (bad, path, text, subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "validate", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    assert len(procs) == len(CLI_CASES)
    for bad, path, text, proc in procs.values():
        out, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 2, (bad.id, out, err)
        assert "Traceback" not in out + err
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, (bad.id, err)
        assert lines[0].startswith(
            f"rlhf-harness: error: {path}:{expected_line(bad, text)}: "
        ), lines[0]
        assert bad.key in lines[0]


def test_validate_command_accepts_a_good_suite(tmp_path, subprocess_env):
    path = write(tmp_path, "grid.yaml", GRID)
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == (
        f"{path}: ok: 54 runs (2 tasks × 3 instances × 1 replicates × 9 algorithm configs)"
    )


POST_INIT_PLUGIN = """
from dataclasses import dataclass

from harness.algorithm import Algorithm


@dataclass
class Config:
    learning_rate: float = 0.1
    decay: float = 0.9

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")


class Checked(Algorithm):
    name = "checked"
    Config = Config
    needs = frozenset({"reward"})

    def step(self):
        return {}


@hookimpl
def register_algorithms(register):
    register("checked", Checked)
"""


@pytest.mark.parametrize("where", ["config", "per_task", "sweep"])
def test_a_config_post_init_check_is_named_with_its_line_and_key(tmp_path, make_host,
                                                                 monkeypatch, where):
    """The validation hook of harness.algorithm: a ValueError in Config.__post_init__ is one
    line naming the file, the line of the key the message names, and the key."""
    plugin = types.ModuleType("checked_plugin")
    monkeypatch.setitem(sys.modules, "checked_plugin", plugin)  # dataclasses look it up
    code = compile("from harness import hookimpl\n" + POST_INIT_PLUGIN, "checked_plugin.py",
                   "exec", dont_inherit=True)
    exec(code, plugin.__dict__)
    host = make_host(("checked", plugin))
    entry = {
        "config": "    config: {learning_rate: 0.2, decay: 1.5}\n",
        "per_task": "    config: {learning_rate: 0.2}\n    per_task:\n      bandit:\n"
                    "        decay: 1.5\n",
        "sweep": "    config: {learning_rate: 0.2}\n    sweep:\n      decay: [0.5, 1.5]\n",
    }[where]
    text = (BASE.replace("  - name: dpo\n    config:\n      beta: 0.5\n", "  - name: checked\n"
                         + entry))
    path = write(tmp_path, f"post-{where}.yaml", text)
    message = rejection(path, host)
    assert message.startswith(f"{path}:{line_of(text, 'decay')}: "), message
    assert f"algorithms.0.{where}" in message and "'decay': decay must be in [0, 1), got 1.5" in (
        message
    )
    assert "''" not in message and "Value error" not in message and "\n" not in message
# --- instances and replicates --------------------------------------------------------------------


def test_instances_times_replicates(tmp_path, host):
    from harness.config import config_hash
    from harness.suite import algorithm_seed

    plain = specs_of(write(tmp_path, "plain.yaml", GRID), host)
    text = GRID.replace("seeds: [0, 1, 2]", "seeds: {instances: [0, 1, 2], replicates: 3}")
    specs = specs_of(write(tmp_path, "reps.yaml", text), host)
    assert len(specs) == 3 * len(plain)
    assert Counter((s.seed, s.replicate) for s in specs) == {
        (i, r): len(plain) // 3 for i in (0, 1, 2) for r in (0, 1, 2)}
    # replicate 0 is the run a plain list of seeds makes, with the same id
    assert {s.run_id for s in specs if s.replicate == 0} == {s.run_id for s in plain}
    later = [s for s in specs if s.replicate == 2]
    assert all(f"-{s.task}-s{s.seed}-r2-" in s.run_id for s in later)
    assert len({s.run_id for s in specs}) == len(specs)
    # an instance's shared data (preferences, r̂) do not depend on the replicate
    by_instance = {}
    for s in specs:
        by_instance.setdefault((s.task, s.seed), set()).add(config_hash(s.shared_key))
    assert all(len(keys) == 1 for keys in by_instance.values())
    # the algorithm's seed: the instance seed for replicate 0, distinct otherwise
    assert algorithm_seed(4, 0) == 4
    seeds = {algorithm_seed(i, r) for i in range(50) for r in range(4)}
    assert len(seeds) == 200
    assert algorithm_seed(3, 1) == algorithm_seed(3, 1) != algorithm_seed(1, 3)
    # a plain list keeps its meaning: one replicate per instance
    suite = load_suite(write(tmp_path, "again.yaml", GRID))
    assert suite.instances == [0, 1, 2] and suite.replicates == 1


def test_every_shipped_plugin_refuses_an_impossible_setting_in_validate(host):
    """A value no run can use — a negative step size or KL weight, a batch of none — is
    refused by the Config (so by validate, in one line), for every built-in algorithm."""
    from harness.config import build_config

    impossible = {"learning_rate": -0.1, "beta": -0.4, "kl_coef": -0.1, "tau": -1.0,
                  "batch_size": 0, "num_generations": 1, "prompts_per_step": 0, "k": 1,
                  "n": 0, "temperature": 0.0, "cliprange": 1.5, "lam": -1.0,
                  "max_grad_norm": -1.0}
    names = sorted(host.names("algorithm"))
    assert {"dpo", "ppo", "grpo", "rdpo", "kto", "bon"} <= set(names)
    for name in names:
        cls = host.algorithm(name)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        tried = [k for k in impossible if k in fields]
        assert tried, name
        for key in tried:
            with pytest.raises(ConfigError) as info:
                build_config(cls.Config, {key: impossible[key]}, where=f"algorithm '{name}'")
            message = str(info.value)
            assert "\n" not in message and f"'{key}'" in message, (name, message)


def test_claims_default_to_the_lecture_and_may_be_listed(tmp_path, host):
    suite = load_suite(write(tmp_path, "plain.yaml", GRID))
    claims = suite.resolved_claims()
    assert [(c.aspect, c.order, c.trend) for c in claims] == [
        ("stability", ["ppo", "grpo", "dpo"], "increases"),
        ("computation", ["ppo", "grpo", "dpo"], "decreases")]
    assert all("CMU 10-734" in c.source for c in claims)
    text = GRID + "claims:\n  - {aspect: reward, order: [ppo-kl, dpo], trend: decreases}\n"
    path = write(tmp_path, "claims.yaml", text)
    suite = load_suite(path)
    specs_of(path, host)
    assert [(c.aspect, c.order) for c in suite.resolved_claims()] == [("reward",
                                                                        ["ppo-kl", "dpo"])]
    none = load_suite(write(tmp_path, "none.yaml", GRID + "claims: []\n"))
    assert none.resolved_claims() == []


def test_the_lecture_s_claims_apply_only_to_a_suite_with_its_three_algorithms(tmp_path):
    without_ppo = GRID.replace("  - name: ppo\n    label: ppo-kl\n", "  - name: rloo\n"
                               "    label: ppo-kl\n")
    assert load_suite(write(tmp_path, "no-ppo.yaml", without_ppo)).resolved_claims() == []
    assert missing_lecture_algorithms(["dpo", "rloo", "grpo"]) == ["ppo"]
    assert default_claims(["ppo", "grpo", "dpo", "kto"]) == default_claims()
    assert len(default_claims()) == 2 and default_claims(["grpo", "dpo"]) == []


# --- a task's own seeds ---------------------------------------------------------------------------

PER_TASK_SEEDS = GRID.replace(
    "    params: {num_prompts: 4, num_arms: 8}\n",
    "    params: {num_prompts: 4, num_arms: 8}\n"
    "    seeds: {instances: [0, 1, 2, 3, 4, 5], replicates: 2}\n",
)


def test_a_task_with_its_own_seeds_runs_on_them_and_the_others_on_the_suites(tmp_path, host):
    from harness.suite import count_runs

    path = write(tmp_path, "per-task.yaml", PER_TASK_SEEDS)
    suite = load_suite(path)
    specs = specs_of(path, host)
    bandit = [s for s in specs if s.task == "bandit"]
    token = [s for s in specs if s.task == "token"]
    # 9 algorithm configurations; bandit: 6 instances × 2 replicates, token: the suite's 3 × 1
    assert Counter(s.seed for s in bandit) == {i: 2 * 9 for i in range(6)}
    assert Counter(s.seed for s in token) == {i: 9 for i in range(3)}
    assert len(specs) == count_runs(suite) == 9 * (6 * 2 + 3)
    assert len({s.run_id for s in specs}) == len(specs)
    assert suite.all_instances == [0, 1, 2, 3, 4, 5]
    # the token task's runs are those of the suite without per-task seeds: same run ids
    plain = specs_of(write(tmp_path, "plain.yaml", GRID), host)
    assert {s.run_id for s in token} == {s.run_id for s in plain if s.task == "token"}


def test_tuning_instances_must_avoid_every_tasks_seeds(tmp_path, host):
    text = PER_TASK_SEEDS + "tuning: {trials: 2, instances: [5, 100]}\n"
    path = write(tmp_path, "overlap.yaml", text)
    with pytest.raises(ConfigError, match=r"tuning\.instances: 5 is also one of the suite's seeds"):
        specs_of(path, host)


def test_a_tasks_seeds_are_checked_like_the_suites(tmp_path, host):
    text = GRID.replace("    params: {num_prompts: 4, num_arms: 8}\n",
                        "    params: {num_prompts: 4, num_arms: 8}\n    seeds: [1, 1]\n")
    with pytest.raises(ConfigError, match=r"tasks\.0\.seeds.*distinct"):
        load_suite(write(tmp_path, "twice.yaml", text))


def test_validate_names_each_tasks_instances_when_they_differ(tmp_path, subprocess_env):
    path = write(tmp_path, "per-task.yaml", PER_TASK_SEEDS)
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{path}: ok: 135 runs ((bandit 6 instances × 2 replicates + token 3 instances × 1 "
        "replicates) × 9 algorithm configs)"
    )
