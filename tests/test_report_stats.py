"""The report's statistics: interval coverage, IQM, probability of improvement, verdict marks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.report import stats as st


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    # 400 data sets of n = 100 normal values with mean 3. The percentile bootstrap's interval is
    # slightly narrow (plug-in spread, normal quantiles): its coverage for a normal mean is about
    # P(|t_99| < 1.96·√0.99) ≈ 0.946 (≈ 0.936 at n = 30). Over 400 repetitions the observed
    # coverage has binomial sd √(0.95·0.05/400) ≈ 0.011, so [0.92, 0.98] is about ±2.5 sd.
    rng = np.random.default_rng(12345)
    reps, n, mu = 400, 100, 3.0
    covered = 0
    for i in range(reps):
        x = rng.normal(mu, 2.0, size=n)
        e = st.bootstrap_ci(x, "mean", n_resamples=1000, seed=i)
        assert e.low < e.value < e.high
        covered += e.low <= mu <= e.high
    assert 0.92 <= covered / reps <= 0.98


@pytest.mark.parametrize(("interval", "truth"), [(st.t_interval, 0.0), (st.std_interval, 1.0)])
def test_small_sample_intervals_cover_at_five_seeds(interval, truth):
    # The verdict's intervals at n = 5 (t for a mean, chi-square for a std) keep their 95%.
    rng = np.random.default_rng(7)
    hits = sum(
        (e := interval(rng.normal(0.0, 1.0, size=5))).low <= truth <= e.high for _ in range(2000)
    )
    assert 0.93 <= hits / 2000 <= 0.97


def test_iqm_is_the_mean_of_the_middle_half():
    x = [10.0, 1.0, 7.0, 3.0, 100.0, 5.0, -50.0, 2.0]
    # sorted: -50 1 2 3 5 7 10 100; cut int(0.25·8) = 2 from each end: 2 3 5 7
    assert st.iqm(x) == pytest.approx((2 + 3 + 5 + 7) / 4)
    # n = 5: cut int(1.25) = 1 from each end
    assert st.iqm([4.0, 0.0, 1.0, 9.0, 2.0]) == pytest.approx((1 + 2 + 4) / 3)
    assert st.iqm([np.nan, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5)  # non-finite dropped


def test_probability_of_improvement_is_a_hand_count_with_ties_as_half():
    x = [1.0, 2.0, 3.0]
    y = [2.0, 0.0]
    # pairs (x, y): (1,2) 0, (1,0) 1, (2,2) ½, (2,0) 1, (3,2) 1, (3,0) 1 → 4.5 / 6
    assert st.probability_of_improvement([x], [y]) == pytest.approx(4.5 / 6)
    assert st.probability_of_improvement([y], [x]) == pytest.approx(1.5 / 6)
    # two tasks: the mean of per-task probabilities
    assert st.probability_of_improvement([x, [5.0]], [y, [5.0]]) == pytest.approx(
        (4.5 / 6 + 0.5) / 2
    )
    # the vectorised statistic used by the bootstrap agrees with Mann-Whitney U / nm
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 7).astype(float), rng.integers(0, 4, 9).astype(float)
    u = stats.mannwhitneyu(a, b).statistic / (len(a) * len(b))
    assert float(st._poi_statistic(a, b)) == pytest.approx(u)
    e = st.probability_of_improvement_ci([a], [b], n_resamples=500)
    assert e.value == pytest.approx(u)
    assert 0.0 <= e.low <= e.value <= e.high <= 1.0


def test_stratified_bootstrap_resamples_each_group_independently():
    rng = np.random.default_rng(3)
    a = rng.normal(5.0, 1.0, size=40)
    b = rng.normal(2.0, 1.0, size=25)  # a different size: pairing is impossible

    def diff(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    e = st.stratified_bootstrap_ci([a, b], diff, n_resamples=4000, seed=1)
    assert e.value == pytest.approx(a.mean() - b.mean())
    assert e.low < 3.0 < e.high
    # the spread is that of two independent means: sd ≈ √(s_a²/n_a + s_b²/n_b)
    sd = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert (e.high - e.low) == pytest.approx(2 * 1.96 * sd, rel=0.15)
    # a constant group contributes no spread: only the other group's resampling counts
    const = np.full(30, 1.0)
    e_const = st.stratified_bootstrap_ci([b, const], diff, n_resamples=4000, seed=1)
    alone = st.bootstrap_ci(b, "mean", n_resamples=4000, seed=1)
    assert (e_const.high - e_const.low) == pytest.approx(alone.high - alone.low, rel=0.15)
    # each stratum keeps its size in every resample
    sizes = []

    def record(x, y, axis=-1):
        sizes.append((x.shape[axis], y.shape[axis]))
        return diff(x, y, axis=axis)

    st.stratified_bootstrap_ci([a, b], record, n_resamples=200)
    assert set(sizes) == {(40, 25)}


def test_iqm_ci_pools_tasks_and_stratifies_by_task():
    t1 = [1.0, 2.0, 3.0, 4.0]
    t2 = [10.0, 11.0, 12.0, 13.0]
    e = st.iqm_ci([t1, t2], n_resamples=500)
    assert e.value == pytest.approx(st.iqm(t1 + t2))
    assert e.low <= e.value <= e.high
    # a resample keeps four runs of each task, so the pooled IQM never collapses to one task's
    assert e.low > 4.0 and e.high < 10.0


def test_too_few_values_give_no_interval():
    e = st.bootstrap_ci([1.0], "mean")
    assert e.value == 1.0 and not e.has_interval
    assert math.isnan(st.bootstrap_ci([], "mean").value)
    assert e.format() == "1"


def test_wilson_interval():
    e = st.wilson_interval(0, 5)
    assert e.value == 0 and e.low == 0 and 0.4 < e.high < 0.45  # 0.434
    e = st.wilson_interval(5, 5)
    assert e.high == 1 and 0.55 < e.low < 0.6
    assert math.isnan(st.wilson_interval(0, 0).value)


def test_drawdown_spikes_and_first_reaching():
    assert st.max_drawdown([0, 1, 3, 2, 2.5, 0.5, 4]) == pytest.approx(2.5)
    assert st.max_drawdown([1, 2, 3]) == 0
    loss = np.linspace(1.0, 0.1, 60) + np.random.default_rng(0).normal(0, 0.01, 60)
    assert st.count_spikes(loss) == 0  # a falling trend is not a spike
    spiky = loss.copy()
    spiky[[20, 45]] += 1.0
    assert st.count_spikes(spiky) == 2
    spiky[50] = np.nan
    assert st.count_spikes(spiky) == 3
    assert st.first_reaching([0, 10, 20], [0.1, 0.5, 0.9], 0.5) == 10
    assert st.first_reaching([0, 10], [0.1, 0.2], 0.5) == math.inf
    assert st.median_with_inf([1.0, math.inf, math.inf, 2.0]) == math.inf
    assert st.median_with_inf([1.0, 3.0, math.inf]) == 3.0


E = st.Estimate


@pytest.mark.parametrize(
    ("chain", "pairs", "overall"),
    [
        # claimed decreasing, intervals disjoint in that order
        ([E(3, 2.5, 3.5), E(2, 1.5, 2.4), E(1, 0.5, 1.4)], ["supported", "supported"],
         "supported"),
        # the reverse order, disjoint: contradicted
        ([E(1, 0.5, 1.4), E(2, 1.5, 2.4), E(3, 2.5, 3.5)], ["not supported", "not supported"],
         "not supported"),
        # one step overlaps: inconclusive
        ([E(3, 2.5, 3.5), E(2, 1.5, 2.6), E(1, 0.5, 1.4)], ["inconclusive", "supported"],
         "inconclusive"),
        # one step contradicted outweighs a supported one
        ([E(3, 2.5, 3.5), E(2, 1.5, 2.4), E(4, 3.6, 4.4)], ["supported", "not supported"],
         "not supported"),
        # a missing interval is inconclusive
        ([E(3, 2.5, 3.5), E(2), E(1, 0.5, 1.4)], ["inconclusive", "inconclusive"],
         "inconclusive"),
        # identical degenerate intervals overlap
        ([E(4, 4, 4), E(4, 4, 4), E(3, 3, 3)], ["inconclusive", "supported"], "inconclusive"),
    ],
)
def test_verdict_marks(chain, pairs, overall):
    assert st.chain_marks(chain, "decreasing") == (pairs, overall)
    flipped = [E(-e.value, -e.high, -e.low) for e in chain]
    assert st.chain_marks(flipped, "increasing") == (pairs, overall)


def test_chain_marks_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        st.chain_marks([E(1, 0, 2)], "sideways")
