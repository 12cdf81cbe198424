"""Compute accounting that does not move with machine load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.executors import run_specs
from harness.plugins import get_plugin_host
from harness.report import write_report
from harness.suite import check_suite, load_suite

SUITE = """\
name: load
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 200}
reward_model: {epochs: 5}
algorithms:
  - name: ppo
    config: {learning_rate: 0.05, rollout_batch_size: 32, num_ppo_epochs: 4}
  - name: grpo
    config: {learning_rate: 0.05, num_generations: 4, prompts_per_step: 8}
  - name: dpo
    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam, batch_size: 32, warmup_steps: 0}
seeds: [0, 1, 2, 3, 4]
budget: {samples: 1536}
evaluation: {every: 1000, samples_per_prompt: 1, evaluators: [gold_reward, kl_ref, regret]}
device: cpu
"""
COMPUTATION = ("cpu_seconds", "flops", "model_state_mb")


def _run(folder: Path) -> pd.DataFrame:
    folder.mkdir()
    path = folder / "suite.yaml"
    path.write_text(SUITE)
    specs = check_suite(load_suite(path), path, get_plugin_host())
    outcome = run_specs(specs, str(folder / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"done": len(specs)}
    (folder / "runs" / "load" / "suite.yaml").write_text(SUITE)
    out = write_report(folder / "runs" / "load", folder / "report")
    comp = pd.read_csv(out / "tables" / "comparisons.csv")
    claims = pd.read_csv(out / "tables" / "claims.csv")
    verdict = claims.set_index("aspect").loc["computation", "verdict"]
    comp = comp[comp["metric"].isin(COMPUTATION)]
    return comp.assign(claim=verdict)


def test_the_computation_verdict_does_not_move_when_a_cpu_hog_runs_beside(tmp_path: Path):
    quiet = _run(tmp_path / "quiet")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(max(2, os.cpu_count() or 2))]
    try:
        busy = _run(tmp_path / "busy")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    keys = ["task", "metric", "a", "b"]
    merged = quiet.merge(busy, on=keys, suffixes=("_quiet", "_busy"))
    assert len(merged) == len(quiet) == len(busy) > 0
    # a tabular policy reports no FLOPs: no FLOP comparison at all
    assert "flops" not in set(merged["metric"])
    pd.testing.assert_series_equal(merged["decision_quiet"], merged["decision_busy"],
                                   check_names=False)
    assert (merged["decision_quiet"] != "undecided").all(), merged
    assert quiet["claim"].iloc[0] == busy["claim"].iloc[0] == "supported"
    # bytes of model state are counted from the tensors: identical under load
    state = merged[merged["metric"] == "model_state_mb"]
    assert (state["mean_diff_quiet"] == state["mean_diff_busy"]).all()
    # CPU seconds move little (cache and frequency effects), far less than the differences
    cpu = merged[merged["metric"] == "cpu_seconds"]
    assert ((cpu["mean_diff_busy"] / cpu["mean_diff_quiet"]).between(0.5, 2.0)).all(), cpu


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
