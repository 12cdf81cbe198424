"""The report's figures: seaborn on matplotlib's Agg backend, saved as PNG.

Every function takes tidy frames, draws one figure, writes it to ``path`` and returns whether it
drew anything (a figure without data is not written). Colours are fixed per label across figures.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 90
X_NAMES = {
    "step": "step",
    "samples": "samples (prompt-response pairs)",
    "wall_seconds": "wall seconds (cumulative)",
    "flops": "FLOPs (estimated, cumulative)",
}
METRIC_NAMES = {
    "gold_reward": "gold reward r*",
    "proxy_reward": "proxy reward r̂",
    "kl_ref": "KL(π‖π_ref)",
    "regret": "regret J_β(π*) − J_β(π)",
}


NAME_COLUMNS = ("label", "task", "algorithm", "sweep", "x", "y", "run_id")


def text(name: object) -> str:
    """A name as literal matplotlib text: ``$`` would start mathtext (and can fail to parse)."""
    return str(name).replace("$", r"\$")


def _literal(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its name columns made literal for matplotlib (see :func:`text`)."""
    cols = [c for c in NAME_COLUMNS if c in frame.columns]
    if not cols:
        return frame
    return frame.assign(**{c: frame[c].map(text) for c in cols})


def _names(names: Sequence[str]) -> list[str]:
    return [text(n) for n in names]


def palette(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    colours = sns.color_palette("tab10" if len(labels) <= 10 else "husl", max(len(labels), 1))
    return {lab: colours[i] for i, lab in enumerate(labels)}


def _save(fig: plt.Figure, path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return True


def _grid(rows: int, cols: int, w: float = 4.6, h: float = 3.2) -> tuple[plt.Figure, np.ndarray]:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    return fig, axes


def _rotate(ax: plt.Axes, angle: int = 25) -> None:
    plt.setp(ax.get_xticklabels(), rotation=angle, ha="right", rotation_mode="anchor")


def _legend_once(fig: plt.Figure, axes: np.ndarray) -> None:
    handles, labels = [], []
    for ax in axes.flat:
        leg = ax.get_legend()
        if leg is not None:
            h, lab = ax.get_legend_handles_labels()
            for hi, li in zip(h, lab, strict=False):
                if li not in labels:
                    handles.append(hi)
                    labels.append(li)
            leg.remove()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(labels), 5), frameon=False)


def t_errorbar(values: Any) -> tuple[float, float]:
    """Seaborn ``errorbar``: the Student-t 95% interval of the mean of ``values``."""
    from harness.report.stats import t_interval

    e = t_interval(np.asarray(values, dtype=float))
    return (e.low, e.high) if e.has_interval else (e.value, e.value)


