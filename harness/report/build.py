"""Compute a suite's report from its run store and write it: Markdown, HTML, PNG and CSV.

Every sentence of the report is a template filled from the data; which sentences appear depends
on the data too (a section says what is missing rather than asserting anything fixed). Method
notes describe how numbers are computed, never what they show.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError, HarnessError
from harness.report import figures as fig
from harness.report import stats as st
from harness.report.data import PHASES, X_AXES, StoreData, eval_series, load_store, on_grid
from harness.report.render import Block, Figure, Heading, Table, Text, to_html, to_markdown
from harness.store import atomic_write_bytes


def _write(path: Path, data: bytes) -> None:
    """Atomically, and readable by all (reports are published; mkstemp makes files 0600)."""
    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)

CLAIM_ORDER = ("ppo", "grpo", "dpo")
"""The lecture's claim: from PPO to GRPO to DPO, stability increases and computation decreases."""
STATUS_ORDER = ("done", "diverged", "failed", "running")
CURVE_METRICS = ("gold_reward", "proxy_reward", "kl_ref")


@dataclass
class ReportOptions:
    """How a report is computed (see :func:`write_report`)."""

    x: str = "step"
    threshold: float = 0.9
    n_boot: int = 200
    n_resamples: int = 2000
    seed: int = 0
    max_points: int = 100
    spike_k: float = 5.0

    def __post_init__(self) -> None:
        if self.x not in X_AXES:
            raise ConfigError(f"x-axis {self.x!r}: choose one of {', '.join(X_AXES)}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold {self.threshold}: a fraction in (0, 1]")


def fmt(x: Any, digits: int = 3) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "not reached" if f > 0 else "-∞"
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.{digits}g}"


def _est(prefix: str, e: st.Estimate) -> dict[str, float]:
    return {prefix: e.value, f"{prefix}_low": e.low, f"{prefix}_high": e.high}


def _join(items: Iterable[Any]) -> str:
    items = [str(i) for i in items]
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass
class Report:
    """What is being built: the blocks, the CSV tables written, the figures drawn."""

    data: StoreData
    opts: ReportOptions
    out: Path
    blocks: list[Block] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def multi_task(self) -> bool:
        return len(self.data.tasks) > 1

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def text(self, template: str, **values: Any) -> None:
        self.blocks.append(Text(template, values))

    def csv(self, name: str, frame: pd.DataFrame) -> str:
        rel = f"tables/{name}.csv"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, frame.to_csv(index=False).encode())
        self.tables[name] = frame
        return rel

    def table(self, shown: pd.DataFrame, caption: str, csv_name: str | None = None,
              numbers: pd.DataFrame | None = None) -> None:
        rel = self.csv(csv_name, shown if numbers is None else numbers) if csv_name else None
        if not self.multi_task and "task" in shown.columns:
            shown = shown.drop(columns="task")
        self.blocks.append(Table(shown.reset_index(drop=True), caption, rel))

    def figure(self, name: str, caption: str, draw: Any) -> None:
        path = self.out / "figures" / f"{name}.png"
        if draw(path):
            self.blocks.append(Figure(path, caption))

    def ci(self, values: Iterable[float], statistic: str = "mean", salt: int = 0) -> st.Estimate:
        return st.bootstrap_ci(list(values), statistic, n_resamples=self.opts.n_resamples,
                               seed=self.opts.seed + salt)


def _groups(rep: Report, frame: pd.DataFrame) -> Iterable[tuple[str, str, pd.DataFrame]]:
    """(task, label, rows) in report order, for every pair with rows."""
    for task in rep.data.tasks:
        for label in rep.data.labels:
            sub = frame[(frame["task"] == task) & (frame["label"] == label)]
            if len(sub):
                yield task, label, sub


# --- sections ---------------------------------------------------------------------------------


def overview(rep: Report) -> None:
    d = rep.data
    runs = d.runs
    rep.add(Heading(f"Report: {d.suite}", 1))
    counts = runs["status"].value_counts()
    status_text = _join(f"{int(counts[s])} {s}" for s in
                        [*STATUS_ORDER, *sorted(set(counts.index) - set(STATUS_ORDER))]
                        if s in counts)
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    budgets = runs[["budget_kind", "budget"]].drop_duplicates()
    budget_text = _join(f"{k} = {fmt(v)}" for k, v in budgets.itertuples(index=False))
    rep.text(
        "Suite {suite}: {n} runs of {k} algorithm configurations ({labels}) on {t} "
        "({tasks}), seeds {seeds}, budget {budget}. Statuses: {statuses}.",
        suite=d.suite, n=len(runs), k=len(d.labels), labels=_join(d.labels),
        t=f"{len(d.tasks)} task" + ("s" if len(d.tasks) != 1 else ""),
        tasks=_join(d.tasks), seeds=_join(seeds), budget=budget_text, statuses=status_text,
    )
    rep.text("Computed from the run store {path} alone; learning curves are drawn against "
             "{x}.", path=str(d.path), x=fig.X_NAMES[rep.opts.x])


