"""Reward–KL frontiers and equal-tuning results, from a run store's frames.

**Frontiers.** An algorithm run at one β is one point of its gold-vs-KL curve; a sweep (of β, or
of any key) traces the curve. Per task, algorithm family (the suite's label, sweep suffix
removed) and instance, the final (KL, gold) of every sweep point is a point; the instance's
frontier is the upper envelope of its points — the points no other point beats on both gold and
KL (more gold for no more KL) — joined by straight lines, as the DPO paper's Fig. 2 and Gao et
al. (2022) compare methods. Families are compared **at matched KL**: each instance's frontier is
interpolated (never extrapolated) at KL values that both compared frontiers reach in every
instance, and the gold values are paired by instance; the **area** under a frontier over the
shared KL range, divided by its width, is its mean gold over that range.

Paired comparisons: per instance differences, Student t interval and two-sided p-value (the
one-sample t test), Holm's step-down adjustment over every comparison of the table.

**Tuning.** For every tuned algorithm: its trials' values (the mean objective over the tuning
instances), the expected maximum of n trials (Dodge et al. 2019; see :mod:`harness.tuning`) and
the chosen configuration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
GRID_POINTS = 5


def family(label: str, sweep: str) -> str:
    """The suite's label of a run, without the ``[k=v,...]`` suffix of its sweep point."""
    if sweep and label.endswith("]") and "[" in label:
        return label[: label.rindex("[")]
    return label


def envelope(kl: Sequence[float], gold: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The upper-left envelope of points (KL, gold): those no other point beats with at least as
    much gold at no more KL, sorted by KL (gold then strictly increases)."""
    pts = sorted((float(k), float(g)) for k, g in zip(kl, gold, strict=True)
                 if math.isfinite(k) and math.isfinite(g))
    xs: list[float] = []
    ys: list[float] = []
    for k, g in pts:
        if ys and g <= ys[-1]:
            continue  # dominated: an earlier point has as much gold for less KL
        if xs and k == xs[-1]:
            xs.pop()
            ys.pop()
        xs.append(k)
        ys.append(g)
    return np.asarray(xs), np.asarray(ys)


def at_kl(xs: np.ndarray, ys: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The envelope's gold at KL ``grid`` (NaN outside the envelope's KL range)."""
    if len(xs) == 0:
        return np.full(len(grid), np.nan)
    out = np.interp(grid, xs, ys)
    out[(grid < xs[0]) | (grid > xs[-1])] = np.nan
    return out


def instance_frontiers(finals: pd.DataFrame) -> dict[tuple[str, str, object], tuple]:
    """(task, family, seed) → envelope, from a frame with ``task, family, seed, kl, gold``."""
    out = {}
    for (task, fam, seed), group in finals.groupby(["task", "family", "seed"], sort=False):
        out[(task, fam, seed)] = envelope(group["kl"].to_numpy(), group["gold"].to_numpy())
    return out


def shared_range(envelopes: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """The KL range every envelope covers (low ≥ high when there is none)."""
    lows = [xs[0] for xs, _ in envelopes if len(xs)]
    highs = [xs[-1] for xs, _ in envelopes if len(xs)]
    if len(lows) < len(envelopes) or not lows:
        return math.nan, math.nan
    return max(lows), min(highs)


def mean_over_range(xs: np.ndarray, ys: np.ndarray, low: float, high: float) -> float:
    """The envelope's area over [low, high] divided by the width: its mean gold there."""
    if not (high > low):
        return math.nan
    inner = xs[(xs > low) & (xs < high)]
    grid = np.concatenate([[low], inner, [high]])
    values = at_kl(xs, ys, grid)
    if np.isnan(values).any():
        return math.nan
    return float(np.trapezoid(values, grid) / (high - low))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def paired(diffs: Sequence[float]) -> tuple[int, float, float, float, float]:
    """(n, mean, low, high, p) of per-instance differences: Student t interval and test."""
    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=float)
    n = len(d)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(d.mean())
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    if sd == 0:
        return n, mean, mean, mean, (1.0 if mean == 0 else 0.0)
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))  # scipy.stats.ttest_1samp's p-value
    return n, mean, mean - half, mean + half, p


def decision(low: float, high: float, p_adjusted: float, a: str, b: str) -> str:
    if not math.isfinite(p_adjusted) or p_adjusted >= 1 - CONFIDENCE:
        return "undecided"
    return f"{a} better" if low > 0 else f"{b} better" if high < 0 else "undecided"


