"""Every shipped algorithm's numbers on short runs, recorded to check a refactor bit for bit.

    python scripts/record_algorithm_fixture.py            write tests/data/algorithm_fixture.json
    python scripts/record_algorithm_fixture.py --check    run again and compare with that file

The runs are the zoo suite's 14 algorithms (13 plugins; rdpo ships rdpo and cdpo; bon is
best-of-n), each once on the bandit and once on the token-level tabular task, on the zoo's first
instance and replicate, with a budget of :data:`BUDGET` samples and :data:`NUM_PAIRS` preference
pairs so that each run takes about a second on one CPU thread. Everything else (configs, the
plugins' suggested settings, evaluation) is the zoo's. What is recorded, and how, is what
``scripts/record_run_fixture.py`` records (its functions are reused): the metrics table without
wall time and the summary without timings or memory, every float as ``float.hex``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "algorithm_fixture.json"
SUITE = ROOT / "suites" / "zoo.yaml"
TASKS = ("bandit", "token")
BUDGET = 512
"""Samples per run (the zoo's: 8192)."""
NUM_PAIRS = 512
"""Preference pairs per instance (the zoo's: 4000)."""

_spec = importlib.util.spec_from_file_location("record_run_fixture",
                                               ROOT / "scripts" / "record_run_fixture.py")
assert _spec is not None and _spec.loader is not None
runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runs)


def fixture_specs() -> list[dict[str, Any]]:
    """The run specs of the fixture, in the order they run: every zoo algorithm on each of
    :data:`TASKS`, one instance and replicate, no tuning."""
    import yaml

    from harness.engine.plugins import get_plugin_host
    from harness.suite import Suite, expand

    data = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    data["tasks"] = [task for task in data["tasks"] if task["name"] in TASKS]
    for task in data["tasks"]:
        task.pop("seeds", None)
    data["seeds"] = {"instances": [0], "replicates": 1}
    data["preferences"] = {**data["preferences"], "num_pairs": NUM_PAIRS}
    data.pop("tuning", None)
    specs = []
    for run in expand(Suite.model_validate(data), get_plugin_host()):
        spec = run.as_dict()
        spec["budget"] = {"samples": float(BUDGET)}
        specs.append(spec)
    return specs


def record_all(root: str) -> dict[str, Any]:
    """Every fixture run, keyed by its label and task, with the specs (less their code hashes)
    and the torch version (:func:`record_run_fixture.record_all` on :func:`fixture_specs`)."""
    return runs.record_all(root, fixture_specs())


def main(argv: list[str] | None = None) -> int:
    """Write or ``--check`` the fixture (:func:`record_run_fixture.main`)."""
    return runs.main(argv, fixture=FIXTURE, specs=fixture_specs,
                     description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