def status_section(rep: Report) -> None:
    runs = rep.data.runs
    rep.add(Heading("Runs and status"))
    present = [s for s in STATUS_ORDER if s in set(runs["status"])]
    present += sorted(set(runs["status"]) - set(STATUS_ORDER))
    rows = []
    for task in rep.data.tasks:
        for label in rep.data.labels:
            sub = runs[(runs["task"] == task) & (runs["label"] == label)]
            if sub.empty:
                continue
            row = {"task": task, "label": label, "algorithm": sub["algorithm"].iloc[0]}
            for s in ("done", "diverged", "failed", "running", *present):
                row[s] = int((sub["status"] == s).sum())
            row["total"] = len(sub)
            rows.append(row)
    table = pd.DataFrame(rows)
    table = table[["task", "label", "algorithm",
                   *dict.fromkeys(["done", "diverged", "failed", "running", *present]),
                   "total"]]
    rep.table(table, "Runs per configuration and status.", "status")

    n_failed = int((runs["status"] == "failed").sum())
    n_div = int((runs["status"] == "diverged").sum())
    n_running = int((runs["status"] == "running").sum())
    div = runs[runs["status"] == "diverged"]
    finite_div = int(np.isfinite(div.get("final_gold_reward", pd.Series(dtype=float))).sum())
    if n_failed:
        rep.text("{failed} of {n} runs failed: they are excluded from reward statistics, "
                 "counted in the failure rate and listed below.", failed=n_failed, n=len(runs))
    else:
        rep.text("{failed} of {n} runs failed.", failed=n_failed, n=len(runs))
    if n_div:
        rep.text("{div} of {n} runs diverged: they count in the divergence rate, and their final "
                 "values enter the statistics where finite ({finite} of {div} have a finite "
                 "final gold reward).", div=n_div, n=len(runs), finite=finite_div)
    else:
        rep.text("{div} of {n} runs diverged.", div=n_div, n=len(runs))
    if n_running:
        rep.text("Runs not finished (status running), left out of every statistic: {k}.",
                 k=n_running)
    listed = runs[runs["status"] != "done"][["run_id", "label", "task", "seed", "status",
                                             "reason"]]
    if len(listed):
        rep.table(listed, "Runs that did not finish as done, with their reason.")
    keep = [c for c in runs.columns if c != "reason"] + ["reason"]
    rep.csv("runs", runs[keep])


def excluded_section(rep: Report) -> None:
    """Runs left out: stale ones (an older version of the suite) and corrupt folders."""
    d = rep.data
    stale = d.stale if d.stale is not None else pd.DataFrame()
    corrupt = d.corrupt if d.corrupt is not None else pd.DataFrame()
    if stale.empty and corrupt.empty:
        return
    rep.add(Heading("Runs left out"))
    if not stale.empty:
        counted = "counted (--include-stale)" if d.runs.get("stale", pd.Series()).any() \
            else "left out of every statistic"
        rep.text("{k} runs are stale: they belong to an older version of the suite (another "
                 "configuration, data file or plugin version) and are {counted}; "
                 "'rlhf-harness gc' removes them.", k=len(stale), counted=counted)
        rep.table(stale.sort_values(["task", "label", "seed"], key=lambda c: c.astype(str)),
                  "Stale runs", "stale_runs")
    if not corrupt.empty:
        rep.text("{k} run folders are corrupt (a file does not read back) and are skipped; "
                 "running the suite again redoes them.", k=len(corrupt))
        rep.table(corrupt, "Corrupt run folders", "corrupt_runs")


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
    rep.add(Heading("Reward–KL frontiers"))
    rep.text("Each swept algorithm is a curve, not a point: its sweep points' final (KL, gold), "
             "their upper envelope per instance, and gold compared at KL values both compared "
             "frontiers reach, paired by instance (see the method section).")
    rep.figure("frontiers", "Final gold reward against final KL(π‖π_ref): each sweep point's "
               "mean over instances with 95% t intervals; lines and bands: the frontier's gold "
               "(mean and 95% t interval over instances) over the KL range all its instances "
               "reach (dotted where they share none).",
               lambda p: fig.frontiers(points, curves, rep.data.tasks, families, p))
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
              "every instance: paired difference a − b, 95% t interval, p-value, "
              "Holm-adjusted over this table.", "frontier_comparisons")
    decided = comparisons[comparisons["decision"] != "undecided"]
    rep.text("{k} of {n} frontier comparisons are decided at the 5% level after Holm's "
             "adjustment.", k=len(decided), n=len(comparisons))


