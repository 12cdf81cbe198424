"""Repeated tuning searches (``tuning.repeats``): validation, expansion, disjoint tuning
instances, the per-instance aggregation over the searches' choices, the report's tables, and a
chosen configuration run again from the values the report stored.

One tiny tuned suite (a 2×4 bandit, DPO searched twice with 2 trials, IPO untuned as the other
side of the comparison) is run once for the module: 4 trial runs and 6 comparison runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.cli import main
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.engine.tuning import luck_interval, read_chosen, suite_studies, trial_seed
from harness.errors import ConfigError
from harness.report import compare as cmp
from harness.report.data import load_store
from harness.suite import check_suite, count_runs, count_trial_runs, expand, load_suite

SUITE = """\
name: repeats
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 100}
reward_model: {epochs: 3}
algorithms:
  - name: dpo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
  - name: ipo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0, learning_rate: 0.05}
seeds: [0, 1]
budget: {samples: 64}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref, regret]}
tuning:
  trials: 2
  instances: [100, 101]
  repeats: 2
  algorithms: [dpo]
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


# --- validation and expansion (no runs) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("repeats: 3", "tuning.repeats: 3 repeats need a multiple of 3 tuning instances (one "
                       "group per repeat), and tuning.instances has 2 (got 3)"),
        ("repeats: 0", "tuning.repeats: Input should be greater than or equal to 1"),
    ],
)
def test_repeats_that_do_not_split_the_instances_are_one_line_errors(tmp_path, change, message):
    path = write(tmp_path, SUITE.replace("repeats: 2", change))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"{path}:18:")  # the line of tuning.repeats


def test_two_repeats_search_disjoint_instances_and_double_the_tuned_runs(tmp_path, capsys):
    path = write(tmp_path, SUITE.replace("instances: [100, 101]", "instances: [100, 101, 102, "
                                         "103]"))
    suite, host = load_suite(path), get_plugin_host()
    assert suite.tuning.instance_groups() == [[100, 101], [102, 103]]
    studies = suite_studies(suite, host)
    assert [(s.label, s.repeat) for s in studies] == [("dpo", 0), ("dpo", 1)]
    assert len({s.name for s in studies}) == 2
    seeds = [{spec.seed for spec in s.make_specs(0, {"learning_rate": 0.1, "beta": 0.1})}
             for s in studies]
    assert seeds == [{100, 101}, {102, 103}]  # disjoint: each search its own instances
    # the same trial of the two searches is drawn with different sampler seeds
    assert trial_seed(0, 0, 1) != trial_seed(0, 0, 0) == trial_seed(0, 0)
    # trials: 2 per search × 2 instances each × 2 searches; comparison: ipo 2 seeds, dpo
    # 2 seeds × 2 choices
    assert count_trial_runs(suite) == 8
    assert count_runs(suite) == 8 + 2 + 4
    choices = [{"repeat": r, "trial": r, "params": {"learning_rate": 0.01 * (r + 1),
                                                     "beta": 0.2}, "value": 1.0} for r in (0, 1)]
    tuned = {("bandit", "dpo"): {**{k: v for k, v in choices[0].items() if k != "repeat"},
                                 "repeats": choices}}
    specs = expand(suite, host, tuned=tuned)
    assert len(specs) == count_runs(suite) - count_trial_runs(suite)
    dpo = [s for s in specs if s.algorithm == "dpo"]
    assert len(dpo) == 4 and {s.label for s in dpo} == {"dpo"}  # one algorithm to compare
    assert len({s.run_id for s in specs}) == len(specs)
    assert sorted((s.seed, s.tuning["repeat"], s.algorithm_config["learning_rate"])
                  for s in dpo) == [(0, 0, 0.01), (0, 1, 0.02), (1, 0, 0.01), (1, 1, 0.02)]
    main(["validate", str(path)])
    out = capsys.readouterr().out
    assert "tuning: 8 trial runs (trials per algorithm: bandit 2; × 4 tuning instances in 2 " \
           "searches of 2 instances each)" in out
    assert "and 2 more runs: each tuned algorithm runs the choice of each of its 2 " \
           "searches" in out


