"""Rankings that say how robust they are: scores fixed by the task, rank intervals from a
bootstrap over instances, and the top of the ranking under three aggregations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.engine.store import METRIC_COLUMNS, RunStore
from harness.report import compare as cmp
from harness.report.build import (
    AGGREGATIONS,
    Report,
    ReportOptions,
    aggregation_sentences,
    aggregation_table,
    bootstrap_ranks,
    fmt,
    ranking_section,
)
from harness.report.data import load_store
from harness.report.render import to_markdown

INSTANCES = 6
# label: (algorithm, gap closure on the bandit, gold gain on lm in units of π_ref's sd)
CONFIGS = {
    "a": ("ppo", 0.3, 1.0),
    "b": ("grpo", 0.9, 0.2),
    "c": ("dpo", 0.5, 0.1),
    "d": ("rloo", 0.5, 2.0),
}


def _lm_sd(instance: int) -> float:
    """π_ref's gold-reward spread on an lm instance (the same for every configuration)."""
    return 4.0 + instance


def _write_run(store: RunStore, task: str, label: str, instance: int, *,
               record_sd: bool) -> None:
    alg, closure, gain = CONFIGS[label]
    rng = np.random.default_rng([instance, ord(label), len(task)])
    run_id = f"{label}-{task}-s{instance}"
    store.start(run_id, {"suite": store.suite, "task": task, "algorithm": alg, "label": label,
                         "seed": instance, "replicate": 0, "sweep_point": {},
                         "budget": {"steps": 10.0}})
    base = float(instance) - 2.0
    if task == "bandit":
        gap = 2.0 + 0.1 * instance
        got = closure + rng.normal(0.0, 0.02)
        evals = {0: {"gold_reward": base, "kl_ref": 0.0, "regret": gap},
                 10: {"gold_reward": base + got, "kl_ref": 0.5, "regret": gap * (1 - got)}}
    else:
        sd = _lm_sd(instance)
        got = gain * (1 + rng.normal(0.0, 0.02))
        evals = {0: {"gold_reward": base, "kl_ref": 0.0},
                 10: {"gold_reward": base + got * sd, "kl_ref": 0.5}}
        if record_sd:
            evals[0]["gold_reward_sd"] = sd
            evals[10]["gold_reward_sd"] = 0.8 * sd
    rows = []
    for step, values in evals.items():
        common = (run_id, step, step * 8, step * 8, step * 0.1, math.nan)
        rows += [(*common, "eval", k, v) for k, v in values.items()]
    summary = {"run_id": run_id, "status": "done", "reason": None, "steps": 10,
               "final": evals[10], "seed": instance,
               "compute": {"seconds": dict.fromkeys(("generate", "score", "train", "eval"), 1.0),
                           "cpu_seconds": dict.fromkeys(("generate", "score", "train", "eval"),
                                                        1.0),
                           "samples": 80, "tokens_generated": 80, "tokens_trained": 80,
                           "flops": None}}
    store.finish(run_id, "done", metrics=pd.DataFrame(rows, columns=list(METRIC_COLUMNS)),
                 summary=summary)


def _store(root: Path, name: str, labels: list[str], *, record_sd: bool = True) -> Path:
    store = RunStore(root, name)
    store.path.mkdir(parents=True)
    (store.path / "suite.yaml").write_text(
        f"name: {name}\nalgorithms:\n" + "".join(f"  - name: {CONFIGS[lab][0]}\n"
                                                  f"    label: {lab}\n" for lab in labels))
    for task in ("bandit", "lm"):
        for label in labels:
            for instance in range(INSTANCES):
                _write_run(store, task, label, instance, record_sd=record_sd)
    return store.path


def _ranking(store: Path, out: Path) -> tuple[dict[str, pd.DataFrame], str]:
    """The ranking section alone: its tables and its Markdown."""
    rep = Report(load_store(store), ReportOptions(figures=False), out)
    rep.prepare()
    ranking_section(rep)
    return rep.tables, to_markdown(rep.blocks, out)


def _scores(store: Path) -> pd.Series:
    return cmp.run_scores(load_store(store)).set_index("run_id")["score"]


# --- scores fixed by the task ------------------------------------------------------------------


