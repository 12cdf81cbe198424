"""The cost section: the counted cost to reach a score, score against budget, and the time to
reach a threshold of the way from π_ref's gold reward to the best.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report import cost as cst
from harness.report import figures as fig
from harness.report import stats as st
from harness.report.data import eval_series, on_grid
from harness.report.render import Heading
from harness.report.sections.document import Report, _join, fmt

BUDGET_CURVES = ("gold_reward", "j_beta_gain", "gap_closure")
"""What the score-against-budget figures draw (the last two on exact tasks only)."""


def _cost(v: float, bound: bool = False) -> str:
    """A cost: ``not reached`` for a median of +∞, ``∞`` for an interval's bound."""
    if bound and math.isinf(v) and v > 0:
        return "∞"
    return fmt(v)


def _median_cost(v: float, low: float, high: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return _cost(v)
    return f"{_cost(v)} [{_cost(low, True)}, {_cost(high, True)}]"


def cost_section(rep: Report) -> None:
    """Score against budget (samples, FLOPs) and the cost to reach fixed fractions of a fixed
    target (:mod:`harness.report.cost`)."""
    d, opts = rep.data, rep.opts
    prog = cst.progress(d)
    if prog.empty:
        return
    rep.add(Heading("Cost to reach a result"))
    drawn = []
    for x in cst.AXES:
        curves = {}
        for metric in BUDGET_CURVES:
            frame = prog[[*cst.IDENT, x]].assign(value=prog[metric])
            if np.isfinite(frame["value"]).any() and np.isfinite(frame[x]).any():
                curves[metric] = on_grid(frame, x, max_points=opts.max_points)
        exact = [t for t in d.tasks if cst.target_kind(prog, t) == cst.EXACT]
        rep.figure(
            f"budget_{x}",
            "Score against budget: gold reward" + (", J_β(π) − J_β(π_ref) and the gap closure "
                                                    "to π*_β (exact tasks)" if exact else "")
            + f" against {fig.X_NAMES[x]}, one curve per configuration: mean over task "
            "instances (an instance's replicates averaged first) with a Student-t 95% band; "
            f"runs interpolated onto a common grid of at most {opts.max_points} points, none "
            "past its own last evaluation.",
            lambda p, c=curves, x=x: fig.learning_curves(c, x, d.tasks, d.labels, p,
                                                         rep.colours))
        if (rep.out / "figures" / f"budget_{x}.png").exists():
            drawn.append(x)
    if rep.opts.figures and "flops" not in drawn:
        rep.text("No run counts FLOPs, so score is drawn against samples only.")
    summary = cst.cost_summary(cst.instance_costs(cst.run_costs(prog)))
    if summary.empty:
        return
    order = {(t, lab): i for i, (t, lab) in enumerate(
        (t, lab) for t in d.tasks for lab in d.labels)}
    summary = summary.assign(_order=[order.get((t, lab), len(order)) for t, lab in
                                     zip(summary["task"], summary["label"], strict=True)])
    summary = summary.sort_values(["_order", "fraction"], kind="stable").drop(
        columns="_order").reset_index(drop=True)
    for task in d.tasks:
        kind = cst.target_kind(prog, task)
        rep.text(
            "Targets on {task}: " + (
                "the gap closure 1 − regret/regret(π_ref) reaching {fractions}, i.e. that share "
                "of the way from π_ref to π*_β in J_β." if kind == cst.EXACT else
                "the gold gain over π_ref reaching {fractions} of a fixed gain of {gain} (r* "
                "units), the same for every configuration (no exact optimum on this task)."),
            task=task, fractions=_join(fmt(f) for f in cst.FRACTIONS),
            gain=fmt(cst.REFERENCE_GAIN))
    shown = pd.DataFrame({
        "task": summary["task"], "label": summary["label"],
        "target": [f"{k} ≥ {fmt(t)}" for k, t in zip(summary["kind"], summary["threshold"],
                                                       strict=True)],
        "instances reached": [
            f"{r.reached}/{r.instances} (share "
            f"{st.Estimate(r.reached_share, r.reached_share_low, r.reached_share_high).format()})"
            for r in summary.itertuples(index=False)],
        "samples": [_median_cost(r.median_samples, r.median_samples_low,
                                 r.median_samples_high) for r in summary.itertuples(index=False)],
        "FLOPs": [_median_cost(r.median_flops, r.median_flops_low, r.median_flops_high)
                  for r in summary.itertuples(index=False)],
    })
    rep.table(shown, "Cost to reach a result: the cumulative samples and FLOPs at a run's first "
              "evaluation at or above the target (resolution: the evaluation interval); an "
              "instance's replicates reduced to their median, where a run that never reaches "
              "the target counts as +∞ ('not reached' when half or more of them never do). Over "
              "instances: the median with the distribution-free order-statistic 95% interval "
              "(scipy.stats.quantile_test), which uses ranks only, so never-reached instances "
              "sort last (an upper bound ∞: too many never reach it to bound the median; no "
              "interval below 6 instances); instances reached: the count, the share and its "
              "Clopper-Pearson 95% interval. FLOPs n/a where the task counts none. In the "
              "paired comparisons (samples_to_half, flops_to_half) a never-reached run counts "
              "as twice the most any run on the task spent (PAR-2).", "cost_to_reach", summary)


def _time_to_threshold(rep: Report) -> None:
    d, f = rep.data, rep.opts.threshold
    gold = eval_series(d, "gold_reward")
    u = d.usable
    if gold.empty or "final_gold_reward" not in u:
        return
    rows, shown = [], []
    for task in d.tasks:
        g = gold[gold["task"] == task]
        start = g[g["step"] == g.groupby("run_id")["step"].transform("min")]["value"]
        g0 = float(np.nanmedian(start)) if len(start) else math.nan
        medians = (u[u["task"] == task].groupby("label")["final_gold_reward"].median().dropna())
        if medians.empty or not math.isfinite(g0):
            continue
        best_label = str(medians.idxmax())
        best = float(medians.max())
        threshold = g0 + f * (best - g0)
        rep.text(
            "Target on {task}: {pct}% of the way from π_ref's gold reward {g0} to the best "
            "median final gold reward {best} ({label}), i.e. gold reward ≥ {thr}.",
            task=task, pct=fmt(100 * f), g0=fmt(g0), best=fmt(best), label=best_label,
            thr=fmt(threshold),
        )
        for label in d.labels:
            runs = g[g["label"] == label]
            if runs.empty:
                continue
            hits = {"wall_seconds": [], "flops": [], "samples": [], "step": []}
            for _, run in runs.groupby("run_id"):
                run = run.sort_values("step")
                for col, out in hits.items():
                    out.append(st.first_reaching(run[col].tolist(), run["value"].tolist(),
                                                 threshold))
            n = len(hits["step"])
            reached = sum(math.isfinite(v) for v in hits["step"])
            num = {"task": task, "label": label, "threshold": threshold, "runs": n,
                   "reached": reached}
            for col, vals in hits.items():
                num[f"median_{col}"] = st.median_with_inf(vals)
            rows.append(num)
            shown.append({"task": task, "label": label, "reached": f"{reached}/{n}",
                          "median wall s": fmt(num["median_wall_seconds"]),
                          "median FLOPs": fmt(num["median_flops"]),
                          "median samples": fmt(num["median_samples"]),
                          "median step": fmt(num["median_step"])})
    if rows:
        rep.table(pd.DataFrame(shown), "Time and compute to reach the target (median over "
                  "counted runs; a run that never reaches it counts as infinite, so the median "
                  "is 'not reached' when half or more never do). Wall seconds are cumulative, "
                  "evaluation included.", "time_to_threshold", pd.DataFrame(rows))