def test_one_repeat_keeps_every_study_and_run_id(tmp_path):
    """``repeats: 1`` is the tuning as it was: the same studies, trial and comparison runs,
    with records that do not name a repeat."""
    host = get_plugin_host()
    without = SUITE.replace("  repeats: 2\n", "")
    ones = [load_suite(write(tmp_path / name, text)) for name, text in
            (("a", without), ("b", without.replace("trials: 2", "trials: 2\n  repeats: 1")))]
    assert ones[1].tuning.repeats == 1 and "repeats" not in ones[1].tuning.identity()
    ids = []
    for suite in ones:
        studies = suite_studies(suite, host)
        trial_specs = [spec for s in studies for spec in s.make_specs(1, {"learning_rate": 0.1,
                                                                            "beta": 0.3})]
        assert [s.repeat for s in studies] == [0]
        assert all("repeat" not in spec.tuning for spec in trial_specs)
        assert [spec.label for spec in trial_specs] == ["dpo#t1", "dpo#t1"]
        chosen = {("bandit", "dpo"): {"trial": 1, "params": {"learning_rate": 0.1, "beta": 0.3},
                                      "value": 0.5}}
        specs = expand(suite, host, tuned=chosen)
        assert len(specs) == count_runs(suite) - count_trial_runs(suite) == 4
        assert all(set(s.tuning) == {"phase", "label", "trial", "params", "value", "trials",
                                     "objective"} for s in specs if s.tuning)
        ids.append(([s.name for s in studies], [s.run_id for s in trial_specs],
                    [s.run_id for s in specs]))
    assert ids[0] == ids[1]


# --- a repeated tuning, run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The suite run once, with its report: (folder, suite file, store root, report)."""
    from harness.report import write_report

    folder = tmp_path_factory.mktemp("repeats")
    path = write(folder, SUITE)
    root = folder / "runs"
    import os

    os.environ["RLHF_HARNESS_WANDB"] = "0"
    main(["run", str(path), "--root", str(root), "--no-progress", "--no-wandb", "--no-report"])
    report = write_report(root / "repeats", folder / "report", figures=False)
    return folder, path, root, report


def records(root: Path) -> list:
    return list(RunStore(root, "repeats").records())


def test_each_search_tunes_on_its_own_instances_and_its_choice_runs_everywhere(tuned):
    _, _, root, _ = tuned
    data = load_store(root / "repeats")
    recs = records(root)
    trials = [r for r in recs if (r.spec.get("tuning") or {}).get("phase") == "trial"]
    chosen = [r for r in recs if (r.spec.get("tuning") or {}).get("phase") == "chosen"]
    assert len(trials) == 4 and len(chosen) == 4 and len(recs) == 10
    by_repeat = {r: {t.spec["seed"] for t in trials if t.spec["tuning"]["repeat"] == r}
                 for r in (0, 1)}
    assert by_repeat == {0: {100}, 1: {101}}
    assert len({t.spec["tuning"]["study"] for t in trials}) == 2
    for r in (0, 1):  # each search's choice: its best trial, on both comparison instances
        mine = [c for c in chosen if c.spec["tuning"]["repeat"] == r]
        assert sorted(c.spec["seed"] for c in mine) == [0, 1]
        own = data.trials[data.trials["repeat"] == r]
        best = own.loc[own["value"].idxmax()]
        assert {c.spec["tuning"]["trial"] for c in mine} == {int(best["trial"])}
        assert {c.spec["tuning"]["value"] for c in mine} == {best["value"]}
        for c in mine:
            assert c.spec["label"] == "dpo"
            for key, value in c.spec["tuning"]["params"].items():
                assert c.spec["algorithm_config"][key] == value  # exact, not rounded
    lrs = {c.spec["tuning"]["repeat"]: c.spec["algorithm_config"]["learning_rate"]
           for c in chosen}
    assert lrs[0] != lrs[1]  # independent searches, different draws


