"""The report's statistics: interval coverage, IQM, probability of improvement, verdict marks."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from harness.report import stats as st


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
    # with ties, against a count over all pairs
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 7).astype(float), rng.integers(0, 4, 9).astype(float)
    count = sum((ai > bi) + 0.5 * (ai == bi) for ai in a for bi in b) / (len(a) * len(b))
    assert st.probability_of_improvement([a], [b]) == pytest.approx(count)


def test_too_few_values_give_no_interval():
    e = st.t_interval([1.0])
    assert e.value == 1.0 and not e.has_interval
    assert math.isnan(st.t_interval([]).value)
    assert e.format() == "1"
    assert not st.std_interval([1.0, 2.0]).has_interval


def test_wilson_interval():
    e = st.wilson_interval(0, 5)
    assert e.value == 0 and e.low == 0 and 0.4 < e.high < 0.45  # 0.434
    e = st.wilson_interval(5, 5)
    assert e.high == 1 and 0.55 < e.low < 0.6
    assert math.isnan(st.wilson_interval(0, 0).value)


def test_rate_interval_is_clopper_pearson():
    for k, n in ((0, 5), (2, 5), (5, 5), (3, 10)):
        e = st.rate_interval(k, n)
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (e.value, e.low, e.high) == (k / n, pytest.approx(ci.low), pytest.approx(ci.high))
    # the endpoints solve the binomial tails at α/2 (so a 90% or a one-sided interval fails)
    e = st.rate_interval(2, 5)
    assert stats.binom.sf(1, 5, e.low) == pytest.approx(0.025, abs=1e-9)
    assert stats.binom.cdf(2, 5, e.high) == pytest.approx(0.025, abs=1e-9)
    assert st.rate_interval(0, 5).high == pytest.approx(1 - 0.025 ** (1 / 5))
    assert math.isnan(st.rate_interval(0, 0).value)


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


# --- intervals that hold their level -----------------------------------------------------------

LOGNORMAL_SIGMA = 0.25
"""log-normal(0, 0.25): skewness 0.78, excess kurtosis 1.1 — final rewards across runs are
skewed, not wildly so. At σ = 0.5 (skewness 1.75) no small-sample interval of a mean or a spread
can promise 95% at n = 5 (Student t covers about 0.92 there, Bonett's std interval 0.91 at
n = 10), and the intervals here make no such promise."""
DRAWS = 4000
"""Simulated data sets per case: the binomial sd of a coverage of 0.95 is then 0.0034, so a
true coverage of 0.95 falls below the 0.93 threshold with probability < 1e-8."""


def _samples(dist: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """``DRAWS`` data sets of size ``n``, with the true mean and sd."""
    if dist == "normal":
        return rng.normal(2.0, 1.5, size=(DRAWS, n)), 2.0, 1.5
    s2 = LOGNORMAL_SIGMA**2
    mean = math.exp(s2 / 2)
    return rng.lognormal(0.0, LOGNORMAL_SIGMA, size=(DRAWS, n)), mean, math.sqrt(
        (math.exp(s2) - 1) * math.exp(s2))


CASES = [(dist, n) for dist in ("normal", "lognormal") for n in (5, 10)]


@pytest.mark.parametrize(("dist", "n"), CASES)
def test_every_printed_interval_covers_at_least_93_percent(dist, n):
    rng = np.random.default_rng(20240 + n + (dist == "normal"))
    x, mean, sd = _samples(dist, n, rng)
    # Means (final metrics, compute, curve bands): Student t.
    ests = [st.t_interval(row) for row in x]
    assert np.mean([e.low <= mean <= e.high for e in ests]) >= 0.93
    # Standard deviations (stability table): Bonett's interval.
    ests = [st.std_interval(row) for row in x]
    assert np.mean([e.low <= sd <= e.high for e in ests]) >= 0.93
    # Paired differences (comparisons): an instance effect shared by a and b, which pairing
    # removes, plus each configuration's own noise; the true difference is 0.3.
    instance = rng.normal(0.0, 3.0, size=(DRAWS, n))
    y, _, _ = _samples(dist, n, rng)
    a, b = instance + x + 0.3, instance + y
    hits = [(p := st.paired_difference(ai, bi)).low <= 0.3 <= p.high
            for ai, bi in zip(a, b, strict=True)]
    assert np.mean(hits) >= 0.93


@pytest.mark.parametrize(("dist", "n"), CASES)
def test_the_coverage_check_fails_an_interval_of_the_wrong_kind(dist, n):
    # The same simulation rejects what it should: normal quantiles instead of t (too narrow at
    # small n) and the percentile bootstrap of a mean (about 0.84 at n = 5).
    rng = np.random.default_rng(20240 + n + (dist == "normal"))
    x, mean, _ = _samples(dist, n, rng)
    m, se = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    z = np.mean(np.abs(m - mean) <= 1.96 * se)
    idx = rng.integers(0, n, size=(DRAWS, 400, n))
    boots = np.take_along_axis(x[:, None, :].repeat(400, 1), idx, axis=2).mean(axis=2)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=1)
    percentile = np.mean((lo <= mean) & (mean <= hi))
    if n == 5:
        assert z < 0.90 and percentile < 0.90
    else:
        assert z < 0.93 and percentile < 0.93


def test_chi_square_std_interval_is_too_narrow_on_log_normal_data():
    # Why the std interval is Bonett's: at n = 10 the chi-square interval misses σ of
    # log-normal(0, 0.25) data about 9% of the time.
    rng = np.random.default_rng(5)
    x, _, sd = _samples("lognormal", 10, rng)
    chi2 = np.mean([(e := st.chi2_std_interval(row)).low <= sd <= e.high for row in x])
    assert chi2 < 0.93


@pytest.mark.parametrize("n", [5, 10])
def test_rate_interval_coverage_is_at_least_95_percent_for_every_rate(n):
    # Exact coverage: the probability, over k ~ Binomial(n, p), that the interval of k holds p.
    ks = np.arange(n + 1)
    cp = [st.rate_interval(int(k), n) for k in ks]
    wilson = [st.wilson_interval(int(k), n) for k in ks]

    def coverage(ests: list[st.Estimate], p: float) -> float:
        inside = np.array([e.low <= p <= e.high for e in ests])
        return float(stats.binom.pmf(ks, n, p)[inside].sum())

    grid = np.linspace(0.001, 0.999, 999)
    assert min(coverage(cp, p) for p in grid) >= 0.95 - 1e-9
    assert min(coverage(wilson, p) for p in grid) < 0.93  # why reports use Clopper-Pearson


# --- exact endpoints against scipy ------------------------------------------------------------

FIXED = np.array([1.3, 0.2, 2.9, 1.1, 0.7, 1.8, 0.4])


def test_t_interval_endpoints_are_scipys():
    e = st.t_interval(FIXED)
    low, high = stats.t.interval(0.95, len(FIXED) - 1, loc=FIXED.mean(),
                                 scale=stats.sem(FIXED))
    assert (e.low, e.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    # a wrong df (n instead of n − 1) or a wrong level would move the endpoints beyond 1e-3
    wrong = stats.t.interval(0.95, len(FIXED), loc=FIXED.mean(), scale=stats.sem(FIXED))
    assert abs(wrong[0] - e.low) > 1e-3
    assert abs(stats.t.interval(0.9, len(FIXED) - 1, loc=FIXED.mean(),
                                scale=stats.sem(FIXED))[0] - e.low) > 1e-3


def test_paired_difference_is_scipys_paired_t_test():
    a = FIXED
    b = FIXED[::-1] * 0.8 + 0.1
    p = st.paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert p.n == len(a) and p.mean_diff == pytest.approx(float(np.mean(a - b)))
    assert (p.low, p.high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert p.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert p.sd == pytest.approx(float(np.std(a - b, ddof=1)))
    # pairs with a missing member are dropped, not the whole comparison
    q = st.paired_difference([*a, np.nan], [*b, 1.0])
    assert (q.n, q.p_value) == (p.n, pytest.approx(p.p_value))
    # a constant difference (a deterministic count) is decided with no spread
    c = st.paired_difference([5.0, 6.0, 7.0], [4.0, 5.0, 6.0])
    assert (c.mean_diff, c.low, c.high, c.p_value, c.sd) == (1.0, 1.0, 1.0, 0.0, 0.0)
    z = st.paired_difference([5.0, 6.0], [5.0, 6.0])
    assert (z.mean_diff, z.p_value) == (0.0, 1.0)
    one = st.paired_difference([1.0], [0.0])
    assert one.n == 1 and math.isnan(one.p_value) and math.isnan(one.low)
    with pytest.raises(ValueError, match="differ in length"):
        st.paired_difference([1.0, 2.0], [1.0])


def test_std_interval_is_bonetts():
    # Bonett (2006) by hand: trimmed mean at 1/(2√(n−4)), kurtosis, c = n/(n − z).
    x = FIXED
    n, z = len(x), stats.norm.ppf(0.975)
    m = stats.trim_mean(x, 1 / (2 * math.sqrt(n - 4)))
    kurt = n * np.sum((x - m) ** 4) / np.sum((x - x.mean()) ** 2) ** 2
    c = n / (n - z)
    se = c * math.sqrt((kurt - (n - 3) / n) / (n - 1))
    var = np.var(x, ddof=1)
    e = st.std_interval(x)
    assert e.value == pytest.approx(math.sqrt(var))
    assert e.low == pytest.approx(math.sqrt(c * var * math.exp(-z * se)), rel=1e-12)
    assert e.high == pytest.approx(math.sqrt(c * var * math.exp(z * se)), rel=1e-12)
    assert not st.std_interval(x[:4]).has_interval  # Bonett needs n ≥ 5
    # the chi-square interval, kept for reference, is scipy's chi-square quantiles
    chi = st.chi2_std_interval(x)
    df = n - 1
    assert chi.low == pytest.approx(math.sqrt(df * var / stats.chi2.ppf(0.975, df)))
    assert chi.high == pytest.approx(math.sqrt(df * var / stats.chi2.ppf(0.025, df)))


def test_holm_step_down():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far: 0.06
    adjusted = st.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN stays NaN and does not count in m; the adjustment never exceeds 1
    assert st.holm([0.01, math.nan, 0.5]) == [pytest.approx(0.02), pytest.approx(math.nan,
                                                                            nan_ok=True), 0.5]
    assert st.holm([0.6, 0.7]) == [1.0, 1.0]
    assert st.holm([]) == []
    # Holm is not Benjamini-Hochberg (scipy's false_discovery_control): they differ here
    bh = stats.false_discovery_control([0.01, 0.04, 0.03, 0.005])
    assert not np.allclose(bh, adjusted)


def test_decisions_follow_the_adjusted_p_value_and_the_direction():
    assert st.decide(0.2, 0.01, higher_is_better=True) == st.A_BETTER
    assert st.decide(0.2, 0.01, higher_is_better=False) == st.B_BETTER
    assert st.decide(-0.2, 0.01, higher_is_better=True) == st.B_BETTER
    assert st.decide(0.2, 0.06, higher_is_better=True) == st.UNDECIDED
    assert st.decide(0.2, math.nan, higher_is_better=True) == st.UNDECIDED


def test_power_mde_and_seeds_needed_from_the_noncentral_t():
    # One-sample/paired t, d = 1, n = 10, two-sided α = 0.05: power 0.803 (G*Power's value).
    assert st.paired_power(1.0, 10) == pytest.approx(0.80315, abs=5e-4)
    # Independently of scipy's nct: T = (Z + d√n)/(W/√df), W ~ χ_df, so the power is
    # ∫ [Φ(d√n − c·w/√df) + Φ(−d√n − c·w/√df)] χ_df(w) dw.
    from scipy.integrate import quad

    def by_integral(d: float, n: int, alpha: float = 0.05) -> float:
        # over W = √V, chi-distributed with df degrees of freedom
        df, c, nc = n - 1, stats.t.ppf(1 - alpha / 2, n - 1), d * math.sqrt(n)

        def integrand(w: float) -> float:
            scale = c * w / math.sqrt(df)
            return (stats.norm.cdf(nc - scale) + stats.norm.cdf(-nc - scale)) * stats.chi.pdf(
                w, df)

        turn = nc * math.sqrt(df) / c  # where the integrand turns: split there
        return quad(integrand, 0, turn)[0] + quad(integrand, turn, np.inf)[0]

    for d, n in ((1.0, 9), (0.4, 5), (0.8, 20)):
        assert st.paired_power(d, n) == pytest.approx(by_integral(d, n), abs=1e-7)
    # far in the tails (2 instances, α/42), where scipy's nct gives NaN for the lower tail;
    # by hand: P(|W| < (Z + nc)/c) ≈ 2φ(0)·nc/c = 0.01688 for df = 1
    assert st.paired_power(8.0, 2, 0.05 / 42) == pytest.approx(by_integral(8.0, 2, 0.05 / 42),
                                                              abs=1e-6)
    assert st.paired_power(8.0, 2, 0.05 / 42) == pytest.approx(
        2 * stats.norm.pdf(0) * 8 * math.sqrt(2) / stats.t.ppf(1 - 0.05 / 84, 1), rel=1e-3)
    assert st.paired_power(1.0, 9) < 0.8
    assert st.seeds_needed(0.5, 0.5) == 10
    assert st.seeds_needed(-0.5, 0.5) == 10
    # halving the effect needs about four times the instances (34 at d = 0.5)
    assert st.seeds_needed(0.25, 0.5) == 34
    assert st.seeds_needed(0.0, 1.0) == math.inf
    assert st.seeds_needed(1e-6, 1.0) == math.inf  # beyond MAX_SEEDS
    assert math.isnan(st.seeds_needed(1.0, math.nan))
    # the MDE is where the power is exactly 80%
    mde = st.minimum_detectable(2.0, 5)
    assert st.paired_power(mde / 2.0, 5) == pytest.approx(0.8, abs=1e-8)
    assert st.minimum_detectable(0.0, 5) == 0.0
    assert math.isnan(st.minimum_detectable(1.0, 1))
    # stricter α (a Holm family) needs more instances
    assert st.seeds_needed(0.5, 0.5, alpha=0.05 / 10) > 10


def test_seeds_needed_has_80_percent_power_by_simulation():
    # At the computed number of instances, a paired t-test at α = 0.05 on normal differences
    # with the assumed effect rejects in ~80% of data sets (binomial sd 0.009 at 2000 draws).
    rng = np.random.default_rng(3)
    n = int(st.seeds_needed(0.6, 1.0))
    d = rng.normal(0.6, 1.0, size=(2000, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert 0.77 <= float(np.mean(p < 0.05)) <= 0.83
    d = rng.normal(0.6, 1.0, size=(2000, n - 1))
    assert float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)) < 0.8


def test_power_falls_back_to_an_integral_where_the_noncentral_t_fails(monkeypatch):
    expected = [st.paired_power(d, n, a) for d, n, a in ((1.0, 10, 0.05), (8.0, 2, 0.05 / 42),
                                                         (0.3, 30, 0.001))]
    monkeypatch.setattr(st.stats.nct, "sf", lambda *args: math.nan)
    got = [st.paired_power(d, n, a) for d, n, a in ((1.0, 10, 0.05), (8.0, 2, 0.05 / 42),
                                                    (0.3, 30, 0.001))]
    assert got == pytest.approx(expected, abs=1e-6)


# --- each term pinned (fails for a wrong constant, axis, df, level or branch) -------------------


def test_wilson_interval_strictly_inside_zero_and_one_is_the_score_interval():
    # 3 of 10: the Wilson interval is the set of p with (p̂ − p)² ≤ z² p (1 − p) / n, so its
    # endpoints are the roots of (1 + z²/n) p² − (2p̂ + z²/n) p + p̂² = 0, solved here
    # independently. rel 1e-12: a quadratic's roots in float64, no cancellation at p̂ = 0.3.
    for k, n, conf in ((3, 10, 0.95), (3, 10, 0.9), (7, 20, 0.95)):
        z = stats.norm.ppf(0.5 + conf / 2)
        ph = k / n
        roots = sorted(np.roots([1 + z**2 / n, -(2 * ph + z**2 / n), ph**2]).real)
        e = st.wilson_interval(k, n, conf)
        assert e.value == ph
        assert (e.low, e.high) == (pytest.approx(roots[0], rel=1e-12),
                                   pytest.approx(roots[1], rel=1e-12))
    # The numbers for 3 of 10 at 95%, for the record: [0.1078, 0.6032].
    e = st.wilson_interval(3, 10)
    assert (round(e.low, 4), round(e.high, 4)) == (0.1078, 0.6032)


def test_interval_levels_follow_the_confidence_argument():
    # t at 90%, chi-square at 90%, Clopper-Pearson at 90%: scipy's, to 1e-12 relative.
    x = FIXED
    low, high = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    e = st.t_interval(x, 0.9)
    assert (e.low, e.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    df, var = len(x) - 1, np.var(x, ddof=1)
    chi = st.chi2_std_interval(x, 0.9)
    assert chi.low == pytest.approx(math.sqrt(df * var / stats.chi2.ppf(0.95, df)), rel=1e-12)
    assert chi.high == pytest.approx(math.sqrt(df * var / stats.chi2.ppf(0.05, df)), rel=1e-12)
    ci = stats.binomtest(3, 10).proportion_ci(0.9, method="exact")
    e = st.rate_interval(3, 10, 0.9)
    assert (e.low, e.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    # Bonett's at 90% is narrower than at 95%, around the same s.
    wide, narrow = st.std_interval(x), st.std_interval(x, 0.9)
    assert wide.low < narrow.low < narrow.value == wide.value < narrow.high < wide.high
    p = st.paired_difference(x, x[::-1] * 0.8 + 0.1, 0.9)
    ci = stats.ttest_rel(x, x[::-1] * 0.8 + 0.1).confidence_interval(0.9)
    assert (p.low, p.high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_degenerate_samples():
    # A spread of exactly 0 from 5 or more values is known to be 0; below 5 there is no interval.
    e = st.std_interval([2.0] * 6)
    assert (e.value, e.low, e.high) == (0.0, 0.0, 0.0)
    e = st.std_interval([2.0] * 4)
    assert e.value == 0.0 and not e.has_interval
    assert math.isnan(st.std_interval([1.0]).value)
    assert math.isnan(st.chi2_std_interval([1.0]).value)
    # Non-finite values are dropped everywhere.
    assert st.t_interval([1.0, np.inf, 3.0, np.nan]).value == 2.0
    assert math.isnan(st.iqm([])) and math.isnan(st.max_drawdown([np.nan]))
    assert math.isnan(st.rate_interval(0, -1).value) and math.isnan(st.wilson_interval(1, -2).value)
    assert math.isnan(st.probability_of_improvement([], []))
    assert math.isnan(st.probability_of_improvement([[1.0], [2.0]], [[0.0], [np.nan]]))


def test_estimate_format():
    assert st.Estimate(1.23456, 1.1, 1.35).format() == "1.23 [1.1, 1.35]"
    assert st.Estimate(1.23456, 1.1, 1.35).format(2) == "1.2 [1.1, 1.4]"
    assert st.Estimate(1.23456).format() == "1.23"
    assert st.Estimate(1.0, math.nan, 2.0).format() == "1"  # half an interval is none
    assert st.Estimate(math.nan, 0.0, 1.0).format() == "n/a"
    assert st.Estimate(math.inf).format() == "∞"
    assert st.Estimate(-math.inf).format() == "-∞"
    assert st.Estimate(0.5, -math.inf, math.inf).format() == "0.5"


def test_median_with_inf_even_lengths():
    assert st.median_with_inf([4.0, 1.0, 3.0, 2.0]) == 2.5  # sorted first: (2 + 3) / 2
    assert st.median_with_inf([-1.0, 5.0]) == 2.0
    assert st.median_with_inf([3.0, math.inf, 1.0, 2.0]) == 2.5  # inf is last, not middle
    assert st.median_with_inf([2.0, math.inf]) == math.inf  # half are "never"
    assert st.median_with_inf([math.nan, 1.0, 7.0, math.nan]) == 4.0  # NaN is no value
    assert st.median_with_inf([5.0]) == 5.0
    assert math.isnan(st.median_with_inf([math.nan]))


def _spikes_by_hand(values, k=5.0, window=9):
    """count_spikes written out: a loop over positions, each window's median and MAD."""
    a = [v for v in values if math.isfinite(v)]
    bad = len(values) - len(a)
    if len(a) < 3:
        return bad
    half = window // 2
    level, local = [], []
    for i in range(len(a)):
        w = a[max(0, i - half): i + half + 1]
        med = float(np.median(w))
        level.append(med)
        local.append(1.4826 * float(np.median([abs(v - med) for v in w])))
    resid = [v - lv for v, lv in zip(a, level, strict=True)]
    mr = float(np.median(resid))
    overall = 1.4826 * float(np.median([abs(r - mr) for r in resid]))
    count = 0
    for r, lo in zip(resid, local, strict=True):
        spread = max(lo, overall)
        count += spread > 0 and r > k * spread
    return bad + count


