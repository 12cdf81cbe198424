"""Check a report's numbers by running some of its runs again: ``rlhf-harness reproduce``.

Every report carries ``runs.jsonl``: one line per run it counts, with the run's recorded spec
(everything that shapes its result), the versions it ran under (the harness and its source
hash, torch, the algorithm's plugin), where it ran (device, threads) and its final metrics.
:func:`reproduce` draws ``sample`` of those lines (seeded), runs each spec again into a fresh
store with this installation, and compares the final metrics:

- **identical**: every metric equal bit for bit (NaN where the report has NaN) — what a CPU fp32
  run gives with the same versions and thread count (a CPU run is re-run on the thread count
  it recorded);
- **within tolerance**: every difference below ``atol + rtol·|recorded|``;
- **differs**: the largest differences, and what is not the same as when the report was made —
  the harness version or source, torch, the algorithm's plugin (version or source), the device,
  the thread count — so a reader can tell a code change from a broken result.

Nothing is downloaded and the report's own store is not needed; the runs go to a temporary
folder (or ``root``) that is removed afterwards unless given.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

RUNS_FILE = "runs.jsonl"
"""The file of a report folder that :func:`reproduce` reads (written by the report)."""


def run_line(record: Any) -> dict[str, Any]:
    """The ``runs.jsonl`` line of a store's run (a :class:`~harness.engine.store.RunRecord`)."""
    summary = record.summary or {}
    return {
        "run_id": record.run_id,
        "status": record.state,
        "spec": record.spec,
        "versions": summary.get("versions") or {},
        "environment": summary.get("environment") or {},
        "final": summary.get("final") or {},
    }


@dataclass
class Outcome:
    """How one run compared."""

    run_id: str
    verdict: str
    """``identical``, ``within tolerance``, ``differs`` or ``failed`` (the re-run did not end
    done or diverged)."""
    differences: dict[str, tuple[float, float]] = field(default_factory=dict)
    """metric → (recorded, now), for the metrics that are not identical."""
    changed: list[str] = field(default_factory=list)
    """What is not as when the report was made (versions, device, threads)."""

    def line(self) -> str:
        if self.verdict == "identical":
            return f"{self.run_id}: identical"
        parts = [f"{self.run_id}: {self.verdict}"]
        if self.differences:
            worst = sorted(self.differences.items(),
                           key=lambda kv: -_gap(*kv[1]))[:3]
            parts.append(", ".join(f"{k} {a:.6g} then, {b:.6g} now" for k, (a, b) in worst))
        parts.append("changed since: " + ("; ".join(self.changed) if self.changed
                                          else "nothing recorded"))
        return " — ".join(parts)


def _gap(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b)


def _same(a: Any, b: Any) -> bool:
    fa, fb = _float(a), _float(b)
    return (math.isnan(fa) and math.isnan(fb)) or fa == fb


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_lines(report_dir: str | Path) -> list[dict[str, Any]]:
    """The ``runs.jsonl`` lines of a report folder (one-line errors for what is wrong)."""
    path = Path(report_dir) / RUNS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; a report written by this version of the harness "
                          f"lists its runs there (rebuild it with rlhf-harness report)")
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc})") from None
        if not (isinstance(line, dict) and isinstance(line.get("spec"), dict)
                and isinstance(line.get("run_id"), str)):
            raise ConfigError(f"{path}:{number}: a line needs run_id and spec")
        lines.append(line)
    if not lines:
        raise ConfigError(f"{path}: lists no runs")
    return lines


def recorded_threads(line: dict[str, Any]) -> int | None:
    """The CPU threads the recorded run used, for the re-run to use the same (a neural run's
    numbers can depend on them: a reduction split over two threads rounds differently, and
    training amplifies the difference); None when it did not run on the CPU or did not record
    them."""
    env = line.get("environment") or {}
    threads = env.get("threads")
    if env.get("device") != "cpu" or not isinstance(threads, int) or threads < 1:
        return None
    return threads


