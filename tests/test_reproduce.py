"""``rlhf-harness reproduce REPORT_DIR``: a report's runs.jsonl re-run and compared — bit for bit
on the CPU with the same code, and what changed named when the numbers differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

SUITE = """\
name: repro
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 200, scale: 0.5}
algorithms:
  - name: dpo
    config: {learning_rate: 0.05, optimizer: adam, batch_size: 32, warmup_steps: 0}
  - name: ppo
    config: {learning_rate: 0.05, rollout_batch_size: 32, num_ppo_epochs: 1}
seeds: [0, 1]
budget: {steps: 6}
evaluation: {every: 3}
device: cpu
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    import os

    root = tmp_path_factory.mktemp("repro")
    suite = root / "repro.yaml"
    suite.write_text(SUITE)
    here = os.getcwd()
    os.chdir(root)
    try:
        main(["run", str(suite), "--no-wandb", "--no-progress"])
    finally:
        os.chdir(here)
    return root / "reports" / "repro"


def lines(report: Path) -> list[dict]:
    return [json.loads(t) for t in (report / "runs.jsonl").read_text().splitlines()]


def test_the_report_lists_each_run_s_spec_versions_and_final_numbers(report):
    got = lines(report)
    assert len(got) == 4 and [g["run_id"] for g in got] == sorted(g["run_id"] for g in got)
    for line in got:
        assert line["status"] == "done" and line["spec"]["suite"] == "repro"
        assert {"rlhf-harness", "rlhf-harness-source", "torch"} <= set(line["versions"])
        assert line["environment"]["device"] == "cpu" and line["environment"]["threads"] >= 1
        assert "gold_reward" in line["final"]


def test_a_report_reproduces_bit_for_bit(report, capsys):
    main(["reproduce", str(report), "--sample", "4"])
    out = capsys.readouterr().out
    assert out.count(": identical") == 4
    assert f"{report}: 4 of 4 runs reproduced" in out


def test_a_changed_number_is_named_with_what_changed_since(report, tmp_path, capsys):
    copy = tmp_path / "report"
    copy.mkdir()
    changed = lines(report)
    for line in changed:  # as if the report had been made elsewhere, with other numbers
        line["final"]["gold_reward"] += 0.25
        line["versions"]["torch"] = "1.0.0"
    (copy / "runs.jsonl").write_text("\n".join(json.dumps(x) for x in changed) + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", str(copy), "--sample", "1", "--root", str(tmp_path / "store")])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    line = next(t for t in out.splitlines() if ": differs" in t)
    assert "— gold_reward " in line and "changed since: " in line and "torch 1.0.0 → " in line
    assert f"{copy}: 0 of 1 runs reproduced" in out
    # within a tolerance that covers the change, it passes
    main(["reproduce", str(copy), "--sample", "1", "--atol", "0.3"])
    out = capsys.readouterr().out
    assert ": within tolerance" in out and "1 of 1 runs reproduced" in out


def test_a_report_without_runs_jsonl_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs.jsonl: not found" in err


def test_a_run_is_re_run_on_the_thread_count_it_recorded(report, tmp_path, monkeypatch, capsys):
    # A neural run's numbers can depend on its CPU threads (tiny-lm trials of the zoo differed
    # on one thread and on two): the re-run uses the recorded count, then the default again.
    from harness.engine import runner
    from harness.engine.reproduce import recorded_threads

    copy = tmp_path / "report"
    copy.mkdir()
    changed = lines(report)[:1]
    changed[0]["environment"]["threads"] = 3
    (copy / "runs.jsonl").write_text(json.dumps(changed[0]) + "\n")
    seen = []
    original = runner.run_one

    def spy(*args, **kwargs):
        seen.append(runner.run_threads(tabular=False))
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "run_one", spy)
    main(["reproduce", str(copy), "--sample", "1"])
    assert seen == [3]
    assert runner.run_threads(tabular=False) == runner.DEFAULT_THREADS
    assert "1 of 1 runs reproduced" in capsys.readouterr().out  # a bandit run: one thread
    assert recorded_threads({"environment": {"device": "cuda", "threads": 4}}) is None
    assert recorded_threads({"environment": {"device": "cpu"}}) is None
    assert recorded_threads({}) is None