def test_count_spikes_constants():
    assert st.MAD_TO_SD == pytest.approx(1 / stats.norm.ppf(0.75), rel=1e-4)
    # N(0, 1) noise with spikes of 4, 5.5, 7 and 9 added: checked against the loop above at the
    # defaults and around them, and pinned by number, so that a different default k (6) or
    # window (10) changes the count (4 at the defaults, 3 with either).
    rng = np.random.default_rng(1)
    series = rng.normal(0.0, 1.0, 80)
    for i, h in {15: 4.0, 35: 5.5, 55: 7.0, 70: 9.0}.items():
        series[i] += h
    for kw in ({}, {"k": 3.0}, {"k": 6.0}, {"window": 5}, {"window": 10}, {"window": 15}):
        assert st.count_spikes(series, **kw) == _spikes_by_hand(list(series), **kw), kw
    assert st.count_spikes(series) == 4
    assert st.count_spikes(series, k=6.0) == st.count_spikes(series, window=10) == 3


def test_edges_of_the_descriptive_statistics():
    import warnings

    # Empty inputs give NaN quietly (a report must not print numpy's empty-mean warnings).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(st.iqm([np.nan]))
        assert math.isnan(st.probability_of_improvement([], []))
    assert math.isnan(st.probability_of_improvement([[]], [[1.0]]))
    assert math.isnan(st.probability_of_improvement([[1.0]], [[]]))
    # Paired inputs must pair up: a task or a step without its partner is an error.
    with pytest.raises(ValueError):
        st.probability_of_improvement([[1.0], [2.0]], [[0.0]])
    with pytest.raises(ValueError):
        st.first_reaching([0, 10, 20], [0.1, 0.2], 0.5)
    assert st.max_drawdown([5.0]) == 0.0
    assert st.median_with_inf([-math.inf, math.inf]) == math.inf  # half are "never"
    # Spikes: three values are enough; integer series work; a flat series with one step has no
    # spread to measure a spike against.
    assert st.count_spikes([0.0, 1.0, 100.0]) == 1  # level 1, MAD 1: 99 > 5 · 1.4826
    assert st.count_spikes([0, 1, 100]) == 1
    assert st.count_spikes([0.0] * 8 + [1.0]) == 0


