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
    """The sample standard deviation with its chi-square interval (normal theory).

    At a handful of seeds the percentile bootstrap of a standard deviation is far too narrow (it
    covers σ about 63% of the time at n = 5); this interval, s·√((n−1)/χ²), covers 95% for
    normal data.
    """
    a = _clean(x)
    if len(a) == 0:
        return Estimate(math.nan)
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