def test_a_task_without_an_optimum_scores_the_gold_gain_in_units_of_pi_refs_spread(
        tmp_path: Path):
    store = _store(tmp_path, "all", list(CONFIGS))
    data = load_store(store)
    assert cmp.score_kind(data.runs, "bandit") == cmp.GAP_CLOSURE
    assert cmp.score_kind(data.runs, "lm") == cmp.STANDARDISED
    scores = cmp.run_scores(data)
    lm = scores[scores["task"] == "lm"]
    # the gain divided by π_ref's spread at the first evaluation (not the final 0.8·sd)
    want = (lm["final_gold_reward"] - lm["initial_gold_reward"]) / lm["seed"].map(_lm_sd)
    assert np.allclose(lm["score"], want, rtol=1e-12, atol=0)
    means = lm.groupby("label")["score"].mean()
    for label, (_, _, gain) in CONFIGS.items():
        assert means[label] == pytest.approx(gain, rel=0.03)  # 2% noise on 6 instances


def test_removing_a_configuration_leaves_every_other_score_and_the_ranking_unchanged(
        tmp_path: Path):
    """d has the largest gain on lm: dividing by the best configuration present would rescale
    every other lm score when d leaves and reorder a and b overall (a: 0.3 and 1.0 against b's
    0.9 and 0.2, so a is ahead only when lm scores are not shrunk by d's 2.0)."""
    everyone = _store(tmp_path / "with", "with", list(CONFIGS))
    without = _store(tmp_path / "without", "without", ["a", "b", "c"])
    s_all, s_less = _scores(everyone), _scores(without)
    assert len(s_less) == 3 * 2 * INSTANCES
    assert np.array_equal(s_all.loc[s_less.index].to_numpy(), s_less.to_numpy())
    t_all, md_all = _ranking(everyone, tmp_path / "out-with")
    t_less, _ = _ranking(without, tmp_path / "out-without")
    r_all, r_less = t_all["ranking_iqm"], t_less["ranking_iqm"]
    assert list(r_all["label"]) == ["d", "a", "b", "c"]
    assert list(r_less["label"]) == ["a", "b", "c"]
    kept = r_all[r_all["label"] != "d"].set_index("label")
    for column in ("mean", "low", "high", "median", "iqm"):
        assert np.allclose(kept[column], r_less.set_index("label")[column], rtol=0, atol=1e-12)
    assert "not every run recorded the spread" not in md_all


def test_runs_without_pi_refs_spread_fall_back_to_the_best_present_and_the_report_says_so(
        tmp_path: Path):
    """Runs recorded before ``gold_reward_sd``: the old rule, which a removal does change —
    the property above is not true of any normalisation, only of one fixed by the task."""
    everyone = _store(tmp_path / "with", "with", list(CONFIGS), record_sd=False)
    without = _store(tmp_path / "without", "without", ["a", "b", "c"], record_sd=False)
    assert cmp.score_kind(load_store(everyone).runs, "lm") == cmp.RELATIVE
    s_all, s_less = _scores(everyone), _scores(without)
    lm = [i for i in s_less.index if "-lm-" in i]
    assert not np.allclose(s_all.loc[lm], s_less.loc[lm])
    tables, md = _ranking(everyone, tmp_path / "out")
    assert list(tables["ranking_iqm"]["label"])[:2] == ["d", "b"]
    assert list(_ranking(without, tmp_path / "out2")[0]["ranking_iqm"]["label"])[:2] == \
        ["a", "b"]
    assert "On lm, not every run recorded the spread of π\\_ref's gold reward" in md
    assert "gold gain relative to the largest on lm" in md


# --- rank intervals ----------------------------------------------------------------------------


def test_clearly_separated_configurations_have_rank_intervals_of_width_zero():
    rng = np.random.default_rng(1)
    wide = pd.DataFrame({"x": 10 + rng.uniform(-1, 1, 7), "y": 5 + rng.uniform(-1, 1, 7),
                         "z": rng.uniform(-1, 1, 7)})
    got = bootstrap_ranks(wide, seed=5).set_index("label")
    assert got["rank_low"].tolist() == [1, 2, 3] and got["rank_high"].tolist() == [1, 2, 3]