def test_decisions_at_the_edges():
    assert st.decide(1.0, 0.01, higher_is_better=True) == st.A_BETTER
    assert st.decide(0.2, 0.05, higher_is_better=True) == st.UNDECIDED  # p < α, strictly
    assert st.decide(0.2, 0.05, higher_is_better=True, alpha=0.1) == st.A_BETTER
    assert st.decide(0.0, 0.001, higher_is_better=True) == st.UNDECIDED


def test_minimum_detectable_at_other_levels_and_sizes():
    # The power at the returned difference is 80% for every n ≥ 2, sd and α (1e-8: brentq's
    # xtol of 1e-10 on an effect of O(1), times a slope of O(1)).
    for sd, n, alpha in ((1.0, 10, 0.05), (1.0, 2, 0.05), (3.0, 5, 0.001), (0.5, 3, 0.01)):
        mde = st.minimum_detectable(sd, n, alpha=alpha)
        assert st.paired_power(mde / sd, n, alpha) == pytest.approx(0.8, abs=1e-8), (sd, n)
    assert math.isnan(st.minimum_detectable(math.nan, 5))
    assert st.seeds_needed(1.0, 0.0) == 2.0  # no spread: two instances show it


# --- the survivors of a mutation run (docs/mutation.md): inputs that tell each apart -----------