def tuning_section(rep: Report) -> None:
    """Equal tuning effort: expected best of n trials, sensitivity, chosen configurations."""
    from harness.tuning import expected_max_performance

    trials = rep.data.trials
    if trials is None or trials.empty:
        return
    per_trial = (trials.groupby(["task", "label", "trial"], as_index=False)["value"].mean()
                 .rename(columns={"value": "trial_value"}))
    trials = trials.merge(per_trial, on=["task", "label", "trial"])
    curves = []
    for (task, label), g in per_trial.groupby(["task", "label"], sort=False):
        emp = expected_max_performance(g["trial_value"].tolist())
        curves.append(pd.DataFrame({"task": task, "label": label, "n": emp.n,
                                    "mean": emp.mean, "std": emp.std}))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    params = sorted(c.removeprefix("param_") for c in trials.columns if c.startswith("param_"))
    families = list(dict.fromkeys(trials["label"]))
    objective = str(trials["objective"].dropna().iloc[0]) if trials["objective"].notna().any() \
        else "the objective"
    rep.add(Heading("Tuning"))
    counts = per_trial.groupby("task")["trial"].nunique()
    effort = ", ".join(f"{n} trials on {task}" for task, n in counts.items())
    rep.text("Every tuned algorithm had the same tuning effort ({effort}), each trial run on "
             "{k} tuning instances and valued by the mean {objective} over them; the "
             "comparison uses the best trial's configuration on the suite's own instances, "
             "which the tuning never saw.", effort=effort,
             k=int(trials["seed"].nunique()), objective=objective)
    rep.figure("tuning", "Top: expected best objective of n trials (Dodge et al. 2019), ± one "
               "standard deviation. Below: each trial's objective against each tuned "
               "hyperparameter.",
               lambda p: fig.tuning(trials, curves_df, params, families, p))
    runs = rep.data.runs
    if "tuned_params" in runs:
        chosen = (runs.dropna(subset=["tuned_params"])
                  .groupby(["task", "label"], as_index=False)
                  .agg(trial=("tuned_trial", "first"), params=("tuned_params", "first"),
                       value=("tuned_value", "first")))
        chosen["value"] = chosen["value"].map(fmt)
        rep.table(chosen, f"Chosen configurations (best trial by {objective}).",
                  "tuning_chosen")
    rep.csv("tuning_trials", per_trial)
    if len(curves_df):
        rep.csv("tuning_expected_max", curves_df)


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
        f"runs with a 95% bootstrap band (whole runs resampled, {opts.n_boot} times); runs "
        f"interpolated onto a common grid of at most {opts.max_points} points.",
        lambda p: fig.learning_curves(curves, opts.x, d.tasks, d.labels, p,
                                      n_boot=opts.n_boot, seed=opts.seed),
    )

    u = d.usable
    metrics = [m for m in ("gold_reward", "proxy_reward", "kl_ref", "win_rate_ref", "regret")
               if f"final_{m}" in u.columns and u[f"final_{m}"].notna().any()]
    numbers, shown = [], []
    for salt, (task, label, sub) in enumerate(_groups(rep, u)):
        num: dict[str, Any] = {"task": task, "label": label, "runs": len(sub)}
        row: dict[str, Any] = {"task": task, "label": label, "runs": len(sub)}
        for m in metrics:
            e = rep.ci(sub[f"final_{m}"], "mean", salt)
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
        rep.table(shown_df, "Final evaluation (mean over counted runs, 95% bootstrap CI). A "
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
                                              d.labels, p))
    if {"proxy_reward", "gold_reward"} <= set(evals.columns):
        rep.figure("overoptimisation", "Proxy reward r̂ against gold reward r* along training "
                   "(seed means; ○ start, ● end). Proxy rising while gold falls is "
                   "over-optimisation of r̂.",
                   lambda p: fig.trajectories(evals, "gold_reward", "proxy_reward", d.tasks,
                                              d.labels, p))
        _overoptimisation_table(rep, evals)

    if "regret" in set(d.metrics["metric"]):
        series = eval_series(d, "regret")
        regret = {"regret": on_grid(series, opts.x, max_points=opts.max_points)}
        rep.figure(f"regret_{opts.x}",
                   f"Regret J_β(π*_β) − J_β(π) against {fig.X_NAMES[opts.x]} (mean over runs, "
                   "95% bootstrap band).",
                   lambda p: fig.learning_curves(regret, opts.x, d.tasks, d.labels, p,
                                                 n_boot=opts.n_boot, seed=opts.seed))
    _reward_model_table(rep)


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
    for salt, (task, label, sub) in enumerate(_groups(rep, evals)):
        mean = sub.groupby("step")[["gold_reward", "proxy_reward"]].mean().dropna()
        if mean.empty:
            continue
        counted = rep.data.usable
        finals = counted[(counted["task"] == task) & (counted["label"] == label)]
        final_gold = rep.ci(finals.get("final_gold_reward", pd.Series(dtype=float)), "mean",
                            salt)
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
              "of its seed-mean gold curve lies above the 95% CI of its final gold reward while "
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


