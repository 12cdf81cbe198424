"""Cost to reach a result: the samples and FLOPs a run spends before it first reaches a target.

The target is a fixed fraction (:data:`FRACTIONS`) of a fixed distance, the same for every
configuration on a task, so adding or removing a configuration never moves it:

- **exact tasks** (the runs evaluate ``regret`` and π_ref's regret is positive): the *gap
  closure* (J_β(π) − J_β(π_ref)) / (J_β(π*_β) − J_β(π_ref)) = 1 − regret/regret(π_ref), each
  run's π_ref regret being its first evaluation's;
- **other tasks**: the gold gain over π_ref, r*(π) − r*(π_ref) (each run's first evaluation),
  in units of :data:`REFERENCE_GAIN` r* units (the units the report prints gold reward in): a
  fraction 0.5 is a gold gain of 0.5.

A run's cost to reach a fraction is the cumulative ``samples`` (or ``flops``) at its first
evaluation at or above it (the resolution is the evaluation interval), ``inf`` when no
evaluation reaches it; FLOPs are NaN where the run's summary counts none (tabular policies, as
in the report's compute table). An instance's cost is the
median over its replicates (``inf`` when half or more never reach it).

Over instances, the table gives the median with a distribution-free interval from order
statistics (``scipy.stats.quantile_test``): it depends on ranks only, so a never-reached
instance is simply the largest value (+∞) and an upper bound of ∞ says that too many instances
never reach the target to bound the median; below 6 instances no 95% interval exists. The
share of instances that reach it comes with its Clopper-Pearson interval.

For the paired comparisons (``samples_to_half``, ``flops_to_half`` of
:data:`harness.report.compare.METRICS`) a never-reached run counts as :data:`CENSOR_FACTOR`
times the most any counted run on the task spent (a censored-value rule, as SAT competitions'
PAR-2 scores a timeout as twice the time limit): the run is kept, and counted as worse than any
run that reached the target within the budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.report import stats as st
from harness.report.data import StoreData, eval_series

FRACTIONS = (0.25, 0.5, 0.75)
"""The fractions of the target distance whose cost is tabulated."""
CLAIM_FRACTION = 0.5
"""The fraction behind the compared quantities ``samples_to_half`` and ``flops_to_half``."""
REFERENCE_GAIN = 1.0
"""The gold gain (r* units) whose fractions are the targets on tasks without an exact optimum."""
CENSOR_FACTOR = 2.0
"""A never-reached run counts, in paired comparisons, as this many times the most any counted
run on the task spent (PAR-2)."""
AXES = ("samples", "flops")
IDENT = ("task", "run_id", "label", "algorithm", "seed")
EXACT, GAIN = "gap closure", "gold gain"


def progress(data: StoreData) -> pd.DataFrame:
    """Every evaluation of a counted run: ``task, run_id, label, algorithm, seed, step, samples,
    flops``, ``gold_reward``, ``gold_gain`` (over the run's first evaluation) and, where the run
    evaluates regret with a positive first value, ``j_beta_gain`` (J_β(π) − J_β(π_ref) = the
    first regret minus the regret) and ``gap_closure``."""
    cols = [*IDENT, "step", "samples", "flops", "gold_reward", "gold_gain", "j_beta_gain",
            "gap_closure"]
    gold = eval_series(data, "gold_reward")
    if gold.empty:
        return pd.DataFrame(columns=cols)
    frame = gold[[*IDENT, "step", "samples", "flops", "value"]].rename(
        columns={"value": "gold_reward"})
    frame = frame.drop_duplicates(["run_id", "step"], keep="last").sort_values(["run_id", "step"])
    # FLOPs only where the run's summary counts them (neural policies): a tabular policy's
    # records carry the meter's arithmetic on its table, which the report does not call FLOPs
    counted = set(data.runs.loc[np.isfinite(pd.to_numeric(data.runs["flops"], errors="coerce")),
                                "run_id"])
    frame["flops"] = frame["flops"].where(frame["run_id"].isin(counted))
    frame["gold_gain"] = frame["gold_reward"] - frame.groupby("run_id")["gold_reward"].transform(
        "first")
    regret = eval_series(data, "regret")
    if len(regret):
        r = regret[["run_id", "step", "value"]].drop_duplicates(["run_id", "step"], keep="last")
        frame = frame.merge(r.rename(columns={"value": "regret"}), on=["run_id", "step"],
                            how="left")
        first = frame.groupby("run_id")["regret"].transform("first")
        first = first.where(first > 0)
        frame["j_beta_gain"] = first - frame["regret"]
        frame["gap_closure"] = 1 - frame["regret"] / first
        frame = frame.drop(columns="regret")
    else:
        frame["j_beta_gain"] = math.nan
        frame["gap_closure"] = math.nan
    return frame[cols].reset_index(drop=True)


def target_kind(prog: pd.DataFrame, task: str) -> str:
    """``gap closure`` when the task's runs have a gap closure (an exact optimum), else
    ``gold gain``."""
    sub = prog[prog["task"] == task]
    return EXACT if len(sub) and bool(np.isfinite(sub["gap_closure"]).any()) else GAIN


def run_costs(prog: pd.DataFrame, fractions: tuple[float, ...] = FRACTIONS) -> pd.DataFrame:
    """Per counted run and fraction: ``samples_to_reach`` and ``flops_to_reach`` (``inf``: never
    reached; FLOPs NaN where the run counts none), ``samples_spent`` and ``flops_spent`` (at its
    last evaluation), the ``kind`` of target and its ``threshold`` in that quantity's units."""
    rows = []
    for task, per_task in prog.groupby("task", sort=False):
        kind = target_kind(prog, str(task))
        column, unit = ("gap_closure", 1.0) if kind == EXACT else ("gold_gain", REFERENCE_GAIN)
        for _, run in per_task.groupby("run_id", sort=False):
            run = run.sort_values("step")
            y = run[column].tolist()
            has_flops = bool(np.isfinite(run["flops"]).any())
            for f in fractions:
                row = {k: run[k].iloc[0] for k in IDENT}
                row.update(fraction=f, kind=kind, threshold=f * unit,
                           samples_spent=float(run["samples"].max()),
                           flops_spent=float(run["flops"].max()) if has_flops else math.nan)
                for axis in AXES:
                    reach = st.first_reaching(run[axis].tolist(), y, f * unit)
                    row[f"{axis}_to_reach"] = (reach if axis == "samples" or has_flops
                                               else math.nan)
                rows.append(row)
    numbers = ["fraction", "threshold", "samples_to_reach", "flops_to_reach", "samples_spent",
               "flops_spent"]
    frame = pd.DataFrame(rows, columns=[*IDENT, "kind", *numbers])
    return frame.astype(dict.fromkeys(numbers, float))


def censored(costs: pd.DataFrame) -> pd.DataFrame:
    """``costs`` with ``samples_censored`` and ``flops_censored``: the cost, or where never
    reached :data:`CENSOR_FACTOR` × the most any counted run on the task spent."""
    out = costs.copy()
    for axis in AXES:
        most = out.groupby("task")[f"{axis}_spent"].transform("max")
        value = out[f"{axis}_to_reach"]
        out[f"{axis}_censored"] = value.where(~np.isposinf(value), CENSOR_FACTOR * most)
    return out


def instance_costs(costs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, instance, fraction): the median over replicates of each cost
    (:func:`harness.report.stats.median_with_inf`) and of its censored value, and the runs."""
    costs = censored(costs)
    rows = []
    keys = ["task", "label", "algorithm", "seed", "fraction", "kind", "threshold"]
    for key, sub in costs.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        row["runs"] = len(sub)
        for axis in AXES:
            row[f"{axis}_to_reach"] = st.median_with_inf(sub[f"{axis}_to_reach"].tolist())
            values = sub[f"{axis}_censored"].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row[f"{axis}_censored"] = float(np.median(values)) if len(values) else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*keys, "runs", "samples_to_reach", "samples_censored",
                                        "flops_to_reach", "flops_censored"])
    return frame.rename(columns={"seed": "instance"})


def median_interval(values: np.ndarray | list[float],
                    confidence: float = st.CONFIDENCE) -> st.Estimate:
    """The median of ``values`` (``inf`` for "never" sorts last) with the distribution-free
    order-statistic interval of ``scipy.stats.quantile_test`` (NaN bounds where fewer values
    than a ``confidence`` interval needs: 6 at 95%); NaN values are left out."""
    a = np.asarray(values, dtype=float)
    a = a[~np.isnan(a)]
    if len(a) == 0:
        return st.Estimate(math.nan)
    median = st.median_with_inf(a.tolist())
    ci = stats.quantile_test(a, q=0.0, p=0.5).confidence_interval(confidence)
    return st.Estimate(median, float(ci.low), float(ci.high))


def cost_summary(inst: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, fraction): instances, those whose median reaches the target with the
    Clopper-Pearson interval of the share, and per axis the median cost over instances with its
    order-statistic interval (:func:`median_interval`)."""
    rows = []
    for (task, label, f), sub in inst.groupby(["task", "label", "fraction"], sort=False):
        reached = int(np.isfinite(sub["samples_to_reach"]).sum())
        share = st.rate_interval(reached, len(sub))
        row = {"task": task, "label": label, "fraction": f, "kind": sub["kind"].iloc[0],
               "threshold": sub["threshold"].iloc[0], "instances": len(sub),
               "reached": reached, "reached_share": share.value,
               "reached_share_low": share.low, "reached_share_high": share.high}
        for axis in AXES:
            e = median_interval(sub[f"{axis}_to_reach"].to_numpy(dtype=float))
            row.update({f"median_{axis}": e.value, f"median_{axis}_low": e.low,
                        f"median_{axis}_high": e.high})
        rows.append(row)
    return pd.DataFrame(rows)
