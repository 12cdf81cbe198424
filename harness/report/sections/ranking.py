"""The ranking section: ranks with bootstrap intervals (a fixed seed derived from the data, so
the report is deterministic), the top under several aggregations side by side, and the
probability of improvement.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from harness.report import compare as cmp
from harness.report import figures as fig
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.document import Report, _join, fmt

RANK_RESAMPLES = 2000
"""Bootstrap resamples of instances behind each rank interval."""
RANK_TOP = 5
"""Places shown where the aggregations are set side by side."""
AGGREGATIONS = ("mean", "median", "iqm")
"""The aggregations of instance scores a ranking is shown under (columns of the ranking)."""
AGGREGATION_NAMES = {"mean": "mean", "median": "median", "iqm": "IQM"}


def bootstrap_ranks(wide: pd.DataFrame, seed: int,
                    resamples: int = RANK_RESAMPLES) -> pd.DataFrame:
    """Rank intervals of the configurations (columns of ``wide``) from a bootstrap over
    instances (rows of ``wide``, one score per instance and configuration, NaN where there is
    none).

    Each resample draws as many instances as ``wide`` has, with replacement, the same draw for
    every configuration (instances are shared, so they are resampled jointly); a configuration's
    value is the mean of its scores over the drawn instances, and the configurations are ranked
    within the resample (1 = best, ties share the better rank). Returns one row per
    configuration: ``label``, ``rank_low`` and ``rank_high``, the 2.5% and 97.5% quantiles of its
    rank over the resamples (as ranks that occurred). ``seed`` fixes the draws, so a report built
    twice is the same; a configuration that ranks the same in every resample has an interval of
    width 0.
    """
    from scipy import stats

    values = wide.to_numpy(dtype=float)
    n, k = values.shape
    if n == 0 or k == 0:
        return pd.DataFrame({"label": list(wide.columns), "rank_low": math.nan,
                             "rank_high": math.nan})
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    taken = values[draws]  # [resamples, n, k]
    counts = np.isfinite(taken).sum(axis=1)
    sums = np.where(np.isfinite(taken), taken, 0.0).sum(axis=1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    ranks = stats.rankdata(-means, method="min", axis=1, nan_policy="omit")
    low, high = [], []
    for j in range(k):
        r = ranks[:, j][np.isfinite(ranks[:, j])]
        q = (np.quantile(r, [0.025, 0.975], method="inverted_cdf") if len(r)
             else [math.nan, math.nan])
        low.append(float(q[0]))
        high.append(float(q[1]))
    return pd.DataFrame({"label": list(wide.columns), "rank_low": low, "rank_high": high})


def _rank_seed(name: str) -> int:
    """The bootstrap's seed for the ranking called ``name`` (a task, or ``overall``)."""
    return zlib.crc32(f"ranking/{name}".encode())


