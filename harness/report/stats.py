"""The statistics of reports: closed-form intervals that hold their level at a handful of
instances, paired comparisons, Holm's adjustment, power.

Every interval a report prints is one of these, and each is checked by simulation in
``tests/test_report_stats.py`` (coverage ≥ 0.93 at nominal 0.95 for n = 5 and 10, normal and
log-normal data):

- **Means and mean differences**: Student t (:func:`t_interval`, :func:`paired_difference`). The
  percentile bootstrap of a mean covers about 84% at n = 5 and is not used.
- **Standard deviations**: Bonett's (2006) interval (:func:`std_interval`), which estimates the
  kurtosis; the chi-square interval is exact for normal data only.
- **Rates**: Clopper-Pearson (:func:`rate_interval`), at least nominal for every rate.
- **Paired comparisons** (:func:`paired_sign_flip`): the sign-flip permutation test on
  per-instance differences, exact over all 2^n sign patterns up to n = 20, Monte Carlo beyond
  (50,000 patterns, seed from the data, its standard error stated), and the 95% interval that
  inverts it. Why this and not the paired t-test or a bootstrap: decisions are taken at α/m
  (1e-3 to 5e-3 for families of 10 to 60 tests), far in the tail, where the t-test leans on
  normality; the sign-flip test is exact at every n for any distribution symmetric about 0 (a
  and b exchangeable within an instance), heavy-tailed ones included, and its interval covers
  at least 95% there, whereas a bootstrap-t test errs 1.8× too often at α = 0.005 on t₃ data
  at n = 30 and its interval covers 92%, and the percentile bootstrap covers about 90% at 10
  instances. No test of a mean holds its level for strongly skewed differences of mean 0 at
  these n (log-normal σ = 1: the sign-flip test rejects 8-10× too often at α = 0.005 at
  n = 10 and 30, the t-test 10-15×, the bootstrap-t 2.5-5×): the report refuses to
  decide where ``scipy.stats.skewtest`` finds the differences skewed (:data:`SKEW_LEVEL`),
  which keeps the level at n = 30 for α/m down to about 0.002 (1.3-1.4× of it there, 2.2×
  at 0.001, so not for the first Holm steps of a family of hundreds) and at no level at
  n = 10 (1.9× at 0.05; ``tests/test_report_stats.py``). The
  p-values of a family are Holm-adjusted (:func:`holm`, step-down); where even the test's
  smallest p-value would not pass a comparison's Holm step it is undecidable at its n
  (:func:`undecidable`). Power and minimum detectable difference from the noncentral t
  (:func:`paired_power`, :func:`minimum_detectable`); instances needed as an upper confidence
  bound (:func:`seeds_needed_upper`) rather than the plug-in :func:`seeds_needed`. The paired
  t-test (:func:`paired_difference`) stays for the frontier tables.

Descriptive statistics without an interval: the **IQM** (interquartile mean,
``scipy.stats.trim_mean(x, 0.25)``) and the **probability of improvement** P(X > Y) (rliable's
definitions, Agarwal et al. 2021, re-implemented on scipy because rliable does not import beside
pandas 3).

**One module, over 600 lines, on purpose.** It is the reference of every statistic a report
prints, and the simulations of ``tests/test_report_stats.py`` check them side by side.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MAD_TO_SD = 1.4826
"""1/Φ⁻¹(3/4): the median absolute deviation times this estimates a normal sd."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (NaN bounds when none can be given)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def clipped(self, low: float = -math.inf, high: float = math.inf) -> Estimate:
        """The estimate with its interval's bounds clipped to ``[low, high]``, the range the
        quantity can take: a t interval of a mean of values ≥ 0 (a KL, memory, seconds) reaches
        below 0 when they spread widely, and the clipped interval still holds every possible
        mean it held."""
        return Estimate(self.value, _clip(self.low, low, high), _clip(self.high, low, high))

    def format(self, digits: int = 3) -> str:
        """``1.23 [1.1, 1.35]`` (significant digits), ``n/a`` for a missing value."""
        if not math.isfinite(self.value):
            return "n/a" if math.isnan(self.value) else _fmt(self.value, digits)
        if not self.has_interval:
            return _fmt(self.value, digits)
        return f"{_fmt(self.value, digits)} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"


def _clip(x: float, low: float, high: float) -> float:
    return x if math.isnan(x) else min(max(x, low), high)