def test_none_is_a_missing_value_like_nan():
    # A missing entry read from JSON is None: dropped as NaN is, not an error and not an object
    # array that numpy cannot test for finiteness.
    assert st.t_interval([1.0, None, 3.0]).value == 2.0
    assert st.iqm([None, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5)
    full = st.paired_difference([1.0, 3.0, 4.0], [0.5, 2.0, 3.5])
    for a, b in (([1.0, None, 3.0, 4.0], [0.5, 2.0, 2.0, 3.5]),
                 ([1.0, 2.0, 3.0, 4.0], [0.5, None, 2.0, 3.5])):
        p = st.paired_difference(a, b)
        assert (p.n, p.mean_diff, p.p_value) == (3, full.mean_diff, full.p_value)
    adjusted = st.holm([0.01, None, 0.5])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == 0.5


def test_two_values_give_t_and_chi_square_intervals_and_a_std():
    # n = 2 is the smallest sample with a spread: df = 1. Bonett's interval needs 5 values, but
    # the std itself is given.
    x = np.array([1.0, 3.0])
    e = st.t_interval(x)
    low, high = stats.t.interval(0.95, 1, loc=2.0, scale=stats.sem(x))
    assert (e.value, e.low, e.high) == (2.0, pytest.approx(low, rel=1e-12),
                                        pytest.approx(high, rel=1e-12))
    s = math.sqrt(2.0)
    chi = st.chi2_std_interval(x)
    assert chi.value == pytest.approx(s, rel=1e-15)
    assert chi.low == pytest.approx(s * math.sqrt(1 / stats.chi2.ppf(0.975, 1)), rel=1e-12)
    assert chi.high == pytest.approx(s * math.sqrt(1 / stats.chi2.ppf(0.025, 1)), rel=1e-12)
    b = st.std_interval(x)
    assert b.value == pytest.approx(s, rel=1e-15) and not b.has_interval
    # five equal values: the spread is known to be 0, as for six
    assert astuple(st.std_interval([2.0] * 5)) == (0.0, 0.0, 0.0)


def astuple(e: st.Estimate) -> tuple[float, float, float]:
    return (e.value, e.low, e.high)


def _bonett_by_hand(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    n, z = len(x), stats.norm.ppf(0.5 + confidence / 2)
    m = stats.trim_mean(x, 1 / (2 * math.sqrt(n - 4)))
    kurt = n * np.sum((x - m) ** 4) / np.sum((x - x.mean()) ** 2) ** 2
    c = n / (n - z)
    se = c * math.sqrt((kurt - (n - 3) / n) / (n - 1))
    var = np.var(x, ddof=1)
    return math.sqrt(c * var * math.exp(-z * se)), math.sqrt(c * var * math.exp(z * se))


def test_bonett_interval_of_a_two_point_sample():
    # Three 0s and three 1s: the kurtosis estimate is 1 (its least), so γ̂₄ − (n − 3)/n = 0.5,
    # a term below 1 that the formula uses as it is.
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    e = st.std_interval(x)
    low, high = _bonett_by_hand(x)
    assert (e.low, e.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_rates_of_a_single_trial():
    # n = 1: Clopper-Pearson's [0, 0.975] for 0 of 1 and [0.025, 1] for 1 of 1; Wilson's
    # [0, z²/(1 + z²)] and [1/(1 + z²), 1].
    z2 = stats.norm.ppf(0.975) ** 2
    assert astuple(st.rate_interval(0, 1)) == (0.0, 0.0, pytest.approx(0.975, rel=1e-12))
    assert astuple(st.rate_interval(1, 1)) == (1.0, pytest.approx(0.025, rel=1e-12), 1.0)
    assert astuple(st.wilson_interval(0, 1)) == (0.0, 0.0, pytest.approx(z2 / (1 + z2)))
    assert astuple(st.wilson_interval(1, 1)) == (1.0, pytest.approx(1 / (1 + z2)), 1.0)


def test_wilson_upper_bound_of_all_successes_is_one():
    # k = n: centre + half is 1 exactly, but rounds to 1 ± 2⁻⁵² for some n (1 + 2⁻⁵² at 16 of
    # 16): the bound is never above 1.
    for n in range(1, 80):
        assert 1.0 - 1e-15 <= st.wilson_interval(n, n).high <= 1.0, n
    assert st.wilson_interval(16, 16).high == 1.0


def test_odd_length_median_and_large_integers():
    assert st.median_with_inf([5.0, 1.0, 4.0, 2.0, 3.0]) == 3.0  # the middle of five
    assert st.median_with_inf([5.0, math.inf, 4.0, math.inf, 3.0]) == 5.0
    # integers are taken as floats: the mean of two 2⁶² is not an int64 overflow
    assert st.median_with_inf([2**62, 2**62]) == 2.0**62


def test_paired_difference_without_pairs_or_with_one():
    for a, b in (([], []), ([math.nan], [1.0]), ([1.0, 2.0], [math.inf, math.nan])):
        p = st.paired_difference(a, b)
        assert p.n == 0
        assert all(math.isnan(v) for v in (p.mean_diff, p.low, p.high, p.p_value, p.sd))
    one = st.paired_difference([1.0, math.nan], [0.25, 2.0])
    assert (one.n, one.mean_diff) == (1, 0.75)
    assert all(math.isnan(v) for v in (one.low, one.high, one.p_value, one.sd))


def test_paired_difference_no_spread_threshold_is_relative_to_the_mean():
    # A deterministic difference of 1e12 (a FLOP count) that float rounding moves by its last
    # bit (2⁻¹³ at 1e12, an sd of 7e-5, i.e. 7e-17 of it) has no spread: decided with p = 0.
    big = st.paired_difference([1e12, 1e12 + 2.0**-13, 1e12], [0.0, 0.0, 0.0])
    assert (big.n, big.sd, big.p_value) == (3, 0.0, 0.0)
    assert big.low == big.high == big.mean_diff
    # The threshold itself counts as no spread: an sd of exactly 1e-12 around a mean of 0.
    edge = st.paired_difference([-1e-12, 0.0, 1e-12], [0.0, 0.0, 0.0])
    assert float(np.std([-1e-12, 0.0, 1e-12], ddof=1)) == 1e-12
    assert (edge.low, edge.high, edge.p_value, edge.sd) == (0.0, 0.0, 1.0, 0.0)
    # Around a mean of 1 the threshold is 1e-12 itself: an sd of 1.6e-12 is a spread.
    eps = 2.0**-40  # 9.1e-13
    d = np.array([1.0, 1.0 + 2 * eps, 1.0 + 4 * eps])
    small = st.paired_difference(d, np.zeros(3))
    assert small.sd == pytest.approx(2 * eps, rel=1e-3) and small.sd > 1e-12
    assert small.low < small.mean_diff < small.high and small.p_value < 1e-9


def test_count_spikes_at_the_ends_of_a_series_and_with_skewed_noise():
    # A spike at the first step of a series at a level of 100: its window is truncated, not
    # padded with zeros (which would make the level and spread there wrong).
    x = 100 + np.random.default_rng(2).normal(0, 1, 40)
    x[0] += 10
    x[-1] += 10
    assert st.count_spikes(x) == _spikes_by_hand(list(x)) == st.count_spikes(x - 100) == 1
    # Exponential noise: the residuals' median is not 0, so their MAD is taken about it.
    y = np.random.default_rng(216).exponential(1.0, 40)
    assert st.count_spikes(y) == _spikes_by_hand(list(y)) == 2
    # "more than k spreads": a value exactly k spreads above its level is no spike
    k = 99 / 1.4826
    assert k * 1.4826 == 99  # level 1, spread 1.4826 · 1 (test_edges_of_the_descriptive_...)
    assert st.count_spikes([0.0, 1.0, 100.0], k=k) == 0
    assert st.count_spikes([0.0, 1.0, 100.0], k=k * (1 - 1e-12)) == 1


def _two_tails(effect: float, n: int, alpha: float) -> tuple[float, float]:
    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))


def test_power_is_the_sum_of_both_tails():
    # At 2 instances and d = 5 the lower tail is 7e-15 of a power of 0.42: it is still added.
    upper, lower = _two_tails(5.0, 2, 0.05)
    assert 0 < lower < 1e-14 and upper + lower != upper
    assert st.paired_power(5.0, 2) == upper + lower
    # Where scipy's lower tail is NaN and Φ(−nc) < 1e-12 it is negligible: the power is the
    # upper tail (the example of test_power_mde_and_seeds_needed_from_the_noncentral_t).
    upper, lower = _two_tails(8.0, 2, 0.05 / 42)
    assert math.isnan(lower)
    assert st.paired_power(8.0, 2, 0.05 / 42) == upper


def test_power_integral_where_scipy_gives_nan(monkeypatch):
    # Where the noncentral t gives NaN the power is an integral; checked here by switching
    # scipy's tails off, against their values where scipy gives them (rel 1e-10, no absolute
    # tolerance: the integral agrees with them to about 4e-13 relative over a grid of cases).
    cases = [(0.5, 2, 0.001), (40.0, 3, 1e-6), (1.0, 10, 0.05), (0.4, 5, 0.05)]
    expected = [st.paired_power(*c) for c in cases]  # = scipy's tails (test above)
    monkeypatch.setattr(st.stats.nct, "sf", lambda *args: math.nan)
    got = [st.paired_power(*c) for c in cases]
    assert got == pytest.approx(expected, rel=1e-10, abs=0)
    # at no effect the power is P(|T| > crit) of the central t (the level), however small
    for n, alpha in ((2, 1e-6), (100_000, 1e-14)):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        assert st.paired_power(0.0, n, alpha) == pytest.approx(2 * stats.t.sf(crit, n - 1),
                                                               rel=1e-9, abs=0)
    # an effect whose peak is far from 0 (nc = 40·√100000 = 12,649): power 1
    assert st.paired_power(40.0, 100_000) == 1.0
    # and never above 1 (the integral rounds to 1 + 2⁻⁵² here)
    assert st.paired_power(4.0, 100, 1e-6) == 1.0


def test_power_lower_tail_nan_but_not_negligible(monkeypatch):
    # d = 0.4 at 5 instances: the lower tail is 4e-3 of the power; if scipy gave NaN for it, it
    # is not dropped but computed with the rest by the integral.
    expected = st.paired_power(0.4, 5)
    assert _two_tails(0.4, 5, 0.05)[1] > 1e-3
    monkeypatch.setattr(st.stats.nct, "cdf", lambda *args: math.nan)
    assert st.paired_power(0.4, 5) == pytest.approx(expected, rel=1e-10, abs=0)


def test_seeds_needed_is_the_first_n_with_the_power():
    # For each effect and level: the power reaches 80% at the returned n and not at n − 1 (an
    # integer n ≥ 2); α = 0.001 needs more instances than the bracket found at 0.05 (16).
    for effect, alpha in ((1.0, 0.001), (0.5, 0.05), (0.3, 0.01), (0.8, 0.005), (2.0, 0.05),
                          (0.45, 0.05), (0.7, 0.02)):
        n = st.seeds_needed(effect, 1.0, alpha=alpha)
        assert n == int(n) >= 2
        assert st.paired_power(effect, int(n), alpha) >= 0.8 > st.paired_power(
            effect, int(n) - 1, alpha), (effect, alpha)
    assert st.seeds_needed(1.0, 1.0, alpha=0.001) == 23
    # a huge effect: 2 instances are enough (the least with a spread)
    assert st.paired_power(100.0, 2) >= 0.8
    assert st.seeds_needed(100.0, 1.0) == 2.0
    # MAX_SEEDS at the level asked for: 78,491 instances at α = 0.05, more than 100,000 at 1e-4
    assert st.seeds_needed(0.01, 1.0) == 78491
    assert st.seeds_needed(0.01, 1.0, alpha=1e-4) == math.inf


# --- the sign-flip test, its interval, and where they hold their level --------------------------


def test_sign_flip_is_the_studentized_permutation_test_by_brute_force():
    # p: the share of the 2^n sign patterns whose paired t statistic is at least the observed
    # one in size (t itself, not the sum: the two agree because Σ(s·d)² does not change).
    import itertools

    d = np.array([0.9, -0.2, 1.7, 0.4, 1.1, -0.6, 0.8, 2.3, 0.1])
    n = len(d)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    x = signs * d
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    t_obs = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    r = st.paired_sign_flip(d + 3.0, np.full(n, 3.0))
    assert r.p_value == float(np.mean(np.abs(t) >= abs(t_obs) - 1e-9))
    assert (r.n, r.p_min, r.mc_se) == (n, 2 / 2**n, 0.0)
    assert r.test == "sign-flip, exact (512 patterns)"
    # The interval: the shifts δ at which the test of d − δ gives p > 0.05, found on a grid
    # of step 2e-4 (the bounds agree to a step).
    grid = np.arange(r.low - 0.05, r.high + 0.05, 2e-4)
    sums = (d[None, :] - grid[:, None]) @ signs.T
    p_grid = np.mean(np.abs(sums) >= np.abs(sums[:, :1]) - 1e-12, axis=1)
    kept = grid[p_grid > 0.05]
    assert kept.min() == pytest.approx(r.low, abs=2.5e-4)
    assert kept.max() == pytest.approx(r.high, abs=2.5e-4)
    assert r.low < d.mean() < r.high
    # too few pairs for any pattern set to reach 5%: an unbounded interval, p no lower than 1/16
    five = st.paired_sign_flip(d[:5], np.zeros(5))
    assert (five.low, five.high, five.p_min) == (-math.inf, math.inf, 1 / 16)
    assert five.p_value >= 1 / 16


def test_sign_flip_monte_carlo_beyond_20_pairs():
    rng = np.random.default_rng(8)
    d = rng.normal(0.4, 1.0, 30)
    r = st.paired_sign_flip(d, np.zeros(30))
    assert r.test == f"sign-flip, Monte Carlo ({st.SIGN_FLIP_DRAWS:,} patterns)"
    assert r.p_min == 1 / (st.SIGN_FLIP_DRAWS + 1)
    assert r.mc_se == pytest.approx(math.sqrt(r.p_value * (1 - r.p_value) / st.SIGN_FLIP_DRAWS))
    # the seed comes from the data: the same differences give the same p-value and interval
    again = st.paired_sign_flip(list(d), [0.0] * 30)
    assert (again.p_value, again.low, again.high) == (r.p_value, r.low, r.high)
    # Monte Carlo against the exact enumeration at 16 pairs: within 4 standard errors
    e = d[:16]
    exact = st.sign_flip_rows(e)
    mc = st.sign_flip_rows(e, draws=st.SIGN_FLIP_DRAWS, seed=3)
    se = math.sqrt(exact[0][0] * (1 - exact[0][0]) / st.SIGN_FLIP_DRAWS)
    assert abs(mc[0][0] - exact[0][0]) <= 4 * se
    assert abs(mc[1][0] - exact[1][0]) < 0.02 and abs(mc[2][0] - exact[2][0]) < 0.02


def test_undecidable_where_the_smallest_p_cannot_pass_the_holm_step():
    # m = 3 at α = 0.05: steps 0.05/3, 0.05/2, 0.05. A floor of 0.02 passes the third and
    # second steps (0.04 < 0.05) but not the first (0.06 ≥ 0.05).
    assert st.undecidable([0.001, 0.3, 0.6], [0.02, 0.02, 0.02]) == [True, False, False]
    assert st.undecidable([0.5, math.nan], [1 / 16, 1 / 16], alpha=0.05) == [True, False]
    assert st.sign_flip_min_p(5) == 1 / 16 and st.sign_flip_min_p(10) == 2 / 1024


def _zoo_differences() -> list[np.ndarray]:
    """The committed zoo's per-instance score differences of every pair of configurations on a
    task (gap closure on the bandit and token tasks of ``reports/zoo``, gold gain in units of
    π_ref's gold sd on tiny-lm, ``reports/zoo-lm``), each centred and scaled to sd 1: 91 pairs
    per task, of 30 instances on the exact tasks and 10 on tiny-lm."""
    import itertools
    from pathlib import Path

    import pandas as pd

    out = []
    for name in ("zoo", "zoo-lm"):
        runs = pd.read_csv(Path(__file__).parents[1] / "reports" / name / "tables" / "runs.csv")
        runs = runs[runs["status"].isin(["done", "diverged"])]
        for column in ("initial_regret", "final_regret"):  # none where no optimum is known
            if column not in runs:
                runs = runs.assign(**{column: np.nan})
        known = runs["initial_regret"].gt(0) & runs["final_regret"].notna()
        gain = (runs["final_gold_reward"] - runs["initial_gold_reward"]) \
            / runs["initial_gold_reward_sd"]
        runs = runs.assign(score=(1 - runs["final_regret"] / runs["initial_regret"])
                           .where(known, gain))
        inst = runs.groupby(["task", "label", "seed"])["score"].mean()
        for task in inst.index.get_level_values(0).unique():
            t = inst.loc[task].unstack("seed")
            for a, b in itertools.combinations(t.index, 2):
                d = (t.loc[a] - t.loc[b]).dropna().to_numpy()
                if len(d) > 2 and d.std() > 1e-9:
                    out.append((d - d.mean()) / d.std(ddof=1))
    return out


LEVEL = 0.005
"""α/m of a family of 10 tests: the level the simulations check (families of 10 to 60 tests
decide at 1e-3 to 5e-3)."""
NULL_DRAWS = 20_000
"""Data sets per case: at a true rate of 0.005 the count of false decisions is 100 ± 10, so a
rate within the nominal one stays below the 1.5× bound (150) by 5 sd."""


def _null_differences(dist: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``NULL_DRAWS`` data sets of n differences of mean 0."""
    size = (NULL_DRAWS, n)
    if dist == "normal":
        return rng.normal(0.0, 1.0, size)
    if dist == "t3":
        return rng.standard_t(3, size)
    if dist == "lognormal":  # σ = 1, centred: skewness 6.2
        return rng.lognormal(0.0, 1.0, size) - math.exp(0.5)
    zoo = _zoo_differences()
    if dist == "zoo":  # one zoo pair per data set, its centred differences resampled
        lengths = np.array([len(z) for z in zoo])
        padded = np.zeros((len(zoo), lengths.max()))
        for i, z in enumerate(zoo):
            padded[i, :len(z)] = z
        pick = rng.integers(0, len(zoo), NULL_DRAWS)
        within = (rng.random(size) * lengths[pick][:, None]).astype(int)
        return padded[pick[:, None], within]
    # "zoo pooled": every pair's standardised differences
    return rng.choice(np.concatenate(zoo), size)


def _null_sign_flip(dist: str, n: int, seed: int, *, interval: bool = True):
    """The sign-flip test on null data sets of ``n`` pairs: the differences, the p-values, the
    intervals' bounds and which data sets the report does not refuse as skewed. Beyond 20 pairs
    2,000 Monte Carlo patterns instead of 50,000: a Monte Carlo permutation test holds its
    level at any number of draws."""
    d = _null_differences(dist, n, np.random.default_rng(seed))
    p, low, high = st.sign_flip_rows(d, draws=None if n <= st.SIGN_FLIP_EXACT_MAX else 2000,
                                     seed=seed, interval=interval)
    return d, p, low, high, stats.skewtest(d, axis=1).pvalue >= st.SKEW_LEVEL


def _null_rates(dist: str, n: int, seed: int) -> dict[str, float]:
    """The sign-flip test at ``n`` pairs under the null: the false-decision rate at
    :data:`LEVEL` without and with the report's refusal of skewed differences, the rate of
    printed intervals (not refused) that miss 0, and the coverage among printed intervals."""
    d, p, low, high, printed = _null_sign_flip(dist, n, seed)
    covers = (low <= 0) & (0 <= high)
    return {"raw": float(np.mean(p < LEVEL)), "guarded": float(np.mean((p < LEVEL) & printed)),
            "miss": float(np.mean(printed & ~covers)), "coverage": float(np.mean(covers)),
            "printed_coverage": float(np.mean(covers[printed])),
            "t": float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < LEVEL))}


HOLDING = [("normal", 10), ("normal", 30), ("t3", 10), ("t3", 30), ("lognormal", 30),
           ("zoo", 10), ("zoo", 30), ("zoo pooled", 10), ("zoo pooled", 30)]
"""Resampled pairs of the committed zoo (bandit and token at 30 instances, tiny-lm at 10) hold
the level at 10 pairs too: 1.0–1.1× of it over seeds 15–17. The zoo of 5–10 instances per task
that came before, with more ties, gave 1.5–1.8×."""


@pytest.mark.parametrize(("dist", "n"), HOLDING)
def test_sign_flip_holds_its_level_and_coverage(dist, n):
    # False decisions at α/m = 0.005 within 1.5× of it, and a printed 95% interval misses the
    # true difference (0) in at most 7% of data sets (skewed data sets print none and decide
    # nothing: the report refuses them).
    r = _null_rates(dist, n, seed=100 + n + len(dist))
    assert r["guarded"] <= 1.5 * LEVEL, r
    assert r["miss"] <= 0.07, r
    if dist in ("normal", "t3"):  # symmetric: exact without the refusal too
        assert r["raw"] <= 1.5 * LEVEL and r["coverage"] >= 0.93, r


def test_the_level_check_fails_tests_that_lean_on_symmetry_or_normality():
    # Log-normal (σ = 1) differences of mean 0 at 30 pairs: without the refusal of skewed
    # differences the sign-flip test decides about 10× too often, and so does the t-test; the
    # coverage of the unrefused interval is about 0.88. The refusal is what holds the level.
    r = _null_rates("lognormal", 30, seed=7)
    assert r["raw"] > 5 * LEVEL and r["t"] > 5 * LEVEL and r["coverage"] < 0.9
    assert r["guarded"] <= 1.5 * LEVEL


def test_skewed_differences_at_10_pairs_are_beyond_the_level():
    # Where the level does not hold, said so here and in the method text: at 10 pairs the
    # log-normal data sets that decide falsely look unskewed (they lack their rare large
    # values), so refusing skewed ones does not bring the rate within 1.5×: about 6× (the
    # check fails it).
    r = _null_rates("lognormal", 10, seed=20)
    assert r["guarded"] > 4 * LEVEL, r


def test_how_far_into_the_tail_the_refusal_keeps_the_level():
    # The method text's figures: at 30 pairs refusing skewed log-normal differences keeps the
    # level down to α/m ≈ 0.002 (1.25-1.45× over seeds 7-9), not at 0.001 (2.0-2.4×: the first
    # Holm steps of a family of hundreds); at 10 pairs at no level (about 1.9× even at 0.05).
    def guarded(n: int) -> Callable[[float], float]:  # false decisions over α, by α
        _, p, _, _, printed = _null_sign_flip("lognormal", n, seed=8, interval=False)
        return lambda alpha: float(np.mean((p < alpha) & printed)) / alpha

    at_30 = guarded(30)
    assert at_30(0.002) <= 1.5
    assert at_30(0.001) > 1.8
    assert guarded(10)(0.05) > 1.5


def test_instances_needed_keep_their_promise():
    # A true effect of 1.2 sd at α = 0.01: the sign-flip test (exact) reaches 80% power at
    # N_true = 12 instances, found here by simulation (2,000 data sets each: ±0.009; 0.73 at
    # 11, 0.82 at 12). From pilots of 10 instances, the stated number is at least N_true in at
    # least 90% of pilots (about 97%; ±0.017 at 300 pilots), as its 90% confidence promises;
    # the plug-in figure falls short in about half of them.
    rng = np.random.default_rng(12)
    alpha, effect = 0.01, 1.2
    power = {}
    for n in range(9, 14):
        d = rng.normal(effect, 1.0, (2000, n))
        power[n] = float(np.mean(st.sign_flip_rows(d, seed=n, interval=False)[0] < alpha))
    n_true = min(n for n, pw in power.items() if pw >= 0.8)
    assert power[n_true - 1] < 0.8 and 10 <= n_true <= 13, power
    pilots = rng.normal(effect, 1.0, (300, 10))
    stated = np.array([st.seeds_needed_upper(x.mean(), x.std(ddof=1), 10, alpha=alpha)
                       for x in pilots])
    plug_in = np.array([st.seeds_needed(x.mean(), x.std(ddof=1), alpha=alpha) for x in pilots])
    assert np.mean(stated >= n_true) >= 0.9
    assert np.mean(plug_in >= n_true) < 0.7


def test_effect_lower_bound_is_a_noncentral_t_quantile():
    # At the bound the observed t is the 90% quantile of the noncentral t; a bound of 0 when
    # the central t already puts it below.
    lb = st.effect_lower_bound(1.0, 1.0, 10)
    t_obs = 1.0 * math.sqrt(10)
    assert stats.nct.cdf(t_obs, 9, lb * math.sqrt(10)) == pytest.approx(0.9, abs=1e-8)
    assert 0 < lb < 1.0
    assert st.effect_lower_bound(0.1, 1.0, 10) == 0.0
    assert st.seeds_needed_upper(0.1, 1.0, 10) == math.inf
    # the bound is never below the sign-flip floor: at α = 1e-3, 2/2^n < 1e-3 needs n ≥ 11
    assert st.seeds_needed_upper(50.0, 1.0, 10, alpha=1e-3) >= 11
    assert st.sign_flip_seeds(1.0, alpha=0.005) >= st.seeds_needed(1.0, 1.0, alpha=0.005)
