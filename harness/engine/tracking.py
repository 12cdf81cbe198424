"""Experiment tracking with wandb: one wandb run per harness run, offline unless configured.

Each run logs to wandb with ``group`` = the suite, ``job_type`` = the algorithm, ``name`` = the
run id and ``config`` = the resolved run spec. The mode is wandb's own ``WANDB_MODE`` when the
user set it (e.g. ``online`` after ``wandb login``), else ``offline``: files go under the run's
folder (``<run>/wandb/offline-run-*``, syncable later with ``wandb sync``), never to the network:
the harness sets ``WANDB_MODE=offline`` in its environment when the user has not set it (wandb
asks a name server for its service's address when only ``init(mode="offline")`` says offline).
``--no-wandb`` on the command line, or ``RLHF_HARNESS_WANDB=0``, switches tracking off; wandb is
then not even imported. The run store, not wandb, is the source of truth for reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WANDB_ENV = "RLHF_HARNESS_WANDB"


def wandb_enabled(requested: bool = True) -> bool:
    """Whether runs log to wandb: requested, and not switched off by ``RLHF_HARNESS_WANDB=0``."""
    return requested and os.environ.get(WANDB_ENV, "1").strip().lower() not in {"0", "false", "no"}


class Tracker:
    """A wandb run, or nothing when tracking is off. Failures of wandb never fail a harness run."""

    def __init__(self, enabled: bool, run_dir: Path, spec: dict[str, Any], run_id: str) -> None:
        self.run = None
        self.error: str | None = None
        if not wandb_enabled(enabled):  # RLHF_HARNESS_WANDB=0 applies to every caller
            return
        try:
            os.environ.setdefault("WANDB_MODE", "offline")  # before wandb reads its settings
            import wandb

            cache = run_dir.parent / ".wandb-cache"
            os.environ.setdefault("WANDB_CACHE_DIR", str(cache))
            os.environ.setdefault("WANDB_DATA_DIR", str(cache))
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                mode=os.environ.get("WANDB_MODE", "offline"),
                dir=str(run_dir),
                project=os.environ.get("WANDB_PROJECT", "rlhf-harness"),
                group=spec["suite"],
                job_type=spec["label"],
                name=run_id,
                config=spec,
                reinit="finish_previous",
            )
        except Exception as exc:  # tracking is a convenience: report, don't fail the run
            self.error = f"wandb disabled for this run: {type(exc).__name__}: {exc}"
            self.run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update({"status": status, **summary.get("final", {})})
        self.run.finish(exit_code=0 if status == "done" else 1)