NONNEGATIVE = frozenset({
    "kl_ref", "regret", "target_regret", "entropy", "response_length", "replicate_std",
    "train_cpu_seconds", "train_seconds", "flops", "model_state_mb", "peak_above_baseline_mb",
    "models_resident", "drawdown", "samples",
    # counted work (harness/report/data.py, ``_counted_work``) and the load average
    "samples_generated", "samples_from_data", "load_mean", "load_max",
    *(f"{kind}_{role}" for kind in ("forward", "backward", "flops")
      for role in ("policy", "reference", "reward", "critic", "other")),
})
"""Quantities that cannot be negative (the report clips their intervals at 0)."""
UNIT_INTERVAL = frozenset({"win_rate_ref", "divergence_rate", "failure_rate"})
"""Quantities in [0, 1]."""


def quantity_range(name: str) -> tuple[float, float]:
    """The range a reported quantity can take (``final_`` or ``seconds_`` prefixes aside):
    ``[0, ∞)``, ``[0, 1]``, or the whole line when nothing bounds it (a reward, a score)."""
    base = name.removeprefix("final_")
    if base in UNIT_INTERVAL:
        return 0.0, 1.0
    if base in NONNEGATIVE or base.startswith(("seconds_", "cpu_seconds_")):
        return 0.0, math.inf
    return -math.inf, math.inf


def _fmt(x: float, digits: int) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def iqm(x: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean: ``scipy.stats.trim_mean(x, 0.25)`` of the finite values."""
    a = _clean(x)
    return float(stats.trim_mean(a, 0.25)) if len(a) else math.nan


def probability_of_improvement(
    x_by_task: Sequence[Sequence[float] | np.ndarray],
    y_by_task: Sequence[Sequence[float] | np.ndarray],
) -> float:
    """P(X > Y), rliable's definition: the mean over tasks of Mann-Whitney U / (n·m)."""
    values = []
    for x, y in zip(x_by_task, y_by_task, strict=True):
        xa, ya = _clean(x), _clean(y)
        if len(xa) == 0 or len(ya) == 0:
            return math.nan
        u = stats.mannwhitneyu(xa, ya, alternative="greater").statistic
        values.append(float(u) / (len(xa) * len(ya)))
    return float(np.mean(values)) if values else math.nan


def t_interval(x: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The mean with its Student-t interval (near-nominal coverage at 5 values, where the
    percentile bootstrap of a mean covers about 84%)."""
    a = _clean(x)
    if len(a) == 0:
        return Estimate(math.nan)
    m = float(a.mean())
    if len(a) < 2:
        return Estimate(m)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return Estimate(m, m - half, m + half)


def std_interval(x: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The sample standard deviation with Bonett's (2006) interval; none below 5 values.

    The chi-square interval s·√((n−1)/χ²) is exact only for normal data: on log-normal data
    (σ = 0.25) it covers about 91% at n = 10, less as n grows, because it ignores the kurtosis.
    Bonett's interval for σ² (Comput. Stat. Data Anal. 50, 775–782) estimates the kurtosis γ̂₄
    from the data (deviations from a trimmed mean, trim 1/(2√(n − 4))) and uses

        exp(ln(c·s²) ± z·c·√((γ̂₄ − (n − 3)/n)/(n − 1))),  c = n/(n − z),

    whose square root is returned. At n = 5 it is wide (about 12× from end to end for normal
    data): that is the honest width of a spread measured from five values.
    """
    a = _clean(x)
    if len(a) < 2:
        return Estimate(math.nan)
    s = float(a.std(ddof=1))
    n = len(a)
    if n < 5 or s == 0:
        return Estimate(s, *((0.0, 0.0) if s == 0 and n >= 5 else (math.nan, math.nan)))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    c = n / (n - z)
    centre = float(stats.trim_mean(a, 1 / (2 * math.sqrt(n - 4))))
    kurt = n * float(((a - centre) ** 4).sum()) / float(((a - a.mean()) ** 2).sum()) ** 2
    se = c * math.sqrt(max(kurt - (n - 3) / n, 0.0) / (n - 1))
    log_var = math.log(c * s * s)
    return Estimate(s, math.exp((log_var - z * se) / 2), math.exp((log_var + z * se) / 2))


def chi2_std_interval(x: Sequence[float] | np.ndarray,
                      confidence: float = CONFIDENCE) -> Estimate:
    """The sample std with the chi-square interval s·√((n−1)/χ²_{1−α/2}), s·√((n−1)/χ²_{α/2}):
    exact for normal data only (see :func:`std_interval`)."""
    a = _clean(x)
    if len(a) < 2:
        return Estimate(math.nan)
    s, df = float(a.std(ddof=1)), len(a) - 1
    alpha = 1 - confidence
    low = s * math.sqrt(df / stats.chi2.ppf(1 - alpha / 2, df))
    high = s * math.sqrt(df / stats.chi2.ppf(alpha / 2, df))
    return Estimate(s, low, high)


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The rate k/n with its Wilson score interval (NaN when n = 0)."""
    if n <= 0:
        return Estimate(math.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The rate k/n with its Clopper-Pearson ("exact") interval (NaN when n = 0).

    Its coverage is at least the nominal level for every true rate and every n (it inverts two
    one-sided binomial tests); the Wilson interval's dips below it (to about 0.83 at n = 5 for
    some rates), which is why reports use this one.
    """
    if n <= 0:
        return Estimate(math.nan)
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence,
                                                        method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high))