def test_instances_are_resampled_jointly_for_all_configurations():
    """A shared instance effect (sd 10) much larger than the gaps between configurations
    (0.1): resampled jointly, every resample keeps the order; resampled independently, the
    instance effect would swamp the gaps."""
    rng = np.random.default_rng(0)
    level = rng.normal(0.0, 10.0, size=(8, 1))
    wide = pd.DataFrame(level + np.array([0.3, 0.2, 0.1]), columns=["x", "y", "z"])
    got = bootstrap_ranks(wide, seed=3)
    assert (got["rank_low"] == got["rank_high"]).all()
    assert got["rank_low"].tolist() == [1, 2, 3]


def test_exchangeable_configurations_get_wide_rank_intervals():
    """Four configurations with the same score distribution on 10 instances: no order is
    supported, so the 95% ranges span most of the four places. Seeded simulation over 40
    stores: the mean width is about 2.5 places (measured on 200: 2.47, 5% quantile 1.5); the
    test asks at least 2 on average and at least 1 in every store."""
    widths = []
    for s in range(40):
        wide = pd.DataFrame(np.random.default_rng(s).normal(size=(10, 4)), columns=list("abcd"))
        got = bootstrap_ranks(wide, seed=s)
        width = got["rank_high"] - got["rank_low"]
        assert width.mean() >= 1
        widths.append(width.mean())
    assert np.mean(widths) >= 2


def test_rank_intervals_are_the_same_each_time_and_skip_missing_scores():
    rng = np.random.default_rng(2)
    wide = pd.DataFrame(rng.normal(size=(9, 3)), columns=["p", "q", "r"])
    wide.iloc[0, 1] = np.nan
    first, second = bootstrap_ranks(wide, seed=7), bootstrap_ranks(wide, seed=7)
    pd.testing.assert_frame_equal(first, second)
    assert np.isfinite(first[["rank_low", "rank_high"]].to_numpy()).all()
    assert ((first["rank_low"] >= 1) & (first["rank_high"] <= 3)
            & (first["rank_low"] <= first["rank_high"])).all()


def test_the_report_prints_rank_intervals_that_match_its_csv_and_rebuild_identically(
        tmp_path: Path):
    store = _store(tmp_path, "all", list(CONFIGS))
    first, md = _ranking(store, tmp_path / "one")
    _, md2 = _ranking(store, tmp_path / "two")
    assert md == md2
    for name in ("ranking_iqm", "ranking_per_task", "ranking_aggregations"):
        assert (tmp_path / "one" / "tables" / f"{name}.csv").read_bytes() == \
            (tmp_path / "two" / "tables" / f"{name}.csv").read_bytes()
    per_task = first["ranking_per_task"]
    # lm separates every configuration (gains 2, 1, 0.2, 0.1 with 2% noise): width 0
    lm = per_task[per_task["task"] == "lm"].set_index("label")
    assert (lm["rank_low"] == lm["rank"]).all() and (lm["rank_high"] == lm["rank"]).all()
    # on the bandit c and d have the same closure (0.5): either may be 2nd, both ranges say so
    bandit = per_task[per_task["task"] == "bandit"].set_index("label")
    for label in ("c", "d"):
        assert (bandit.loc[label, "rank_low"], bandit.loc[label, "rank_high"]) == (2, 3)
    assert bandit.loc["b", "rank_high"] == 1 and bandit.loc["a", "rank_low"] == 4
    row = first["ranking_iqm"].iloc[0]
    assert f"Highest mean score: {row['label']}" in md
    assert f"rank {int(row['rank_low'])} over 95% of the bootstrap resamples" in md


# --- the top under three aggregations ----------------------------------------------------------