def what_changed(line: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the recorded run and the re-run (their summaries' versions and
    environment, and the spec's plugin code against this installation's)."""
    out = []
    then_v, now_v = line.get("versions") or {}, now.get("versions") or {}
    for key in sorted(set(then_v) | set(now_v)):
        if then_v.get(key) != now_v.get(key):
            out.append(f"{key} {then_v.get(key, '?')} → {now_v.get(key, '?')}")
    then_e, now_e = line.get("environment") or {}, now.get("environment") or {}
    for key in ("device", "threads"):
        if key in then_e and then_e.get(key) != now_e.get(key):
            out.append(f"{key} {then_e.get(key)} → {now_e.get(key)}")
    code = (line.get("spec") or {}).get("code") or {}
    current = now.get("code") or {}
    for kind in sorted(set(code) | set(current)):
        if code.get(kind) != current.get(kind):
            out.append(f"{kind} plugin code {_short(code.get(kind))} → {_short(current.get(kind))}")
    return out


def _short(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "?"
    return f"{identity.get('plugin', '?')} {identity.get('version', '?')} " \
           f"(source {str(identity.get('source', '?'))[:10]})"


def compare(line: dict[str, Any], summary: dict[str, Any], *, rtol: float = 0.0,
            atol: float = 0.0, code: dict[str, Any] | None = None) -> Outcome:
    """How the re-run's ``summary`` compares with the recorded ``line``."""
    now = {**summary, "code": code or {}}
    status = summary.get("status")
    if status not in ("done", "diverged"):
        changed = [*what_changed(line, now), f"status {line.get('status')} → {status}"]
        return Outcome(line["run_id"], "failed", changed=changed)
    then, after = line.get("final") or {}, summary.get("final") or {}
    diffs = {k: (_float(then.get(k)), _float(after.get(k)))
             for k in sorted(set(then) | set(after)) if not _same(then.get(k), after.get(k))}
    if not diffs:
        return Outcome(line["run_id"], "identical")
    close = all(math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(a)
                for a, b in diffs.values())
    verdict = "within tolerance" if close and (rtol or atol) else "differs"
    return Outcome(line["run_id"], verdict, diffs, what_changed(line, now))


def reproduce(report_dir: str | Path, *, sample: int = 3, seed: int = 0, rtol: float = 0.0,
              atol: float = 0.0, root: str | Path | None = None,
              echo: Callable[[str], None] = print) -> list[Outcome]:
    """Re-run ``sample`` of the report's runs (all when ``sample`` ≥ their number, drawn with
    ``random.Random(seed)``) and compare; see the module docstring."""
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import run_one, set_run_threads
    from harness.engine.store import RunStore
    from harness.suite import RunSpec, code_identity

    if sample < 1:
        raise ConfigError(f"--sample {sample}: give 1 or more")
    lines = [ln for ln in read_lines(report_dir) if ln.get("status") in ("done", "diverged")]
    if not lines:
        raise ConfigError(f"{Path(report_dir) / RUNS_FILE}: no finished run to reproduce")
    chosen = sorted(random.Random(seed).sample(lines, min(sample, len(lines))),
                    key=lambda ln: ln["run_id"])
    folder = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="reproduce-"))
    host = get_plugin_host()
    outcomes = []
    try:
        for line in chosen:
            spec = dict(line["spec"])
            try:
                RunSpec(**spec)
            except TypeError as exc:
                raise ConfigError(f"{line['run_id']}: its recorded spec does not fit this "
                                  f"version of the harness ({exc})") from None
            echo(f"running {line['run_id']} again")
            set_run_threads(recorded_threads(line))
            try:
                run_one(spec, str(folder), wandb=False)
            finally:
                set_run_threads(None)
            record = RunStore(folder, spec["suite"]).record(RunSpec(**spec).run_id)
            summary = {**((record.summary if record else None) or {}),
                       "status": record.state if record else "missing"}
            try:
                code = code_identity(host, spec["algorithm"], spec["task"])
            except Exception:  # an algorithm no longer installed: its run failed and says so
                code = {}
            outcome = compare(line, summary, rtol=rtol, atol=atol, code=code)
            echo(outcome.line())
            outcomes.append(outcome)
    finally:
        if root is None:
            shutil.rmtree(folder, ignore_errors=True)
    return outcomes
