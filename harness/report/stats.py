"""The statistics of reports: bootstrap intervals, IQM, probability of improvement, verdict marks.

Definitions follow rliable (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice"), re-implemented on scipy because rliable does not import beside pandas 3:

- **IQM** (interquartile mean): the mean of the middle 50% of the scores,
  ``scipy.stats.trim_mean(x, 0.25)`` (``int(0.25·n)`` scores cut from each end).
- **Stratified bootstrap**: every group (a task, or one algorithm's runs on a task) is resampled
  with replacement independently, keeping its size; ``scipy.stats.bootstrap`` does exactly that
  when given several samples (``paired=False``). Intervals are percentile intervals from a
  seeded generator, so a report is reproducible.
- **Probability of improvement** P(X > Y): per task, the Mann-Whitney U statistic of X against Y
  divided by n·m, which is P(x > y) + ½ P(x = y) for a random run of each; averaged over tasks.
- **Wilson interval** for a rate k/n (divergence rates): the score interval, which stays inside
  [0, 1] and is informative at k = 0 and k = n.

Verdict marks compare intervals only: a claimed ordering is *supported* when the intervals are
ordered as claimed and disjoint, *not supported* when they are disjoint the other way, and
*inconclusive* otherwise (overlap, or a missing interval).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 2000
CONFIDENCE = 0.95
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
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

    def format(self, digits: int = 3) -> str:
        """``1.23 [1.1, 1.35]`` (significant digits), ``n/a`` for a missing value."""
        if not math.isfinite(self.value):
            return "n/a" if math.isnan(self.value) else _fmt(self.value, digits)
        if not self.has_interval:
            return _fmt(self.value, digits)
        return f"{_fmt(self.value, digits)} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"


def _fmt(x: float, digits: int) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


Statistic = Callable[..., np.ndarray]
"""``statistic(*samples, axis=-1)``: vectorised over leading axes of every sample."""


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def stratified_bootstrap_ci(
    samples: Sequence[Sequence[float] | np.ndarray],
    statistic: Statistic,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of ``samples`` with a percentile interval from a stratified bootstrap.

    Each sample (stratum) is resampled with replacement independently, at its own size. Non-finite
    values are dropped first. No interval (NaN bounds) when a sample has fewer than two values;
    NaN altogether when one is empty.
    """
    data = [_clean(s) for s in samples]
    if not data or any(len(d) == 0 for d in data):
        return Estimate(math.nan)
    value = float(statistic(*data, axis=-1))
    if any(len(d) < 2 for d in data):
        return Estimate(value)
    result = stats.bootstrap(
        tuple(data),
        statistic,
        n_resamples=n_resamples,
        vectorized=True,
        paired=False,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Estimate(value, float(ci.low), float(ci.high))


def bootstrap_ci(
    x: Sequence[float] | np.ndarray,
    statistic: Statistic | str = "mean",
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """One sample's ``statistic`` (a function, or ``mean``/``median``/``std``/``iqm``) with a
    percentile bootstrap interval."""
    fn = STATISTICS[statistic] if isinstance(statistic, str) else statistic
    return stratified_bootstrap_ci([x], fn, n_resamples=n_resamples, confidence=confidence,
                                   seed=seed)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _std(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(x, axis=axis, ddof=1)


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


STATISTICS: dict[str, Statistic] = {"mean": _mean, "median": _median, "std": _std, "iqm": _iqm}


def iqm(x: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean: ``scipy.stats.trim_mean(x, 0.25)`` of the finite values."""
    a = _clean(x)
    return float(stats.trim_mean(a, 0.25)) if len(a) else math.nan


def _pooled_iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    moved = [np.moveaxis(s, axis, -1) for s in samples]
    return stats.trim_mean(np.concatenate(moved, axis=-1), 0.25, axis=-1)


def iqm_ci(
    by_task: Sequence[Sequence[float] | np.ndarray], *, n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """IQM of the scores of all tasks pooled, with a stratified bootstrap (strata: tasks)."""
    return stratified_bootstrap_ci(by_task, _pooled_iqm, n_resamples=n_resamples, seed=seed)


def _prob_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + ½ P(x = y) over all pairs, vectorised over leading axes (values on the last)."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0).mean(axis=(-2, -1)) + 0.5 * (diff == 0).mean(axis=(-2, -1)))


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


def _poi_statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    moved = [np.moveaxis(s, axis, -1) for s in samples]
    pairs = [_prob_greater(moved[i], moved[i + 1]) for i in range(0, len(moved), 2)]
    return np.mean(np.stack(pairs, axis=0), axis=0)


def probability_of_improvement_ci(
    x_by_task: Sequence[Sequence[float] | np.ndarray],
    y_by_task: Sequence[Sequence[float] | np.ndarray],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """P(X > Y) with a stratified bootstrap interval: X's and Y's runs on each task are resampled
    independently (rliable's procedure)."""
    samples: list[Sequence[float] | np.ndarray] = []
    for x, y in zip(x_by_task, y_by_task, strict=True):
        samples.extend([x, y])
    est = stratified_bootstrap_ci(samples, _poi_statistic, n_resamples=n_resamples, seed=seed)
    point = probability_of_improvement(x_by_task, y_by_task)
    return Estimate(point, est.low, est.high)


def t_interval(x: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The mean with its Student-t interval (normal theory; near-nominal coverage at 5 seeds,
    where the percentile bootstrap of a mean covers about 83%)."""
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


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = CONFIDENCE) -> Paired:
    """The mean of the differences a_i − b_i with its Student-t interval and two-sided p-value.

    ``a`` and ``b`` are aligned per instance; pairs with a non-finite member are dropped. With
    fewer than two pairs there is no interval and no p-value (NaN). When every difference is the
    same (a deterministic quantity such as a FLOP count), the interval is that value and the
    p-value is 1 when it is 0, else 0.
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
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
    # integral over W = √V (chi-distributed, no singularity at 0), T = (Z + nc)/(W/√df), split
    # where crit·w/√df = nc (where the integrand changes fastest).
    from scipy.integrate import quad

    def integrand(w: float) -> float:
        scale = crit * w / math.sqrt(df)
        return float((stats.norm.cdf(nc - scale) + stats.norm.cdf(-nc - scale))
                     * stats.chi.pdf(w, df))

    top = float(stats.chi.isf(1e-15, df))
    turn = min(nc * math.sqrt(df) / crit, top)
    total = quad(integrand, 0, turn, limit=200)[0] + quad(integrand, turn, top, limit=200)[0]
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


# --- verdict marks ----------------------------------------------------------------------------


def pair_mark(expected_higher: Estimate, expected_lower: Estimate) -> str:
    """Is ``expected_higher`` > ``expected_lower``? Compares the intervals (see module doc)."""
    if not (expected_higher.has_interval and expected_lower.has_interval):
        return INCONCLUSIVE
    if expected_lower.high < expected_higher.low:
        return SUPPORTED
    if expected_higher.high < expected_lower.low:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def chain_marks(chain: Sequence[Estimate], direction: str) -> tuple[list[str], str]:
    """Marks of a claimed monotone chain ``chain[0] → chain[1] → ...``.

    ``direction`` is ``decreasing`` (each next one lower) or ``increasing``. Returns the mark of
    each consecutive pair and the overall mark: supported when every pair is, not supported when
    any pair is contradicted, inconclusive otherwise.
    """
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction is 'decreasing' or 'increasing', not {direction!r}")
    marks = []
    for a, b in itertools.pairwise(chain):
        marks.append(pair_mark(a, b) if direction == "decreasing" else pair_mark(b, a))
    if marks and all(m == SUPPORTED for m in marks):
        overall = SUPPORTED
    elif any(m == NOT_SUPPORTED for m in marks):
        overall = NOT_SUPPORTED
    else:
        overall = INCONCLUSIVE
    return marks, overall
