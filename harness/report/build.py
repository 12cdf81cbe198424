"""Compute a suite's report from its run store and write it: Markdown, HTML, PNG and CSV.

Every sentence of the report is a template filled from the data; which sentences appear depends
on the data too (a section says what is missing rather than asserting anything fixed). Method
notes describe how numbers are computed, never what they show.

This module assembles the report: :func:`write_report` loads the store, prepares the shared
computations (:class:`~harness.report.sections.document.Report`), calls the sections of
:mod:`harness.report.sections` in order and writes the files. Every name the sections define
is re-exported here, so ``from harness.report.build import X`` keeps working.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.engine.reproduce import RUNS_FILE, run_line
from harness.errors import ConfigError, HarnessError
from harness.report.data import StoreData, load_store
from harness.report.render import to_html, to_markdown
from harness.report.sections.comparisons import (
    claims_section,
    comparisons_section,
    crossovers_section,
    family_rule,
    family_sizes,
)
from harness.report.sections.compute import (
    ROLE_NAMES,
    compute_section,
    counted_work_table,
)
from harness.report.sections.cost import (
    BUDGET_CURVES,
    cost_section,
)
from harness.report.sections.document import (
    CURVE_METRICS,
    FORMULA_STARTS,
    STATUS_ORDER,
    Report,
    ReportOptions,
    _write,
    csv_safe,
    fmt,
)
from harness.report.sections.method import (
    counted_work_method,
    method_section,
    reward_units,
)
from harness.report.sections.ranking import (
    AGGREGATION_NAMES,
    AGGREGATIONS,
    RANK_RESAMPLES,
    RANK_TOP,
    SCORE_SHORT,
    aggregation_sentences,
    aggregation_table,
    bootstrap_ranks,
    ranking_section,
)
from harness.report.sections.reward import (
    frontier_section,
    reward_section,
)
from harness.report.sections.runs import (
    configurations_section,
    excluded_section,
    label_settings,
    status_section,
)
from harness.report.sections.stability import (
    stability_section,
)
from harness.report.sections.summary import (
    SUMMARY_DECIDED,
    decided_comparisons,
    decision_text,
    is_decided,
    overview,
    summary_section,
)
from harness.report.sections.tuning import (
    REPEATS_MODEL,
    tuning_choices,
    tuning_dimensions,
    tuning_section,
)


def _run_lines(store: Path, data: StoreData) -> bytes:
    """``runs.jsonl``: each counted run's spec, versions, environment and final metrics, one
    JSON line each, in run-id order (what ``rlhf-harness reproduce`` re-runs)."""
    from harness.engine.store import RunStore

    runs = RunStore(store.parent, store.name)
    lines = []
    for run_id in sorted(data.runs["run_id"]):
        record = runs.record(run_id)
        if record is not None:
            lines.append(json.dumps(run_line(record), sort_keys=True, default=str))
    return ("\n".join(lines) + "\n").encode()


def write_report(
    store_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    x: str = "step",
    threshold: float = 0.9,
    include_stale: bool = False,
    allow_mixed_versions: bool = False,
    figures: bool = True,
) -> Path:
    """Write the report of the run store ``store_path`` (``runs/<suite>``) into ``out_dir``.

    ``out_dir`` defaults to ``reports/<suite folder name>``. Writes ``index.md`` (GitHub
    Markdown), ``index.html`` (self-contained), ``figures/*.png`` and ``tables/*.csv``; returns
    ``out_dir``. ``x`` picks the learning curves' x-axis (step, samples, wall_seconds, flops);
    ``threshold`` the fraction of the way from π_ref's gold reward to the best final one that
    time-to-target measures; ``include_stale`` counts the runs of older versions of the suite
    too; ``allow_mixed_versions`` accepts runs made by different versions of the harness or
    torch (refused otherwise, naming them); ``figures=False`` draws no figure (see
    :class:`ReportOptions`). Every interval of a value is computed in closed
    form (Student t, Bonett, Clopper-Pearson); the rankings' rank ranges come from a bootstrap
    with a fixed seed per ranking: a report built twice from one store is the same.
    """
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    opts = ReportOptions(x=x, threshold=threshold, figures=figures)
    store = Path(store_path)
    if not store.is_dir():
        raise ConfigError(f"{store}: no run store there (expected runs/<suite>)")
    data = load_store(store, include_stale=include_stale,
                      allow_mixed_versions=allow_mixed_versions)
    if data.runs.empty:
        stale = 0 if data.stale is None else len(data.stale)
        hint = (f" of the suite as last run ({stale} stale; --include-stale counts them)"
                if stale else "")
        raise HarnessError(f"{store}: the run store holds no runs{hint}")
    if (data.runs["status"] == "running").all():  # a suite killed in its first run, say
        raise HarnessError(f"{store}: no run has finished yet ({len(data.runs)} running)")
    out = Path(out_dir) if out_dir is not None else Path("reports") / store.name
    out.mkdir(parents=True, exist_ok=True)
    for sub, pattern in (("figures", "*.png"), ("tables", "*.csv")):
        for stale in (out / sub).glob(pattern):
            stale.unlink()
    rep = Report(data, opts, out)
    rep.prepare()
    overview(rep)
    summary_section(rep)
    status_section(rep)
    configurations_section(rep)
    excluded_section(rep)
    reward_section(rep)
    frontier_section(rep)
    tuning_section(rep)
    compute_section(rep)
    cost_section(rep)
    stability_section(rep)
    comparisons_section(rep)
    crossovers_section(rep)
    claims_section(rep)
    ranking_section(rep)
    method_section(rep)
    plt.close("all")
    rep.text("Report written in {s} s.", s=f"{time.perf_counter() - started:.1f}")
    _write(out / RUNS_FILE, _run_lines(store, data))
    _write(out / "index.md", to_markdown(rep.blocks, out).encode())
    _write(out / "index.html",
                       to_html(rep.blocks, f"Report: {data.suite}").encode())
    return out


__all__ = [
    "AGGREGATIONS",
    "AGGREGATION_NAMES",
    "BUDGET_CURVES",
    "CURVE_METRICS",
    "FORMULA_STARTS",
    "RANK_RESAMPLES",
    "RANK_TOP",
    "REPEATS_MODEL",
    "ROLE_NAMES",
    "SCORE_SHORT",
    "STATUS_ORDER",
    "SUMMARY_DECIDED",
    "Report",
    "ReportOptions",
    "aggregation_sentences",
    "aggregation_table",
    "bootstrap_ranks",
    "claims_section",
    "comparisons_section",
    "compute_section",
    "configurations_section",
    "cost_section",
    "counted_work_method",
    "counted_work_table",
    "crossovers_section",
    "csv_safe",
    "decided_comparisons",
    "decision_text",
    "excluded_section",
    "family_rule",
    "family_sizes",
    "fmt",
    "frontier_section",
    "is_decided",
    "label_settings",
    "method_section",
    "overview",
    "ranking_section",
    "reward_section",
    "reward_units",
    "stability_section",
    "status_section",
    "summary_section",
    "tuning_choices",
    "tuning_dimensions",
    "tuning_section",
    "write_report",
]
