"""The report's figures: seaborn on matplotlib's Agg backend, saved as PNG.

Every function takes tidy frames, draws one figure, writes it to ``path`` and returns whether it
drew anything (a figure without data is not written). Colours come from
:mod:`harness.report.colours`: one per algorithm name, the same in every report. No panel is drawn
empty: a task without data is left out of a figure, or its panel says why it has none. Jitter is
seeded and the PNGs carry no software version, so the same data give the same bytes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from harness.report.colours import RGB, algorithm_colour, algorithm_of
from harness.report.colours import palette as label_palette
from harness.report.stats import quantity_range

DPI = 90
JITTER_SEED = 0
"""The seed of every strip plot's jitter (seaborn draws it from numpy's global generator)."""
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
    "j_beta_gain": "J_β(π) − J_β(π_ref)",
    "gap_closure": "gap closure to π*_β",
}
EMPTY_NOTES = {"regret": "no exact optimum for this task",
               "j_beta_gain": "no exact optimum for this task",
               "gap_closure": "no exact optimum for this task"}
"""What a panel says instead of being drawn empty, per metric (default: no data)."""


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


def palette(labels: Sequence[str], colours: Mapping[str, RGB] | None = None,
            ) -> dict[str, RGB]:
    """Colours keyed by each label's literal text (:func:`text`): ``colours`` where given (the
    report's, keyed by raw label), else :func:`harness.report.colours.palette` of ``labels``."""
    full = label_palette(labels) if colours is None else colours
    return {text(lab): full.get(lab) or algorithm_colour(algorithm_of(lab)) for lab in labels}


@contextmanager
def _seeded(seed: int = JITTER_SEED) -> Iterator[None]:
    """numpy's global generator seeded for the block, and restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _note(ax: plt.Axes, message: str, title: str = "") -> None:
    """A panel with no data: its message instead of empty axes."""
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=9, color="0.35", wrap=True)
    if title:
        ax.set_title(title)


def _save(fig: plt.Figure, path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no "Software" text chunk: the bytes depend on the data, not on matplotlib's version
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return True


def _grid(rows: int, cols: int, w: float = 4.6, h: float = 3.2) -> tuple[plt.Figure, np.ndarray]:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    return fig, axes


MAX_WIDTH = 18.0
"""Widest figure (inches): wider rows of panels wrap onto more rows."""


def _flow(n: int, w: float, h: float, per_row: int | None = None,
          ) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels of ``w`` × ``h`` inches (``w`` capped at :data:`MAX_WIDTH`), as many to a row
    as fit in :data:`MAX_WIDTH` (at most ``per_row``); the axes in reading order, spare ones
    removed."""
    w = min(w, MAX_WIDTH)
    cols = max(1, min(n, int(MAX_WIDTH // w), per_row or n))
    rows = math.ceil(n / cols)
    fig, axes = _grid(rows, cols, w, h)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


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


def t_errorbar(values: Any, low: float = -math.inf) -> tuple[float, float]:
    """Seaborn ``errorbar``: the Student-t 95% interval of the mean of ``values``, clipped at
    ``low``."""
    from harness.report.stats import t_interval

    e = t_interval(np.asarray(values, dtype=float)).clipped(low)
    return (e.low, e.high) if e.has_interval else (e.value, e.value)


def t_errorbar_nonnegative(values: Any) -> tuple[float, float]:
    """:func:`t_errorbar` of a quantity that is never negative (seconds, memory, FLOPs)."""
    return t_errorbar(values, 0.0)


def curve_bands(frame: pd.DataFrame, x: str,
                bounds: tuple[float, float] = (-math.inf, math.inf)) -> pd.DataFrame:
    """Mean of ``value`` at each ``x``, per (task, label), with a Student-t 95% band over task
    instances: an instance's replicates are averaged first (the instance is the independent
    unit), then the t interval of the instance means is taken at each ``x``, clipped to
    ``bounds`` (the quantity's range). ``frame`` is on a shared grid
    (:func:`harness.report.data.on_grid`)."""
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
                                 "low": np.clip(mean - half, *bounds),
                                 "high": np.clip(mean + half, *bounds)}))
    if not out:
        return pd.DataFrame(columns=["task", "label", x, "mean", "low", "high"])
    return pd.concat(out, ignore_index=True)


