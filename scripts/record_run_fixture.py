"""A few quickstart runs' numbers, recorded to check a change to the runner bit for bit.

    python scripts/record_run_fixture.py            write tests/data/run_stages_fixture.json
    python scripts/record_run_fixture.py --check    run again and compare with that file

The runs are the quickstart suite's first instance and replicate of PPO, GRPO and DPO on each of
its tasks, plus the token-level tabular task (as the zoo suite sets it, with the bandit's learning
rates), so that the bandit, token and tiny-lm tasks are all covered. Their budgets are cut so that
all of them run in about half a minute on one CPU thread, and tiny-lm's preference pairs to 256
(its reward model's fit is most of a tiny-lm run's time); tiny-lm keeps the linear gold it was
recorded with (``target_saturation: null``); everything else is the quickstart's.

What is recorded is what a run computes, not what it measures: the metrics table without its wall
time, and the summary without timings, CPU seconds, memory peaks and baselines, the memory plan's
headroom (it reads the host's free memory), versions and the environment. Floats are kept as
``float.hex`` strings, so that a comparison is exact.

The runs execute in this process on the CPU in fp32 with one intra-op thread (the tests' setting)
and the global RNG seeded before each: equality is expected on the same machine and library
versions, not across them (the file names the torch version it was made with).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "run_stages_fixture.json"
SUITE = ROOT / "suites" / "quickstart.yaml"

TOKEN_TASK = {"name": "token", "params": {"num_prompts": 4, "vocab_size": 3, "max_len": 4}}
BUDGETS = {"bandit": 2048, "token": 2048, "tiny-lm": 320}
"""Samples per run (the quickstart's: 16384 on the bandit, 2048 on tiny-lm)."""
TINY_LM_PAIRS = 256
"""Preference pairs on tiny-lm (the quickstart's: 4000)."""
TINY_LM_PARAMS = {"target_saturation": None}
"""tiny-lm's task params beyond the quickstart's: the gold the runs were recorded with, r*
counting colour words linearly (the task's default now saturates)."""

DROPPED = frozenset({
    "wall_seconds", "seconds", "cpu_seconds", "peak_above_baseline_mb", "baseline_mb",
    "peak_host_memory_mb", "peak_gpu_memory_mb", "peak_device_bytes", "peak_prepare_bytes",
    "headroom", "versions", "environment", "load_average",
    "run_id", "config_hash", "metric_meanings",
})
"""Summary keys (at any depth) that measure the machine rather than the run, or that name the
code rather than what it computed (the run id hashes the plugin's source; the metrics' meanings
are its documentation)."""


def fixture_specs() -> list[dict[str, Any]]:
    """The run specs of the fixture, in the order they run."""
    import yaml

    from harness.engine.plugins import get_plugin_host
    from harness.suite import Suite, expand

    data = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    data["tasks"].insert(1, dict(TOKEN_TASK))
    for algorithm in data["algorithms"]:
        algorithm["per_task"]["token"] = dict(algorithm["per_task"]["bandit"])
    data["seeds"] = {"instances": [0], "replicates": 1}
    for task in data["tasks"]:  # every task on that one instance and replicate
        task.pop("seeds", None)
        if task["name"] == "tiny-lm":  # recorded with the linear gold (harness/tasks/tiny_lm.py)
            task["params"] = {**task.get("params", {}), **TINY_LM_PARAMS}
    specs = []
    for run in expand(Suite.model_validate(data), get_plugin_host()):
        spec = run.as_dict()
        spec["budget"] = {"samples": float(BUDGETS[spec["task"]])}
        if spec["task"] == "tiny-lm":
            spec["preferences"] = {**spec["preferences"], "num_pairs": TINY_LM_PAIRS}
        specs.append(spec)
    return specs


def exact(value: Any) -> Any:
    """``value`` with every float as its ``float.hex`` (NaN and -0.0 included): equal exactly
    when the numbers are equal bit for bit."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value.hex() if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return exact(value.item())
    raise TypeError(f"cannot record {type(value).__name__} {value!r}")


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in DROPPED}
    return value


def run_key(spec: dict[str, Any]) -> str:
    """A fixture run's name: its label and task (its run id would change with the plugin's
    source)."""
    return f"{spec['label']}-{spec['task']}"


def run_numbers(spec: dict[str, Any], root: str) -> dict[str, Any]:
    """Run ``spec`` into the store at ``root`` in this process; what it computed (see the
    module docstring), every float as ``float.hex``."""
    import torch

    from harness.engine.runner import run_one
    from harness.engine.store import RunStore
    from harness.suite import RunSpec

    torch.manual_seed(0)
    status = run_one(spec, root)
    run_id = RunSpec(**spec).run_id
    [record] = [r for r in RunStore(root, spec["suite"]).records() if r.run_id == run_id]
    summary = json.loads((record.path / "summary.json").read_text(encoding="utf-8"))
    frame = record.metrics().drop(columns=["run_id", "wall_seconds"])
    return {
        "status": status,
        "columns": list(frame.columns),
        "metrics": exact(frame.to_dict(orient="split")["data"]),
        "summary": exact(_scrub(summary)),
    }


def record_all(root: str, specs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every fixture run (``specs``, default :func:`fixture_specs`), keyed by :func:`run_key`,
    with the specs (less their code hashes) and the torch version."""
    import torch

    torch.set_num_threads(1)
    specs = fixture_specs() if specs is None else specs
    runs = {run_key(spec): run_numbers(spec, root) for spec in specs}
    shown = [{k: v for k, v in spec.items() if k != "code"} for spec in specs]
    return {"torch": torch.__version__, "specs": shown, "runs": runs}


def dump(numbers: dict[str, Any]) -> str:
    """``numbers`` as indented JSON with each list of plain values (a metrics row) on one line
    (JSON strings hold no raw newline, so only the layout's own whitespace is folded)."""
    text = json.dumps(numbers, indent=1, ensure_ascii=False)
    return re.sub(r"\[[^\[\]{}]*\]", lambda m: re.sub(r"\s*\n\s*", " ", m.group()), text) + "\n"


def main(argv: list[str] | None = None, *, fixture: Path = FIXTURE,
         specs: Any = None, description: str | None = None) -> int:
    """Record the runs of ``specs()`` (default :func:`fixture_specs`) into ``fixture``, or with
    ``--check`` run them again and compare; exit status 1 when a run differs."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        numbers = record_all(str(Path(tmp) / "runs"), None if specs is None else specs())
    if not args.check:
        fixture.parent.mkdir(parents=True, exist_ok=True)
        fixture.write_text(dump(numbers), encoding="utf-8")
        print(f"wrote {len(numbers['runs'])} runs to {fixture.relative_to(ROOT)}")
        return 0
    recorded = json.loads(fixture.read_text(encoding="utf-8"))
    differ = [key for key, run in numbers["runs"].items() if recorded["runs"].get(key) != run]
    for key in differ:
        print(f"differs: {key}")
    print(f"{len(numbers['runs']) - len(differ)} of {len(numbers['runs'])} runs as recorded")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
