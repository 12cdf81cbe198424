"""The suites shipped under ``suites/`` are valid, and the zoo compares every shipped algorithm
on equal terms."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.engine.plugins import get_plugin_host
from harness.suite import check_suite, count_runs, load_suite, tuned_labels

ROOT = Path(__file__).resolve().parents[1]
# hf-example.yaml reads models saved by its own script (tests/test_hf_example.py runs it)
SUITES = sorted(p for p in (ROOT / "suites").glob("**/*.yaml") if p.stem != "hf-example")


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suite_is_valid(path: Path) -> None:
    suite = load_suite(path)
    assert check_suite(suite, path, get_plugin_host())
    assert suite.name == path.stem  # its report lands in reports/<file stem>/


def test_the_zoo_runs_every_shipped_algorithm_tuned_equally_on_three_tasks() -> None:
    """suites/zoo.yaml (bandit, token) and suites/zoo-lm.yaml (tiny-lm) are one comparison
    split in two suites, each within 45 minutes on 2 cores: the same algorithms, settings, data,
    evaluation and tuning, each on its own tasks."""
    zoo, lm = (load_suite(ROOT / "suites" / f"{name}.yaml") for name in ("zoo", "zoo-lm"))
    host = get_plugin_host()
    # every algorithm of the plugins shipped under plugins/ (13 distributions, 14 algorithms)
    shipped = {r.name for r in host.registrations("algorithm")
               if (ROOT / "plugins" / r.plugin.name).is_dir()}
    assert len({r.plugin.distribution for r in host.registrations("algorithm")
                if r.name in shipped}) == 13
    names = [a.name for a in zoo.algorithms]
    assert len(names) == len(set(names)) == 14
    assert set(names) == shipped
    assert [t.name for t in zoo.tasks] == ["bandit", "token"]
    assert [t.name for t in lm.tasks] == ["tiny-lm"]
    for mine, theirs in zip(zoo.algorithms, lm.algorithms, strict=True):
        assert (mine.name, mine.label) == (theirs.name, theirs.label)
        assert theirs.per_task == {}  # one task: its settings are the algorithm's config
        if mine.per_task:  # settings that differ by task: gspo's and online DPO's batch sizes
            assert mine.name in {"gspo", "online-dpo"} and set(mine.per_task) == {"bandit", "token"}
        else:
            assert mine.config == theirs.config, mine.name
    for key in ("preferences", "reward_model", "evaluation"):
        assert getattr(zoo, key) == getattr(lm, key), key
    assert zoo.tuning is not None and lm.tuning is not None
    keep = {"trials"}
    assert zoo.tuning.model_dump(exclude=keep) == lm.tuning.model_dump(exclude=keep)
    assert (zoo.tuning.trials, lm.tuning.trials) == (8, 6)
    # equal tuning: every algorithm tuned, the same number of trials each, on instances the
    # comparison never sees
    for suite in (zoo, lm):
        assert set(tuned_labels(suite)) == set(names)
        assert not set(suite.tuning.instances) & set(suite.instances)
        # equal data: one preference set and r̂ per instance for all, with the flip rate rDPO
        # and cDPO are told
        assert suite.preferences.flip_rate == 0.1
    for task in zoo.tasks:
        assert zoo.task_instances(task) == list(range(30)), task.name
        assert zoo.task_replicates(task) == 2
    assert lm.task_instances(lm.tasks[0]) == list(range(10))
    assert lm.task_replicates(lm.tasks[0]) == 1
    assert count_runs(zoo) == 14 * (30 + 30) * 2 + 14 * (8 + 8)
    assert count_runs(lm) == 14 * 10 + 14 * 6
    assert len(check_suite(zoo, ROOT / "suites" / "zoo.yaml", host)) == 14 * 60 * 2
    assert len(check_suite(lm, ROOT / "suites" / "zoo-lm.yaml", host)) == 14 * 10


EXACT_TASKS = {"bandit", "token"}
"""Tasks where a run takes about a second: a suite affords 30 instances of them."""
FEWER_INSTANCES = {
    # the zoo at ×1, ×4 and ×16 its budget: at 10 instances its halves take about 40 and 54
    # minutes on 2 cores (suites/zoo-budgets.md); at 30, the ×16 runs alone take hours
    "zoo-budgets", "zoo-budgets-bandit", "zoo-budgets-token",
}
"""Suites whose cost at 30 instances would break their time limit: 10 instances each."""


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_run_enough_instances_to_decide(path: Path) -> None:
    """At least 30 instances of a bandit or token task and 10 of a language-model task: the
    fewest at which the paired permutation test can reach a family's α/m and its interval
    holds its level on skewed differences (harness/report/stats.py)."""
    suite = load_suite(path)
    for task in suite.tasks:
        least = 30 if task.name in EXACT_TASKS and path.stem not in FEWER_INSTANCES else 10
        assert len(suite.task_instances(task)) >= least, (path.name, task.name)
