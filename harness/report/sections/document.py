"""The report being built: :class:`Report` (its data, options and blocks, and what several
sections share, computed once in :meth:`Report.prepare`), its options, and the formatting helpers
every section uses (numbers, lists, CSV-safe cells).

A section is a function that takes the :class:`Report` and appends blocks to it
(``rep.text``, ``rep.table``, ``rep.figure``, ``rep.add``); the sections are the other modules of
:mod:`harness.report.sections`, and :mod:`harness.report.build` calls them in order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.engine.store import atomic_write_bytes
from harness.errors import ConfigError
from harness.report import compare as cmp
from harness.report import stats as st
from harness.report.colours import RGB
from harness.report.colours import palette as label_palette
from harness.report.data import X_AXES, StoreData
from harness.report.render import Block, Figure, Table, Text

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a CSV cell."""


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that starts like a formula (a label
    ``=HYPERLINK(...)``, ``@SUM(...)``) gets a leading ``'``; numbers, and text that reads as a
    number (``-0.5``), are left as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell, and every column name, made :func:`_cell`-safe."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column])
                or pd.api.types.is_datetime64_any_dtype(out[column])):
            out[column] = out[column].astype(object).map(_cell)
    if not isinstance(out.columns, pd.MultiIndex):
        out.columns = [_cell(c) for c in out.columns]
    return out


def _write(path: Path, data: bytes) -> None:
    """Atomically, and readable by all (reports are published; mkstemp makes files 0600)."""
    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)

STATUS_ORDER = ("done", "diverged", "failed", "running")
CURVE_METRICS = ("gold_reward", "proxy_reward", "kl_ref")


@dataclass
class ReportOptions:
    """How a report is computed (see :func:`write_report`)."""

    x: str = "step"
    threshold: float = 0.9
    max_points: int = 100
    spike_k: float = 5.0
    figures: bool = True
    """Draw the figures. False (for tests of tables and text only; the CLI never sets it): no
    figure and no sentence about which figures were drawn; tables and other text unchanged."""

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
    per_run: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per run: worst drawdown, loss and grad-norm spikes."""
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Counted runs with their normalised ``score``."""
    inst: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (task, label, instance): the compared quantities (:mod:`compare`)."""
    comp: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The paired comparisons (``tables/comparisons.csv``), each in the primary or the
    exploratory family (column ``family``)."""
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The primary comparisons by rule (:func:`compare.primary_pairs`: task, metric, a, b, why)."""
    compare: Any = None
    """The suite's ``compare`` key (pairs, a baseline, or None)."""
    still: list[tuple[str, str]] = field(default_factory=list)
    """(task, label) of configurations that did not learn."""
    claim_steps: pd.DataFrame = field(default_factory=pd.DataFrame)
    claim_overall: pd.DataFrame = field(default_factory=pd.DataFrame)
    colours: dict[str, RGB] = field(default_factory=dict)
    """Each label's colour in every figure (:mod:`harness.report.colours`)."""

    def prepare(self) -> None:
        """Compute what several sections share: per-run stability, scores, instances,
        comparisons, claims, the configurations that did not learn, and the colours."""
        runs = self.data.runs
        algorithms = ({lab: alg for lab, alg in zip(runs["label"], runs["algorithm"],
                                                       strict=True) if isinstance(alg, str)}
                      if {"label", "algorithm"} <= set(runs.columns) else {})
        self.colours = label_palette(self.data.labels, algorithms)
        self.per_run = _run_stability(self.data, self.opts.spike_k)
        self.scores = cmp.run_scores(self.data)
        self.inst = cmp.instance_table(self.data, self.per_run)
        self.still = cmp.not_learned(self.inst) if len(self.inst) else []
        self.compare = cmp.suite_compare(self.data.path)
        self.primary = cmp.primary_pairs(self.data, self.inst, self.scores, self.compare,
                                         self.still)
        self.luck = cmp.tuning_luck(self.scores, self.data.labels, self.data.tasks,
                                    cmp.repeated_searches(self.scores))
        self.comp = cmp.comparisons(self.inst, self.data.labels, self.data.tasks,
                                    primary=self.primary, luck=self.luck)
        self.claim_steps, self.claim_overall = cmp.claim_verdicts(
            self.data, cmp.primary_rows(self.comp), self.scores, self.data.claims)

    def instance_ci(self, runs: pd.DataFrame, column: str) -> st.Estimate:
        """Mean over instances of ``column`` (an instance's runs averaged first), with the
        Student-t interval over instances."""
        if column not in runs or runs.empty:
            return st.Estimate(math.nan)
        per = runs.groupby("seed")[column].mean()
        return st.t_interval(per.to_numpy(dtype=float)).clipped(*st.quantity_range(column))

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
        _write(path, csv_safe(frame).to_csv(index=False).encode())
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
        if self.opts.figures and draw(path):
            self.blocks.append(Figure(path, caption))



def _groups(rep: Report, frame: pd.DataFrame) -> Iterable[tuple[str, str, pd.DataFrame]]:
    """(task, label, rows) in report order, for every pair with rows."""
    for task in rep.data.tasks:
        for label in rep.data.labels:
            sub = frame[(frame["task"] == task) & (frame["label"] == label)]
            if len(sub):
                yield task, label, sub


def _summaries(rep: Report) -> Iterable[tuple[str, dict[str, Any]]]:

    for run_id in rep.data.runs["run_id"]:
        path = rep.data.path / run_id / "summary.json"
        if path.exists():
            try:
                yield run_id, json.loads(path.read_text())
            except (OSError, ValueError):
                continue


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
