"""Several budgets in one suite (``budget: {samples: [8192, 32768, 131072]}``).

Expansion: each budget is its own set of runs, whose specs carry that one budget, so a run at a
budget is the run a single-budget suite at that budget makes, and a single-budget suite's run
ids are what they were. Tuning runs per budget with the same trials. Validation: one-line
errors naming the key. Report: each budget a task of its own (compared within it, never across),
and the crossover rule on a constructed comparison table. One tiny tuned suite runs end to end.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.engine.tuning import suite_studies
from harness.errors import ConfigError
from harness.report import compare as cmp
from harness.report import stats as st
from harness.report.data import load_store
from harness.suite import (
    _sweep_points,
    budget_task,
    check_suite,
    count_runs,
    expand,
    load_suite,
    make_spec,
    run_preferences,
)

SUITE = """\
name: budgets
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
    budget: {samples: BANDIT}
  - name: token
    params: {num_prompts: 2, vocab_size: 2, max_len: 2}
preferences: {num_pairs: 100}
reward_model: {epochs: 3}
algorithms:
  - name: dpo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
  - name: ipo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
    sweep: {tau: [0.1, 0.2]}
seeds: [0, 1, 2]
budget: {samples: 32}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref, regret]}
"""
TUNING = """\
tuning:
  trials: 2
  instances: [100]
  objective: j_beta