def curve_bands(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean of ``value`` at each ``x``, per (task, label), with a Student-t 95% band over task
    instances: an instance's replicates are averaged first (the instance is the independent
    unit), then the t interval of the instance means is taken at each ``x``. ``frame`` is on a
    shared grid (:func:`harness.report.data.on_grid`)."""
    from scipy import stats

    out = []
    unit = "seed" if "seed" in frame.columns and frame["seed"].notna().all() else "run_id"
    for (task, label), sub in frame.groupby(["task", "label"], sort=False):
        wide = sub.pivot_table(index=x, columns=unit, values="value", aggfunc="mean")
        values = wide.to_numpy(dtype=float)  # [n_x, n_units], NaN past a run's end
        xs = wide.index.to_numpy(dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=1)
            n = np.isfinite(values).sum(axis=1)
            sd = np.nanstd(values, axis=1, ddof=1)
            half = np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd
                            / np.sqrt(np.maximum(n, 1)), np.nan)
        out.append(pd.DataFrame({"task": task, "label": label, x: xs, "mean": mean,
                                 "low": mean - half, "high": mean + half}))
    if not out:
        return pd.DataFrame(columns=["task", "label", x, "mean", "low", "high"])
    return pd.concat(out, ignore_index=True)


def learning_curves(
    curves: dict[str, pd.DataFrame], x: str, tasks: Sequence[str], labels: Sequence[str],
    path: Path,
) -> bool:
    """Rows: metrics; columns: tasks. Mean across instances with a Student-t 95% band."""
    metrics = [m for m, f in curves.items() if not f.empty]
    if not metrics or not tasks:
        return False
    curves = {m: _literal(f) for m, f in curves.items()}
    tasks, labels = _names(tasks), _names(labels)
    colours = palette(labels)
    fig, axes = _grid(len(metrics), len(tasks))
    for i, metric in enumerate(metrics):
        bands = curve_bands(curves[metric], x)
        for j, task in enumerate(tasks):
            ax = axes[i, j]
            for label in labels:
                b = bands[(bands["task"] == task) & (bands["label"] == label)]
                if b.empty:
                    continue
                c = colours[label]
                ax.plot(b[x], b["mean"], color=c, lw=1.6, label=label)
                ax.fill_between(b[x], b["low"], b["high"], color=c, alpha=0.2, lw=0)
            ax.set_title(task if len(metrics) == 1 or i == 0 else "")
            ax.set_xlabel(X_NAMES.get(x, x))
            ax.set_ylabel(METRIC_NAMES.get(metric, metric))
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def trajectories(
    evals: pd.DataFrame, x_metric: str, y_metric: str, tasks: Sequence[str],
    labels: Sequence[str], path: Path,
) -> bool:
    """Per label, the seed-mean trajectory of ``y_metric`` against ``x_metric`` along training
    (a line from the first evaluation, marked ○, to the last, marked ●), with each run's final
    point as a small dot."""
    if evals.empty:
        return False
    evals, tasks, labels = _literal(evals), _names(tasks), _names(labels)
    colours = palette(labels)
    fig, axes = _grid(1, len(tasks), w=5.0, h=3.8)
    drawn = False
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = evals[evals["task"] == task]
        for lab in labels:
            run = sub[sub["label"] == lab]
            if run.empty:
                continue
            mean = run.groupby("step")[[x_metric, y_metric]].mean().dropna()
            if mean.empty:
                continue
            c = colours[lab]
            ax.plot(mean[x_metric], mean[y_metric], "-", color=c, label=lab, lw=1.6)
            ax.plot(mean[x_metric].iloc[0], mean[y_metric].iloc[0], "o", mfc="white", color=c)
            ax.plot(mean[x_metric].iloc[-1], mean[y_metric].iloc[-1], "o", color=c, ms=7)
            last = run.sort_values("step").groupby("run_id").last()
            ax.scatter(last[x_metric], last[y_metric], s=12, color=c, alpha=0.6)
            drawn = True
        ax.set_title(task)
        ax.set_xlabel(METRIC_NAMES.get(x_metric, x_metric))
        ax.set_ylabel(METRIC_NAMES.get(y_metric, y_metric))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if not drawn:
        plt.close(fig)
        return False
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def time_split(runs: pd.DataFrame, tasks: Sequence[str], labels: Sequence[str], path: Path,
               ) -> bool:
    """Wall seconds per phase (generate, score, train, eval) per label, mean with 95% CI."""
    runs, tasks, labels = _literal(runs), _names(tasks), _names(labels)
    cols = [c for c in runs.columns if c.startswith("seconds_")]
    long = runs.melt(id_vars=["label", "task"], value_vars=cols, var_name="phase",
                     value_name="seconds").dropna(subset=["seconds"])
    if long.empty:
        return False
    long["phase"] = long["phase"].str.removeprefix("seconds_")
    fig, axes = _grid(1, len(tasks), w=max(4.6, 1.3 * len(labels)), h=3.6)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = long[long["task"] == task]
        if not sub.empty:
            order = [lab for lab in labels if lab in set(sub["label"])]
            sns.barplot(data=sub, x="label", y="seconds", hue="phase", order=order,
                        errorbar=t_errorbar, ax=ax)
        ax.set_title(task)
        ax.set_xlabel("")
        ax.set_ylabel("wall seconds per run")
        _rotate(ax, 20)
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


RESOURCE_NAMES = {
    "train_cpu_seconds": "training CPU seconds (generate+score+train)",
    "flops": "FLOPs per run",
    "model_state_mb": "model state (MB)",
    "peak_above_baseline_mb": "peak memory above baseline (MB)",
    "models_resident": "models resident",
}


def resources(runs: pd.DataFrame, labels: Sequence[str], path: Path) -> bool:
    """One panel per resource that has data: mean per run with a 95% CI, hue: task."""
    runs, labels = _literal(runs), _names(labels)
    cols = [c for c in RESOURCE_NAMES if c in runs and runs[c].notna().any()]
    if not cols:
        return False
    colours = palette(labels)
    fig, axes = _grid(1, len(cols), w=max(3.6, 1.0 * len(labels)), h=3.6)
    multi_task = runs["task"].nunique() > 1
    for j, col in enumerate(cols):
        ax = axes[0, j]
        sub = runs.dropna(subset=[col])
        order = [lab for lab in labels if lab in set(sub["label"])]
        if multi_task:
            sns.barplot(data=sub, x="label", y=col, hue="task", order=order,
                        errorbar=t_errorbar, ax=ax)
        else:
            sns.barplot(data=sub, x="label", y=col, hue="label", order=order,
                        palette=colours, legend=False, errorbar=t_errorbar, ax=ax)
        ax.set_title(RESOURCE_NAMES[col], fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        _rotate(ax, 30)
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def final_distribution(finals: pd.DataFrame, tasks: Sequence[str], labels: Sequence[str],
                       path: Path, value: str = "final_gold_reward") -> bool:
    """Final gold reward of every counted run: violin per label, dots coloured by status."""
    finals = finals.dropna(subset=[value])
    if finals.empty:
        return False
    finals, tasks, labels = _literal(finals), _names(tasks), _names(labels)
    colours = palette(labels)
    fig, axes = _grid(1, len(tasks), w=max(4.6, 1.2 * len(labels)), h=3.6)
    status_colours = {"done": "#1f2328", "diverged": "#cf222e"}
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = finals[finals["task"] == task]
        if not sub.empty:
            order = [lab for lab in labels if lab in set(sub["label"])]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sns.violinplot(data=sub, x="label", y=value, hue="label", order=order,
                               palette=colours, legend=False, inner=None, cut=0,
                               density_norm="width", linewidth=0.8, ax=ax, alpha=0.45)
            sns.stripplot(data=sub, x="label", y=value, order=order, hue="status",
                          palette=status_colours, size=5, jitter=0.15, ax=ax)
        ax.set_title(task)
        ax.set_xlabel("")
        ax.set_ylabel("final gold reward")
        _rotate(ax, 20)
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def sensitivity(finals: pd.DataFrame, path: Path, value: str = "final_gold_reward",
                ) -> bool:
    """Final gold reward per sweep point (mean, 95% CI), one panel per (task, algorithm)."""
    finals = _literal(finals.dropna(subset=[value]))
    groups = [(t, a) for (t, a), g in finals.groupby(["task", "algorithm"], sort=False)
              if g["sweep"].nunique() > 1]
    if not groups:
        return False
    fig, axes = _grid(1, len(groups), w=4.6, h=3.6)
    for j, (task, alg) in enumerate(groups):
        ax = axes[0, j]
        sub = finals[(finals["task"] == task) & (finals["algorithm"] == alg)]
        sns.pointplot(data=sub, x="sweep", y=value, errorbar=t_errorbar, ax=ax,
                      linestyle="none", capsize=0.15)
        sns.stripplot(data=sub, x="sweep", y=value, color="0.4", size=3, jitter=0.1, ax=ax)
        ax.set_title(f"{alg} on {task}")
        ax.set_xlabel("sweep point")
        ax.set_ylabel("final gold reward")
        _rotate(ax, 20)
    fig.tight_layout()
    return _save(fig, path)


def ranking(iqm: pd.DataFrame, poi: pd.DataFrame, labels: Sequence[str], path: Path,
            title: str) -> bool:
    """Left: the mean (column ``iqm``) with its 95% interval per label; right: P(row > column)
    as a heatmap."""
    iqm = iqm.dropna(subset=["iqm"])
    if iqm.empty:
        return False
    iqm, poi, labels = _literal(iqm), _literal(poi), _names(labels)
    colours = palette(labels)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    n = len(iqm)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, max(2.6, 0.5 * n + 1.6)),
                                   gridspec_kw={"width_ratios": [1, 1.1]})
    ys = np.arange(n)
    for y, row in zip(ys, iqm.itertuples(index=False), strict=True):
        lo = row.iqm - row.low if math.isfinite(row.low) else 0.0
        hi = row.high - row.iqm if math.isfinite(row.high) else 0.0
        ax1.errorbar(row.iqm, y, xerr=[[lo], [hi]], fmt="o", capsize=4,
                     color=colours.get(row.label, "k"))
    ax1.set_yticks(ys, list(iqm["label"]))
    ax1.invert_yaxis()
    ax1.set_xlabel(title)
    ax1.set_title("mean over instances, 95% Student-t CI")
    if not poi.empty:
        order = [lab for lab in labels if lab in set(poi["x"]) | set(poi["y"])]
        mat = poi.pivot(index="x", columns="y", values="p").reindex(index=order, columns=order)
        sns.heatmap(mat, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdBu_r", ax=ax2,
                    cbar_kws={"label": "P(row > column)"})
        ax2.set_xlabel("")
        ax2.set_ylabel("")
        ax2.set_title("probability of improvement")
        ax2.grid(False)
        _rotate(ax2, 30)
    else:
        ax2.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def frontiers(points: pd.DataFrame, matched: pd.DataFrame, tasks: Sequence[str],
              families: Sequence[str], path: Path) -> bool:
    """Per task: each family's sweep points (mean KL and gold over instances, 95% t intervals as
    error bars), and its frontier's gold (``matched``: mean and band on a KL grid)."""
    tasks = [t for t in tasks if (points["task"] == t).any()]
    if not tasks:
        return False
    colours = palette(list(families))
    fig, axes = _grid(1, len(tasks), w=5.0, h=3.8)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        for fam in families:
            pts = points[(points["task"] == task) & (points["family"] == fam)]
            if pts.empty:
                continue
            pts = pts.sort_values("kl")
            ax.errorbar(pts["kl"], pts["gold"],
                        xerr=[pts["kl"] - pts["kl_low"], pts["kl_high"] - pts["kl"]],
                        yerr=[pts["gold"] - pts["gold_low"], pts["gold_high"] - pts["gold"]],
                        fmt="o", ms=4, capsize=2, color=colours[fam], alpha=0.6, lw=0.8)
            m = matched[(matched["task"] == task) & (matched["family"] == fam)] \
                if len(matched) else pd.DataFrame()
            if len(m):
                kl = m["kl"].astype(float)
                ax.plot(kl, m["gold"], color=colours[fam], lw=2, label=text(fam))
                ax.fill_between(kl, m["gold_low"].astype(float), m["gold_high"].astype(float),
                                color=colours[fam], alpha=0.2, lw=0)
            else:
                ax.plot(pts["kl"], pts["gold"], color=colours[fam], lw=1, ls=":",
                        label=text(fam))
        ax.set_title(text(task))
        ax.set_xlabel("final KL(π‖π_ref)")
        ax.set_ylabel("final gold reward")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def tuning(trials: pd.DataFrame, curves: pd.DataFrame, params: Sequence[str],
           families: Sequence[str], path: Path) -> bool:
    """Row 1, per task: expected best objective of n trials (± one standard deviation) per
    tuned algorithm. Row 2 on: the trial values against each tuned hyperparameter, one panel
    per (algorithm, hyperparameter), log-x where the space is log-uniform."""
    if trials.empty:
        return False
    tasks = list(dict.fromkeys(trials["task"]))
    colours = palette(list(families))
    pairs = [(fam, p) for fam in families for p in params
             if f"param_{p}" in trials and trials.loc[trials["label"] == fam,
                                                       f"param_{p}"].notna().any()]
    cols = max(len(tasks), min(len(pairs), 4), 1)
    rows = 1 + math.ceil(len(pairs) / cols)
    fig, axes = _grid(rows, cols, w=4.2, h=3.2)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        for fam in families:
            c = curves[(curves["task"] == task) & (curves["label"] == fam)]
            if c.empty:
                continue
            ax.plot(c["n"], c["mean"], color=colours[fam], label=text(fam), lw=2)
            ax.fill_between(c["n"], c["mean"] - c["std"], c["mean"] + c["std"],
                            color=colours[fam], alpha=0.2, lw=0)
        ax.set_title(f"{text(task)}: expected best of n trials")
        ax.set_xlabel("trials n")
        ax.set_ylabel("objective")
        ax.legend(fontsize=7)
    for j in range(len(tasks), cols):
        axes[0, j].axis("off")
    per_trial = trials.groupby(["task", "label", "trial"], as_index=False).first()
    for k, (fam, p) in enumerate(pairs):
        ax = axes[1 + k // cols, k % cols]
        sub = per_trial[per_trial["label"] == fam]
        for task in tasks:
            s = sub[sub["task"] == task]
            ax.scatter(s[f"param_{p}"], s["trial_value"], s=14, color=colours[fam],
                       marker="o" if task == tasks[0] else "^",
                       label=text(task) if len(tasks) > 1 else None)
        values = sub[f"param_{p}"].dropna()
        if len(values) and (values > 0).all() and values.max() / values.min() > 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{text(fam)}: {text(p)}")
        ax.set_xlabel(text(p))
        ax.set_ylabel("trial objective")
    for k in range(len(pairs), (rows - 1) * cols):
        axes[1 + k // cols, k % cols].axis("off")
    fig.tight_layout()
    return _save(fig, path)
