"""Every shipped algorithm gives its recorded numbers bit for bit.

The numbers are those of ``tests/data/algorithm_fixture.json``, recorded by
``scripts/record_algorithm_fixture.py``: the zoo's 14 algorithms once on the bandit and once on
the token task, with short budgets, on the CPU in fp32 (every metric of every evaluation and the
summary, floats as ``float.hex``). A refactor of the plugins must leave them unchanged; a change
meant to alter them is recorded again with ``python scripts/record_algorithm_fixture.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.engine.plugins import ONLY_ENV, STRICT_ENV

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("record_algorithm_fixture",
                                               ROOT / "scripts" / "record_algorithm_fixture.py")
assert _spec is not None and _spec.loader is not None
recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recorder)

RECORDED: dict[str, Any] = json.loads(recorder.FIXTURE.read_text(encoding="utf-8"))
ALGORITHMS = ("ppo", "grpo", "gspo", "rloo", "reinforce-pp", "online-dpo", "bon",
              "dpo", "ipo", "rdpo", "cdpo", "kto", "simpo", "orpo")


def test_the_fixture_covers_every_shipped_algorithm_on_both_tabular_tasks():
    specs = RECORDED["specs"]
    assert {(s["task"], s["algorithm"]) for s in specs} == {
        (task, algorithm) for task in ("bandit", "token") for algorithm in ALGORITHMS}
    assert {run["status"] for run in RECORDED["runs"].values()} == {"done"}
    assert all(run["metrics"] and run["summary"]["final"] for run in RECORDED["runs"].values())


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fixture's runs, run again in this process."""
    if RECORDED["torch"] != torch.__version__:
        pytest.skip(f"the fixture was recorded with torch {RECORDED['torch']}, this is "
                    f"{torch.__version__}: numbers need not agree bit for bit")
    if torch.cuda.is_available():
        pytest.skip("the fixture's runs are recorded on the CPU (their device is auto)")
    with pytest.MonkeyPatch.context() as patch:
        for var in (ONLY_ENV, STRICT_ENV):
            patch.delenv(var, raising=False)
        threads = torch.get_num_threads()
        try:
            return recorder.record_all(str(tmp_path_factory.mktemp("algorithms") / "runs"))
        finally:
            torch.set_num_threads(threads)


def test_the_runs_are_the_recorded_ones(rerun: dict[str, Any]):
    assert list(rerun["runs"]) == list(RECORDED["runs"])
    assert rerun["specs"] == RECORDED["specs"]


@pytest.mark.parametrize("key", list(RECORDED["runs"]))
def test_an_algorithm_run_gives_its_recorded_numbers_bit_for_bit(rerun: dict[str, Any],
                                                                 key: str):
    now, before = rerun["runs"][key], RECORDED["runs"][key]
    assert now["status"] == before["status"]
    assert now["columns"] == before["columns"]
    assert len(now["metrics"]) == len(before["metrics"])
    for row, (got, want) in enumerate(zip(now["metrics"], before["metrics"], strict=True)):
        assert got == want, f"metrics row {row}"
    assert now["summary"] == before["summary"]