def _summaries(rep: Report) -> Iterable[tuple[str, dict[str, Any]]]:
    import json

    for run_id in rep.data.runs["run_id"]:
        path = rep.data.path / run_id / "summary.json"
        if path.exists():
            try:
                yield run_id, json.loads(path.read_text())
            except (OSError, ValueError):
                continue


def compute_section(rep: Report) -> None:
    d, opts = rep.data, rep.opts
    rep.add(Heading("Compute"))
    u = d.usable
    rep.figure("compute_time", "Wall seconds per run by phase (mean over counted runs, 95% "
               "bootstrap CI).",
               lambda p: fig.time_split(u, d.tasks, d.labels, p, n_boot=opts.n_boot,
                                        seed=opts.seed))
    rep.figure("compute_resources", "Training wall seconds, estimated FLOPs, peak memory and "
               "models resident per run (mean, 95% bootstrap CI).",
               lambda p: fig.resources(u, d.labels, p, n_boot=opts.n_boot, seed=opts.seed))
    rows, shown = [], []
    for salt, (task, label, sub) in enumerate(_groups(rep, u)):
        secs = rep.ci(sub["train_seconds"], "mean", salt)
        flops = rep.ci(sub["flops"], "mean", salt)
        num = {"task": task, "label": label, "runs": len(sub)}
        row = dict(num)
        for ph in PHASES:
            num[f"seconds_{ph}"] = float(sub[f"seconds_{ph}"].mean())
            row[f"{ph} s"] = fmt(num[f"seconds_{ph}"])
        num.update(_est("train_seconds", secs))
        num.update(_est("flops", flops))
        row["training s (gen+score+train)"] = secs.format()
        row["FLOPs"] = flops.format()
        for col, name in (("samples", "samples"), ("peak_host_memory_mb", "peak host MB"),
                          ("peak_gpu_memory_mb", "peak GPU MB")):
            num[col] = float(sub[col].mean()) if sub[col].notna().any() else math.nan
            row[name] = fmt(num[col])
        resident = sorted({int(v) for v in sub["models_resident"].dropna()})
        num["models_resident"] = ",".join(map(str, resident))
        row["models resident"] = num["models_resident"] or "n/a"
        rows.append(num)
        shown.append(row)
    if rows:
        rep.table(pd.DataFrame(shown), "Compute per run (counted runs; phase seconds are "
                  "means; training seconds exclude evaluation).", "compute", pd.DataFrame(rows))
    _time_to_threshold(rep)


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


def _run_stability(d: StoreData, k: float) -> pd.DataFrame:
    """Per run: worst drawdown of gold reward, loss and grad-norm spikes."""
    m = d.metrics[d.metrics["status"].isin(("done", "diverged"))]
    rows = []
    for run_id, run in m.groupby("run_id", sort=False):
        run = run.sort_values("step")
        gold = run[(run["source"] == "eval") & (run["metric"] == "gold_reward")]["value"]
        row = {"run_id": run_id, "drawdown": st.max_drawdown(gold) if len(gold) else math.nan}
        for metric in ("loss", "grad_norm"):
            vals = run[(run["source"] == "train") & (run["metric"] == metric)]["value"]
            row[f"{metric}_spikes"] = st.count_spikes(vals, k=k) if len(vals) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "drawdown", "loss_spikes", "grad_norm_spikes"])


