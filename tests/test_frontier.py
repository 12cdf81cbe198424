"""Reward–KL frontiers: envelopes, interpolation without extrapolation, matched-KL comparisons
paired by instance, Holm's adjustment — against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report import frontier as fr
from harness.report import stats as st


def test_the_envelope_keeps_the_points_no_other_beats():
    kl = [0.5, 0.1, 0.3, 0.3, 0.9, 0.7, math.nan]
    gold = [0.4, 0.1, 0.2, 0.35, 0.45, 0.3, 9.0]
    xs, ys = fr.envelope(kl, gold)
    # (0.3, 0.35) beats (0.3, 0.2); (0.7, 0.3) is beaten by (0.5, 0.4); NaN is dropped.
    assert xs.tolist() == [0.1, 0.3, 0.5, 0.9]
    assert ys.tolist() == [0.1, 0.35, 0.4, 0.45]
    assert np.all(np.diff(ys) > 0)


def test_interpolation_never_extrapolates():
    xs, ys = np.array([0.1, 0.3]), np.array([1.0, 2.0])
    out = fr.at_kl(xs, ys, np.array([0.05, 0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(out[0]) and math.isnan(out[-1])
    assert out[1:4].tolist() == pytest.approx([1.0, 1.5, 2.0])


def test_mean_over_a_range_is_the_area_divided_by_the_width():
    xs, ys = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0])
    # area over [0.5, 2]: 0.375 (0.5..1, a trapezoid 0.5→1) + 1 (1..2) = 1.375; width 1.5
    assert fr.mean_over_range(xs, ys, 0.5, 2.0) == pytest.approx(1.375 / 1.5)
    assert math.isnan(fr.mean_over_range(xs, ys, 1.0, 1.0))


def test_holm_matches_the_step_down_by_hand():
    p = [0.01, 0.04, 0.03, math.nan, 0.20]
    # sorted finite: 0.01 (×4), 0.03 (×3), 0.04 (×2), 0.20 (×1), made monotone
    expected = [0.04, 0.09, 0.09, math.nan, 0.20]
    out = fr.holm(p)
    assert out[3] != out[3]
    np.testing.assert_allclose(np.delete(out, 3), np.delete(expected, 3))


def test_paired_interval_is_students_t():
    d = [0.3, 0.1, 0.25, 0.4, 0.2]
    n, mean, low, high, p = fr.paired(d)
    half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / math.sqrt(5)
    assert (n, mean) == (5, pytest.approx(0.25))
    assert (low, high) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half))
    assert p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)


def synthetic(offset: float, seeds: int = 10, noise: float = 0.01) -> pd.DataFrame:
    """Two families on one task: b's gold is a's minus ``offset`` at every KL, per instance."""
    rng = np.random.default_rng(0)
    rows = []
    kls = [0.1, 0.2, 0.4, 0.8, 1.6]
    for seed in range(seeds):
        shift = rng.normal(0, 0.5)  # instances differ a lot: pairing removes it
        for j, k in enumerate(kls):
            g = math.log1p(k) + shift
            rows.append({"task": "t", "family": "a", "label": f"a[{j}]", "seed": seed,
                         "kl": k, "gold": g})
            rows.append({"task": "t", "family": "b", "label": f"b[{j}]", "seed": seed,
                         "kl": k * 1.01, "gold": g - offset + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_a_dominating_frontier_wins_at_every_matched_kl_paired_by_instance():
    points, curves, matched, comp = fr.frontier_tables(synthetic(0.1))
    assert set(points["family"]) == {"a", "b"} and len(points) == 10
    grid = matched[matched["family"] == "a"]["kl"].tolist()
    assert len(grid) == fr.GRID_POINTS + 1 and grid[-1] == "mean over [0.101, 1.6]"
    assert float(grid[0]) == pytest.approx(0.101) and float(grid[-2]) == pytest.approx(1.6)
    own = curves[curves["family"] == "a"]["kl"]  # a's own curve spans all its points
    assert own.min() == pytest.approx(0.1) and own.max() == pytest.approx(1.6)
    assert len(comp) == fr.GRID_POINTS + 1
    # decided for a wherever the sign-flip test may decide; a row is refused only when its
    # differences look skewed (skewtest p < 0.1, which normal noise gives 10% of the time)
    refused = comp["decision"] == "undecidable"
    assert (comp.loc[~refused, "decision"] == "a better").all() and (~refused).sum() >= 4
    assert (comp.loc[refused, "skew_p"] < st.SKEW_LEVEL).all()
    assert comp.loc[~refused, "test"].str.startswith("sign-flip").all()
    # the paired difference is the offset, plus a little: b's points sit at 1% more KL, so at
    # a matched KL b has log1p(k) − log1p(k/1.01) ≤ 0.01 less gold (and noise of sd 0.01/√10)
    assert comp["mean_diff"].between(0.09, 0.115).all()
    # every one of the 2^10 sign patterns but the observed pair is less extreme: p = 2/1024,
    # the exact test's smallest, and Holm over the 6 rows multiplies it by at most 6
    assert comp["p_adjusted"].max() <= 6 * 2 / 1024 + 1e-12
    # unpaired, the instances' spread (sd 0.5) would hide a 0.1 difference: pairing decides it
    a = matched[(matched["family"] == "a")].iloc[0]
    assert a["gold_high"] - a["gold_low"] > 0.5


def test_equal_frontiers_are_undecided():
    _, _, _, comp = fr.frontier_tables(synthetic(0.0, noise=0.05))
    refused = comp["decision"] == "undecidable"
    assert (comp.loc[~refused, "decision"] == "undecided").all() and (~refused).sum() >= 4
    assert (comp.loc[refused, "skew_p"] < st.SKEW_LEVEL).all()
    assert (comp["p_adjusted"] >= comp["p_value"]).all()


def test_pairs_are_compared_on_the_range_both_reach():
    frame = synthetic(0.1)
    c = frame[frame["family"] == "a"].assign(family="c", kl=lambda f: f["kl"] + 10,
                                             label=lambda f: "c" + f["label"])
    _, _, matched, comp = fr.frontier_tables(pd.concat([frame, c]))
    assert matched.empty  # c shares no KL with a and b: nothing common to all three
    assert set(zip(comp["a"], comp["b"], strict=True)) == {("a", "b")}  # a-b still compared


def test_family_strips_the_sweep_suffix_only():
    assert fr.family("dpo[beta=0.1]", "beta=0.1") == "dpo"
    assert fr.family("my[label]", "") == "my[label]"


def test_a_sweep_point_s_kl_interval_stays_at_or_above_zero():
    """Five instances, one of which moved far: Student's t reaches below 0, a KL cannot."""
    frame = pd.DataFrame({"task": "t", "family": "a", "label": "a[0]", "seed": range(5),
                          "kl": [0.0, 0.0, 0.01, 3.0, 0.0], "gold": [0.1, 0.2, 0.1, 0.3, 0.2]})
    _, mean, low, _, _ = fr.paired(frame["kl"].tolist())
    assert low < 0
    points, *_ = fr.frontier_tables(frame)
    row = points.iloc[0]
    assert row["kl"] == pytest.approx(mean) and row["kl_low"] == 0.0
    assert row["gold_low"] < row["gold"]  # gold is not bounded: left as it is


