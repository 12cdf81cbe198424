"""The run store: one folder per run, written atomically, read by reports and by resumption.

Layout::

    runs/<suite>/
      suite.yaml                 the suite file as run
      shared/<key>/              preference data and reward model, per (task, params, seed, ...)
      <run-id>/
        spec.json                the resolved run spec (what the run id hashes)
        status.json              {"status": running | done | failed | diverged, ...}
        metrics.parquet          tidy long table: one row per (step, metric)
        summary.json             final metrics, compute totals, versions, seed, config hash
        log.txt                  the run's log
        traceback.txt            for failed runs

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so a reader — or a suite killed mid-write — never sees a
half-written file. A run is *finished* when its status is done, failed or diverged; running a
suite again skips finished runs (failed ones too, unless asked to retry) and restarts the rest.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

STATUSES = ("running", "done", "failed", "diverged")
FINISHED = ("done", "failed", "diverged")
METRIC_COLUMNS = ("run_id", "step", "samples", "tokens", "wall_seconds", "flops", "source",
                  "metric", "value")
"""Columns of ``metrics.parquet``. ``source`` is ``train`` (the algorithm's step metrics) or
``eval`` (the evaluators'); ``wall_seconds`` and ``flops`` are cumulative."""


def _file_mode() -> int:
    """The mode an ordinary new file gets (mkstemp's are 0600: readable by other users of a
    shared store, e.g. Ray workers running as another user, only with the umask's mode)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class RunRecord:
    """What the store holds of one run."""

    run_id: str
    path: Path
    spec: dict[str, Any]
    status: dict[str, Any]
    summary: dict[str, Any] | None

    @property
    def state(self) -> str:
        return str(self.status.get("status", "running"))

    def metrics(self) -> pd.DataFrame:
        path = self.path / "metrics.parquet"
        if not path.exists():
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        return pd.read_parquet(path)


class RunStore:
    """The folder ``root/<suite>`` of a suite's runs."""

    def __init__(self, root: str | os.PathLike[str], suite: str) -> None:
        self.path = Path(root) / suite
        self.suite = suite

    def run_dir(self, run_id: str) -> Path:
        return self.path / run_id

    def shared_dir(self, key: str) -> Path:
        return self.path / "shared" / key

    def status(self, run_id: str) -> str | None:
        path = self.run_dir(run_id) / "status.json"
        if not path.exists():
            return None
        try:
            return str(json.loads(path.read_text()).get("status"))
        except (json.JSONDecodeError, OSError):
            return None

    def is_finished(self, run_id: str, *, retry_failed: bool = False) -> bool:
        state = self.status(run_id)
        if retry_failed and state == "failed":
            return False
        return state in FINISHED

    def start(self, run_id: str, spec: dict[str, Any]) -> Path:
        """Begin (or restart) a run: clear an interrupted attempt's files, write spec and status."""
        d = self.run_dir(run_id)
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.parquet", "summary.json", "traceback.txt", "log.txt"):
            (d / stale).unlink(missing_ok=True)
        for tmp in d.glob(".*.tmp"):  # left by a write that was killed mid-way
            tmp.unlink(missing_ok=True)
        atomic_write_json(d / "spec.json", spec)
        atomic_write_json(d / "status.json", {"status": "running", "pid": os.getpid()})
        return d

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        metrics: pd.DataFrame,
        summary: dict[str, Any],
        traceback: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Write a run's results; the status file goes last, so 'finished' implies complete."""
        if status not in FINISHED:
            raise ValueError(f"a run finishes as one of {FINISHED}, not {status!r}")
        d = self.run_dir(run_id)
        atomic_write_parquet(d / "metrics.parquet", metrics)
        atomic_write_json(d / "summary.json", summary)
        if traceback:
            atomic_write_bytes(d / "traceback.txt", traceback.encode())
        atomic_write_json(d / "status.json", {"status": status, "reason": reason})

    def records(self) -> Iterator[RunRecord]:
        """Every run folder of the suite (those with a spec), in name order."""
        if not self.path.exists():
            return
        for d in sorted(p for p in self.path.iterdir() if p.is_dir() and p.name != "shared"):
            spec_path = d / "spec.json"
            if not spec_path.exists():
                continue
            status_path, summary_path = d / "status.json", d / "summary.json"
            status = json.loads(status_path.read_text()) if status_path.exists() else {}
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
            yield RunRecord(d.name, d, json.loads(spec_path.read_text()), status, summary)
