"""The reward sections: learning curves and final gold and proxy rewards, the regret split,
over-optimisation of r̂, the reward model's fit, and the reward–KL frontier.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.report import figures as fig
from harness.report import stats as st
from harness.report.colours import palette as label_palette
from harness.report.data import StoreData, eval_series, on_grid
from harness.report.render import Heading
from harness.report.sections.document import (
    CURVE_METRICS,
    Report,
    _est,
    _groups,
    _join,
    _summaries,
    fmt,
)


def frontier_section(rep: Report) -> None:
    """Reward–KL frontiers of swept algorithms, compared at matched KL (harness.report.frontier)."""
    from harness.report import frontier as fr

    u = rep.data.usable
    if u.empty or not {"final_kl_ref", "final_gold_reward"} <= set(u.columns):
        return
    finals = pd.DataFrame({
        "task": u["task"], "label": u["label"], "seed": u["seed"],
        "family": [fr.family(lab, sw) for lab, sw in zip(u["label"], u["sweep"], strict=True)],
        "kl": u["final_kl_ref"], "gold": u["final_gold_reward"],
    }).dropna(subset=["kl", "gold"])
    swept = finals.groupby(["task", "family"])["label"].transform("nunique") > 1
    finals = finals[swept]
    if finals.empty:
        return
    points, curves, matched, comparisons = fr.frontier_tables(finals)
    families = list(dict.fromkeys(finals["family"]))
    family_algorithm = {fam: alg for fam, alg in zip(
        finals["family"], u.loc[finals.index, "algorithm"], strict=True) if isinstance(alg, str)}
    colours = label_palette(families, family_algorithm)
    rep.add(Heading("Reward–KL frontiers"))
    rep.text("Each swept algorithm is a curve, not a point: its sweep points' final (KL, gold), "
             "their upper envelope per instance, and gold compared at KL values both compared "
             "frontiers reach, paired by instance (see the method section).")
    rep.figure("frontiers", "Final gold reward against final KL(π‖π_ref): each sweep point's "
               "mean over instances with 95% t intervals; lines and bands: the frontier's gold "
               "(mean and 95% t interval over instances) over the KL range all its instances "
               "reach (dotted where they share none).",
               lambda p: fig.frontiers(points, curves, rep.data.tasks, families, p, colours))
    rep.table(points.round(6), "Sweep points: mean final KL and gold over instances (95% t "
              "intervals).", "frontier_points")
    if len(matched):
        rep.table(matched.round(6), "Gold at matched KL, where every frontier of the task "
                  "reaches, and mean gold over that range (area / width); per instance, then "
                  "averaged (95% t intervals).", "frontier_matched")
    if comparisons.empty:
        rep.text("No two swept algorithms share a KL range in every instance, so none is "
                 "compared at matched KL.")
        return
    rep.table(comparisons, "Frontiers compared in pairs, over the KL range both reach in "
              "every instance: paired difference a − b, the sign-flip test's p-value and the "
              "95% interval that inverts it (none where the differences are too skewed), "
              "Holm-adjusted over this table; undecidable where the test cannot decide at "
              "this n.", "frontier_comparisons")
    decided = comparisons[comparisons["decision"].isin((st.A_BETTER, st.B_BETTER))]
    rep.text("{k} of {n} frontier comparisons are decided at the 5% level after Holm's "
             "adjustment.", k=len(decided), n=len(comparisons))


def reward_section(rep: Report) -> None:
    d, opts = rep.data, rep.opts
    rep.add(Heading("Reward"))
    curves = {}
    for metric in CURVE_METRICS:
        series = eval_series(d, metric)
        if len(series):
            curves[metric] = on_grid(series, opts.x, max_points=opts.max_points)
    rep.figure(
        f"curves_{opts.x}",
        f"Gold reward, proxy reward and KL(π‖π_ref) against {fig.X_NAMES[opts.x]}: mean over "
        f"task instances (an instance's replicates averaged first) with a Student-t 95% band; "
        f"runs interpolated onto a common grid of at most {opts.max_points} points.",
        lambda p: fig.learning_curves(curves, opts.x, d.tasks, d.labels, p, rep.colours),
    )

    u = d.usable
    metrics = [m for m in ("gold_reward", "proxy_reward", "kl_ref", "win_rate_ref", "regret")
               if f"final_{m}" in u.columns and u[f"final_{m}"].notna().any()]
    numbers, shown = [], []
    scored = rep.scores
    for task, label, sub in _groups(rep, scored):
        n_inst = int(sub["seed"].nunique())
        num: dict[str, Any] = {"task": task, "label": label, "runs": len(sub),
                               "instances": n_inst}
        row: dict[str, Any] = {"task": task, "label": label, "runs": len(sub),
                               "instances": n_inst}
        e = rep.instance_ci(sub, "score")
        num.update(_est("score", e))
        row["score"] = e.format()
        for m in metrics:
            e = rep.instance_ci(sub, f"final_{m}")
            num.update(_est(m, e))
            row[m] = e.format()
        numbers.append(num)
        shown.append(row)
    numbers_df = pd.DataFrame(numbers)
    if len(numbers_df) and {"gold_reward", "kl_ref"} <= set(numbers_df.columns):
        numbers_df["on_frontier"] = False
        for task in d.tasks:
            sel = numbers_df[numbers_df["task"] == task]
            for i, r in sel.iterrows():
                dominated = (
                    (sel["gold_reward"] >= r["gold_reward"]) & (sel["kl_ref"] <= r["kl_ref"])
                    & ((sel["gold_reward"] > r["gold_reward"]) | (sel["kl_ref"] < r["kl_ref"]))
                ).any()
                numbers_df.loc[i, "on_frontier"] = bool(
                    not dominated and math.isfinite(r["gold_reward"])
                    and math.isfinite(r["kl_ref"]))
        shown_df = pd.DataFrame(shown)
        shown_df["reward/KL frontier"] = np.where(numbers_df["on_frontier"], "yes", "no")
    else:
        shown_df = pd.DataFrame(shown)
    if len(shown_df):
        rep.table(shown_df, "Final evaluation: mean over task instances (an instance's counted "
                  "runs averaged first) with a Student-t 95% interval over instances. Score: "
                  "gap closure where the task knows π*_β, else the gold gain over π_ref in units "
                  "of the standard deviation of π_ref's gold reward on the instance (relative to "
                  "the largest mean gain on the task where runs lack that record). A "
                  "configuration is on the reward/KL frontier when no other has both a higher "
                  "or equal mean gold reward and a lower or equal mean KL.",
                  "final_metrics", numbers_df)
        if "on_frontier" in numbers_df:
            for task in d.tasks:
                front = numbers_df[(numbers_df["task"] == task) & numbers_df["on_frontier"]]
                if len(front):
                    rep.text("On {task}, the reward/KL frontier is formed by {labels}.",
                             task=task, labels=_join(front["label"]))

    evals = _eval_wide(d, ["gold_reward", "proxy_reward", "kl_ref"])
    if {"kl_ref", "gold_reward"} <= set(evals.columns):
        rep.figure("frontier", "Gold reward against KL(π‖π_ref) along training: seed-mean "
                   "trajectory per configuration (○ start, ● end), small dots: each run's final "
                   "evaluation.",
                   lambda p: fig.trajectories(evals, "kl_ref", "gold_reward", d.tasks,
                                              d.labels, p, rep.colours))
    if {"proxy_reward", "gold_reward"} <= set(evals.columns):
        rep.figure("overoptimisation", "Proxy reward r̂ against gold reward r* along training "
                   "(seed means; ○ start, ● end). Proxy rising while gold falls is "
                   "over-optimisation of r̂.",
                   lambda p: fig.trajectories(evals, "gold_reward", "proxy_reward", d.tasks,
                                              d.labels, p, rep.colours))
        _overoptimisation_table(rep, evals)

    if "regret" in set(d.metrics["metric"]):
        series = eval_series(d, "regret")
        regret = {"regret": on_grid(series, opts.x, max_points=opts.max_points)}
        without = [t for t in d.tasks if not (series["task"] == t).any()]
        rep.figure(f"regret_{opts.x}",
                   f"Regret J_β(π*_β) − J_β(π) against {fig.X_NAMES[opts.x]} (mean over "
                   "instances, Student-t 95% band)." + (
                       f" Not drawn for {_join(without)}: no exact optimum for "
                       f"{'this task' if len(without) == 1 else 'these tasks'}, so no regret."
                       if without else ""),
                   lambda p: fig.learning_curves(regret, opts.x, d.tasks, d.labels, p,
                                                 rep.colours))
    _regret_split(rep)
    _reward_model_table(rep)


def _regret_split(rep: Report) -> None:
    """Where a configuration's own fixed point is not π*_β (GRPO's forward-KL target), split its
    final regret into the regret of that fixed point and the rest."""
    u = rep.data.usable
    if "final_regret" not in u or not u["target_regret"].notna().any():
        return
    rows, shown = [], []
    for task, label, sub in _groups(rep, u[u["target_regret"].notna()]):
        per = sub.groupby("seed")[["final_regret", "target_regret"]].mean()
        per["optimisation"] = per["final_regret"] - per["target_regret"]
        total = st.t_interval(per["final_regret"]).clipped(0.0)
        objective = st.t_interval(per["target_regret"]).clipped(0.0)
        rest = st.t_interval(per["optimisation"])
        rows.append({"task": task, "label": label, "instances": len(per),
                     **_est("final_regret", total), **_est("objective_regret", objective),
                     **_est("optimisation_regret", rest)})
        shown.append({"task": task, "label": label, "instances": len(per),
                      "final regret": total.format(), "its objective's part": objective.format(),
                      "left by optimisation and r̂": rest.format()})
    rep.table(pd.DataFrame(shown), "Regret split for configurations whose own fixed point is "
              "not π*_β (GRPO with unscaled group advantages: its k3 penalty in the loss "
              "optimises the forward KL(π_ref‖π), and its group-mean baseline scales the policy "
              "gradient by 1 − 1/G, so it converges to argmax (1 − 1/G)·E_π r − β·KL(π_ref‖π), "
              "computed exactly with r*). Its objective's part is the regret J_β(π*_β) − "
              "J_β(π°) of that fixed point π°: what the algorithm loses even with r* and perfect "
              "optimisation; the rest is what r̂'s error and the finite budget leave. Means over "
              "instances, Student-t 95% intervals.", "regret_split", pd.DataFrame(rows))


def _eval_wide(d: StoreData, metrics: list[str]) -> pd.DataFrame:
    m = d.metrics
    sel = m[(m["source"] == "eval") & m["metric"].isin(metrics)
            & m["status"].isin(("done", "diverged"))]
    if sel.empty:
        return pd.DataFrame()
    wide = sel.pivot_table(index=["run_id", "label", "task", "step"], columns="metric",
                           values="value", aggfunc="last").reset_index()
    wide.columns.name = None
    return wide


def _overoptimisation_table(rep: Report, evals: pd.DataFrame) -> None:
    rows, shown = [], []
    for task, label, sub in _groups(rep, evals):
        mean = sub.groupby("step")[["gold_reward", "proxy_reward"]].mean().dropna()
        if mean.empty:
            continue
        counted = rep.data.usable
        finals = counted[(counted["task"] == task) & (counted["label"] == label)]
        final_gold = rep.instance_ci(finals, "final_gold_reward")
        peak_step = float(mean["gold_reward"].idxmax())
        peak = float(mean["gold_reward"].max())
        after = mean.loc[peak_step:]
        proxy_after = float(after["proxy_reward"].iloc[-1] - after["proxy_reward"].iloc[0])
        over = (final_gold.has_interval and peak > final_gold.high and proxy_after > 0)
        row = {
            "task": task, "label": label,
            "gold_start": float(mean["gold_reward"].iloc[0]),
            "gold_peak": peak, "peak_step": peak_step,
            "gold_final": final_gold.value, "gold_final_low": final_gold.low,
            "gold_final_high": final_gold.high,
            "proxy_start": float(mean["proxy_reward"].iloc[0]),
            "proxy_final": float(mean["proxy_reward"].iloc[-1]),
            "proxy_change_after_gold_peak": proxy_after,
            "over_optimised": bool(over),
        }
        rows.append(row)
        shown.append({
            "task": task, "label": label,
            "gold start → peak (step)": f"{fmt(row['gold_start'])} → {fmt(peak)} "
                                        f"({fmt(peak_step)})",
            "gold final": final_gold.format(),
            "proxy start → final": f"{fmt(row['proxy_start'])} → {fmt(row['proxy_final'])}",
            "proxy change after gold peak": fmt(proxy_after),
            "over-optimised": "yes" if over else "no",
        })
    if not rows:
        return
    numbers = pd.DataFrame(rows)
    rep.table(pd.DataFrame(shown), "Over-optimisation: a configuration is marked when the peak "
              "of its run-mean gold curve lies above the 95% Student-t interval (over "
              "instances) of its final gold reward while "
              "its proxy reward rose after that peak.", "overoptimisation", numbers)
    marked = numbers[numbers["over_optimised"]]
    rep.text("Marked as over-optimised: {labels} ({k} of {n} configurations).",
             labels=_join(f"{r.label} on {r.task}" if rep.multi_task else r.label
                          for r in marked.itertuples()),
             k=len(marked), n=len(numbers))


def _reward_model_table(rep: Report) -> None:
    rows = []
    for rec_id, s in _summaries(rep):
        fit = s.get("reward_model") or {}
        if fit.get("kind") == "gold" or "heldout_accuracy" not in fit:
            continue
        run = rep.data.runs.set_index("run_id").loc[rec_id]
        rows.append({"task": run["task"], "seed": run["seed"],
                     **{k: fit.get(k) for k in ("train_pairs", "heldout_accuracy",
                                                "gold_heldout_accuracy", "spearman_gold")}})
    if not rows:
        return
    frame = pd.DataFrame(rows).drop_duplicates(subset=["task", "seed"]).sort_values(
        ["task", "seed"])
    shown = frame.copy()
    for c in ("heldout_accuracy", "gold_heldout_accuracy", "spearman_gold"):
        shown[c] = shown[c].map(fmt)
    rep.table(shown, "Fitted reward model r̂ per task and seed: held-out accuracy on the "
              "preference labels, the gold reward's accuracy on the same pairs, and the Spearman "
              "correlation of r̂ with r*.", "reward_model", frame)
