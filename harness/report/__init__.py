"""Reports: a suite's results, from its run store alone, as Markdown, HTML, PNG and CSV.

:func:`write_report` is the entry point (``rlhf-harness report runs/<suite>``). Reading the
store is :mod:`harness.report.data`, the statistics :mod:`harness.report.stats`, the figures
:mod:`harness.report.figures`, the Markdown and HTML rendering :mod:`harness.report.render`, the
sections :mod:`harness.report.sections` (one module per section), assembled by
:mod:`harness.report.build`.
Importing this package is cheap: matplotlib, seaborn and scipy load on the first report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

X_AXES = ("step", "samples", "wall_seconds", "flops")
"""The x-axes learning curves can be drawn against."""


def write_report(store_path: str | Path, out_dir: str | Path | None = None,
                 **options: Any) -> Path:
    """Write the report of ``store_path`` (``runs/<suite>``); see
    :func:`harness.report.build.write_report` for the options. Returns the report folder."""
    from harness.report.build import write_report as _write
    from harness.report.data import check_one_store

    check_one_store(store_path)
    return _write(store_path, out_dir, **options)


__all__ = ["X_AXES", "write_report"]
