"""Reading a run store into the two frames a report is computed from.

``runs``: one row per run folder — identity (label, algorithm, task, seed, replicate, sweep
point), status and reason, final evaluation metrics (``final_<metric>``) and those of the first
evaluation, before any training (``initial_<metric>``: π_ref's), compute totals (wall and CPU
seconds per phase, FLOPs — NaN for tabular policies), the counted work (samples generated and
read from data, forward and backward tokens per model role, or table rows for tabular policies:
``work_unit``), the load average during the run, model-state bytes and memory. ``seed`` is
the *instance* seed (task draw, preference data, r̂); ``replicate`` numbers the algorithm's own
random streams on it (0 for stores written before replicates existed). A tuned algorithm's
comparison runs carry its choice: ``tuned_trial``, ``tuned_params`` (4 significant digits, for
reading), ``tuned_params_json`` (full precision), ``tuned_value`` and ``tuning_repeat`` (which
of the tuning's searches chose it). ``metrics``:
every run's tidy metrics table, concatenated, with the run's label, algorithm, task, seed and
status joined on.

A task run at several budgets (a suite's ``budget: {samples: [8192, 32768]}``) is, in every
frame, one task per budget, named with it (``bandit @ 8192 samples``,
:func:`harness.suite.budget_task`): every comparison, ranking and claim is then made within a
budget, never across budgets, and ``budgets`` maps those names back to (task, kind, budget). A
task with one budget keeps its name, so a single-budget store reads as it always has.

Only the runs of the suite as last run are read (the store's manifest lists them): the others
are *stale* — runs of an older version of the suite — and are listed in ``stale``, not counted,
unless ``include_stale``. A run folder whose files do not read back is listed in ``corrupt`` and
skipped. Runs made under different cores (the harness's version and source, torch's version)
are refused, naming them, unless ``allow_mixed_versions``: a harness edited or upgraded between
two runs of a suite would otherwise put old results beside new ones without a word.

An algorithm's own metric (not in :data:`harness.metrics.VOCABULARY`) that two algorithms of the
store document with different meanings (each run records its algorithm's
:attr:`~harness.algorithm.Algorithm.metrics`) is renamed ``ALGORITHM:NAME`` in ``metrics``, so
that no table or figure compares the two as one quantity.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness.engine.store import MANIFEST, METRIC_COLUMNS, RunRecord, RunStore
from harness.errors import ConfigError, HarnessError
from harness.metrics import clashing, namespaced
from harness.suite import (
    LECTURE_CLAIM,
    ClaimSpec,
    budget_task,
    default_claims,
    describe_versions,
    missing_lecture_algorithms,
)

PHASES = ("generate", "score", "train", "eval")
ROLES = ("policy", "reference", "reward", "critic", "other")
"""Model roles whose work a run counts (:data:`harness.compute.ROLES`, without importing torch)."""
X_AXES = ("step", "samples", "wall_seconds", "flops")
"""What learning curves can be drawn against (columns of ``metrics.parquet``)."""
FINAL_METRICS = ("gold_reward", "proxy_reward", "kl_ref")
"""Final metrics every run frame has a column for (NaN where a run lacks them)."""
REWARD_STATUSES = ("done", "diverged")
"""Runs whose results enter reward statistics (failed and unfinished runs do not)."""


@dataclass
class StoreData:
    """A suite's runs as frames (see the module docstring)."""

    suite: str
    path: Path
    runs: pd.DataFrame
    metrics: pd.DataFrame
    labels: list[str]
    """Labels in report order: by the algorithm's place in the suite file, then by name."""
    tasks: list[str]
    stale: pd.DataFrame | None = None
    """Runs of older versions of the suite, left out (``run_id, label, task, seed, status``)."""
    corrupt: pd.DataFrame | None = None
    """Run folders that do not read back (``run_id, problem``), skipped."""
    claims: list[ClaimSpec] = field(default_factory=default_claims)
    """The suite's claims (from the suite file kept in the store), or the lecture's where the
    suite lists none and has their algorithms."""
    claims_note: str = ""
    """Why no claim is tested, when the suite lists none and lacks the lecture's algorithms."""
    trials: pd.DataFrame | None = None
    """Tuning trials' runs (``task, label, trial, seed, status, value, param_<field>...``, and
    ``repeat`` where the tuning repeats its search), kept apart from the comparison: ``value``
    is the run's tuning objective."""
    budgets: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    """Tasks run at several budgets: each report task (``bandit @ 8192 samples``, the ``task``
    of ``runs``, ``metrics`` and ``trials``) → (task, budget kind, budget). Empty when every
    task has one budget (its runs then keep the task's own name)."""

    @property
    def usable(self) -> pd.DataFrame:
        """Runs whose results count for reward statistics (done or diverged)."""
        return self.runs[self.runs["status"].isin(REWARD_STATUSES)]