"""


@pytest.fixture(scope="module")
def host():
    return get_plugin_host()


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")


def suite_file(tmp_path: Path, bandit: str, *, tuning: bool = False, name: str = "s.yaml",
               text: str = SUITE) -> Path:
    path = tmp_path / name
    body = text.replace("BANDIT", bandit)
    if tuning:  # a tuned label's search space replaces a sweep
        body = body.replace("    sweep: {tau: [0.1, 0.2]}\n", "") + TUNING
    path.write_text(body)
    return path


def specs_of(path: Path, host) -> list:
    return check_suite(load_suite(path), path, host)


# --- expansion --------------------------------------------------------------------------------


def test_a_budget_list_is_one_set_of_runs_per_budget(tmp_path, host):
    path = suite_file(tmp_path, "[256, 64, 1024]")
    specs = specs_of(path, host)
    configs = 1 + 2  # dpo, and ipo at two sweep points
    assert len(specs) == (3 + 1) * 3 * configs == count_runs(load_suite(path))
    bandit = [s for s in specs if s.task == "bandit"]
    assert sorted({s.budget["samples"] for s in bandit}) == [64.0, 256.0, 1024.0]
    for s in specs:  # each run has one budget; the token task keeps the suite's
        assert len(s.budget) == 1
        assert s.task != "token" or s.budget == {"samples": 32.0}
    for value in (64, 256, 1024):  # every seed × configuration at every budget
        at = [s for s in bandit if s.budget["samples"] == value]
        assert sorted((s.seed, s.label) for s in at) == sorted(
            (seed, label) for seed in (0, 1, 2)
            for label in ("dpo", "ipo[tau=0.1]", "ipo[tau=0.2]"))
    assert len({s.run_id for s in specs}) == len(specs)


def test_the_runs_at_a_budget_are_those_of_a_suite_with_that_one_budget(tmp_path, host):
    several = specs_of(suite_file(tmp_path, "[64, 256]"), host)
    for value in (64, 256):
        single = specs_of(suite_file(tmp_path, str(value), name=f"{value}.yaml"), host)
        at = [s.run_id for s in several if s.task == "token" or s.budget["samples"] == value]
        token = [s.run_id for s in several if s.task == "token"]
        # the token task's runs are shared; the bandit's at this budget are the single suite's
        assert sorted(at) == sorted(s.run_id for s in single)
        assert sorted(token) == sorted(s.run_id for s in single if s.task == "token")
    one = specs_of(suite_file(tmp_path, "[64]", name="one.yaml"), host)  # a list of one
    assert [s.run_id for s in one] == [
        s.run_id for s in specs_of(suite_file(tmp_path, "64", name="plain.yaml"), host)]


def test_a_single_budget_suite_expands_exactly_as_specs_made_task_by_task(tmp_path, host):
    """The run ids of a suite with one budget per task are those of the specs made directly
    from its tasks, as expansion did before budgets could be lists."""
    path = suite_file(tmp_path, "64")
    suite = load_suite(path)
    prefs = run_preferences(suite)
    direct = [make_spec(suite, host, task, alg, seed, dict(point),
                        (alg.label or alg.name) + (
                            "[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]"
                            if point else ""), dict(point), preferences=prefs)
              for task in suite.tasks for seed in suite.instances
              for alg in suite.algorithms for point in _sweep_points(alg.sweep)]
    assert [s.run_id for s in expand(suite, host)] == [s.run_id for s in direct]


def test_tuning_runs_per_budget_with_the_same_trials(tmp_path, host):
    suite = load_suite(suite_file(tmp_path, "[64, 256]", tuning=True))
    studies = suite_studies(suite, host)
    units = ["bandit @ 64 samples", "bandit @ 256 samples", "token"]
    assert sorted((s.task, s.label) for s in studies) == sorted(
        (u, label) for u in units for label in ("dpo", "ipo"))
    assert {s.trials for s in studies} == {2}  # equal effort at every budget
    assert len({s.name for s in studies}) == len(studies)
    for s in studies:
        [trial] = s.make_specs(0, {"learning_rate": 0.1})
        expected = {"bandit @ 64 samples": 64.0, "bandit @ 256 samples": 256.0,
                    "token": 32.0}[s.task]
        assert trial.budget == {"samples": expected} and trial.seed == 100
    assert count_runs(suite) == 3 * 3 * 2 + 3 * 2 * 2 * 1  # comparisons + trials
    # each budget runs its own choice
    chosen = {(u, label): {"trial": i, "params": {"learning_rate": 0.01 * (i + 1)},
                           "value": 0.5}
              for i, u in enumerate(units) for label in ("dpo", "ipo")}
    for spec in expand(suite, host, tuned=chosen):
        unit = spec.task if spec.task == "token" else budget_task(
            spec.task, "samples", spec.budget["samples"])
        assert spec.algorithm_config["learning_rate"] == pytest.approx(
            chosen[(unit, spec.label)]["params"]["learning_rate"])
        assert spec.tuning["trial"] == chosen[(unit, spec.label)]["trial"]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "message"), [
    ("[64, 64]", "budget.samples: budgets must be distinct (64 appears twice)"),
    ("[64, 0]", "budget.samples.1: Input should be greater than or equal to 1"),
    ("[]", "budget.samples: give at least one budget"),
    ("-5", "budget.samples: Input should be greater than or equal to 1 (got -5)"),
    ("[64, 1.5]", "budget.samples.1: Input should be a valid integer"),
    ("[64, true]", "budget.samples.1: expected a number, not the boolean true"),
])
def test_bad_budget_lists_are_one_line_errors_naming_the_key(tmp_path, budget, message):
    path = suite_file(tmp_path, budget)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    text = str(info.value)
    assert "\n" not in text
    assert f"{path}:5: tasks.0.{message}" in text


def test_one_kind_of_budget_only(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text(SUITE.replace("BANDIT", "[64, 128], steps: [3, 4]"))
    with pytest.raises(ConfigError, match=r"k.yaml:5: tasks\.0\.budget: give exactly one "
                                          r"budget among .* \(got steps, samples\)"):
        load_suite(path)
    path.write_text(SUITE.replace("BANDIT", "64").replace("budget: {samples: 32}",
                                                            "budget: {flops: [1e9, 1e9]}"))
    with pytest.raises(ConfigError, match=r"budget\.flops: budgets must be distinct"):
        load_suite(path)


# --- the crossover rule -----------------------------------------------------------------------

BUDGETS = {budget_task("bandit", "samples", v): ("bandit", "samples", float(v))
           for v in (1000, 4000, 16000)}


def comparison_table(decisions: dict[tuple[str, str], list[str | None]]) -> pd.DataFrame:
    """Score comparisons of pairs (a, b) at 1000, 4000, 16000 samples: 'a', 'b' (which is
    better), '' (undecided) or None (not compared at that budget)."""
    rows = []
    for (a, b), per_budget in decisions.items():
        for name, winner in zip(BUDGETS, per_budget, strict=True):
            if winner is None:
                continue
            decision = {a: st.A_BETTER, b: st.B_BETTER, "": st.UNDECIDED}[winner]
            rows.append({"task": name, "metric": "score", "a": a, "b": b, "n": 10,
                         "mean_diff": 0.1 if winner == a else -0.1, "ci_low": -0.2,
                         "ci_high": 0.2, "p_value": 0.01, "p_adjusted": 0.02,
                         "decision": decision, "mde": 0.1, "seeds_needed": math.nan})
    # a stability row in the opposite direction must not count: crossovers read the score
    rows.append({**rows[0], "metric": "replicate_std", "decision": st.B_BETTER})
    return pd.DataFrame(rows)


def test_a_crossover_is_the_budget_from_which_one_is_ahead_at_every_larger_one():
    comp = comparison_table({
        ("grpo", "dpo"): ["", "grpo", "grpo"],        # from the middle budget on
        ("ppo", "dpo"): ["ppo", "ppo", "ppo"],        # at every budget
        ("ppo", "grpo"): ["ppo", "grpo", "ppo"],      # flips back: only the largest counts
        ("rloo", "dpo"): ["rloo", "rloo", ""],        # undecided at the largest: none
        ("rloo", "ppo"): ["ppo", "ppo", "rloo"],      # overtaken at the largest
        ("rloo", "grpo"): ["grpo", None, "grpo"],     # not compared in between
        ("bon", "dpo"): ["bon", "", "bon"],           # decided, undecided, decided
    })
    table = cmp.crossovers(comp, BUDGETS).set_index(["a", "b"])
    expect = {("grpo", "dpo"): ("grpo", "dpo", 4000, False),
              ("ppo", "dpo"): ("ppo", "dpo", 1000, True),
              ("ppo", "grpo"): ("ppo", "grpo", 16000, False),
              ("rloo", "dpo"): ("none", "none", math.nan, False),
              ("rloo", "ppo"): ("rloo", "ppo", 16000, False),
              ("rloo", "grpo"): ("grpo", "rloo", 16000, False),
              ("bon", "dpo"): ("bon", "dpo", 16000, False)}
    assert len(table) == len(expect)
    for pair, (ahead, behind, start, every) in expect.items():
        row = table.loc[pair]
        assert (row["ahead"], row["behind"], bool(row["at_every_budget"])) == (
            ahead, behind, every), pair
        assert (math.isnan(start) and math.isnan(row["from_budget"])) or \
            row["from_budget"] == start, pair
    assert table.loc[("rloo", "grpo"), "decisions"] == (
        "1000: grpo; 4000: not compared; 16000: grpo")
    assert set(table["task"]) == {"bandit"} and set(table["budget_kind"]) == {"samples"}
    sentence = cmp.crossover_sentence(table.reset_index(), "bandit")
    assert sentence.startswith("On bandit, 6 of 7 pairs are decided from some budget on: "
                               "ppo ahead of dpo at every budget; grpo ahead of dpo from "
                               "4000 samples; ")
    assert "rloo ahead of ppo from 16000 samples" in sentence and "rloo ahead of dpo" \
        not in sentence


def test_no_crossover_when_nothing_is_decided_at_the_largest_budget():
    comp = comparison_table({("a", "b"): ["a", "b", ""]})
    table = cmp.crossovers(comp, BUDGETS)
    assert list(table["ahead"]) == ["none"]
    assert cmp.crossover_sentence(table, "bandit") == (
        "On bandit, no configuration is decided ahead of another at the largest budget, so "
        "there is no crossover (1 pair compared).")
    assert cmp.crossovers(comp, {}).empty  # one budget per task: no table


# --- a tuned suite at two budgets, run and reported ----------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budgets")
    path = suite_file(root, "[32, 64]", tuning=True)
    main(["run", str(path), "--root", str(root / "runs"), "--no-progress", "--no-wandb",
          "--no-report"])
    return root / "runs" / "budgets"


def test_a_run_at_several_budgets_tunes_each_and_reports_each_on_its_own(store, tmp_path):
    from harness.report import write_report

    records = list(RunStore(store.parent, store.name).records())
    trials = [r for r in records if (r.spec.get("tuning") or {}).get("phase") == "trial"]
    finals = [r for r in records if r not in trials]
    assert len(finals) == 3 * 3 * 2 and len(trials) == 3 * 2 * 2
    assert sorted({r.spec["budget"]["samples"] for r in trials if r.spec["task"] == "bandit"}) \
        == [32.0, 64.0]
    data = load_store(store)
    named = ["bandit @ 32 samples", "bandit @ 64 samples", "token"]
    assert data.tasks == named  # smallest budget first
    assert data.budgets == {"bandit @ 32 samples": ("bandit", "samples", 32.0),
                            "bandit @ 64 samples": ("bandit", "samples", 64.0)}
    assert set(data.trials["task"]) == set(named)
    assert set(data.metrics["task"]) == set(named)
    for record in finals:  # each comparison run ran the choice of its own budget's tuning
        task = record.spec["task"]
        unit = task if task == "token" else budget_task(task, "samples",
                                                        record.spec["budget"]["samples"])
        mine = data.trials[(data.trials["task"] == unit)
                           & (data.trials["label"] == record.spec["label"])]
        assert record.spec["tuning"]["trial"] == int(mine.loc[mine["value"].idxmax(), "trial"])

    out = write_report(store, tmp_path / "report", figures=False)
    comp = pd.read_csv(out / "tables" / "comparisons.csv")
    assert set(comp["task"]) <= set(named) and "bandit @ 32 samples" in set(comp["task"])
    # paired within a budget: n is the instances shared at that budget (3), never 6
    assert set(comp.loc[comp["metric"] == "score", "n"]) == {3}
    crossings = pd.read_csv(out / "tables" / "crossovers.csv")
    assert list(crossings[["task", "a", "b"]].itertuples(index=False, name=None)) == [
        ("bandit", "dpo", "ipo")]
    row = crossings.iloc[0]
    winners = [cmp.lookup(pd.read_csv(out / "tables" / "comparisons.csv"), name, "score",
                          "dpo", "ipo") for name in named[:2]]
    assert row["decisions"] == "; ".join(f"{v}: {w or 'undecided'}"
                                         for v, w in zip((32, 64), winners, strict=True))
    text = (out / "index.md").read_text()
    assert "## Crossovers" in text
    assert cmp.crossover_sentence(crossings, "bandit").replace("_", "\\_") in text
    assert "token @" not in text  # a task with one budget keeps its name


def test_a_single_budget_report_has_no_crossovers(store, tmp_path):
    """The store read as one budget per task (the 64-sample runs only) keeps task names."""
    data = load_store(store)
    assert "token" in data.tasks and "token" not in data.budgets
    single = RunStore(tmp_path, "single")
    single.path.mkdir(parents=True)
    import shutil

    for record in RunStore(store.parent, store.name).records():
        if record.spec["budget"]["samples"] != 32.0 or record.spec["task"] == "token":
            shutil.copytree(record.path, single.path / record.run_id)
    shutil.copy(store / "suite.yaml", single.path / "suite.yaml")
    one = load_store(single.path)
    assert one.budgets == {} and one.tasks == ["bandit", "token"]


# --- the shipped suite --------------------------------------------------------------------------


SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.fixture(scope="module")
def zoo_budgets_specs(host) -> list:
    """The runs of suites/zoo-budgets.yaml (1,680; expanded once for the tests below)."""
    return check_suite(load_suite(SUITES / "zoo-budgets.yaml"), SUITES / "zoo-budgets.yaml", host)


def test_zoo_budgets_is_the_zoo_s_bandit_and_token_at_three_budgets_tuned_equally(
        zoo_budgets_specs):
    root = SUITES
    zoo, budgets = load_suite(root / "zoo.yaml"), load_suite(root / "zoo-budgets.yaml")
    assert [t.name for t in budgets.tasks] == ["bandit", "token"]
    zoo_tasks = {t.name: t for t in zoo.tasks}
    for task in budgets.tasks:  # the zoo's task, at ×1, ×4 and ×16 of the zoo's budget
        base = zoo_tasks[task.name]
        assert task.params == base.params
        budget = task.budget or budgets.budget
        assert budget.kind == "samples" and budget.values == [
            zoo.budget.value * k for k in (1, 4, 16)]
    assert base.budget is None and zoo.budget.value == 8192
    # the zoo's algorithms, settings, data, seeds, evaluation and tuning effort
    for mine, theirs in zip(budgets.algorithms, zoo.algorithms, strict=True):
        assert (mine.name, mine.config) == (theirs.name, theirs.config)
        assert mine.per_task == {k: v for k, v in theirs.per_task.items() if k != "tiny-lm"}
    for key in ("preferences", "reward_model", "evaluation"):
        assert getattr(budgets, key) == getattr(zoo, key), key
    # 10 instances × 2 replicates, not the zoo's 30: ×16 runs at 30 would take hours
    assert budgets.seeds.instances == zoo.seeds.instances[:10]
    assert budgets.seeds.replicates == zoo.seeds.replicates == 2
    assert budgets.tuning is not None and zoo.tuning is not None
    assert budgets.tuning.trials == zoo.tuning.trials == 8
    assert budgets.tuning.trials_per_task == {}
    for key in ("instances", "objective", "space", "sampler", "seed", "algorithms"):
        assert getattr(budgets.tuning, key) == getattr(zoo.tuning, key), key
    assert count_runs(budgets) == 14 * 2 * 3 * (10 * 2 + 8)
    specs = zoo_budgets_specs
    assert len(specs) == 14 * 2 * 3 * 10 * 2
    assert sorted({(s.task, s.budget["samples"]) for s in specs}) == [
        (t, 8192.0 * k) for t in ("bandit", "token") for k in (1, 4, 16)]


def test_validate_counts_the_runs_of_each_task_budget(tmp_path, capsys):
    path = suite_file(tmp_path, "[64, 256]", tuning=True)
    main(["validate", str(path)])
    out = capsys.readouterr().out
    assert "ok: 18 runs (3 task budgets × 3 instances × 1 replicates × 2 algorithm configs)" \
        in out
    assert "trials per algorithm: bandit 2, token 2 at each budget; × 1 tuning instances" in out


@pytest.mark.parametrize("task", ["bandit", "token"])
def test_each_half_of_zoo_budgets_is_the_whole_on_its_task(task, host, zoo_budgets_specs):
    root = SUITES
    whole = load_suite(root / "zoo-budgets.yaml")
    half = load_suite(root / f"zoo-budgets-{task}.yaml")
    assert [t.name for t in half.tasks] == [task]
    keep = {"name", "description", "tasks", "algorithms"}
    assert half.model_dump(exclude=keep) == whole.model_dump(exclude=keep)
    assert half.tasks[0] == next(t for t in whole.tasks if t.name == task)
    for mine, theirs in zip(half.algorithms, whole.algorithms, strict=True):
        assert mine.model_dump(exclude={"per_task"}) == theirs.model_dump(exclude={"per_task"})
        assert mine.per_task == {k: v for k, v in theirs.per_task.items() if k == task}
    whole_specs = {(s.label, s.seed, s.replicate, s.budget["samples"]): s for s in
                   zoo_budgets_specs if s.task == task}
    half_specs = check_suite(half, root / f"zoo-budgets-{task}.yaml", host)
    assert len(half_specs) == len(whole_specs) == 14 * 3 * 20
    for spec in half_specs:  # the same runs, but for the suite's name
        other = whole_specs[(spec.label, spec.seed, spec.replicate, spec.budget["samples"])]
        assert {**spec.identity, "suite": None} == {**other.identity, "suite": None}
    assert count_runs(half) * 2 == count_runs(whole)