def test_an_instance_value_is_the_mean_over_the_searches_choices(tuned):
    _, _, root, _ = tuned
    data = load_store(root / "repeats")
    scores = cmp.run_scores(data)
    dpo = scores[scores["label"] == "dpo"]
    assert sorted(dpo["tuning_repeat"]) == [0, 0, 1, 1]
    inst = cmp.instance_table(data, pd.DataFrame({"run_id": data.runs["run_id"],
                                                  "drawdown": 0.0}))
    mine = inst[inst["label"] == "dpo"].set_index("instance")
    for seed, g in dpo.groupby("seed"):
        assert len(g) == 2
        assert mine.loc[seed, "score"] == pytest.approx(g["score"].mean(), abs=1e-12)
        # one replicate per choice: no spread across replicates, though the choices differ
        assert math.isnan(mine.loc[seed, "replicate_std"])
        assert mine.loc[seed, "replicate_df"] == 0
        assert g["final_gold_reward"].nunique() == 2
    comp = cmp.comparisons(inst, data.labels, data.tasks)
    row = comp[comp["metric"] == "score"].iloc[0]
    assert row["n"] == 2  # paired by instance, not by run
    other = inst[inst["label"] == "ipo"].set_index("instance")["score"]
    sign = 1 if row["a"] == "dpo" else -1
    assert row["mean_diff"] == pytest.approx(sign * (mine["score"] - other).mean(), abs=1e-12)


def test_pooled_replicate_spread_keeps_choices_apart():
    runs = pd.DataFrame({"final_gold_reward": [1.0, 3.0, 10.0, 14.0],
                         "tuning_repeat": [0, 0, 1, 1]})
    sd, df = cmp.replicate_spread(runs)
    assert df == 2 and sd == pytest.approx(math.sqrt((2.0 + 8.0) / 2))
    plain = runs.drop(columns="tuning_repeat")
    assert cmp.replicate_spread(plain) == (float(plain["final_gold_reward"].std(ddof=1)), 3)


def test_the_report_shows_each_search_and_the_spread_across_them(tuned):
    _, _, root, report = tuned
    text = (report / "index.md").read_text()
    assert "searched 2 times per task" in text
    assert text.count("mean over its chosen configurations") == 2  # tuning section and method
    per = pd.read_csv(report / "tables" / "tuning_repeats.csv")
    assert list(per["repeat"]) == [0, 1] and list(per["tuning_instances"]) == [100, 101]
    data = load_store(root / "repeats")
    scores = cmp.run_scores(data)
    for r in (0, 1):
        mine = scores[(scores["label"] == "dpo") & (scores["tuning_repeat"] == r)]
        row = per[per["repeat"] == r].iloc[0]
        assert row["score"] == pytest.approx(mine.groupby("seed")["score"].mean().mean(),
                                             abs=1e-12)
        assert row["instances"] == 2
        spec = next(rec.spec for rec in records(root) if rec.run_id == mine["run_id"].iloc[0])
        assert json.loads(row["params_json"]) == spec["tuning"]["params"]
        assert row["value"] == spec["tuning"]["value"]
    spread = pd.read_csv(report / "tables" / "tuning_repeat_spread.csv").iloc[0]
    assert spread["searches"] == 2
    assert spread["score_sd"] == pytest.approx(per["score"].std(ddof=1), abs=1e-12)
    assert spread["value_sd"] == pytest.approx(per["value"].std(ddof=1), abs=1e-12)
    lrs = [json.loads(p)["learning_rate"] for p in per["params_json"]]
    assert (spread["param_learning_rate_min"], spread["param_learning_rate_max"]) == (
        min(lrs), max(lrs))


