"""scripts/setup.sh: `make quickstart` and `make test` share one environment and reinstall nothing
until a pyproject.toml changes, whichever ran last (one stamp per set of extras).

The script runs for real, on a copy of the files it reads, against a stand-in interpreter that
answers its questions (``sys.prefix``, ``import torch, harness``) and records each ``pip`` call
instead of installing: what is measured is when it decides to install, and with which extras.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ]; then echo "$*" >> "$FAKE_LOG"; exit 0; fi
case "$2" in
  *sys.prefix*) echo "$FAKE_PREFIX" ;;
  *__version__*) echo 2.13.0 ;;
esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What setup.sh reads: itself and every pyproject.toml, in a copy of the layout."""
    copy = tmp_path / "checkout"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup.sh", copy / "scripts" / "setup.sh")
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for project in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        target = copy / "plugins" / project.parent.name
        target.mkdir(parents=True)
        shutil.copy2(project, target / "pyproject.toml")
    return copy


def setup(checkout: Path, *flags: str, make: str | None = None) -> list[str]:
    """Run setup.sh (or ``make TARGET`` in the checkout); return the pip installs it made (one
    line each), after checking that nothing else was run with the interpreter."""
    prefix = checkout.parent / "env"
    prefix.mkdir(exist_ok=True)
    python = checkout.parent / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    log = checkout.parent / "pip.log"
    log.write_text("")
    env = {**os.environ, "PYTHON": str(python), "FAKE_LOG": str(log),
           "FAKE_PREFIX": str(prefix)}
    command = ["make", "-C", str(checkout), make] if make else [
        "bash", str(checkout / "scripts" / "setup.sh"), *flags]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    installs = [line for line in calls if " install " in line]
    assert [c for c in calls if c not in installs and "pip" not in c.split()[:2]] == [], calls
    return installs


def test_quickstart_and_test_alternate_without_reinstalling(checkout: Path):
    first = setup(checkout)  # make quickstart on a fresh environment
    assert len(first) == 1 and "-e ." in first[0] and "[dev]" not in first[0]
    assert "plugins/dpo/" in first[0]
    dev = setup(checkout, "--dev")  # make test: the test tools on top
    assert len(dev) == 1 and "-e .[dev]" in dev[0]
    for flags in [(), ("--dev",), (), ("--dev",)]:  # then any order: nothing to do
        assert setup(checkout, *flags) == [], flags
    stamps = sorted(p.name for p in (checkout.parent / "env").iterdir())
    assert stamps == [".rlhf-harness-setup-base", ".rlhf-harness-setup-dev"]


def test_a_changed_pyproject_reinstalls_each_set_once(checkout: Path):
    setup(checkout, "--dev")
    assert setup(checkout) == []  # dev installs the base set too
    project = checkout / "plugins" / "dpo" / "pyproject.toml"
    project.write_text(project.read_text() + "\n# a new dependency\n")
    assert len(setup(checkout)) == 1  # quickstart: the base set again
    assert setup(checkout) == []
    again = setup(checkout, "--dev")  # test: its stamp is older than the change
    assert len(again) == 1 and "[dev]" in again[0]
    assert setup(checkout, "--dev") == [] and setup(checkout) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_setup_and_setup_dev_set_up_and_run_nothing(checkout: Path):
    """The README's and the tutorial's set-up-only commands: the installs of setup.sh (plain,
    then with the test tools), and no linter, test or suite run."""
    shutil.copy2(ROOT / "Makefile", checkout / "Makefile")
    first = setup(checkout, make="setup")
    assert len(first) == 1 and "-e ." in first[0] and "[dev]" not in first[0]
    dev = setup(checkout, make="setup-dev")
    assert len(dev) == 1 and "-e .[dev]" in dev[0]
    assert setup(checkout, make="setup") == [] and setup(checkout, make="setup-dev") == []
    for page in ("README.md", "docs/writing-a-plugin.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        assert "make setup-dev" in text, page
    assert "`make setup`" in (ROOT / "README.md").read_text(encoding="utf-8")