def stability_section(rep: Report) -> pd.DataFrame:
    d = rep.data
    rep.add(Heading("Stability"))
    per_run = _run_stability(d, rep.opts.spike_k)
    runs = d.runs.merge(per_run, on="run_id", how="left")
    finished = runs[runs["status"].isin(("done", "diverged", "failed"))]
    rows, shown = [], []
    for task, label, sub in _groups(rep, finished):
        counted = sub[sub["status"].isin(("done", "diverged"))]
        gold = counted.get("final_gold_reward", pd.Series(dtype=float)).dropna()
        std = st.std_interval(gold)
        n = len(sub)
        div = st.wilson_interval(int((sub["status"] == "diverged").sum()), n)
        fail = st.wilson_interval(int((sub["status"] == "failed").sum()), n)
        q1, q3 = (np.percentile(gold, [25, 75]) if len(gold) else (math.nan, math.nan))
        dd = counted["drawdown"].dropna()
        num = {"task": task, "label": label, "runs": n, "counted": len(counted),
               "final_gold_median": float(np.median(gold)) if len(gold) else math.nan,
               "final_gold_iqr": float(q3 - q1), **_est("final_gold_std", std),
               "diverged": int((sub["status"] == "diverged").sum()),
               **_est("divergence_rate", div),
               "failed": int((sub["status"] == "failed").sum()), **_est("failure_rate", fail),
               "drawdown_worst": float(dd.max()) if len(dd) else math.nan,
               "drawdown_median": float(dd.median()) if len(dd) else math.nan}
        row = {"task": task, "label": label, "runs": n,
               "final gold median (IQR)": f"{fmt(num['final_gold_median'])} "
                                          f"({fmt(num['final_gold_iqr'])})",
               "final gold std [CI]": std.format(),
               "divergence rate [Wilson CI]": f"{num['diverged']}/{n}: {div.format(2)}",
               "failure rate": f"{num['failed']}/{n}",
               "worst / median drawdown": f"{fmt(num['drawdown_worst'])} / "
                                          f"{fmt(num['drawdown_median'])}"}
        for metric in ("loss", "grad_norm"):
            spikes = counted[f"{metric}_spikes"].dropna()
            num[f"{metric}_spikes_total"] = float(spikes.sum()) if len(spikes) else math.nan
            num[f"{metric}_spike_runs"] = int((spikes > 0).sum())
            row[f"{metric} spikes (runs with any)"] = (
                f"{fmt(num[f'{metric}_spikes_total'])} ({num[f'{metric}_spike_runs']}/"
                f"{len(spikes)})" if len(spikes) else "n/a")
        rows.append(num)
        shown.append(row)
    numbers = pd.DataFrame(rows)
    if rows:
        rep.table(pd.DataFrame(shown), (
            "Stability across seeds. Final gold reward over counted runs (done and diverged "
            "with a finite value); divergence and failure rates over all finished runs; "
            "drawdown: the largest fall of gold reward below its running best within a run; "
            f"spikes: train steps above the run's rolling median (9 steps) by more than "
            f"{fmt(rep.opts.spike_k)} robust sds (1.4826×MAD of the residuals); non-finite "
            f"values count as spikes."), "stability", numbers)
    rep.figure("final_gold", "Final gold reward of every counted run (violin per "
               "configuration; dots coloured by status).",
               lambda p: fig.final_distribution(d.usable, d.tasks, d.labels, p))
    _sensitivity(rep)
    rep.csv("per_run_stability", per_run)
    return numbers


def _sensitivity(rep: Report) -> None:
    d, opts = rep.data, rep.opts
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
    rep.figure("sensitivity", "Final gold reward per sweep point (mean, 95% bootstrap CI; dots: "
               "runs).", lambda p: fig.sensitivity(u, p, n_boot=opts.n_boot, seed=opts.seed))


def _scores(rep: Report) -> tuple[pd.DataFrame, str]:
    """Final gold reward per counted run, min-max normalised per task when there are several."""
    u = rep.data.usable
    if "final_gold_reward" not in u:
        return u.iloc[0:0].assign(score=[]), "final gold reward"
    frame = u[["run_id", "label", "algorithm", "task", "final_gold_reward"]].dropna(
        subset=["final_gold_reward"]).copy()
    if not rep.multi_task:
        frame["score"] = frame["final_gold_reward"]
        return frame, "final gold reward"
    lo = frame.groupby("task")["final_gold_reward"].transform("min")
    hi = frame.groupby("task")["final_gold_reward"].transform("max")
    span = (hi - lo).where(hi > lo)
    frame["score"] = ((frame["final_gold_reward"] - lo) / span).fillna(0.5)
    return frame, "normalised final gold reward"