def test_mde_and_instances_needed_are_at_the_family_level():
    """Decisions are taken at Holm's α/m, so the smallest detectable difference and the
    instances that would decide must be too: at α = 0.05 they promise what the table cannot
    decide. Checked against scipy's noncentral t: at ``mde`` the paired test at α/m has 80%
    power; ``seeds_needed`` is the 90% upper bound of :func:`stats.seeds_needed_upper` at
    α/m, never below the plug-in count for the observed effect. At 5 instances no sign-flip
    p-value (≥ 1/16) passes α/m: ``mde`` is ∞ and every row is undecidable."""
    _, _, _, few = fr.frontier_tables(synthetic(0.01, seeds=5, noise=0.05))
    assert (few["mde"] == math.inf).all() and (few["decision"] == "undecidable").all()
    _, _, _, comp = fr.frontier_tables(synthetic(0.01, seeds=12, noise=0.05))
    m = int(comp["p_value"].notna().sum())
    assert m == len(comp) == fr.GRID_POINTS + 1
    level = 0.05 / m

    def power(effect_sd: float, n: int, alpha: float) -> float:
        df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)
        nc = effect_sd * math.sqrt(n)
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))

    undecided = 0
    for r in comp.itertuples():
        assert power(r.mde / r.sd, r.n, level) == pytest.approx(0.8, abs=1e-6)
        # at α = 0.05 the same design detects a smaller difference: the old, wrong figure
        assert power(r.mde / r.sd, r.n, 0.05) > 0.9
        if r.decision in ("undecided", "undecidable"):
            undecided += 1
            k = float(r.seeds_needed)
            assert k == st.seeds_needed_upper(r.mean_diff, r.sd, int(r.n), alpha=level)
            assert k >= st.seeds_needed(r.mean_diff, r.sd, alpha=level)
    assert undecided >= 3  # the check above ran on rows that promise instances