def test_a_chosen_configuration_runs_again_from_the_stored_values(tuned, tmp_path):
    """The report's tuning_chosen.csv gives back each choice exactly: expanded again, the
    comparison runs have the ids they had, and run again, the same numbers."""
    from harness.engine.executors import run_specs

    _, path, root, report = tuned
    chosen = read_chosen(report / "tables" / "tuning_chosen.csv")
    suite, host = load_suite(path), get_plugin_host()
    check_suite(suite, path, host)
    specs = [s for s in expand(suite, host, tuned=chosen) if s.algorithm == "dpo"]
    stored = {r.run_id: r for r in records(root)
              if (r.spec.get("tuning") or {}).get("phase") == "chosen"}
    assert sorted(s.run_id for s in specs) == sorted(stored)
    again = [s for s in specs if s.seed == 0]
    run_specs(again, str(tmp_path / "again"), wandb=False, progress=False)
    for spec in again:
        rerun = RunStore(tmp_path / "again", "repeats").record(spec.run_id)
        assert rerun is not None and rerun.state == "done"
        assert rerun.summary["final"] == stored[spec.run_id].summary["final"]  # bit for bit
    # what 4 significant digits would have given: another configuration, another run
    short = {key: {**c, "repeats": [{**one, "params": {k: float(f"{v:.4g}") for k, v in
                                                       one["params"].items()}}
                                    for one in c["repeats"]]} for key, c in chosen.items()}
    rounded = [s for s in expand(suite, host, tuned=short) if s.algorithm == "dpo"]
    assert not {s.run_id for s in rounded} & set(stored)
    np.testing.assert_allclose([s.algorithm_config["learning_rate"] for s in rounded],
                               [s.algorithm_config["learning_rate"] for s in specs], rtol=1e-3)


# --- tuning luck in the intervals ----------------------------------------------------------------


def test_luck_interval_is_the_welch_satterthwaite_interval():
    diffs, searches = [0.5, 1.5, 1.0, 2.0], [1.0, 2.0, 4.0]
    e = luck_interval(diffs, [searches, [7.0]])  # a side with one search adds nothing
    v_d, v_m = np.var(diffs, ddof=1) / 4, np.var(searches, ddof=1) / 3
    df = (v_d + v_m) ** 2 / (v_d ** 2 / 3 + v_m ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(v_d + v_m)
    assert (e.n, e.mean) == (4, 1.25)
    assert e.df == pytest.approx(df, rel=1e-12)
    assert (e.low, e.high) == pytest.approx((1.25 - half, 1.25 + half), rel=1e-12)
    assert e.p_value == pytest.approx(2 * stats.t.sf(1.25 / math.sqrt(v_d + v_m), df))
    plain = luck_interval(diffs, [[7.0]])  # no repeated side: the paired t interval
    t = stats.ttest_1samp(diffs, 0.0)
    assert plain.p_value == pytest.approx(t.pvalue, rel=1e-12) and plain.se_searches == 0


@pytest.mark.parametrize(("searches", "least"), [(2, 0.90), (3, 0.93), (5, 0.93)])
def test_luck_interval_covers_where_the_paired_interval_does_not(searches, least):
    """Seeded simulation of the crossed design: y_ir = c_r + e_i + g_ir for the tuned side
    (choice effect c ~ N(0, 1), instance e ~ N(0, 1), choice × instance g ~ N(0, 0.5²)),
    y_i = e'_i for the other, true difference 0, n = 10 instances. 2,000 draws: a coverage's
    Monte Carlo standard error is about 0.005. The paired t interval over instances misses the
    shared choice effect (coverage 0.75–0.86); the interval with tuning luck keeps ≥ 0.93 from
    3 searches on (measured 0.94, 0.95), and 0.92 at 2, where σ_c has one degree of freedom."""
    rng = np.random.default_rng(20250 + searches)
    n, draws = 10, 2000
    plain = luck = 0
    for _ in range(draws):
        c = rng.normal(0, 1, searches)
        y = c[None, :] + rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, searches))
        other = rng.normal(0, 1, n)
        d = y.mean(axis=1) - other
        p = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
        plain += p.low <= 0 <= p.high
        e = luck_interval(d.tolist(), [y.mean(axis=0).tolist(), [0.0]])
        luck += e.low <= 0 <= e.high
    assert plain / draws < 0.88
    assert luck / draws >= least


def test_the_report_compares_with_tuning_luck(tuned):
    _, _, _, report = tuned
    luck = pd.read_csv(report / "tables" / "tuning_luck.csv")
    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    score = comp[comp["metric"] == "score"].iloc[0]
    row = luck.iloc[0]
    assert (row["a"], row["b"], row["searches_a"], row["searches_b"]) == (
        score["a"], score["b"], *((2, 1) if score["a"] == "dpo" else (1, 2)))
    assert row["mean_diff"] == pytest.approx(score["mean_diff"], abs=1e-12)
    assert row["n"] == score["n"] == 2
    # more variance counted and fewer degrees of freedom: never narrower than the paired
    # Student-t interval over instances alone (n − 1 df, standard error se_instances)
    from scipy import stats

    half = stats.t.ppf(0.975, row["n"] - 1) * row["se_instances"]
    assert row["ci_high"] - row["mean_diff"] >= half - 1e-12
    assert row["mean_diff"] - row["ci_low"] >= half - 1e-12
    assert row["se_searches"] > 0
    assert "Score comparisons with tuning luck" in (report / "index.md").read_text()