def ranking_section(rep: Report) -> None:
    d, opts = rep.data, rep.opts
    rep.add(Heading("Ranking"))
    scores, what = _scores(rep)
    if rep.multi_task:
        rep.text("Scores are final gold rewards min-max normalised per task across all counted "
                 "runs of the task ({t} tasks), then pooled; bootstrap strata are tasks.",
                 t=len(d.tasks))
    rows = []
    by_label: dict[str, dict[str, np.ndarray]] = {}
    for label in d.labels:
        sub = scores[scores["label"] == label]
        if sub.empty:
            continue
        by_task = {t: g["score"].to_numpy() for t, g in sub.groupby("task")}
        by_label[label] = by_task
        e = st.iqm_ci(list(by_task.values()), n_resamples=opts.n_resamples, seed=opts.seed)
        rows.append({"label": label, "runs": len(sub), "tasks": len(by_task),
                     "iqm": e.value, "low": e.low, "high": e.high,
                     "median": float(sub["score"].median()), "mean": float(sub["score"].mean())})
    iqm = pd.DataFrame(rows, columns=["label", "runs", "tasks", "iqm", "low", "high", "median",
                                      "mean"])
    if iqm.empty:
        rep.text("No counted run has a finite final gold reward ({n} runs in the store), so "
                 "there is no ranking.", n=len(d.runs))
        return
    iqm = iqm.sort_values("iqm", ascending=False, kind="stable").reset_index(drop=True)
    shown = pd.DataFrame({
        "rank": range(1, len(iqm) + 1), "label": iqm["label"], "runs": iqm["runs"],
        f"IQM of {what} [95% CI]": [st.Estimate(r.iqm, r.low, r.high).format()
                                    for r in iqm.itertuples()],
        "median": iqm["median"].map(fmt), "mean": iqm["mean"].map(fmt),
    })
    rep.table(shown, "Interquartile mean with a 95% stratified bootstrap CI "
              f"({opts.n_resamples} resamples).", "ranking_iqm", iqm)

    labels = list(by_label)
    pairs, shown_pairs = [], []
    for i, x in enumerate(labels):
        for j, y in enumerate(labels):
            if i == j:
                continue
            common = sorted(set(by_label[x]) & set(by_label[y]))
            if not common:
                continue
            xs = [by_label[x][t] for t in common]
            ys = [by_label[y][t] for t in common]
            if i < j:
                e = st.probability_of_improvement_ci(xs, ys, n_resamples=opts.n_resamples,
                                                     seed=opts.seed)
                ordered = st.pair_mark(e, st.Estimate(0.5, 0.5, 0.5))
                pairs.append({"x": x, "y": y, "p": e.value, "low": e.low, "high": e.high,
                              "tasks": len(common)})
                shown_pairs.append({
                    "X": x, "Y": y, "P(X > Y) [95% CI]": e.format(),
                    "CI vs ½": {st.SUPPORTED: "X better", st.NOT_SUPPORTED: "Y better"}.get(
                        ordered, "overlaps ½")})
            else:
                pairs.append({"x": x, "y": y,
                              "p": st.probability_of_improvement(xs, ys),
                              "low": math.nan, "high": math.nan, "tasks": len(common)})
    poi = pd.DataFrame(pairs, columns=["x", "y", "p", "low", "high", "tasks"])
    if len(shown_pairs):
        rep.table(pd.DataFrame(shown_pairs), "Probability of improvement P(X > Y) = "
                  "P(x > y) + ½P(x = y) for a random run of each (Mann-Whitney U / nm, averaged "
                  "over tasks) with a 95% stratified bootstrap CI.", "probability_of_improvement",
                  poi[poi["low"].notna()])
    rep.figure("ranking", f"IQM of the {what} (95% stratified bootstrap CI) and the "
               "probability of improvement of each row over each column.",
               lambda p: fig.ranking(iqm, poi, d.labels, p, what))
    top = iqm.iloc[0]
    clear = [f"{r['x']} over {r['y']}" if r["low"] > 0.5 else f"{r['y']} over {r['x']}"
             for r in pairs if math.isfinite(r["low"]) and (r["low"] > 0.5 or r["high"] < 0.5)]
    rep.text("Highest IQM: {label} ({value}). Pairs whose probability-of-improvement CI "
             "excludes ½: {pairs}.", label=top["label"],
             value=st.Estimate(top["iqm"], top["low"], top["high"]).format(),
             pairs=_join(clear))


def _representatives(rep: Report, task: str) -> dict[str, str]:
    """Per algorithm name, its label on ``task`` with the highest median final gold reward."""
    u = rep.data.usable
    u = u[u["task"] == task]
    out = {}
    for alg in CLAIM_ORDER:
        sub = u[u["algorithm"] == alg]
        if sub.empty:
            continue
        if "final_gold_reward" in sub and sub["final_gold_reward"].notna().any():
            med = sub.groupby("label")["final_gold_reward"].median()
            out[alg] = str(med.idxmax())
        else:
            out[alg] = str(sub["label"].iloc[0])
    return out


