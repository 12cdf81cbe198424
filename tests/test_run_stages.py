"""A run as named stages (harness/engine/runner.py): short functions, and the quickstart's numbers.

The numbers are those recorded in ``tests/data/run_stages_fixture.json`` by
``scripts/record_run_fixture.py``: nine quickstart runs (PPO, GRPO and DPO on the bandit, token
and tiny-lm tasks, with short budgets) on the CPU in fp32, every metric and every number of the
summary that the run computes (not its timings or memory peaks), compared bit for bit. A change
meant to alter them is recorded again with ``python scripts/record_run_fixture.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.engine.plugins import ONLY_ENV, STRICT_ENV

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "harness" / "engine" / "runner.py"
_spec = importlib.util.spec_from_file_location("record_run_fixture",
                                               ROOT / "scripts" / "record_run_fixture.py")
assert _spec is not None and _spec.loader is not None
recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recorder)

RECORDED: dict[str, Any] = json.loads(recorder.FIXTURE.read_text(encoding="utf-8"))

MAX_LINES = 60
"""The longest a function of harness/engine/runner.py may be: lines of its body, docstring
excluded."""


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else \
        node.body
    assert node.end_lineno is not None
    return node.end_lineno - body[0].lineno + 1


def test_no_function_of_the_runner_is_longer_than_a_screen():
    tree = ast.parse(RUNNER.read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))]
    assert {"run_one", "run_spec", "_train", "_record_run"} <= {f.name for f in functions}
    long = {f.name: _body_lines(f) for f in functions if _body_lines(f) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_run_spec_is_its_stages_and_each_says_what_it_does():
    tree = ast.parse(RUNNER.read_text(encoding="utf-8"))
    top = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    [attempt] = [n for n in top["run_spec"].body if isinstance(n, ast.Try)]
    stages = [s.value.func.id for s in attempt.body
              if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
              and isinstance(s.value.func, ast.Name)]
    assert stages[:2] == ["_resolve_parts", "_prepare_shared"]
    assert "_train" in stages
    undocumented = [name for name, f in top.items() if not ast.get_docstring(f)]
    assert not undocumented


def test_the_fixture_covers_each_task_with_ppo_grpo_and_dpo():
    specs = RECORDED["specs"]
    assert {(s["task"], s["algorithm"]) for s in specs} == {
        (task, algorithm) for task in ("bandit", "token", "tiny-lm")
        for algorithm in ("ppo", "grpo", "dpo")}
    assert all(s["suite"] == "quickstart" and s["device"] == "auto" and s["precision"] == "fp32"
               for s in specs)
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
            return recorder.record_all(str(tmp_path_factory.mktemp("stages") / "runs"))
        finally:
            torch.set_num_threads(threads)


def test_the_runs_are_the_recorded_ones(rerun: dict[str, Any]):
    assert [recorder.run_key(s) for s in recorder.fixture_specs()] == list(RECORDED["runs"])
    assert rerun["specs"] == RECORDED["specs"]


@pytest.mark.parametrize("key", list(RECORDED["runs"]))
def test_a_quickstart_run_gives_its_recorded_numbers_bit_for_bit(rerun: dict[str, Any],
                                                                 key: str):
    now, before = rerun["runs"][key], RECORDED["runs"][key]
    assert now["status"] == before["status"]
    assert now["columns"] == before["columns"]
    assert len(now["metrics"]) == len(before["metrics"])
    for row, (got, want) in enumerate(zip(now["metrics"], before["metrics"], strict=True)):
        assert got == want, f"metrics row {row}"
    assert now["summary"] == before["summary"]
