"""The stability section: the spread of final gold reward across replicates within an instance
and across instances, divergence and failure rates, drawdowns, and sensitivity across a sweep.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import figures as fig
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.document import Report, _est, _groups, fmt


def stability_section(rep: Report) -> pd.DataFrame:
    d = rep.data
    rep.add(Heading("Stability"))
    per_run = rep.per_run
    runs = d.runs.merge(per_run, on="run_id", how="left")
    finished = runs[runs["status"].isin(("done", "diverged", "failed"))]
    inst = rep.inst
    rows, shown = [], []
    for task, label, sub in _groups(rep, finished):
        counted = sub[sub["status"].isin(("done", "diverged"))]
        n = len(sub)
        k_div = int((sub["status"] == "diverged").sum())
        k_fail = int((sub["status"] == "failed").sum())
        div = st.rate_interval(k_div, n)
        fail = st.rate_interval(k_fail, n)
        mine = inst[(inst["task"] == task) & (inst["label"] == label)]
        df = int(mine["replicate_df"].sum())
        ss = float((mine["replicate_std"].fillna(0) ** 2 * mine["replicate_df"]).sum())
        pooled = math.sqrt(ss / df) if df > 0 else math.nan
        across = st.std_interval(mine["final_gold_reward"].dropna().to_numpy())
        dd = counted["drawdown"].dropna()
        num = {"task": task, "label": label, "runs": n, "counted": len(counted),
               "instances": int(sub["seed"].nunique()),
               "replicate_std_pooled": pooled, "replicate_df": df,
               **_est("instance_std", across),
               "diverged": k_div, **_est("divergence_rate", div),
               "failed": k_fail, **_est("failure_rate", fail),
               "drawdown_worst": float(dd.max()) if len(dd) else math.nan,
               "drawdown_median": float(dd.median()) if len(dd) else math.nan}
        row = {"task": task, "label": label, "runs": n,
               "spread across replicates (df)": (f"{fmt(pooled)} ({df})" if df > 0
                                                 else "n/a (one replicate)"),
               "spread across instances [95% CI]": across.format(3),
               "divergence rate [95% CI]": f"{k_div}/{n}: {div.format(2)}",
               "failure rate": f"{k_fail}/{n}",
               "worst / median drawdown": f"{fmt(num['drawdown_worst'])} / "
                                          f"{fmt(num['drawdown_median'])}"}
        for metric in ("loss", "grad_norm"):
            spikes = counted[f"{metric}_spikes"].dropna()
            num[f"{metric}_spikes_total"] = float(spikes.sum()) if len(spikes) else math.nan
            num[f"{metric}_spike_runs"] = int((spikes > 0).sum())
            row[f"{metric} spikes (runs with any; per algorithm)"] = (
                f"{fmt(num[f'{metric}_spikes_total'])} ({num[f'{metric}_spike_runs']}/"
                f"{len(spikes)})" if len(spikes) else "n/a")
        rows.append(num)
        shown.append(row)
    numbers = pd.DataFrame(rows)
    if rows:
        rep.table(pd.DataFrame(shown), (
            "Stability. Spread across replicates: the standard deviation of the final gold "
            "reward among the runs of one instance, pooled over instances (square root of the "
            "df-weighted mean variance; df = runs − 1 per instance): it measures the "
            "algorithm's own randomness, not the differences between task instances. "
            "Spread across instances: the standard deviation of the instances' mean final "
            "gold reward (the instance is the independent unit), with Bonett's (2006) "
            "interval from 5 instances on; it holds the tasks' variation too, and is the "
            "scale the replicate spread is small or large against. "
            "Divergence and failure rates over all finished runs, with Clopper-Pearson "
            "intervals; drawdown: the largest fall of gold reward below its running best "
            f"within a run; spikes: train steps above the run's rolling median (9 steps) by "
            f"more than {fmt(rep.opts.spike_k)} robust sds (1.4826×MAD of the residuals); "
            f"non-finite values count as spikes. The spike columns are per algorithm, not "
            f"comparable across algorithms: each counts spikes of its own loss (a squared "
            f"regression loss spikes where a log-likelihood does not) and of its own gradient "
            f"norm, so they enter no comparison and no claim, which rest on the spread across "
            f"replicates, divergence and drawdown of the gold reward, one quantity for all."),
            "stability", numbers)
        if (numbers["replicate_df"] == 0).all():
            rep.text("Every instance has one replicate, so the spread of an algorithm's own "
                     "randomness is not measured (the spread across instances is that of the "
                     "tasks); stability comparisons rest on divergence and drawdown. A suite "
                     "measures it with seeds: {instances: [...], replicates: 3}.")
    rep.figure("final_gold", "Final gold reward of every counted run (violin per "
               "configuration; dots coloured by status).",
               lambda p: fig.final_distribution(d.usable, d.tasks, d.labels, p,
                                                colours=rep.colours))
    _sensitivity(rep)
    rep.csv("per_run_stability", per_run)
    return numbers


def _sensitivity(rep: Report) -> None:
    d = rep.data
    u = d.usable
    if "final_gold_reward" not in u:
        return
    rows, shown, points = [], [], []
    for task in d.tasks:
        for alg in dict.fromkeys(u["algorithm"]):
            sub = u[(u["task"] == task) & (u["algorithm"] == alg)]
            if sub["sweep"].nunique() < 2:
                continue
            med = sub.groupby("sweep")["final_gold_reward"].median().dropna()
            if med.empty:
                continue
            for point, value in med.items():
                points.append({"task": task, "algorithm": alg, "sweep_point": point,
                               "median_final_gold": float(value),
                               "runs": int((sub["sweep"] == point).sum())})
            num = {"task": task, "algorithm": alg, "sweep_points": len(med),
                   "best_point": str(med.idxmax()), "best_median": float(med.max()),
                   "worst_point": str(med.idxmin()), "worst_median": float(med.min()),
                   "range": float(med.max() - med.min()),
                   "std_across_points": float(med.std(ddof=1)) if len(med) > 1 else math.nan}
            rows.append(num)
            shown.append({"task": task, "algorithm": alg, "sweep points": len(med),
                          "best (median final gold)": f"{num['best_point']} "
                                                      f"({fmt(num['best_median'])})",
                          "worst": f"{num['worst_point']} ({fmt(num['worst_median'])})",
                          "range": fmt(num["range"]),
                          "std across points": fmt(num["std_across_points"])})
    if not rows:
        rep.text("Hyperparameter sensitivity: no algorithm of this suite has more than one "
                 "sweep point with counted runs ({n} configurations).", n=len(d.labels))
        return
    rep.table(pd.DataFrame(shown), "Hyperparameter sensitivity: spread of the median final "
              "gold reward across the sweep points of each algorithm.", "sensitivity",
              pd.DataFrame(rows))
    rep.csv("sensitivity_points", pd.DataFrame(points))
    rep.figure("sensitivity", "Final gold reward per sweep point (mean over runs, Student-t 95% "
               "interval).", lambda p: fig.sensitivity(u, p))