def learning_curves(
    curves: dict[str, pd.DataFrame], x: str, tasks: Sequence[str], labels: Sequence[str],
    path: Path, colours: Mapping[str, RGB] | None = None,
) -> bool:
    """Rows: metrics; columns: tasks. Mean across instances with a Student-t 95% band. A task
    with no data for any metric gets no column; a cell with none says so (:data:`EMPTY_NOTES`)."""
    metrics = [m for m, f in curves.items() if not f.empty]
    curves = {m: _literal(f) for m, f in curves.items() if m in metrics}
    tasks = [t for t in _names(tasks) if any((curves[m]["task"] == t).any() for m in metrics)]
    if not metrics or not tasks:
        return False
    colour = palette(labels, colours)
    labels = _names(labels)
    fig, axes = _grid(len(metrics), len(tasks))
    for i, metric in enumerate(metrics):
        bands = curve_bands(curves[metric], x, quantity_range(metric))
        for j, task in enumerate(tasks):
            ax = axes[i, j]
            title = task if len(metrics) == 1 or i == 0 else ""
            if not (bands["task"] == task).any():
                name = METRIC_NAMES.get(metric, metric)
                _note(ax, EMPTY_NOTES.get(metric, f"no {name} for this task"), title)
                continue
            for label in labels:
                b = bands[(bands["task"] == task) & (bands["label"] == label)]
                if b.empty:
                    continue
                c = colour[label]
                ax.plot(b[x], b["mean"], color=c, lw=1.6, label=label)
                ax.fill_between(b[x], b["low"], b["high"], color=c, alpha=0.2, lw=0)
            ax.set_title(title)
            ax.set_xlabel(X_NAMES.get(x, x))
            ax.set_ylabel(METRIC_NAMES.get(metric, metric))
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def trajectories(
    evals: pd.DataFrame, x_metric: str, y_metric: str, tasks: Sequence[str],
    labels: Sequence[str], path: Path, colours: Mapping[str, RGB] | None = None,
) -> bool:
    """Per label, the seed-mean trajectory of ``y_metric`` against ``x_metric`` along training
    (a line from the first evaluation, marked ○, to the last, marked ●), with each run's final
    point as a small dot. Tasks without both metrics get no panel."""
    if evals.empty or not {x_metric, y_metric} <= set(evals.columns):
        return False
    evals = _literal(evals.dropna(subset=[x_metric, y_metric]))
    tasks = [t for t in _names(tasks) if (evals["task"] == t).any()]
    if not tasks:
        return False
    colour = palette(labels, colours)
    labels = _names(labels)
    fig, axes = _grid(1, len(tasks), w=5.0, h=3.8)
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
            c = colour[lab]
            ax.plot(mean[x_metric], mean[y_metric], "-", color=c, label=lab, lw=1.6)
            ax.plot(mean[x_metric].iloc[0], mean[y_metric].iloc[0], "o", mfc="white", color=c)
            ax.plot(mean[x_metric].iloc[-1], mean[y_metric].iloc[-1], "o", color=c, ms=7)
            last = run.sort_values("step").groupby("run_id").last()
            ax.scatter(last[x_metric], last[y_metric], s=12, color=c, alpha=0.6)
        ax.set_title(task)
        ax.set_xlabel(METRIC_NAMES.get(x_metric, x_metric))
        ax.set_ylabel(METRIC_NAMES.get(y_metric, y_metric))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _legend_once(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def time_split(runs: pd.DataFrame, tasks: Sequence[str], labels: Sequence[str], path: Path,
               colours: Mapping[str, RGB] | None = None) -> bool:
    """Wall seconds per phase (generate, score, train, eval): a panel per task with its own
    y-scale, a bar per label in each phase (mean with 95% CI)."""
    colour = palette(labels, colours)
    runs, labels = _literal(runs), _names(labels)
    cols = [c for c in runs.columns if c.startswith("seconds_")]
    long = runs.melt(id_vars=["label", "task"], value_vars=cols, var_name="phase",
                     value_name="seconds").dropna(subset=["seconds"])
    tasks = [t for t in _names(tasks) if (long["task"] == t).any()]
    if long.empty or not tasks:
        return False
    long["phase"] = long["phase"].str.removeprefix("seconds_")
    phases = [c.removeprefix("seconds_") for c in cols]
    fig, axes = _flow(len(tasks), w=max(4.6, 0.3 * len(labels) * len(phases) + 1), h=3.6)
    for ax, task in zip(axes, tasks, strict=True):
        sub = long[long["task"] == task]
        order = [lab for lab in labels if lab in set(sub["label"])]
        sns.barplot(data=sub, x="phase", y="seconds", hue="label", order=phases,
                    hue_order=order, palette=colour, saturation=1,
                    errorbar=t_errorbar_nonnegative,
                    ax=ax)
        ax.set_title(task)
        ax.set_xlabel("phase")
        ax.set_ylabel("wall seconds per run (s)")
    _legend_once(fig, np.asarray(axes))
    fig.tight_layout()
    return _save(fig, path)


RESOURCES = {
    "train_cpu_seconds": ("training CPU time (generate + score + train)", "CPU seconds per run"),
    "flops": ("training FLOPs (estimated)", "FLOPs per run"),
    "model_state_mb": ("model state", "MB (2²⁰ bytes)"),
    "peak_above_baseline_mb": ("peak memory above the run's baseline", "MB (2²⁰ bytes)"),
    "models_resident": ("models resident", "models"),
}
"""Each resource's panel title and y-axis label (with its unit)."""
RESOURCE_NAMES = {col: title for col, (title, _) in RESOURCES.items()}
RESOURCE_EMPTY = {"flops": "no FLOPs for this task:\nthey are counted for neural policies only"}


def resources(runs: pd.DataFrame, labels: Sequence[str], path: Path,
              tasks: Sequence[str] | None = None,
              colours: Mapping[str, RGB] | None = None) -> bool:
    """A row per task, a panel per resource that has data: each panel its own y-scale (a
    tabular bandit's seconds beside a language model's would be invisible), a bar per label
    (mean per run with a 95% CI) in the label's colour."""
    colour = palette(labels, colours)
    runs, labels = _literal(runs), _names(labels)
    cols = [c for c in RESOURCES if c in runs and runs[c].notna().any()]
    tasks = _names(tasks if tasks is not None else list(dict.fromkeys(runs["task"])))
    tasks = [t for t in tasks if (runs["task"] == t).any()]
    if not cols or not tasks:
        return False
    fig, axes = _flow(len(tasks) * len(cols), w=max(3.4, 0.45 * len(labels) + 1.2), h=3.2,
                      per_row=len(cols))  # a row per task where the row fits
    panels = [(t, c) for t in tasks for c in cols]
    for ax, (task, col) in zip(axes, panels, strict=True):
        title, unit = RESOURCES[col]
        head = f"{task}: {title}" if len(tasks) > 1 else title
        sub = runs[(runs["task"] == task)].dropna(subset=[col])
        if sub.empty:
            _note(ax, RESOURCE_EMPTY.get(col, "no data for this task"), head)
            ax.title.set_fontsize(9)
            continue
        order = [lab for lab in labels if lab in set(sub["label"])]
        sns.barplot(data=sub, x="label", y=col, hue="label", order=order, hue_order=order,
                    palette=colour, saturation=1, legend=False,
                    errorbar=t_errorbar_nonnegative, ax=ax)
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel(unit)
        _rotate(ax, 30)
    fig.tight_layout()
    return _save(fig, path)


def final_distribution(finals: pd.DataFrame, tasks: Sequence[str], labels: Sequence[str],
                       path: Path, value: str = "final_gold_reward",
                       colours: Mapping[str, RGB] | None = None) -> bool:
    """Final gold reward of every counted run: violin per label, dots coloured by status
    (their jitter seeded: :data:`JITTER_SEED`)."""
    finals = finals.dropna(subset=[value])
    if finals.empty:
        return False
    colour = palette(labels, colours)
    finals, labels = _literal(finals), _names(labels)
    tasks = [t for t in _names(tasks) if (finals["task"] == t).any()]
    if not tasks:
        return False
    fig, axes = _flow(len(tasks), w=max(4.6, 0.6 * len(labels) + 1), h=3.6)
    status_colours = {"done": "#1f2328", "diverged": "#cf222e"}
    for ax, task in zip(axes, tasks, strict=True):
        sub = finals[finals["task"] == task]
        order = [lab for lab in labels if lab in set(sub["label"])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sns.violinplot(data=sub, x="label", y=value, hue="label", order=order,
                           palette=colour, saturation=1, legend=False, inner=None, cut=0,
                           density_norm="width", linewidth=0.8, ax=ax, alpha=0.45)
        with _seeded():
            sns.stripplot(data=sub, x="label", y=value, order=order, hue="status",
                          palette=status_colours, size=5, jitter=0.15, ax=ax)
        ax.set_title(task)
        ax.set_xlabel("")
        ax.set_ylabel("final gold reward")
        _rotate(ax, 20)
    _legend_once(fig, np.asarray(axes))
    fig.tight_layout()
    return _save(fig, path)


def sensitivity(finals: pd.DataFrame, path: Path, value: str = "final_gold_reward",
                colours: Mapping[str, RGB] | None = None) -> bool:
    """Final gold reward per sweep point (mean, 95% CI), one panel per (task, algorithm), in the
    algorithm's colour (``colours`` keyed by algorithm; jitter seeded)."""
    finals = _literal(finals.dropna(subset=[value]))
    groups = [(t, a) for (t, a), g in finals.groupby(["task", "algorithm"], sort=False)
              if g["sweep"].nunique() > 1]
    if not groups:
        return False
    fig, axes = _flow(len(groups), w=4.6, h=3.6)
    for ax, (task, alg) in zip(axes, groups, strict=True):
        sub = finals[(finals["task"] == task) & (finals["algorithm"] == alg)]
        c = (colours or {}).get(alg) or algorithm_colour(alg)
        sns.pointplot(data=sub, x="sweep", y=value, errorbar=t_errorbar, ax=ax,
                      linestyle="none", capsize=0.15, color=c)
        with _seeded():
            sns.stripplot(data=sub, x="sweep", y=value, color="0.4", size=3, jitter=0.1, ax=ax)
        ax.set_title(f"{alg} on {task}")
        ax.set_xlabel("sweep point")
        ax.set_ylabel("final gold reward")
        _rotate(ax, 20)
    fig.tight_layout()
    return _save(fig, path)


def ranking(iqm: pd.DataFrame, poi: pd.DataFrame, labels: Sequence[str], path: Path,
            title: str, colours: Mapping[str, RGB] | None = None) -> bool:
    """Left: the mean (column ``iqm``) with its 95% interval per label, in ``iqm``'s row order
    (the ranking's); right: P(row > column) as a heatmap, its rows and columns in that same
    order (then any label the left panel lacks, in ``labels``' order)."""
    iqm = iqm.dropna(subset=["iqm"])
    if iqm.empty:
        return False
    colour = palette(labels, colours)
    iqm, poi, labels = _literal(iqm), _literal(poi), _names(labels)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    n = len(iqm)
    height = max(2.6, 0.5 * n + 1.6)
    if poi.empty:  # one configuration: no pair to show, and no empty panel for it
        fig, ax1 = plt.subplots(1, 1, figsize=(5.5, height))
        ax2 = None
    else:
        # the heatmap grows with the number of configurations, so that its cells hold their
        # two-decimal numbers (about 0.7 inch a cell)
        m = len(set(poi["x"]) | set(poi["y"]))
        heat = max(5.5, 0.7 * m + 1.5)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(5.5 + heat, max(height, 0.5 * m + 2)),
                                       gridspec_kw={"width_ratios": [5.5, heat]})
    ys = np.arange(n)
    for y, row in zip(ys, iqm.itertuples(index=False), strict=True):
        lo = row.iqm - row.low if math.isfinite(row.low) else 0.0
        hi = row.high - row.iqm if math.isfinite(row.high) else 0.0
        ax1.errorbar(row.iqm, y, xerr=[[lo], [hi]], fmt="o", capsize=4,
                     color=colour.get(row.label, "k"))
    ax1.set_yticks(ys, list(iqm["label"]))
    ax1.invert_yaxis()
    ax1.set_xlabel(title)
    ax1.set_title("mean over instances, 95% Student-t CI")
    if ax2 is not None:
        paired = set(poi["x"]) | set(poi["y"])
        ranked = [lab for lab in iqm["label"] if lab in paired]
        order = ranked + [lab for lab in labels if lab in paired and lab not in ranked]
        mat = poi.pivot(index="x", columns="y", values="p").reindex(index=order, columns=order)
        sns.heatmap(mat, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdBu_r", ax=ax2,
                    annot_kws={"size": 8 if m <= 8 else 7}, cbar_kws={"label": "P(row > column)"})
        ax2.set_xlabel("")
        ax2.set_ylabel("")
        ax2.set_title("probability of improvement")
        ax2.grid(False)
        _rotate(ax2, 30)
    fig.tight_layout()
    return _save(fig, path)


def frontiers(points: pd.DataFrame, matched: pd.DataFrame, tasks: Sequence[str],
              families: Sequence[str], path: Path,
              colours: Mapping[str, RGB] | None = None) -> bool:
    """Per task: each family's sweep points (mean KL and gold over instances, 95% t intervals as
    error bars), and its frontier's gold (``matched``: mean and band on a KL grid)."""
    tasks = [t for t in tasks if (points["task"] == t).any()]
    if not tasks:
        return False
    full = palette(list(families), colours)
    colours = {fam: full[text(fam)] for fam in families}
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
           families: Sequence[str], path: Path,
           colours: Mapping[str, RGB] | None = None) -> bool:
    """Row 1, per task: expected best objective of n trials (± one standard deviation) per
    tuned algorithm. Row 2 on: the trial values against each tuned hyperparameter, one panel
    per (algorithm, hyperparameter), log-x where the space is log-uniform."""
    if trials.empty:
        return False
    tasks = list(dict.fromkeys(trials["task"]))
    full = palette(list(families), colours)
    colours = {fam: full[text(fam)] for fam in families}
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