def verdict_section(rep: Report) -> None:
    d, opts = rep.data, rep.opts
    rep.add(Heading("Verdict"))
    rep.text("Claim tested, per task: from {a} to {b} to {c} (registered algorithm names), "
             "stability increases and computation decreases.",
             a=CLAIM_ORDER[0], b=CLAIM_ORDER[1], c=CLAIM_ORDER[2])
    runs = d.runs
    gpu = "peak_gpu_memory_mb" in runs and runs["peak_gpu_memory_mb"].notna().any()
    memory_col = "peak_gpu_memory_mb" if gpu else "peak_host_memory_mb"
    quantities = [
        ("stability", "seed std of final gold reward", "std"),
        ("stability", "divergence rate", "divergence"),
        ("stability", "mean worst drawdown of gold reward", "drawdown"),
        ("computation", "training wall seconds per run", "train_seconds"),
        ("computation", "FLOPs per run", "flops"),
        ("computation", "peak GPU memory (MB)" if gpu else "peak host memory (MB)", memory_col),
    ]
    per_run = _run_stability(d, opts.spike_k)
    merged = runs.merge(per_run, on="run_id", how="left")
    rows, shown = [], []
    any_task = False
    for task in d.tasks:
        reps = _representatives(rep, task)
        missing = [a for a in CLAIM_ORDER if a not in reps]
        if missing:
            rep.text("{task}: no counted runs of {missing}, so the claim cannot be tested there "
                     "(algorithms present: {present}).", task=task, missing=_join(missing),
                     present=_join(sorted(set(runs[runs["task"] == task]["algorithm"]))))
            continue
        any_task = True
        if any(reps[a] != a for a in CLAIM_ORDER):
            rep.text("{task}: each algorithm is represented by its configuration with the "
                     "highest median final gold reward: {chosen}.", task=task,
                     chosen=_join(f"{a} → {reps[a]}" for a in CLAIM_ORDER))
        for aspect, name, key in quantities:
            ests = []
            for alg in CLAIM_ORDER:
                sub = merged[(merged["task"] == task) & (merged["label"] == reps[alg])]
                counted = sub[sub["status"].isin(("done", "diverged"))]
                done = sub[sub["status"] == "done"]
                if key == "std":
                    e = st.std_interval(counted.get("final_gold_reward",
                                                    pd.Series(dtype=float)))
                elif key == "divergence":
                    fin = sub[sub["status"].isin(("done", "diverged", "failed"))]
                    e = st.wilson_interval(int((fin["status"] == "diverged").sum()), len(fin))
                elif key == "drawdown":
                    e = st.t_interval(counted["drawdown"])
                else:
                    e = st.t_interval(done[key])
                ests.append(e)
            # every quantity is non-negative: a t interval is clipped at 0
            ests = [st.Estimate(e.value, max(e.low, 0.0), e.high) if e.has_interval else e
                    for e in ests]
            marks, overall = st.chain_marks(ests, "decreasing")
            rows.append({"task": task, "aspect": aspect, "quantity": name,
                         "claim": " > ".join(CLAIM_ORDER),
                         **{f"{a}_{k}": v for a, e in zip(CLAIM_ORDER, ests, strict=True)
                            for k, v in (("value", e.value), ("low", e.low),
                                         ("high", e.high))},
                         f"{CLAIM_ORDER[0]}_to_{CLAIM_ORDER[1]}": marks[0],
                         f"{CLAIM_ORDER[1]}_to_{CLAIM_ORDER[2]}": marks[1],
                         "verdict": overall})
            shown.append({"task": task, "aspect": aspect, "quantity (lower = claim)": name,
                          **{reps[a] if reps[a] == a else f"{a} ({reps[a]})": e.format()
                             for a, e in zip(CLAIM_ORDER, ests, strict=True)},
                          f"{CLAIM_ORDER[0]}→{CLAIM_ORDER[1]}": marks[0],
                          f"{CLAIM_ORDER[1]}→{CLAIM_ORDER[2]}": marks[1],
                          "verdict": overall})
    if not any_task:
        return
    numbers = pd.DataFrame(rows)
    shown_df = pd.DataFrame(shown)
    rep.table(shown_df, "Each cell: the measured quantity with its 95% CI over runs: "
              "Student t for means, chi-square for the standard deviation, Wilson for rates "
              "(small-sample intervals: at a handful of seeds percentile-bootstrap intervals "
              "are too narrow for marks that rest on their overlap). Compute rows use runs "
              "that finished as done. Stability rows expect lower values from left "
              "to right, as do computation rows. A step is supported when the two CIs are "
              "disjoint in the claimed order, not supported when disjoint the other way, "
              "inconclusive otherwise; a row is supported when both steps are, not supported "
              "when either step is.", "verdict", numbers)
    for aspect in ("stability", "computation"):
        sub = numbers[numbers["aspect"] == aspect]["verdict"].value_counts()
        rep.text("{aspect}: {s} supported, {n} not supported, {i} inconclusive of {t} rows.",
                 aspect=aspect.capitalize(), s=int(sub.get(st.SUPPORTED, 0)),
                 n=int(sub.get(st.NOT_SUPPORTED, 0)), i=int(sub.get(st.INCONCLUSIVE, 0)),
                 t=int(sub.sum()))


