"""Suite progress: rich bars that fit 80 columns on a terminal, one line per finished run
elsewhere (CI logs, ``make quickstart > log``), nothing when switched off."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from harness.executors import _duration, _Progress

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