def _agg(rows: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return aggregation_table(pd.DataFrame(
        [{"label": k, "mean": m, "median": md, "iqm": q} for k, (m, md, q) in rows.items()]))


def _said(agg: pd.DataFrame) -> str:
    return " ".join(t.format(**v) for t, v in aggregation_sentences(agg))


def test_aggregations_that_agree_are_said_to_agree():
    agg = _agg({"x": (0.9, 0.8, 0.85), "y": (0.5, 0.4, 0.45), "z": (0.1, 0.2, 0.15)})
    assert list(agg["rank_mean"]) == list(agg["rank_median"]) == list(agg["rank_iqm"]) == \
        [1, 2, 3]
    said = _said(agg)
    assert "All three aggregations put x first (mean 0.9, median 0.8, IQM 0.85)." in said
    assert "agree on the order of the first 3" in said


def test_aggregations_that_disagree_say_where_with_the_tables_numbers():
    # x: one huge instance lifts its mean; y is steadier: first by median and IQM
    agg = _agg({"x": (0.9, 0.3, 0.35), "y": (0.6, 0.55, 0.6), "z": (0.2, 0.1, 0.1)})
    said = _said(agg)
    assert ("Which configuration comes first depends on the aggregation: by mean, x (0.9); "
            "by median, y (0.55); by IQM, y (0.6).") in said
    assert "x is 1st by mean, 2nd by median, 2nd by IQM" in said
    assert "y is 2nd by mean, 1st by median, 1st by IQM" in said
    assert "z is" not in said  # third under all three
    for label in ("x", "y"):
        row = agg.set_index("label").loc[label]
        for a in AGGREGATIONS:
            assert int(row[f"rank_{a}"]) == agg[a].rank(ascending=False, method="min")[
                agg["label"] == label].iloc[0]


def test_the_report_sets_the_top_under_three_aggregations_side_by_side(tmp_path: Path):
    store = _store(tmp_path, "all", list(CONFIGS))
    tables, md = _ranking(store, tmp_path / "out")
    agg = tables["ranking_aggregations"].set_index("label")
    overall = tables["ranking_iqm"].set_index("label")
    for a in AGGREGATIONS:
        assert np.allclose(agg[a], overall.loc[agg.index, a], rtol=0, atol=0)
    assert "| place | by mean | by median | by IQM |" in md
    first = agg.sort_values("mean", ascending=False).index[0]
    assert f"| 1 | {first} ({fmt(agg.loc[first, 'mean'])})" in md
    for template, values in aggregation_sentences(tables["ranking_aggregations"]):
        assert template.format(**values) in md.replace("\\_", "_")


# --- what a run records: π_ref's spread --------------------------------------------------------


def test_gold_reward_sd_is_the_spread_of_r_star_under_the_policy_exact_and_sampled():
    """Exact on a bandit: the standard deviation of r*(x, y) over uniform x and y ~ π_ref,
    computed here with numpy's weighted average. Sampled (the path of tasks without an exact
    table): 4,000 draws per prompt over 8 prompts, whose sd has a standard error of about
    sd/√(2·32000) < 0.5% for near-normal r*; the test allows 3%."""
    from harness.evaluators import EvalContext, GoldReward
    from harness.exact import ExactProblem
    from harness.tasks.bandit import BanditParams, BanditTask

    task = BanditTask(BanditParams(num_prompts=8, num_arms=16), seed=3)
    ref = task.reference_policy()
    exact = ExactProblem.from_task(task)
    got = GoldReward().evaluate(EvalContext(task=task, policy=ref, reference=ref,
                                            reward_model=None, beta=0.1, exact=exact))
    weights = exact.ref_logp.exp().numpy() / exact.reward.shape[0]
    reward = exact.reward.numpy()
    mean = np.average(reward, weights=weights)
    sd = math.sqrt(np.average((reward - mean) ** 2, weights=weights))
    assert got["gold_reward"] == pytest.approx(mean, rel=1e-12)
    assert got["gold_reward_sd"] == pytest.approx(sd, rel=1e-12)
    assert sd > 0.3  # r* ~ N(0, 1) per arm: a real spread, not a degenerate case
    sampled = GoldReward().evaluate(EvalContext(task=task, policy=ref, reference=ref,
                                                reward_model=None, beta=0.1,
                                                samples_per_prompt=4000, seed=0))
    assert sampled["gold_reward_sd"] == pytest.approx(sd, rel=0.03)
    # one sample has no spread: the key is left out (a NaN would mark the run diverged)
    one = BanditTask(BanditParams(num_prompts=8, num_arms=16, num_eval_prompts=1), seed=3)
    single = GoldReward().evaluate(EvalContext(task=one, policy=ref, reference=ref,
                                               reward_model=None, beta=0.1,
                                               samples_per_prompt=1, seed=0))
    assert set(single) == {"gold_reward"} and math.isfinite(single["gold_reward"])