def method_section(rep: Report) -> None:
    rep.add(Heading("Method"))
    opts = rep.opts
    rep.text("Counted runs are those with status done or diverged; a diverged run's final "
             "evaluation is its last one, used where finite. Failed runs are listed and enter "
             "only the status table and the failure and divergence rates (as their "
             "denominator).")
    rep.text("Intervals: percentile bootstrap, {r} resamples, seed {seed} (scipy.stats.bootstrap; "
             "several samples are resampled independently: the stratified bootstrap); bands of "
             "learning curves resample whole runs, bars use seaborn's 95% bootstrap CI; both "
             "with {b} resamples. Stability table and verdict: chi-square intervals for "
             "standard deviations. IQM: "
             "scipy.stats.trim_mean(x, 0.25). Probability of improvement: Mann-Whitney U/(n·m) "
             "per task, averaged over tasks (Agarwal et al. 2021). Rates: Wilson score "
             "interval. Verdict cells: Student t intervals for means, chi-square intervals for "
             "standard deviations, Wilson intervals for rates.", r=opts.n_resamples,
             seed=opts.seed, b=opts.n_boot)


def write_report(
    store_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    x: str = "step",
    threshold: float = 0.9,
    n_boot: int = 200,
    n_resamples: int = 2000,
    seed: int = 0,
    include_stale: bool = False,
) -> Path:
    """Write the report of the run store ``store_path`` (``runs/<suite>``) into ``out_dir``.

    ``out_dir`` defaults to ``reports/<suite folder name>``. Writes ``index.md`` (GitHub
    Markdown), ``index.html`` (self-contained), ``figures/*.png`` and ``tables/*.csv``; returns
    ``out_dir``. ``x`` picks the learning curves' x-axis (step, samples, wall_seconds, flops);
    ``threshold`` the fraction of the way from π_ref's gold reward to the best final one that
    time-to-target measures; ``n_boot`` the resamples of figure bands, ``n_resamples`` those of
    table intervals; ``seed`` seeds every bootstrap; ``include_stale`` counts the runs of
    older versions of the suite too.
    """
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    opts = ReportOptions(x=x, threshold=threshold, n_boot=n_boot, n_resamples=n_resamples,
                         seed=seed)
    store = Path(store_path)
    if not store.is_dir():
        raise ConfigError(f"{store}: no run store there (expected runs/<suite>)")
    data = load_store(store, include_stale=include_stale)
    if data.runs.empty:
        stale = 0 if data.stale is None else len(data.stale)
        hint = (f" of the suite as last run ({stale} stale; --include-stale counts them)"
                if stale else "")
        raise HarnessError(f"{store}: the run store holds no runs{hint}")
    out = Path(out_dir) if out_dir is not None else Path("reports") / store.name
    out.mkdir(parents=True, exist_ok=True)
    for sub, pattern in (("figures", "*.png"), ("tables", "*.csv")):
        for stale in (out / sub).glob(pattern):
            stale.unlink()
    rep = Report(data, opts, out)
    overview(rep)
    status_section(rep)
    excluded_section(rep)
    reward_section(rep)
    frontier_section(rep)
    tuning_section(rep)
    compute_section(rep)
    stability_section(rep)
    ranking_section(rep)
    verdict_section(rep)
    method_section(rep)
    plt.close("all")
    rep.text("Report written in {s} s.", s=f"{time.perf_counter() - started:.1f}")
    _write(out / "index.md", to_markdown(rep.blocks, out).encode())
    _write(out / "index.html",
                       to_html(rep.blocks, f"Report: {data.suite}").encode())
    return out
