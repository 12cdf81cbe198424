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

Paired comparisons, with the report's machinery (:mod:`harness.report.stats`), as in
:func:`harness.report.compare.comparisons`: per-instance differences, the studentized sign-flip
permutation test and the interval that inverts it (:func:`harness.report.stats.paired_sign_flip`),
Holm's step-down adjustment over every comparison of the table, a decision at α = 0.05, and
``undecidable`` where the differences are too skewed for the test's level to hold or even its
smallest p-value at this n would not pass its Holm step. ``mde`` (the smallest difference the
design detects at 80% power) and ``seeds_needed`` (when undecided: the instances that decide a
difference like the observed one with 80% power, at a 90% lower confidence bound of its effect
size) are computed at the family's level α/m (m the comparisons of the table with a p-value), the
level Holm's adjustment holds the smallest p-value to.

**Tuning.** For every tuned algorithm: its trials' values (the mean objective over the tuning
instances), the expected maximum of n trials (Dodge et al. 2019; see :mod:`harness.engine.tuning`)
and the chosen configuration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.report import stats as st

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
    """Holm's step-down adjusted p-values (:func:`harness.report.stats.holm`)."""
    return np.asarray(st.holm(p_values), dtype=float)


def family_alpha(p_values: Sequence[float], alpha: float = st.ALPHA) -> float:
    """α/m, m the finite p-values of the family: the level ``mde`` and ``seeds_needed`` of a
    frontier comparison are computed at (as :func:`harness.report.compare.family_alpha`)."""
    m = int(np.isfinite(np.asarray(p_values, dtype=float)).sum())
    return alpha / max(m, 1)


def paired(values: Sequence[float]) -> tuple[int, float, float, float, float]:
    """(n, mean, low, high, p) of a sample (per-instance values or differences): the Student t
    interval and test of :func:`harness.report.stats.paired_difference` against zero."""
    x = np.asarray(values, dtype=float)
    r = st.paired_difference(x, np.zeros_like(x))
    return r.n, r.mean_diff, r.low, r.high, r.p_value


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
            if col == "kl" and not np.isnan(low):  # a KL is never negative: nor is its interval
                low = max(low, 0.0)
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
                comp_rows.append(_comparison(task, a, b, f"gold at KL {k:.4g}",
                                             [gold_a[s][j] for s in seeds],
                                             [gold_b[s][j] for s in seeds]))
            comp_rows.append(_comparison(
                task, a, b, f"mean gold over KL [{low:.4g}, {high:.4g}]",
                [mean_over_range(*by_fam[a][s], low, high) for s in seeds],
                [mean_over_range(*by_fam[b][s], low, high) for s in seeds]))
    comparisons = pd.DataFrame(comp_rows)
    if len(comparisons):
        comparisons["p_adjusted"] = holm(comparisons["p_value"].tolist())
        beyond = st.undecidable(comparisons["p_value"].tolist(), comparisons["p_min"].tolist())
        comparisons["decision"] = [
            _decision(r, out_of_reach) for r, out_of_reach in
            zip(comparisons.itertuples(), beyond, strict=True)]
        level = family_alpha(comparisons["p_value"].tolist())
        comparisons["mde"] = [st.minimum_detectable(r.sd, int(r.n), alpha=level)
                              if math.isfinite(r.p_min) and r.p_min < level else math.inf
                              for r in comparisons.itertuples()]
        comparisons["seeds_needed"] = [
            "" if d not in (st.UNDECIDED, st.UNDECIDABLE)
            else st.seeds_needed_upper(r.mean_diff, r.sd, int(r.n), alpha=level)
            for d, r in zip(comparisons["decision"], comparisons.itertuples(), strict=True)
        ]
        skewed = comparisons["skew_p"] < st.SKEW_LEVEL
        comparisons.loc[skewed, ["ci_low", "ci_high"]] = math.nan  # no interval holds there
    return points, pd.DataFrame(curve_rows), pd.DataFrame(matched_rows), comparisons


def _comparison(task: str, a: str, b: str, metric: str, a_values: list[float],
                b_values: list[float]) -> dict:
    r = st.paired_sign_flip(a_values, b_values)
    return {"task": task, "metric": metric, "a": a, "b": b, "n": r.n, "mean_diff": r.mean_diff,
            "ci_low": r.low, "ci_high": r.high, "p_value": r.p_value, "test": r.test,
            "p_min": r.p_min, "p_mc_se": r.mc_se, "skew_p": r.skew_p, "mde": math.nan,
            "sd": r.sd}


def _decision(row: Any, out_of_reach: bool) -> str:
    """The row's decision at its Holm-adjusted p-value, or ``undecidable`` (see the module
    docstring)."""
    if math.isfinite(row.skew_p) and row.skew_p < st.SKEW_LEVEL:
        return st.UNDECIDABLE
    decision = st.decide(row.mean_diff, row.p_adjusted, higher_is_better=True)
    return st.UNDECIDABLE if decision == st.UNDECIDED and out_of_reach else decision