def _ranked(table: pd.DataFrame, wide: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows sorted by mean score, with their rank by mean and by IQM (1 = best; ties share the
    better rank), and the interval of the rank by mean from :func:`bootstrap_ranks` over
    ``wide`` (instance × label scores whose column means are the rows' means)."""
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = table["mean"].rank(ascending=False, method="min").astype("Int64")
    intervals = bootstrap_ranks(wide[list(table["label"])], seed).set_index("label")
    table["rank_low"] = table["label"].map(intervals["rank_low"])
    table["rank_high"] = table["label"].map(intervals["rank_high"])
    table["rank_iqm"] = table["iqm"].rank(ascending=False, method="min").astype("Int64")
    table["rank_median"] = table["median"].rank(ascending=False, method="min").astype("Int64")
    return table


def _rank_row(label: str, scores: pd.Series, e: st.Estimate,
              **extra: Any) -> dict[str, Any]:
    """A ranking row: the label's instance scores summarised (``extra`` columns after the
    count), ``e`` the interval of its mean."""
    return {"label": label, "instances": len(scores), **extra, "iqm": st.iqm(scores),
            "mean": e.value, "low": e.low, "high": e.high, "median": float(scores.median())}


def _rank_interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def _ranking_shown(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": table["rank"],
        "rank [95%]": [_rank_interval(r.rank_low, r.rank_high) for r in table.itertuples()],
        "label": table["label"], "instances": table["instances"],
        "mean score [95% CI]": [st.Estimate(r.mean, r.low, r.high).format()
                                for r in table.itertuples()],
        "IQM": table["iqm"].map(fmt), "IQM rank": table["rank_iqm"],
        "median": table["median"].map(fmt),
    })


def aggregation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration of a ranking (:func:`_ranked`): its score under each of
    :data:`AGGREGATIONS` and its rank by each (1 = best, ties share the better rank)."""
    out = table[["label", *AGGREGATIONS]].copy()
    for agg in AGGREGATIONS:
        out[f"rank_{agg}"] = out[agg].rank(ascending=False, method="min").astype("Int64")
    return out.reset_index(drop=True)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def aggregation_sentences(agg: pd.DataFrame,
                          top: int = RANK_TOP) -> list[tuple[str, dict[str, Any]]]:
    """What :func:`aggregation_table`'s ``agg`` says about the top of the ranking, as
    (template, values) for :meth:`Report.text`: who is first under each aggregation, and where
    the aggregations order the first ``top`` places differently (or that they agree). Every
    number is a cell of ``agg``."""
    names = AGGREGATION_NAMES
    k = min(top, len(agg))
    firsts = {a: tuple(agg.loc[agg[f"rank_{a}"] == 1, "label"]) for a in AGGREGATIONS}
    out: list[tuple[str, dict[str, Any]]] = []
    if len(set(firsts.values())) == 1 and len(firsts["mean"]) == 1:
        row = agg[agg["label"] == firsts["mean"][0]].iloc[0]
        out.append(("All three aggregations put {label} first ({values}).",
                    {"label": row["label"], "values": ", ".join(
                        f"{names[a]} {fmt(row[a])}" for a in AGGREGATIONS)}))
    else:
        parts = []
        for a in AGGREGATIONS:
            rows = agg[agg[f"rank_{a}"] == 1]
            parts.append(f"by {names[a]}, {_join(rows['label'])} ({fmt(rows[a].iloc[0])})")
        out.append(("Which configuration comes first depends on the aggregation: {parts}.",
                    {"parts": "; ".join(parts)}))
    shown = agg[(agg[[f"rank_{a}" for a in AGGREGATIONS]] <= k).any(axis=1)]
    moved = [r for r in shown.itertuples()
             if len({int(getattr(r, f"rank_{a}")) for a in AGGREGATIONS}) > 1]
    if moved:
        out.append(("Where they order the first {k} differently: {moved}.", {
            "k": k, "moved": "; ".join(
                f"{r.label} is " + ", ".join(f"{_ordinal(int(getattr(r, f'rank_{a}')))} by "
                                             f"{names[a]}" for a in AGGREGATIONS)
                for r in moved)}))
    elif k > 1:
        out.append(("The three aggregations agree on the order of the first {k}.", {"k": k}))
    return out


def _aggregation_shown(agg: pd.DataFrame, top: int = RANK_TOP) -> pd.DataFrame:
    """The first ``top`` places under each aggregation, side by side (``label (value)``)."""
    k = min(top, len(agg))
    columns: dict[str, list[str]] = {"place": [str(i) for i in range(1, k + 1)]}
    for a in AGGREGATIONS:
        order = agg.sort_values([a, "label"], ascending=[False, True], kind="stable").head(k)
        columns[f"by {AGGREGATION_NAMES[a]}"] = [
            f"{r.label} ({fmt(getattr(r, a))})" + ("" if int(getattr(r, f"rank_{a}")) == i + 1
                                                   else f", tied {int(getattr(r, f'rank_{a}'))}")
            for i, r in enumerate(order.itertuples())]
    return pd.DataFrame(columns)


SCORE_SHORT = {cmp.GAP_CLOSURE: "gap closure in J_β, which charges KL(π‖π_ref),",
               cmp.STANDARDISED: "gold gain in units of π_ref's spread",
               cmp.RELATIVE: "gold gain relative to the largest"}


def _score_kinds_note(rep: Report, kinds: dict[str, str]) -> None:
    """Say what kinds of score the ranking averages, and where a score depends on the other
    configurations of the suite."""
    present = [k for k in SCORE_SHORT if k in kinds.values()]
    if len(present) > 1:
        parts = [f"{SCORE_SHORT[k]} on {_join(t for t, v in kinds.items() if v == k)}"
                 for k in present]
        rep.text("The overall ranking averages scores of {n} kinds: {parts}. A configuration "
                 "that buys gold with KL ranks higher on a gold gain than on gap closure; the "
                 "per-task ranking keeps them apart.", n="two" if len(parts) == 2 else "three",
                 parts=", ".join(parts[:-1]) + ", and " + parts[-1])
    relative = [t for t, k in kinds.items() if k == cmp.RELATIVE]
    if relative:
        rep.text("On {tasks}, not every run recorded the spread of π_ref's gold reward "
                 "(gold_reward_sd, recorded since it existed), so their scores are gold gains "
                 "relative to the largest mean gain on the task: these scores, and the rankings, "
                 "change when a configuration is added to the suite or removed.",
                 tasks=_join(relative))


def ranking_section(rep: Report) -> None:
    d = rep.data
    rep.add(Heading("Ranking"))
    inst = rep.inst
    still = set(rep.still)
    if inst.empty or not inst["score"].notna().any():
        rep.text("No counted run has a score ({n} runs in the store), so there is no ranking.",
                 n=len(d.runs))
        return
    kept = inst[[(t, lab) not in still for t, lab in zip(inst["task"], inst["label"],
                                                           strict=True)]]
    kept = kept.dropna(subset=["score"])
    if rep.still:
        rep.text("Left out, as they did not learn: {labels}.", labels=_join(
            f"{lab} on {t}" if rep.multi_task else lab for t, lab in rep.still))
    if kept.empty:
        return
    rows = []
    by_label: dict[str, dict[str, np.ndarray]] = {}
    overall: dict[str, pd.Series] = {}
    all_tasks = kept["task"].nunique()
    partial = []
    for label in d.labels:
        sub = kept[kept["label"] == label]
        if sub.empty:
            continue
        by_label[label] = {t: g["score"].to_numpy() for t, g in sub.groupby("task")}
        if sub["task"].nunique() < all_tasks:
            # an average over fewer tasks is not comparable with the others'
            partial.append(f"{label} ({sub['task'].nunique()} of {all_tasks})")
            continue
        # one value per instance: the mean over tasks of the instance's scores
        overall[label] = sub.groupby("instance")["score"].mean()
        rows.append(_rank_row(label, sub["score"], st.t_interval(overall[label]),
                              tasks=sub["task"].nunique()))
    if partial:
        rep.text("Not ranked over all tasks, as they have a score on only some of them (ranked "
                 "per task below): {labels}.", labels=_join(partial))
    table = (_ranked(pd.DataFrame(rows), pd.DataFrame(overall), _rank_seed("overall"))
             if rows else pd.DataFrame())
    _score_kinds_note(rep, {t: cmp.score_kind(d.runs, t) for t in kept["task"].unique()})
    if rows:
        rep.table(_ranking_shown(table), "Configurations by mean score over instances (an "
                  "instance's replicates averaged first; across tasks, an instance's scores "
                  "averaged over tasks), with a Student-t 95% interval. Scores are fixed by the "
                  "task (gap closure, or gold gain in units of π_ref's spread), not by the other "
                  "configurations, so this ranking does not depend on which others are in the "
                  "suite. Rank [95%]: the 2.5% to 97.5% range of the rank by mean over "
                  f"{RANK_RESAMPLES} bootstrap resamples of instances (drawn jointly for all "
                  "configurations, fixed seed). Rank by IQM (the mean of the middle half of the "
                  "(task, instance) scores, Agarwal et al. 2021) and median of the same scores, "
                  "without intervals. Decisions between configurations are the paired "
                  "comparisons'.", "ranking_iqm", table)
    if rep.multi_task:
        per_task = []
        for task, sub in kept.groupby("task", sort=False):
            task_rows = [{"task": task,
                          **_rank_row(label, g["score"], st.t_interval(g["score"]))}
                         for label in d.labels
                         if not (g := sub[sub["label"] == label]).empty]
            wide = sub.pivot_table(index="instance", columns="label", values="score",
                                   aggfunc="mean")
            per_task.append(_ranked(pd.DataFrame(task_rows), wide, _rank_seed(str(task))))
        by_task = pd.concat(per_task, ignore_index=True)
        rep.table(pd.concat([by_task[["task"]], _ranking_shown(by_task)], axis=1),
                  "The same ranking on each task alone (the score of each instance, its "
                  "replicates averaged; rank intervals from a bootstrap over the task's "
                  "instances).", "ranking_per_task", by_task)
    if rows:
        agg = aggregation_table(table)
        rep.table(_aggregation_shown(agg), "The first places of the overall ranking under "
                  "three aggregations of the instance scores, side by side: the mean (over "
                  "instances of an instance's mean over tasks), the median and the IQM (of the "
                  "(task, instance) scores); a place shared by a tie says so.",
                  "ranking_aggregations", agg)
        for template, values in aggregation_sentences(agg):
            rep.text(template, **values)
    labels = list(by_label)
    pairs = []
    for x in labels:
        for y in labels:
            if x == y:
                continue
            common = sorted(set(by_label[x]) & set(by_label[y]))
            if common:
                pairs.append({"x": x, "y": y, "tasks": len(common),
                              "p": st.probability_of_improvement(
                                  [by_label[x][t] for t in common],
                                  [by_label[y][t] for t in common])})
    poi = pd.DataFrame(pairs, columns=["x", "y", "p", "tasks"])
    if len(poi):
        rep.csv("probability_of_improvement", poi)
    if not rows:
        return
    fig_frame = table.assign(iqm=table["mean"])
    rep.figure("ranking", "Mean score over instances (Student-t 95% interval) and "
               "the probability of improvement P(X > Y) of each row over each column "
               "(Mann-Whitney U / nm over instance scores, averaged over tasks; a description, "
               "not a test).",
               lambda p: fig.ranking(fig_frame, poi.assign(low=math.nan, high=math.nan), d.labels,
                                     p, "score", rep.colours))
    top = table.iloc[0]
    rep.text("Highest mean score: {label} ({value}; rank {ranks} over 95% of the bootstrap "
             "resamples of instances); whether it is better than the others is the paired "
             "comparisons' decision (summary above).", label=top["label"],
             value=st.Estimate(top["mean"], top["low"], top["high"]).format(),
             ranks=_rank_interval(top["rank_low"], top["rank_high"]))
