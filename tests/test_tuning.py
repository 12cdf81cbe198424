"""Equal tuning effort: the expected-maximum estimator against enumeration, objectives on known
curves, validation of the tuning section, and a tuning that resumes to the same choice.

The tuned suites are tiny (a 2×4 bandit, a few steps), so a whole tuning takes seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.config import check_space
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.engine.tuning import (
    expected_max_performance,
    objective_value,
    run_objective,
    suite_studies,
    trial_seed,
    tune,
)
from harness.errors import ConfigError
from harness.report.data import load_store
from harness.suite import check_suite, load_suite, suite_warnings

SUITE = """\
name: tuned
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 100}
reward_model: {epochs: 3}
algorithms:
  - name: dpo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
  - name: ipo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
seeds: [0, 1]
budget: {samples: 64}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref]}
tuning:
  trials: 3
  instances: [100]
  objective: j_beta
"""


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(text)
    return path


# --- the estimator and the objectives ---------------------------------------------------------


@pytest.mark.parametrize("values", [[0.3, 0.1, 0.7], [1.0, 1.0, 2.0, -1.0], [5.0]])
def test_expected_max_equals_the_enumerated_expectation(values):
    emp = expected_max_performance(values)
    total = len(values)
    for n in range(1, total + 1):  # every ordered draw of n trials with replacement
        maxima = [max(draw) for draw in itertools.product(values, repeat=n)]
        assert emp.mean[n - 1] == pytest.approx(np.mean(maxima), abs=1e-12)
        assert emp.std[n - 1] == pytest.approx(np.std(maxima), abs=1e-9)
    assert list(emp.n) == list(range(1, total + 1))
    assert np.all(np.diff(emp.mean) >= -1e-12)  # more trials never lower the expected best


def test_expected_max_ignores_nan_and_handles_none():
    assert expected_max_performance([math.nan, 1.0]).mean.tolist() == [1.0]
    assert len(expected_max_performance([]).n) == 0


def curve(steps, gold, kl) -> pd.DataFrame:
    rows = [{"step": s, "metric": m, "value": v} for s, g, k in zip(steps, gold, kl, strict=True)
            for m, v in (("gold_reward", g), ("kl_ref", k))]
    return pd.DataFrame(rows)


def test_objectives_on_a_known_curve():
    evals = curve([0, 10, 20, 30], [0.0, 0.5, 0.8, 0.9], [0.0, 0.2, 0.6, 1.5])
    assert objective_value(evals, "final_gold", kl_budget=None, beta=0.1) == 0.9
    assert objective_value(evals, "gold_at_kl", kl_budget=0.6, beta=0.1) == 0.8
    assert objective_value(evals, "gold_at_kl", kl_budget=0.1, beta=0.1) == 0.0
    assert objective_value(evals, "j_beta", kl_budget=None, beta=0.1) == pytest.approx(0.75)


class FakeRecord:
    def __init__(self, state: str, evals: pd.DataFrame) -> None:
        self.state = state
        self._frame = evals.assign(source="eval")

    def metrics(self) -> pd.DataFrame:
        return self._frame


def test_a_failed_run_counts_as_the_reference_policy():
    evals = curve([0, 10], [0.2, 5.0], [0.0, 0.1])
    assert run_objective(FakeRecord("done", evals), "final_gold", kl_budget=None, beta=0.1) == 5.0
    assert run_objective(FakeRecord("failed", evals), "final_gold", kl_budget=None,
                         beta=0.1) == 0.2


def test_trial_seeds_are_spread():
    first = [np.random.RandomState(trial_seed(0, i) % 2**32).uniform() for i in range(8)]
    assert max(first) - min(first) > 0.5  # numpy's first draws for seeds 0..7 span < 0.35


# --- validation ----------------------------------------------------------------------------------


def checked(tmp_path: Path, text: str) -> list:
    path = write(tmp_path, text)
    return check_suite(load_suite(path), path, get_plugin_host())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("trials: 3", "trials: 0"), "tuning.trials: Input should be greater than or equal to 1"),
        (("instances: [100]", "instances: [1]"), "tuning.instances: 1 is also one of the suite's"),
        (("instances: [100]", "instances: [100, 100]"), "tuning instances must be distinct"),
        (("objective: j_beta", "objective: gold_at_kl"), "objective gold_at_kl needs kl_budget"),
        (("evaluators: [gold_reward, kl_ref]", "evaluators: [gold_reward]"),
         "tuning.objective: j_beta needs the evaluator kl_ref"),
        (("objective: j_beta", "objective: j_beta\n  algorithms: [dpoo]"),
         "tuning.algorithms: no algorithm labelled 'dpoo' (did you mean 'dpo'?)"),
        (("objective: j_beta", "objective: j_beta\n  space: {dpo: {}}"),
         "tuning.space.dpo: empty search space"),
        (("objective: j_beta", "objective: j_beta\n  space: {dpo: {beta: {low: 1, high: 1}}}"),
         "tuning.space.dpo.beta: low (1) must be below high (1)"),
        (("objective: j_beta", "objective: j_beta\n  space: {dpo: {beta: {low: 0, high: 1, "
          "log: true}}}"), "a log range needs low > 0"),
        (("objective: j_beta", "objective: j_beta\n  space: {dpo: {betta: {low: 0.1, high: 1}}}"),
         "tuning.space.dpo.betta: not a field of dpo's Config"),
        (("warmup_steps: 0}\n  - name: ipo", "warmup_steps: 0}\n    sweep: {beta: [0.1, 0.2]}\n"
          "  - name: ipo"), "'dpo' is tuned; its search space replaces a sweep"),
    ],
)
def test_bad_tuning_sections_are_one_line_errors(tmp_path, change, message):
    old, new = change
    assert old in SUITE
    with pytest.raises(ConfigError) as err:
        checked(tmp_path, SUITE.replace(old, new, 1))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'suite.yaml'}:")


def test_an_algorithm_without_a_search_space_must_be_given_one(tmp_path, monkeypatch):
    from rlhf_harness_bon import BestOfN

    from harness.algorithm import Algorithm

    # best-of-n declares a space for n; without it, it stands for any plugin that declares none
    assert BestOfN.tuning_space("tabular") == {"n": {"low": 1, "high": 256, "log": True,
                                                      "int": True}}
    monkeypatch.setattr(BestOfN, "tuning_space", Algorithm.tuning_space)
    text = SUITE.replace("  - name: ipo\n", "  - name: bon\n    config: {n: 2}\n  - name: ipo\n")
    with pytest.raises(ConfigError, match=r"plugin 'bon' declares no search space for tabular "
                       r"policies: give tuning\.space\.bon"):
        checked(tmp_path, text)
    fixed = text.replace("objective: j_beta", "objective: j_beta\n  space: {bon: {n: {choices: "
                         "[1, 2, 4]}}}")
    assert len(checked(tmp_path, fixed)) == 6


def test_check_space_keeps_the_declared_ranges():
    space = check_space({"lr": {"low": 0.01, "high": 1, "log": True},
                         "n": {"low": 1, "high": 8, "int": True}, "c": {"choices": ["a", "b"]}},
                        "x")
    assert space == {"lr": {"low": 0.01, "high": 1, "log": True, "int": False},
                     "n": {"low": 1, "high": 8, "log": False, "int": True},
                     "c": {"choices": ["a", "b"]}}


def test_a_learning_rate_outside_the_plugins_range_is_a_warning(tmp_path, capsys):
    base = SUITE.split("tuning:")[0]
    text = base.replace("config: {optimizer: adam, batch_size: 16, warmup_steps: 0}",
                        "config: {optimizer: adam, batch_size: 16, warmup_steps: 0, "
                        "learning_rate: 0.05}")
    path = write(tmp_path, text)
    assert suite_warnings(load_suite(path), get_plugin_host()) == []  # 0.05 trains a table
    # the plugins' defaults are the papers' (1e-6 for billion-parameter LMs): a table of
    # logits does not move at that rate, and validate says so
    path = write(tmp_path, base)
    warnings = suite_warnings(load_suite(path), get_plugin_host())
    assert warnings == [
        f"algorithms '{name}' on bandit: learning_rate 1e-06 is outside 0.005–0.5, the range "
        f"plugin '{name}' declares for tabular policies; the policy may not move (or may "
        f"diverge)" for name in ("dpo", "ipo")]
    main(["validate", str(path)])
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{path}: warning: {w}" for w in warnings]
    # a swept learning rate replaces the config's default: only the swept values are judged
    # (both sweep; dpo's sweep holds 1e-6, ipo's does not)
    swept = base.replace("warmup_steps: 0}", "warmup_steps: 0}\n    sweep: {learning_rate: "
                         "[0.01, 0.1]}").replace("{learning_rate: [0.01, 0.1]}\n  - name: ipo",
                                                 "{learning_rate: [0.01, 1.0e-6]}\n  - name: ipo")
    path = write(tmp_path, swept)
    assert [w.split(":")[0] for w in suite_warnings(load_suite(path), get_plugin_host())] == [
        "algorithms 'dpo' on bandit"]


# --- a tuning, run and resumed --------------------------------------------------------------------


def run_suite(path: Path, root: Path) -> None:
    main(["run", str(path), "--root", str(root), "--no-progress", "--no-wandb", "--no-report"])


def test_tuning_chooses_the_best_trial_and_compares_on_fresh_instances(tmp_path, capsys):
    path = write(tmp_path, SUITE)
    root = tmp_path / "runs"
    run_suite(path, root)
    out = capsys.readouterr().out
    assert "tuned: tuning: trials per algorithm: bandit 3; 6 runs (done 6)" in out
    records = list(RunStore(root, "tuned").records())
    trials = [r for r in records if (r.spec.get("tuning") or {}).get("phase") == "trial"]
    finals = [r for r in records if r not in trials]
    assert len(trials) == 6 and len(finals) == 4
    assert {r.spec["seed"] for r in trials} == {100}  # the tuning instances
    assert {r.spec["seed"] for r in finals} == {0, 1}  # the suite's own, never seen in tuning
    data = load_store(root / "tuned")
    assert sorted(data.runs["label"].unique()) == ["dpo", "ipo"]  # trials are not compared
    for label in ("dpo", "ipo"):
        mine = data.trials[data.trials["label"] == label]
        best = mine.loc[mine["value"].idxmax()]
        chosen = {r.spec["tuning"]["trial"] for r in finals if r.spec["label"] == label}
        assert chosen == {int(best["trial"])}
        final = next(r for r in finals if r.spec["label"] == label)
        for key, value in final.spec["tuning"]["params"].items():
            assert final.spec["algorithm_config"][key] == pytest.approx(value)
            assert best[f"param_{key}"] == pytest.approx(value)
        assert final.spec["tuning"]["value"] == pytest.approx(best["value"])
    # the same draws for every algorithm's trial i (equal luck), within each one's own range
    lr = data.trials.groupby(["label", "trial"])["param_learning_rate"].first().unstack(0)
    np.testing.assert_allclose(lr["dpo"], lr["ipo"])
    assert lr["dpo"].between(0.005, 0.5).all() and lr["dpo"].nunique() == 3

    before = {r.run_id: (r.path / "status.json").stat().st_mtime_ns for r in records}
    run_suite(path, root)  # again: nothing is redone
    assert "(all already finished)" in capsys.readouterr().out
    after = {r.run_id: (r.path / "status.json").stat().st_mtime_ns
             for r in RunStore(root, "tuned").records()}
    assert after == before

    from harness.report import write_report

    report = write_report(root / "tuned", tmp_path / "report")
    text = (report / "index.md").read_text()
    assert "## Tuning" in text
    assert "same tuning effort (3 trials on bandit), each trial run on 1 tuning" in text
    assert (report / "figures" / "tuning.png").exists()
    chosen_csv = pd.read_csv(report / "tables" / "tuning_chosen.csv")
    assert sorted(chosen_csv["label"]) == ["dpo", "ipo"]
    # each trial with its parameters, as the study drew them
    per_trial = pd.read_csv(report / "tables" / "tuning_trials.csv")
    assert {"param_learning_rate", "param_beta", "param_tau"} <= set(per_trial.columns)
    drawn = data.trials.groupby(["label", "trial"])["param_learning_rate"].first()
    np.testing.assert_allclose(
        per_trial.set_index(["label", "trial"])["param_learning_rate"].loc[drawn.index], drawn)
    assert per_trial.loc[per_trial["label"] == "dpo", "param_tau"].isna().all()
    dims = pd.read_csv(report / "tables" / "tuning_dimensions.csv").set_index("label")
    assert dims.loc["dpo", "parameters"] == "learning_rate, beta"
    assert dims.loc["ipo", "parameters"] == "learning_rate, tau"
    assert (dims["dimensions"] == 2).all() and (dims["trials"] == 3).all()
    np.testing.assert_allclose(dims["per_dimension"], 3 ** 0.5)
    assert "search spaces differ in size" not in text  # two dimensions each: equal effort


def test_search_spaces_of_unequal_dimension_are_flagged():
    from types import SimpleNamespace

    from harness.cli import unequal_spaces
    from harness.report.build import tuning_dimensions

    per_trial = pd.DataFrame({
        "task": "bandit", "label": ["ppo"] * 8 + ["rebel"] * 8, "trial": list(range(8)) * 2,
        "trial_value": 0.0, "param_learning_rate": 0.1, "param_kl_coef": 0.1,
        "param_eta": [np.nan] * 8 + [1.0] * 8})
    dims = tuning_dimensions(per_trial, ["param_eta", "param_kl_coef", "param_learning_rate"])
    assert dims.set_index("label")["dimensions"].to_dict() == {"ppo": 2, "rebel": 3}
    np.testing.assert_allclose(dims["per_dimension"], [8 ** 0.5, 2.0])
    suite = SimpleNamespace(name="s", tuning=SimpleNamespace(trials_for=lambda task: 8))
    chosen = {("bandit", "ppo"): {"params": {"learning_rate": 0.1, "kl_coef": 0.1}},
              ("bandit", "rebel"): {"params": {"learning_rate": 0.1, "kl_coef": 0.1,
                                               "eta": 1.0}}}
    assert unequal_spaces(suite, chosen) == [
        "s: warning: tuning on bandit: search spaces of unequal dimension (ppo 2 (≈2.8 values "
        "per dimension), rebel 3 (≈2 values per dimension)): 8 trials each are not equal "
        "effort per dimension"]
    chosen[("bandit", "rebel")]["params"].pop("eta")
    assert unequal_spaces(suite, chosen) == []


class Interrupted(Exception):
    pass


def test_a_killed_tuning_resumes_to_the_same_choice(tmp_path):
    from harness.engine.executors import run_specs

    host = get_plugin_host()
    suite = load_suite(write(tmp_path, SUITE.replace("trials: 3", "trials: 4")))

    def tuned(root: Path, stop_after: int | None) -> dict:
        calls = {"n": 0}

        def run(specs: list) -> None:
            if stop_after is not None and calls["n"] == stop_after:
                raise Interrupted
            calls["n"] += 1
            run_specs(specs, str(root), wandb=False, progress=False)

        studies = suite_studies(suite, host)
        store = RunStore(root, suite.name)
        store.ensure()

        def value_of(spec):
            return run_objective(store.record(spec.run_id), "j_beta", kl_budget=None, beta=0.1)

        tune(studies, trials=4, sampler="random", seed=0, store_path=store.path, run=run,
             value_of=value_of, finished=lambda spec: store.is_finished(spec.run_id))
        return {s.name: (dict(s.values), {k: dict(v) for k, v in s.params.items()})
                for s in studies}

    straight = tuned(tmp_path / "a", None)
    with pytest.raises(Interrupted):
        tuned(tmp_path / "b", 2)  # killed after two rounds: trials 0-1 told, trial 2 asked
    resumed = tuned(tmp_path / "b", None)
    assert json.dumps(resumed, sort_keys=True) == json.dumps(straight, sort_keys=True)


def test_tpe_tuning_is_deterministic(tmp_path):
    text = SUITE.replace("objective: j_beta", "objective: j_beta\n  sampler: tpe").replace(
        "trials: 3", "trials: 7")
    host = get_plugin_host()
    suite = load_suite(write(tmp_path, text))
    results = []
    for name in ("x", "y"):
        studies = suite_studies(suite, host)[:1]
        store = RunStore(tmp_path / name, suite.name)
        store.ensure()
        values = iter(range(100))  # a fixed objective sequence: only the sampler varies

        def value_of(spec, values=values):
            return float(next(values))

        started = time.monotonic()
        tune(studies, trials=7, sampler="tpe", seed=3, store_path=store.path,
             run=lambda specs: None, value_of=value_of, finished=lambda spec: True)
        assert time.monotonic() - started < 30
        results.append(studies[0].params)
    assert results[0] == results[1] and len(results[0]) == 7