def _finite(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _short_number(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _sweep_text(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(point.items()))


def _run_row(rec: RunRecord) -> dict[str, Any]:
    spec, summary = rec.spec, rec.summary or {}
    budget = spec.get("budget") or {}
    budget_kind, budget_value = next(iter(budget.items()), (None, math.nan))
    row: dict[str, Any] = {
        "run_id": rec.run_id,
        "label": str(spec.get("label") or spec.get("algorithm") or rec.run_id),
        "algorithm": str(spec.get("algorithm", "?")),
        "task": str(spec.get("task", "?")),
        "seed": spec.get("seed"),
        "replicate": int(spec.get("replicate") or 0),
        "sweep": _sweep_text(spec.get("sweep_point") or {}),
        "status": rec.state,
        "reason": rec.status.get("reason") or summary.get("reason") or "",
        "steps": _finite(summary.get("steps")),
        "budget_kind": budget_kind,
        "budget": _finite(budget_value),
        "config": json.dumps(spec.get("algorithm_config") or {}, sort_keys=True, default=str),
    }
    prefs, rm = spec.get("preferences") or {}, spec.get("reward_model") or {}
    # the scales that fix r̂'s units (docs/reward-units.md): NaN for a file / an oracle r̂
    row["annotator_scale"] = math.nan if prefs.get("file") else _finite(prefs.get("scale"))
    row["reward_model_scale"] = (_finite(rm.get("scale")) if rm.get("kind", "fitted") == "fitted"
                                 else math.nan)
    row["reward_model_kind"] = str(rm.get("kind", "fitted"))
    tuning = spec.get("tuning") or {}
    if tuning.get("phase") == "chosen":  # a tuned algorithm's comparison run
        row["tuned_trial"] = tuning.get("trial")
        row["tuned_params"] = ", ".join(f"{k}={_short_number(v)}"
                                        for k, v in (tuning.get("params") or {}).items())
        row["tuned_value"] = _finite(tuning.get("value"))
        # the choice at full precision (``tuned_params`` is for reading), and its search
        row["tuned_params_json"] = json.dumps(tuning.get("params") or {})
        row["tuning_repeat"] = int(tuning.get("repeat") or 0)
    for name, value in (summary.get("final") or {}).items():
        row[f"final_{name}"] = _finite(value)
    compute = summary.get("compute") or {}
    seconds = compute.get("seconds") or {}
    for phase in PHASES:
        row[f"seconds_{phase}"] = _finite(seconds.get(phase))
    row["train_seconds"] = (
        sum(row[f"seconds_{p}"] for p in ("generate", "score", "train"))
        if compute else math.nan
    )
    cpu = compute.get("cpu_seconds") or {}
    for phase in PHASES:
        row[f"cpu_seconds_{phase}"] = _finite(cpu.get(phase))
    row["train_cpu_seconds"] = (
        sum(row[f"cpu_seconds_{p}"] for p in ("generate", "score", "train"))
        if cpu else math.nan
    )
    memory = summary.get("memory") or {}
    row["model_state_bytes"] = _finite(memory.get("model_state_bytes"))
    row["run_state_bytes"] = _finite(memory.get("run_state_bytes"))
    row["peak_above_baseline_mb"] = _finite(memory.get("peak_above_baseline_mb"))
    row["memory_kind"] = memory.get("kind") or ""
    target = summary.get("target") or {}
    row["target_regret"] = _finite(target.get("regret"))
    row["flops"] = _finite(compute.get("flops"))
    row["samples"] = _finite(compute.get("samples"))
    row["run_wall_seconds"] = _finite(summary.get("wall_seconds"))
    row["peak_host_memory_mb"] = _finite(summary.get("peak_host_memory_mb"))
    row["peak_gpu_memory_mb"] = _finite(summary.get("peak_gpu_memory_mb"))
    row["models_resident"] = _finite(summary.get("models_resident"))
    row.update(_counted_work(compute, summary.get("load_average") or {}))
    return row


def _counted_work(compute: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    """A run's counted work (NaN for runs recorded before it was counted): samples generated
    and read from data, ``forward_<role>`` and ``backward_<role>`` — tokens, or table rows read
    and updated for tabular policies (``work_unit``) — and ``flops_<role>`` (neural policies);
    then the 1-minute load average during the run (``load_mean``, ``load_max``)."""
    counted = "forward_tokens" in compute
    tabular = "rows_read" in compute
    row: dict[str, Any] = {
        "work_unit": ("table rows" if tabular else "tokens") if counted else "",
        "samples_generated": _finite(compute.get("samples_generated")),
        "samples_from_data": _finite(compute.get("samples_from_data")),
    }
    forward = compute.get("rows_read" if tabular else "forward_tokens") or {}
    backward = compute.get("rows_updated" if tabular else "backward_tokens") or {}
    by_role = compute.get("flops_by_role") or {}
    for role in ROLES:
        row[f"forward_{role}"] = _finite(forward.get(role, 0 if counted else None))
        row[f"backward_{role}"] = _finite(backward.get(role, 0 if counted else None))
        row[f"flops_{role}"] = _finite(by_role.get(role))
    row["load_mean"] = _finite(load.get("mean_1min"))
    row["load_max"] = _finite(load.get("max_1min"))
    return row


def _is_store(path: Path) -> bool:
    """Whether ``path`` is one suite's run store (``run`` writes these two files first)."""
    return (path / MANIFEST).is_file() or (path / "suite.yaml").is_file()


def suites_under(root: str | Path) -> list[str]:
    """The names of the run stores (suites) directly inside ``root``, e.g. ``runs/``."""
    root = Path(root)
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_store(p))
    except OSError:
        return []


def check_one_store(path: str | Path) -> None:
    """Raise :class:`ConfigError` (one line) when ``path`` is a folder of run stores, such as
    ``runs/``, rather than one store: the message names the suites in it."""
    path = Path(path)
    if not path.is_dir() or _is_store(path):
        return
    suites = suites_under(path)
    if suites:
        first = path / suites[0]
        raise ConfigError(
            f"{path}: a folder of run stores, not one; it holds {len(suites)} suite"
            f"{'s' if len(suites) > 1 else ''}: {', '.join(suites)}. Report one, e.g. "
            f"rlhf-harness report {first}"
        )


def _algorithm_order(path: Path) -> list[str]:
    """Algorithm names in the order of the suite file kept in the store (empty if none)."""
    try:
        data = yaml.safe_load((path / "suite.yaml").read_text())
        return [str(a["name"]) for a in data.get("algorithms", [])]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return []


def given_settings(path: Path) -> dict[str, set[str]]:
    """Per label, the algorithm settings the suite file kept in the store sets (its ``config``,
    any task's ``per_task`` and its ``sweep`` keys); empty when it cannot be read."""
    out: dict[str, set[str]] = {}
    try:
        data = yaml.safe_load((path / "suite.yaml").read_text())
        for entry in data.get("algorithms") or []:
            keys = set(entry.get("config") or {}) | set(entry.get("sweep") or {})
            for overrides in (entry.get("per_task") or {}).values():
                keys |= set(overrides or {})
            out[str(entry.get("label") or entry["name"])] = {str(k) for k in keys}
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return {}
    return out


def _claims(path: Path, algorithms: list[str]) -> tuple[list[ClaimSpec], str]:
    """The claims of the suite file kept in the store; when it lists none (or cannot be read:
    ``validate`` is where a suite file's errors are reported), the lecture's if ``algorithms``
    (the suite's algorithm names) has theirs. Also the note that says why none is tested."""
    try:
        data = yaml.safe_load((path / "suite.yaml").read_text())
        listed = data.get("claims") if isinstance(data, dict) else None
        if listed is not None:
            return [ClaimSpec.model_validate(c) for c in listed], ""
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError):
        pass
    missing = missing_lecture_algorithms(algorithms)
    if not missing:
        return default_claims(), ""
    return [], (f"The suite lists no claims, and the lecture's default ones (from "
                f"{' to '.join(LECTURE_CLAIM)}, stability increases and computation decreases) "
                f"do not apply: it has no {' and no '.join(missing)}. A suite states its own "
                f"under claims: (see docs/suite-reference.md).")


def load_store(store_path: str | Path, *, include_stale: bool = False,
               allow_mixed_versions: bool = False) -> StoreData:
    """Read the runs of the store folder ``store_path`` (``runs/<suite>``); see the module
    docstring for stale and corrupt runs.

    Runs made under different cores (harness version or source, torch version: their
    summaries' ``versions``) are refused with a :class:`~harness.errors.HarnessError` naming
    them, unless ``allow_mixed_versions``."""
    path = Path(store_path)
    store = RunStore(path.parent, path.name)
    current = store.manifest()
    rows, frames, suites, stale, corrupt, trials = [], [], [], [], [], []
    trial_budgets: list[tuple[str | None, float]] = []
    declared: dict[str, dict[str, str]] = {}
    cores: dict[str, list[str]] = {}  # the core a run was made under → its run ids
    for rec in store.records():
        if rec.problem is None:
            try:
                m = rec.metrics()
            except Exception as exc:  # pyarrow's own error types for a damaged file
                rec.problem = f"metrics.parquet: {' '.join(str(exc).split())[:120]}"
        if rec.problem is not None:
            corrupt.append({"run_id": rec.run_id, "problem": rec.problem})
            continue
        if current is not None and rec.run_id not in current:
            stale.append({"run_id": rec.run_id, "label": rec.spec.get("label"),
                          "task": rec.spec.get("task"), "seed": rec.spec.get("seed"),
                          "status": rec.state})
            if not include_stale:
                continue
        versions = (rec.summary or {}).get("versions")
        if isinstance(versions, dict):
            cores.setdefault(describe_versions(versions), []).append(rec.run_id)
        tuning = rec.spec.get("tuning") or {}
        if tuning.get("phase") == "trial":
            trials.append(_trial_row(rec, tuning, float(rec.spec.get("evaluation", {})
                                                        .get("beta", 0.1))))
            trial_budgets.append(_run_budget(rec.spec))
            continue
        suites.append(str(rec.spec.get("suite") or path.name))
        meanings = (rec.summary or {}).get("metric_meanings")
        if isinstance(meanings, dict):
            declared.setdefault(str(rec.spec.get("algorithm", "?")), {}).update(
                {str(k): str(v) for k, v in meanings.items()}
            )
        row = _run_row(rec)
        row["stale"] = current is not None and rec.run_id not in current
        rows.append(row)
        if len(m):
            m = m.copy()
            m["run_id"] = rec.run_id
            frames.append(m)
    if len(cores) > 1 and not allow_mixed_versions:
        listed = "; ".join(f"{core}: {len(ids)} runs (e.g. {ids[0]})"
                           for core, ids in sorted(cores.items(), key=lambda kv: -len(kv[1])))
        raise HarnessError(
            f"{path}: runs made by different versions of the harness or torch: {listed}; "
            f"rerun the older ones (rlhf-harness run --redo-other-versions) or pass "
            f"--allow-mixed-versions"
        )
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "label", "algorithm", "task", "seed", "sweep",
                                     "status", "reason"])
    for col in (*(f"final_{m}" for m in FINAL_METRICS), "train_seconds", "flops", "samples",
                "peak_host_memory_mb", "peak_gpu_memory_mb", "models_resident",
                *(f"seconds_{p}" for p in PHASES), *(f"cpu_seconds_{p}" for p in PHASES),
                "train_cpu_seconds", "model_state_bytes", "run_state_bytes",
                "peak_above_baseline_mb",
                "target_regret"):
        if col not in runs:
            runs[col] = np.nan
    if "replicate" not in runs:
        runs["replicate"] = 0
    budgets = budget_tasks(runs, trials, trial_budgets)
    if budgets:  # each budget of such a task is a task of the report, compared on its own
        several = {task for task, _, _ in budgets.values()}
        if "budget_kind" in runs:
            runs["task"] = [_budget_name(t, k, v, several) for t, k, v in
                            zip(runs["task"], runs["budget_kind"], runs["budget"], strict=True)]
        for row, (kind, value) in zip(trials, trial_budgets, strict=True):
            row["task"] = _budget_name(row["task"], kind, value, several)
    suite = suites[0] if suites else path.name
    claims, claims_note = _claims(
        path, _algorithm_order(path) or sorted(runs["algorithm"].dropna().astype(str).unique())
        if len(runs) else _algorithm_order(path))
    metrics = (pd.concat(frames, ignore_index=True) if frames
               else pd.DataFrame(columns=list(METRIC_COLUMNS)))
    for col in ("step", "samples", "tokens", "wall_seconds", "flops", "value"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce").astype(float)
    metrics["metric"] = metrics["metric"].astype(str)
    metrics["source"] = metrics["source"].astype(str)
    ident = runs[["run_id", "label", "algorithm", "task", "seed", "status"]]
    metrics = metrics.merge(ident, on="run_id", how="inner")
    metrics = namespace_clashes(metrics, declared)
    evals = metrics[metrics["source"] == "eval"]
    if len(evals):
        first = evals[evals["step"] == evals.groupby("run_id")["step"].transform("min")]
        initial = first.pivot_table(index="run_id", columns="metric", values="value",
                                    aggfunc="first")
        initial.columns = [f"initial_{c}" for c in initial.columns]
        runs = runs.merge(initial, left_on="run_id", right_index=True, how="left")
    for m in (*FINAL_METRICS, "regret"):
        if f"initial_{m}" not in runs:
            runs[f"initial_{m}"] = np.nan

    order = _algorithm_order(path) or ["ppo", "grpo", "dpo"]
    rank = {name: i for i, name in enumerate(order)}
    pairs = runs[["algorithm", "label"]].drop_duplicates()
    labels = list(dict.fromkeys(
        lab for _, _, lab in sorted(
            (rank.get(a, len(rank)), a, lab) for a, lab in pairs.itertuples(index=False)
        )
    ))
    tasks = sorted(runs["task"].astype(str).unique().tolist(),
                   key=lambda t: (budgets[t][0], budgets[t][2]) if t in budgets else (t, 0.0)) \
        if len(runs) else []
    return StoreData(
        suite=suite, path=path, runs=runs, metrics=metrics, labels=labels, tasks=tasks,
        stale=pd.DataFrame(stale, columns=["run_id", "label", "task", "seed", "status"]),
        corrupt=pd.DataFrame(corrupt, columns=["run_id", "problem"]),
        claims=claims,
        claims_note=claims_note,
        budgets=budgets,
        trials=pd.DataFrame(trials, columns=None if trials else
                            ["run_id", "task", "label", "trial", "seed", "status", "value"]),
    )


def _run_budget(spec: dict[str, Any]) -> tuple[str | None, float]:
    """(kind, value) of a run's one budget ((None, NaN) when its spec has none)."""
    kind, value = next(iter((spec.get("budget") or {}).items()), (None, math.nan))
    return kind, _finite(value)


def budget_tasks(runs: pd.DataFrame, trials: list[dict[str, Any]],
                 trial_budgets: list[tuple[str | None, float]]
                 ) -> dict[str, tuple[str, str, float]]:
    """The tasks whose runs (comparison runs, and tuning trials' runs) have several budgets:
    each (task, budget)'s report name (:func:`harness.suite.budget_task`) → (task, kind,
    value). A task whose runs share one budget is not listed, so it keeps its name."""
    pairs = [(str(t), k, float(v)) for t, k, v in zip(
        runs["task"], runs.get("budget_kind", pd.Series([None] * len(runs))),
        runs.get("budget", pd.Series([math.nan] * len(runs))), strict=True)]
    pairs += [(str(row["task"]), k, float(v))
              for row, (k, v) in zip(trials, trial_budgets, strict=True)]
    seen: dict[str, set[tuple[str, float]]] = {}
    for task, kind, value in pairs:
        if isinstance(kind, str) and math.isfinite(value):
            seen.setdefault(task, set()).add((kind, value))
    return {budget_task(task, kind, value): (task, kind, value)
            for task, found in seen.items() if len(found) > 1 for kind, value in found}


def _budget_name(task: Any, kind: Any, value: Any, several: set[str]) -> str:
    """``task`` with its budget when it is one of the tasks run at ``several`` budgets."""
    task = str(task)
    if task in several and isinstance(kind, str) and math.isfinite(_finite(value)):
        return budget_task(task, kind, float(value))
    return task


def namespace_clashes(
    metrics: pd.DataFrame, declared: dict[str, dict[str, str]]
) -> pd.DataFrame:
    """``metrics`` with each algorithm-reported (``source == "train"``) metric whose name
    :func:`harness.metrics.clashing` finds in ``declared`` renamed ``ALGORITHM:NAME``."""
    clashes = clashing(declared)
    if not clashes or metrics.empty:
        return metrics
    rename = (metrics["source"] == "train") & metrics["metric"].isin(clashes)
    metrics = metrics.copy()
    metrics.loc[rename, "metric"] = [
        namespaced(str(a), str(m), clashes)
        for a, m in zip(metrics.loc[rename, "algorithm"], metrics.loc[rename, "metric"],
                        strict=True)
    ]
    return metrics


def _trial_row(rec: RunRecord, tuning: dict[str, Any], beta: float) -> dict[str, Any]:
    from harness.engine.tuning import run_objective

    row: dict[str, Any] = {
        "run_id": rec.run_id, "task": str(rec.spec.get("task", "?")),
        "label": str(tuning.get("label")), "trial": int(tuning.get("trial", -1)),
        "seed": rec.spec.get("seed"), "status": rec.state,
        "objective": tuning.get("objective"),
        **({"repeat": int(tuning["repeat"])} if "repeat" in tuning else {}),
        "value": run_objective(rec, str(tuning.get("objective", "final_gold")),
                               kl_budget=tuning.get("kl_budget"), beta=beta),
    }
    for key, value in (tuning.get("params") or {}).items():
        row[f"param_{key}"] = value
    return row


def eval_series(data: StoreData, metric: str) -> pd.DataFrame:
    """Evaluations of ``metric`` for runs that count (done or diverged), in step order."""
    m = data.metrics
    sel = m[(m["source"] == "eval") & (m["metric"] == metric)
            & m["status"].isin(REWARD_STATUSES)]
    return sel.sort_values(["run_id", "step"])


def on_grid(frame: pd.DataFrame, x: str, *, max_points: int = 100) -> pd.DataFrame:
    """Each run's curve of ``value`` against ``x`` on a grid shared by the runs of a task.

    The grid is the union of the runs' ``x`` values when it has at most ``max_points`` points,
    else ``max_points`` evenly spaced points; each run is interpolated linearly inside its own
    range (no extrapolation), so a run that stopped early contributes nothing past its end.
    Non-finite values are dropped before interpolating.
    """
    out = []
    for task, per_task in frame.groupby("task", sort=False):
        per_task = per_task[np.isfinite(per_task["value"]) & np.isfinite(per_task[x])]
        if per_task.empty:
            continue
        xs = np.unique(per_task[x].to_numpy())
        grid = xs if len(xs) <= max_points else np.linspace(xs.min(), xs.max(), max_points)
        for run_id, run in per_task.groupby("run_id", sort=False):
            run = run.groupby(x, as_index=False)["value"].mean().sort_values(x)
            rx, ry = run[x].to_numpy(), run["value"].to_numpy()
            inside = grid[(grid >= rx.min()) & (grid <= rx.max())]
            if len(inside) == 0:
                continue
            ident = per_task[per_task["run_id"] == run_id].iloc[0]
            out.append(pd.DataFrame({
                "task": task, "run_id": run_id, "label": ident["label"],
                "algorithm": ident["algorithm"], "seed": ident["seed"],
                x: inside, "value": np.interp(inside, rx, ry),
            }))
    if not out:
        return pd.DataFrame(columns=["task", "run_id", "label", "algorithm", "seed", x, "value"])
    return pd.concat(out, ignore_index=True)