def test_the_comparison_decides_on_the_larger_p_value_and_the_hull_of_the_intervals(tuned):
    """The comparisons table's score row of a repeated pair: p is max(sign-flip p over
    instances, tuning-luck p), the interval the hull of both, ``test`` says so; the other
    metrics' rows of the same pair keep the sign-flip test alone."""
    _, _, _, report = tuned
    luck = pd.read_csv(report / "tables" / "tuning_luck.csv").iloc[0]
    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    pair = comp[(comp["a"] == luck["a"]) & (comp["b"] == luck["b"])]
    score = pair[pair["metric"] == "score"].iloc[0]
    assert score["test"].endswith("+ " + cmp.LUCK_TEST)
    assert score["p_value"] == pytest.approx(max(luck["p_sign_flip"], luck["p_value"]),
                                             rel=1e-12)
    assert score["ci_low"] <= luck["ci_low"] + 1e-12
    assert score["ci_high"] >= luck["ci_high"] - 1e-12
    others = pair[pair["metric"] != "score"]
    assert len(others) and not others["test"].str.contains(cmp.LUCK_TEST).any()


def test_with_tuning_luck_touches_only_the_score_rows_it_covers():
    frame = pd.DataFrame({
        "task": ["t", "t", "t"], "metric": ["score", "kl_ref", "score"],
        "a": ["x", "x", "x"], "b": ["y", "y", "z"],
        "p_value": [0.01, 0.01, 0.01], "ci_low": [0.1, 0.1, 0.1], "ci_high": [0.3, 0.3, 0.3],
        "test": ["sign-flip"] * 3})
    luck = pd.DataFrame({"task": ["t"], "a": ["x"], "b": ["y"], "p_value": [0.2],
                         "ci_low": [-0.05], "ci_high": [0.25]})
    out = cmp.with_tuning_luck(frame, luck)
    assert out.iloc[0][["p_value", "ci_low", "ci_high", "test"]].tolist() == [
        0.2, -0.05, 0.3, "sign-flip + tuning luck"]
    pd.testing.assert_frame_equal(out.iloc[1:], frame.iloc[1:])
    luck.loc[0, "p_value"] = 0.001  # the smaller p never replaces the sign-flip test's
    assert cmp.with_tuning_luck(frame, luck).iloc[0]["p_value"] == 0.01


def test_deciding_on_the_larger_p_value_holds_the_level_the_sign_flip_test_alone_does_not():
    """Seeded simulation of the crossed design of
    :func:`test_luck_interval_covers_where_the_paired_interval_does_not` under the null (R = 3
    searches, n = 10 instances, σ_c = 1, σ_e = 1, σ_{c×i} = 0.5), decided at α = 0.05: the
    sign-flip test over instances, exact given the choices, rejects far more often than 5%
    because the choices' shared effect shifts every difference alike (measured 0.185); the
    decision on max(sign-flip p, luck p) stays at the level (measured 0.051). 1,000 draws:
    the Monte Carlo standard error of a rate near 0.05 is 0.007, so 0.07 is 3 of them."""
    from harness.report import stats as st

    rng = np.random.default_rng(2025)
    n, searches, draws = 10, 3, 1000
    plain = combined = 0
    for _ in range(draws):
        c = rng.normal(0, 1, searches)
        y = c[None, :] + rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, searches))
        other = rng.normal(0, 1, n)
        sf = st.paired_sign_flip(y.mean(axis=1), other)
        e = luck_interval((y.mean(axis=1) - other).tolist(), [y.mean(axis=0).tolist(), [0.0]])
        plain += sf.p_value <= 0.05
        combined += max(sf.p_value, e.p_value) <= 0.05
    assert plain / draws > 0.12
    assert combined / draws <= 0.07
