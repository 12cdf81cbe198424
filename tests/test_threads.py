"""CPU threads per run: a worker's share of the cores, set for each run, not inherited.

Two workers on two cores, each letting torch spread a tiny-lm run over both, took 2–4× the wall
time of one thread each (the zoo's tiny-lm trials: 52–304 s against 19–28 s, the same numbers);
and a worker that ran a tabular run first (one thread) used to run its next tiny-lm run on one
thread too, so a run's recorded thread count depended on the run before it.
"""

from __future__ import annotations

import json

import pytest

from harness.engine import executors
from harness.engine.executors import run_specs, worker_threads
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.suite import check_suite, load_suite

SUITE = """\
name: threads
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
  - name: tiny-lm
    params: {hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64,
             max_positions: 32, corpus_size: 400, pretrain_steps: 2, num_train_prompts: 8,
             num_eval_prompts: 4, max_new_tokens: 4}
algorithms:
  - {name: grpo, config: {prompts_per_step: 2, num_generations: 2, learning_rate: 0.001}}
reward_model: {kind: gold}
seeds: [0]
budget: {steps: 1}
device: cpu
"""


@pytest.mark.parametrize(("cores", "omp", "workers", "expected"), [
    (2, None, 1, 2), (2, None, 2, 1), (16, None, 2, 8), (16, None, 3, 5), (2, None, 4, 1),
    (16, "4", 2, 2), (16, "1", 1, 1), (16, "", 2, 8), (16, "0", 2, 8), (16, "x", 2, 8),
])
def test_each_worker_gets_its_share_of_the_cores(monkeypatch, cores, omp, workers, expected):
    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: set(range(cores)),
                        raising=False)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)  # as Ray sets it for a task of num_cpus=1
    assert worker_threads(workers) == expected


def test_a_language_model_run_uses_the_worker_s_threads_after_a_tabular_run(tmp_path,
                                                                            monkeypatch):
    # One worker runs the bandit run (one thread) and then the tiny-lm run in the same process:
    # the tiny-lm run records the worker's share, 3 threads here, not the bandit's one.
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("RLHF_HARNESS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    specs = check_suite(load_suite(path), path, get_plugin_host())
    assert [s.task for s in specs] == ["bandit", "tiny-lm"]  # the order the worker takes them
    outcome = run_specs(specs, str(tmp_path / "runs"), workers=1, wandb=False, progress=False)
    assert outcome.statuses == {"done": 2}
    store = RunStore(tmp_path / "runs", "threads")
    threads = {s.task: json.loads((store.path / s.run_id / "summary.json").read_text())
               ["environment"]["threads"] for s in specs}
    assert threads == {"bandit": 1, "tiny-lm": 3}