def frontier_tables(
    finals: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """From final (task, family, label, seed, kl, gold) of counted runs:

    - ``points``: per task, family and sweep point, mean KL and gold over instances with t
      intervals (the frontier figure's points);
    - ``curves``: per task and family, gold on a grid over the KL range every instance of the
      family reaches, mean over instances with its t interval (the figure's bands);
    - ``matched``: per task, gold of every family at KL values that every family's every
      instance reaches, and the mean gold over that shared range (area / width);
    - ``comparisons``: per task and pair of families, over the KL range both reach (in every
      instance): gold at matched KL and the mean over the range, as paired differences a − b,
      with interval, p-value, Holm-adjusted p-value over the table, and decision.
    """
    point_rows = []
    for (task, fam, label), g in finals.groupby(["task", "family", "label"], sort=False):
        row = {"task": task, "family": fam, "label": label, "n": len(g)}
        for col in ("kl", "gold"):
            _, mean, low, high, _ = paired(g[col].tolist())
            row.update({col: mean, f"{col}_low": low, f"{col}_high": high})
        point_rows.append(row)
    points = pd.DataFrame(point_rows)

    envs = instance_frontiers(finals)
    curve_rows, matched_rows, comp_rows = [], [], []
    for task, per_task in finals.groupby("task", sort=False):
        fams = list(dict.fromkeys(per_task["family"]))
        by_fam = {f: {seed: env for (t, fam, seed), env in envs.items() if t == task and fam == f}
                  for f in fams}
        for fam in fams:  # each family's own curve
            low, high = shared_range(list(by_fam[fam].values()))
            if not (high > low):
                continue
            for k in np.linspace(low, high, 2 * GRID_POINTS - 1):
                values = [at_kl(xs, ys, np.array([k]))[0] for xs, ys in by_fam[fam].values()]
                n, mean, lo, hi, _ = paired(values)
                curve_rows.append({"task": task, "family": fam, "kl": float(k), "n": n,
                                   "gold": mean, "gold_low": lo, "gold_high": hi})
        low, high = shared_range([env for f in fams for env in by_fam[f].values()])
        if high > low:  # every family at the same KL values
            grid = np.linspace(low, high, GRID_POINTS)
            for fam in fams:
                for k in grid:
                    values = [at_kl(xs, ys, np.array([k]))[0] for xs, ys in by_fam[fam].values()]
                    n, mean, lo, hi, _ = paired(values)
                    matched_rows.append({"task": task, "family": fam, "kl": f"{k:.4g}", "n": n,
                                         "gold": mean, "gold_low": lo, "gold_high": hi})
                n, mean, lo, hi, _ = paired([mean_over_range(xs, ys, low, high)
                                             for xs, ys in by_fam[fam].values()])
                matched_rows.append({"task": task, "family": fam,
                                     "kl": f"mean over [{low:.4g}, {high:.4g}]", "n": n,
                                     "gold": mean, "gold_low": lo, "gold_high": hi})
        for a, b in itertools.combinations(fams, 2):
            seeds = sorted(set(by_fam[a]) & set(by_fam[b]), key=str)
            low, high = shared_range([by_fam[f][s] for f in (a, b) for s in seeds])
            if not seeds or not (high > low):
                continue
            grid = np.linspace(low, high, GRID_POINTS)
            gold_a = {s: at_kl(*by_fam[a][s], grid) for s in seeds}
            gold_b = {s: at_kl(*by_fam[b][s], grid) for s in seeds}
            for j, k in enumerate(grid):
                diffs = [gold_a[s][j] - gold_b[s][j] for s in seeds]
                comp_rows.append(_comparison(task, a, b, f"gold at KL {k:.4g}", diffs))
            diffs = [mean_over_range(*by_fam[a][s], low, high)
                     - mean_over_range(*by_fam[b][s], low, high) for s in seeds]
            comp_rows.append(_comparison(task, a, b, f"mean gold over KL [{low:.4g}, {high:.4g}]",
                                         diffs))
    comparisons = pd.DataFrame(comp_rows)
    if len(comparisons):
        comparisons["p_adjusted"] = holm(comparisons["p_value"].tolist())
        comparisons["decision"] = [
            decision(r.ci_low, r.ci_high, r.p_adjusted, r.a, r.b)
            for r in comparisons.itertuples()
        ]
    return points, pd.DataFrame(curve_rows), pd.DataFrame(matched_rows), comparisons


def _comparison(task: str, a: str, b: str, metric: str, diffs: list[float]) -> dict:
    n, mean, low, high, p = paired(diffs)
    return {"task": task, "metric": metric, "a": a, "b": b, "n": n, "mean_diff": mean,
            "ci_low": low, "ci_high": high, "p_value": p}