# --- paired comparisons -----------------------------------------------------------------------

POWER = 0.8
ALPHA = 0.05
A_BETTER = "a better"
B_BETTER = "b better"
UNDECIDED = "undecided"


@dataclass(frozen=True)
class Paired:
    """A paired comparison of a and b on the instances both have (differences a − b)."""

    n: int
    mean_diff: float
    low: float
    high: float
    p_value: float
    sd: float
    """The standard deviation of the per-instance differences."""


def _differences(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """The per-instance differences a_i − b_i of aligned samples, pairs with a non-finite member
    dropped."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep] - y[keep]


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = CONFIDENCE) -> Paired:
    """The mean of the differences a_i − b_i with its Student-t interval and two-sided p-value.

    ``a`` and ``b`` are aligned per instance; pairs with a non-finite member are dropped. With
    fewer than two pairs there is no interval and no p-value (NaN). When every difference is the
    same (a deterministic quantity such as a FLOP count), the interval is that value and the
    p-value is 1 when it is 0, else 0.
    """
    d = _differences(a, b)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return Paired(n, mean, mean, mean, 1.0 if mean == 0 else 0.0, 0.0)
    est = t_interval(d, confidence)
    p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return Paired(n, mean, est.low, est.high, p, sd)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values.

    Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1)·p_(j)) (1-based), m the
    number of finite p-values; NaN stays NaN. Rejecting where the adjusted value is < α keeps
    the family-wise error rate at α under any dependence.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


def decide(mean_diff: float, p_adjusted: float, *, higher_is_better: bool,
           alpha: float = ALPHA) -> str:
    """``a better`` / ``b better`` when the Holm-adjusted p-value is below ``alpha``."""
    if not (math.isfinite(p_adjusted) and p_adjusted < alpha and mean_diff != 0):
        return UNDECIDED
    return A_BETTER if (mean_diff > 0) == higher_is_better else B_BETTER


def paired_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs when the true
    mean difference is ``effect`` standard deviations of the differences (noncentral t)."""
    if n < 2:
        return math.nan
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = abs(effect) * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, nc))
    lower = float(stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(lower) and stats.norm.cdf(-nc) < 1e-12:
        lower = 0.0  # P(T < −crit) ≤ P(T < 0) = Φ(−nc): negligible where scipy gives NaN
    if math.isfinite(upper) and math.isfinite(lower):
        return min(max(upper + lower, 0.0), 1.0)
    # scipy's nct can give NaN far in its tails (tiny α at 1-2 df): the same power as an
    # integral over U = Z + nc, the numerator of T = U/(W/√df) (W chi-distributed with df
    # degrees of freedom): |T| > crit where W < |U|·√df/crit, so the power is
    # ∫_0^∞ [φ(u − nc) + φ(u + nc)] F_χ(u·√df/crit) du. The integrand is smooth (over W the mass
    # sits in a spike near 0 when crit is large, which quadrature steps over), and the tolerance
    # is relative only: a power far below quad's default absolute tolerance (1.5e-8) is common.
    # The integrand is written with math.exp and the regularised incomplete gamma function
    # (F_χ(w; df) = P(df/2, w²/2)) rather than scipy.stats' frozen-distribution calls: the same
    # values to rounding, about 100 times faster, which matters because a report evaluates it in
    # a bisection over n for thousands of rows (benchmarks/bench_power.py).
    from scipy.integrate import quad
    from scipy.special import gammainc

    slope = math.sqrt(df) / crit
    half_df = df / 2
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def integrand(u: float) -> float:
        density = (math.exp(-0.5 * (u - nc) ** 2) + math.exp(-0.5 * (u + nc) ** 2)) * inv_sqrt_2pi
        return density * float(gammainc(half_df, 0.5 * (slope * u) ** 2))

    # Split at the peak of φ(u − nc), which is below 1e-300 more than 40 from it.
    opts = {"epsabs": 0.0, "epsrel": 1e-12}
    total = quad(integrand, 0.0, nc, **opts)[0] + quad(integrand, nc, nc + 40.0, **opts)[0]
    return min(max(float(total), 0.0), 1.0)


def minimum_detectable(sd: float, n: int, *, alpha: float = ALPHA,
                       power: float = POWER) -> float:
    """The smallest true mean difference the paired t-test on ``n`` instances detects with
    probability ``power`` at two-sided level ``alpha``, taking ``sd`` as the differences' sd."""
    from scipy.optimize import brentq

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = 1.0
    while paired_power(hi, n, alpha) < power:
        hi *= 2
    return sd * float(brentq(lambda e: paired_power(e, n, alpha) - power, 0.0, hi, xtol=1e-10))


MAX_SEEDS = 100_000


def seeds_needed(mean_diff: float, sd: float, *, alpha: float = ALPHA,
                 power: float = POWER) -> float:
    """The fewest instances at which the paired t-test detects a true difference ``mean_diff``
    (differences' sd ``sd``) with probability ``power`` at two-sided level ``alpha``.

    ``inf`` when the difference is 0 or more than :data:`MAX_SEEDS` instances would be needed;
    NaN when ``sd`` is unknown.
    """
    if not (math.isfinite(sd) and math.isfinite(mean_diff)):
        return math.nan
    if mean_diff == 0:
        return math.inf
    if sd == 0:
        return 2.0
    effect = abs(mean_diff) / sd
    if paired_power(effect, MAX_SEEDS, alpha) < power:
        return math.inf
    lo, hi = 2, 2
    while paired_power(effect, hi, alpha) < power:
        lo, hi = hi, hi * 2
    while lo < hi:  # the power rises with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        if paired_power(effect, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


# --- paired comparisons that do not lean on normality -------------------------------------------

SIGN_FLIP_EXACT_MAX = 20
"""Up to this many pairs every one of the 2^n sign patterns is enumerated (2^20 ≈ 10^6)."""
SIGN_FLIP_DRAWS = 50_000
"""Random sign patterns beyond :data:`SIGN_FLIP_EXACT_MAX` (the p-value's floor is then
1/(draws + 1) = 2e-5, below α/m of a family of 2,000 tests)."""
SKEW_LEVEL = 0.1
"""The level of the skewness test (``scipy.stats.skewtest``) below which the differences count
as too skewed for the sign-flip test to hold its level: the report refuses to decide there."""
NEEDED_CONFIDENCE = 0.9
"""``seeds_needed`` is a one-sided upper confidence bound at this level (see
:func:`seeds_needed_upper`)."""
UNDECIDABLE = "undecidable"
"""No decision possible at this n: the smallest p-value the test can give does not pass the
comparison's Holm step, or the differences are too skewed for the test's level to hold."""


@dataclass(frozen=True)
class SignFlip:
    """A paired comparison by the sign-flip permutation test (differences a − b)."""

    n: int
    mean_diff: float
    low: float
    high: float
    """The 95% interval: the shifts δ the sign-flip test of the differences − δ does not
    reject (±∞ below 6 pairs, where no sign pattern set is fine enough)."""
    p_value: float
    p_min: float
    """The smallest p-value the test can give at this n (2/2^n exact, 1/(draws + 1) sampled)."""
    mc_se: float
    """The Monte Carlo standard error of ``p_value`` (0 when every pattern was enumerated)."""
    skew_p: float
    """``scipy.stats.skewtest``'s p-value for the differences (NaN below 8 pairs)."""
    sd: float
    test: str

    @property
    def skewed(self) -> bool:
        """The differences are too skewed for the test's level to hold (:data:`SKEW_LEVEL`)."""
        return math.isfinite(self.skew_p) and self.skew_p < SKEW_LEVEL


def sign_flip_min_p(n: int) -> float:
    """The smallest p-value :func:`paired_sign_flip` can give at ``n`` pairs."""
    if n < 1:
        return math.nan
    return 2.0 / 2.0**n if n <= SIGN_FLIP_EXACT_MAX else 1.0 / (SIGN_FLIP_DRAWS + 1)


def _patterns(n: int, draws: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The sign patterns as 0/1 flips, one row each, and the count of the observed pattern
    added on top (0 when all 2^n are enumerated: the identity is among them; 1 when sampled)."""
    if draws is None:
        codes = np.arange(2**n, dtype=np.int64)[:, None]
        return ((codes >> np.arange(n)) & 1).astype(np.int8), 0
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(draws, n), dtype=np.int8), 1


def sign_flip_rows(d: np.ndarray, *, draws: int | None = None, seed: int = 0,
                   confidence: float = CONFIDENCE,
                   interval: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sign-flip p-values and intervals of each row of ``d`` (data sets of n differences,
    all finite), the same sign patterns for every row: all 2^n when ``draws`` is None, else
    ``draws`` random ones (from ``seed``) plus the observed one. Returns (p, low, high), each
    of length ``len(d)`` (the bounds ±∞ with ``interval=False``). This is the computation of
    :func:`paired_sign_flip`, batched for simulations and benchmarks.

    p: the share of patterns s with |Σ s_i·d_i| ≥ |Σ d_i|. Interval: the shifts δ whose test of
    d − δ gives p > 1 − ``confidence``; a pattern with a flipped and an unflipped part counts at
    δ exactly when δ lies between the mean of its flipped and the mean of its unflipped
    differences (Hartigan 1969), the others (identity, all flipped) at every δ, so each bound is
    an order statistic of those subset means (±∞ when too few patterns exist).
    """
    d = np.atleast_2d(np.asarray(d, dtype=float))
    rows, n = d.shape
    flips, extra = _patterns(n, draws, seed)
    k = flips.sum(axis=1, dtype=np.int64)
    split = (k > 0) & (k < n)
    size = len(flips) + extra
    always = size - int(split.sum())
    need = math.floor((1 - confidence) * size) - always  # 0-based order statistic
    fl = flips[split].astype(float).T  # [n, patterns]
    ks = k[split].astype(float)
    p = np.empty(rows)
    low, high = np.full(rows, -math.inf), np.full(rows, math.inf)
    chunk = max(1, 2**22 // max(len(flips), 1))
    for start in range(0, rows, chunk):
        x = d[start:start + chunk]
        total = x.sum(axis=1)
        tol = 1e-12 * np.abs(x).sum(axis=1)
        flipped_sum = x @ fl  # Σ over the flipped part
        sums = total[:, None] - 2.0 * flipped_sum
        hits = (np.abs(sums) >= (np.abs(total) - tol)[:, None]).sum(axis=1)
        p[start:start + chunk] = (hits + always) / size  # identity and all-flipped: |Σ| = |Σ|
        if interval and 0 <= need < len(ks):
            mean_f = flipped_sum / ks
            mean_u = (total[:, None] - flipped_sum) / (n - ks)
            lo = np.minimum(mean_f, mean_u)
            hi = np.maximum(mean_f, mean_u)
            low[start:start + chunk] = np.partition(lo, need, axis=1)[:, need]
            high[start:start + chunk] = -np.partition(-hi, need, axis=1)[:, need]
    return p, low, high


def _data_seed(d: np.ndarray) -> int:
    """A seed fixed by the differences themselves (a report built twice draws the same)."""
    return zlib.crc32(np.ascontiguousarray(d, dtype=np.float64).tobytes())


def paired_sign_flip(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                     confidence: float = CONFIDENCE) -> SignFlip:
    """The mean of the differences a_i − b_i with the sign-flip permutation test and the
    interval that inverts it (pairs with a non-finite member dropped).

    Statistic: the paired t statistic. Since Σ(s_i·d_i)² = Σd_i² for every sign pattern s, t is
    a monotone function of |Σ s_i·d_i|, so the studentized test and the test on the sum give
    the same p-value: the share of patterns with |Σ s_i·d_i| ≥ |Σ d_i|, over all 2^n of them up
    to :data:`SIGN_FLIP_EXACT_MAX` pairs, else over :data:`SIGN_FLIP_DRAWS` random patterns plus
    the observed one (seed from the data; Monte Carlo standard error returned). Exact at every
    n whenever the differences are symmetric about 0 (a and b exchangeable within an instance),
    whatever their distribution. Interval: see :func:`sign_flip_rows`. Differences all equal:
    the interval is that value, p = 1 when it is 0, else 0 (no test).
    """
    d = _differences(a, b)
    n = len(d)
    nan = math.nan
    if n < 2:
        mean = float(d.mean()) if n else nan
        return SignFlip(n, mean, nan, nan, nan, nan, nan, nan, nan, "none")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return SignFlip(n, mean, mean, mean, 1.0 if mean == 0 else 0.0, 0.0, 0.0, nan, 0.0,
                        "exact (no spread)")
    exact = n <= SIGN_FLIP_EXACT_MAX
    draws = None if exact else SIGN_FLIP_DRAWS
    p, low, high = sign_flip_rows(d, draws=draws, seed=_data_seed(d), confidence=confidence)
    pv = float(p[0])
    if exact:
        mc_se, test = 0.0, f"sign-flip, exact ({2**n:,} patterns)"
    else:
        mc_se = math.sqrt(pv * (1 - pv) / SIGN_FLIP_DRAWS)
        test = f"sign-flip, Monte Carlo ({SIGN_FLIP_DRAWS:,} patterns)"
    skew_p = float(stats.skewtest(d).pvalue) if n >= 8 else nan
    return SignFlip(n, mean, float(low[0]), float(high[0]), pv, sign_flip_min_p(n), mc_se,
                    skew_p, sd, test)


def undecidable(p_values: Sequence[float], p_min: Sequence[float],
                alpha: float = ALPHA) -> list[bool]:
    """Per test of a Holm family: True where even the smallest p-value the test can give at
    its n would not pass the Holm step at the test's rank, (m − rank)·p_min ≥ ``alpha`` (rank
    0-based in the ascending order of ``p_values``; NaN p-values are no test and False).

    A smaller p would move the test up the order, to a step with a stricter threshold, so no
    data at this n could have decided it.
    """
    p = np.asarray(p_values, dtype=float)
    floor = np.asarray(p_min, dtype=float)
    out = np.zeros(len(p), dtype=bool)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        out[i] = bool((m - rank) * floor[i] >= alpha)
    return out.tolist()


def effect_lower_bound(mean_diff: float, sd: float, n: int,
                       confidence: float = NEEDED_CONFIDENCE) -> float:
    """A one-sided lower confidence bound on |mean difference|/sd from ``n`` pairs: the
    noncentrality λ at which the observed |t| is the ``confidence`` quantile of the noncentral
    t (n − 1 df), over √n; 0 when even λ = 0 puts |t| below that quantile."""
    from scipy.optimize import brentq

    if n < 2 or not (math.isfinite(mean_diff) and math.isfinite(sd)) or sd <= 0:
        return math.nan
    df = n - 1
    t = abs(mean_diff) / (sd / math.sqrt(n))
    if float(stats.t.cdf(t, df)) <= confidence:
        return 0.0
    hi = t + 10.0
    lam = brentq(lambda nc: float(stats.nct.cdf(t, df, nc)) - confidence, 0.0, hi, xtol=1e-10)
    return float(lam) / math.sqrt(n)


def seeds_needed_upper(mean_diff: float, sd: float, n: int, *, alpha: float = ALPHA,
                       power: float = POWER,
                       confidence: float = NEEDED_CONFIDENCE) -> float:
    """Instances that decide a difference like the observed one with probability ``power`` at
    two-sided level ``alpha``, with confidence ``confidence``: the instances the paired t-test
    needs at the lower confidence bound of the effect size (:func:`effect_lower_bound`), and
    at least as many as make the sign-flip test's smallest p-value fall below ``alpha``.

    The plug-in figure (:func:`seeds_needed` at the observed effect) is an estimate that is too
    small half of the time, which gives about 65% power at the stated number, not 80%; this
    bound is too small in at most 1 − ``confidence`` of data sets (normal differences; checked
    by simulation of the sign-flip test). ``inf`` when the bound on the effect is 0.
    """
    if not (math.isfinite(sd) and math.isfinite(mean_diff)):
        return math.nan
    if sd == 0:
        return math.inf if mean_diff == 0 else 2.0
    floor_n = 2
    while sign_flip_min_p(floor_n) >= alpha:
        floor_n += 1
        if floor_n > SIGN_FLIP_EXACT_MAX + 1:
            return math.inf
    effect = effect_lower_bound(mean_diff, sd, n, confidence)
    if not math.isfinite(effect) or effect == 0:
        return math.inf
    return max(seeds_needed(effect, 1.0, alpha=alpha, power=power),
               sign_flip_seeds(effect, alpha=alpha, power=power), float(floor_n))


def sign_flip_seeds(effect: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The instances at which the sign-flip test reaches ``power`` at two-sided ``alpha`` for
    a true effect size ``effect`` (mean/sd of the differences), by its normal approximation.

    Under sign flips Σ s_i·d_i has variance Σ d_i² ≈ n(σ² + δ²): the test rejects about where
    |Σ d_i| > z·√(n(σ² + δ²)), so its power is ≈ Φ(√n·e − z·√(1 + e²)) (the other tail
    dropped), and n = ((z·√(1 + e²) + z_power)/e)², rounded up. Larger than the t-test's
    count where e is not small: the permutation test spends power on the spread the effect
    itself adds (``inf`` when more than :data:`MAX_SEEDS`)."""
    if not math.isfinite(effect) or effect == 0:
        return math.inf
    e = abs(effect)
    z = float(stats.norm.ppf(1 - alpha / 2))
    n = math.ceil(((z * math.sqrt(1 + e * e) + float(stats.norm.ppf(power))) / e) ** 2)
    return float(n) if n <= MAX_SEEDS else math.inf


# --- per-run quantities -----------------------------------------------------------------------


def max_drawdown(values: Sequence[float] | np.ndarray) -> float:
    """The largest fall of a series below its running best (0 for a non-decreasing series)."""
    a = _clean(values)
    if len(a) == 0:
        return math.nan
    return float(np.max(np.maximum.accumulate(a) - a))


def count_spikes(
    values: Sequence[float] | np.ndarray, *, k: float = 5.0, window: int = 9
) -> int:
    """Steps where a series jumps above its local level by more than ``k`` robust sds.

    A one-sided Hampel filter: over a centred window of ``window`` steps (truncated at the ends)
    the level is the median and the spread 1.4826·MAD (the MAD scaled to estimate a normal sd),
    so a trend — a loss going down — is not counted; a spike is a value above its level by more
    than ``k`` spreads. The spread is at least the robust sd of all the run's residuals from
    their levels, so a locally flat stretch does not turn noise into spikes. Non-finite values
    count as spikes.
    """
    a = np.asarray(values, dtype=float).ravel()
    bad = int((~np.isfinite(a)).sum())
    finite = a[np.isfinite(a)]
    if len(finite) < 3:
        return bad
    half = window // 2
    padded = np.pad(finite, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)  # [n, window]
    level = np.nanmedian(windows, axis=1)
    local = MAD_TO_SD * np.nanmedian(np.abs(windows - level[:, None]), axis=1)
    resid = finite - level
    overall = MAD_TO_SD * float(np.median(np.abs(resid - np.median(resid))))
    spread = np.maximum(local, overall)
    return bad + int(((spread > 0) & (resid > k * spread)).sum())


def first_reaching(x: Sequence[float], y: Sequence[float], threshold: float) -> float:
    """The first ``x`` at which ``y`` reaches ``threshold`` (``inf`` when it never does)."""
    for xi, yi in zip(x, y, strict=True):
        if math.isfinite(yi) and yi >= threshold:
            return float(xi)
    return math.inf


def median_with_inf(values: Sequence[float]) -> float:
    """The median, where ``inf`` ("never") sorts last: it is ``inf`` when half or more are."""
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(a) == 0:
        return math.nan
    a = np.sort(a)
    n = len(a)
    if n % 2:
        return float(a[n // 2])
    lo, hi = a[n // 2 - 1], a[n // 2]
    return float(hi) if math.isinf(hi) else float((lo + hi) / 2)
