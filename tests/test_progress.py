"""Suite progress: rich bars that fit 80 columns on a terminal, one line per finished run
elsewhere (CI logs, ``make quickstart > log``), nothing when switched off."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from harness.engine.executors import _duration, _Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_lines_give_status_seconds_runs_left_and_eta():
    now = [100.0]
    out = io.StringIO()
    bar = _Progress("lines", 4, "quickstart: 4 to run, 0 already finished", stream=out,
                    clock=lambda: now[0])
    bar.run_started("ppo · bandit · seed 0")
    now[0] = 110.0
    bar.run_finished("done")
    bar.run_finished("failed", "dpo · tiny-lm · seed 1", 95.0)  # a worker's run: its own time
    now[0] = 400.0
    bar.run_finished("diverged", "grpo · bandit · seed 2", None)
    bar.run_finished("done", "x · y · seed 3", 3.25)
    assert out.getvalue().splitlines() == [
        "quickstart: 4 to run, 0 already finished",
        "[1/4] done in 10 s: ppo · bandit · seed 0; 3 left, ETA 30 s",
        "[2/4] failed in 1 min 35 s: dpo · tiny-lm · seed 1; 2 left, ETA 10 s",
        "[3/4] diverged: grpo · bandit · seed 2; 1 left, ETA 1 min 40 s",
        "[4/4] done in 3.2 s: x · y · seed 3; 0 left",
    ]
    assert bar.counts == {"done": 2, "failed": 1, "diverged": 1}


def test_off_prints_nothing_and_still_counts(capsys):
    bar = _Progress(False, 2, "suite")
    bar.run_started("a")
    bar.run_finished("done")
    bar.close()
    assert capsys.readouterr() == ("", "")
    assert bar.counts == {"done": 1}
    with pytest.raises(ValueError, match="progress mode 'loud'"):
        _Progress("loud", 1, "suite")


def test_bars_fit_80_columns_with_their_counters_whole():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    title = "a-suite-with-a-long-name: 30 to run, 12 already finished, and then some more words"
    bar = _Progress("bars", 30, title, console=console)
    bar.run_started("ppo-kl[learning_rate=0.05,kl_coef=0.1] · tiny-lm · seed 4")
    bar.run_step(0.5)
    for status in ("done", "done", "failed", "diverged"):
        bar.run_finished(status)
    bar.bar.refresh()
    bar.close()
    lines = [ANSI.sub("", line) for line in out.getvalue().replace("\r", "\n").splitlines()]
    assert max(len(line) for line in lines) <= 80, lines
    suite_rows = [line for line in lines if line.startswith("suite")]
    assert "4/30 done 2 failed 1 diverged 1 ETA " in suite_rows[-1], suite_rows[-1]
    run_rows = [line for line in lines if line.startswith("  ppo-kl[")]
    assert run_rows, lines  # the sweep label is shown as written, not read as markup


def test_durations_are_compact():
    assert [_duration(s) for s in (0.04, 9.96, 42.4, 61, 3599.4, 3725)] == [
        "0.0 s", "10.0 s", "42 s", "1 min 01 s", "59 min 59 s", "1 h 02 min"]


def test_the_eta_is_per_task_so_fast_runs_do_not_set_the_pace_of_slow_ones():
    """Bandit runs of 1 s and language-model runs of 30 s: the time left is each task's runs
    left at that task's own pace (33 s here), not every run at the mean pace (62 s)."""
    now = [0.0]
    out = io.StringIO()
    bar = _Progress("lines", 6, "mixed: 6 to run, 0 already finished", stream=out,
                    clock=lambda: now[0], groups=["bandit"] * 4 + ["tiny-lm"] * 2)
    bar.run_started("ppo · bandit · seed 0", "bandit")
    now[0] = 1.0
    bar.run_finished("done")
    bar.run_started("ppo · tiny-lm · seed 0", "tiny-lm")
    now[0] = 31.0
    bar.run_finished("done")
    total, shares = bar.eta(31.0 / 2, 4)
    assert shares == pytest.approx({"bandit": 3.0, "tiny-lm": 30.0})
    assert total == pytest.approx(33.0)
    assert out.getvalue().splitlines()[-1] == (
        "[2/6] done in 30 s: ppo · tiny-lm · seed 0; 4 left, ETA 33 s (bandit 3.0 s, "
        "tiny-lm 30 s)")
    bar.run_finished("done", "grpo · tiny-lm · seed 1", 29.0, "tiny-lm")  # a worker's run
    last = out.getvalue().splitlines()[-1]  # only bandit runs left: no split, a bandit's pace
    assert re.fullmatch(r"\[3/6\] done in 29 s: grpo · tiny-lm · seed 1; 3 left, ETA 1\.\d s",
                        last), last


def test_a_task_with_no_finished_run_counts_as_a_mean_run():
    now = [0.0]
    bar = _Progress("off", 4, "s", clock=lambda: now[0], groups=["a", "a", "b", "b"])
    bar.run_started("x · a · seed 0", "a")
    now[0] = 10.0
    bar.run_finished("done")
    assert bar.eta(10.0, 3) == (pytest.approx(30.0), {"a": pytest.approx(10.0),
                                                      "b": pytest.approx(20.0)})


def test_tuning_progress_names_the_trial_of_each_task():
    from types import SimpleNamespace

    from harness.cli import trial_stage

    trials = {"bandit": 16, "tiny-lm": 6}
    suite = SimpleNamespace(tuning=SimpleNamespace(trials_for=trials.__getitem__))

    def spec(task: str, trial: int) -> SimpleNamespace:
        return SimpleNamespace(task=task, tuning={"phase": "trial", "trial": trial})

    assert trial_stage(suite, [spec("bandit", 2), spec("bandit", 2)]) == "tuning trial 3/16"
    assert trial_stage(suite, [spec("bandit", 4), spec("tiny-lm", 4)]) == (
        "tuning trial 5/16 on bandit, 5/6 on tiny-lm")
