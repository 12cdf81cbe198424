"""The run store never lies: names that are not paths, one writer, run identity and stale runs,
per-run limits and dying runs, corrupt folders, bounded validation, one-line errors; kills from
outside that are never a run's failure, limits a plugin cannot switch off, the core's versions,
labels shown alike, damaged journals, gc mid-tuning, FIFOs, formula cells.

A plugin, ``rogue``, misbehaves on demand (hangs, exits, raises KeyboardInterrupt, kills its own
process, spends nothing of its budget, turns its weights to NaN, swallows every exception,
switches SIGALRM off, changes folders). Its runs are on a tiny bandit
with only the KL evaluator, so each takes a fraction of a second; the cases that need a process
of their own (a suite that kills itself, two writers, a SIGKILLed parent) run the CLI in a
subprocess.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

import harness.suite
from harness.cli import main
from harness.engine.executors import run_specs
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore, collect_garbage, shared_data_key
from harness.errors import ConfigError, HarnessError, StoreError
from harness.report.data import load_store
from harness.suite import check_suite, load_suite

TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parents[1]

ROGUE_PLUGIN = '''
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

import torch

from harness import hookimpl
from harness.algorithm import Algorithm


@dataclass
class Config:
    mode: str = "ok"
    """ok | hang | exit | interrupt | kill | idle | nan_params | deaf (hangs, swallowing every
    exception) | no_alarm (ignores SIGALRM, cancels timers, hangs) | chdir (to ``where``)
    (from step ``at`` on)."""
    where: str = ""
    at: int = 1
    sleep: float = 0.0
    """Seconds each step sleeps."""
    tag: str = ""
    """A free string, to sweep."""
    learning_rate: float = 0.1


class Rogue(Algorithm):
    name = "rogue"
    Config = Config
    needs = frozenset()

    def __init__(self, config, context):
        super().__init__(config, context)
        self.calls = 0

    def step(self):
        self.calls += 1
        mode = self.config.mode if self.calls >= self.config.at else "ok"
        if self.config.sleep:
            time.sleep(self.config.sleep)
        if mode == "hang":
            time.sleep(3600)
        elif mode == "exit":
            sys.exit(3)
        elif mode == "interrupt":
            raise KeyboardInterrupt
        elif mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "deaf":
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass
        elif mode == "no_alarm":
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.setitimer(signal.ITIMER_REAL, 0)
            time.sleep(3600)
        elif mode == "chdir":
            os.chdir(self.config.where)
        elif mode == "nan_params":
            with torch.no_grad():
                for p in self.ctx.policy.parameters():
                    p.fill_(float("nan"))
        if mode != "idle":
            with self.ctx.meter.phase("train"):
                self.ctx.meter.samples += 8
        return {"loss": 1.0 / self.calls}


@hookimpl
def register_algorithms(register):
    register("rogue", Rogue)
'''

HEAD = """\
name: {name}
tasks:
  - name: bandit
    params: {{num_prompts: 2, num_arms: 4}}
preferences: {{num_pairs: 50}}
evaluation: {{every: 1000, evaluators: [kl_ref]}}
seeds: [0]
budget: {{samples: 32}}
"""


def suite_text(name: str, algorithms: str, extra: str = "") -> str:
    return HEAD.format(name=name) + "algorithms:\n" + algorithms + extra


def rogue(label: str, **config: object) -> str:
    body = ", ".join(f"{k}: {json.dumps(v)}" for k, v in config.items())
    return f"  - name: rogue\n    label: {json.dumps(label)}\n    config: {{{body}}}\n"


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")


@pytest.fixture
def rogue_plugin(dist_info_path):
    """The rogue plugin as an installed distribution in this process."""
    return dist_info_path("rlhf-harness-test-rogue", "0.1", {"rogue": "rlhf_test_rogue"},
                          {"rlhf_test_rogue": ROGUE_PLUGIN})


@pytest.fixture
def rogue_site(tmp_path, dist_writer):
    """The rogue plugin as an installed distribution for subprocesses (put on PYTHONPATH)."""
    site = tmp_path / "site"
    dist_writer(site, "rlhf-harness-test-rogue", "0.1", {"rogue": "rlhf_test_rogue"},
                {"rlhf_test_rogue": ROGUE_PLUGIN})
    return site


def write(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def specs_of(path: Path, **kwargs: object) -> list:
    return check_suite(load_suite(path), path, get_plugin_host(), **kwargs)


def cli(*args: str, env: dict[str, str], cwd: Path, **kwargs: object):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=TIMEOUT_S, check=False, **kwargs)


def line_of(text: str, start: str, nth: int = 0) -> int:
    """The 1-based number of the ``nth`` line of ``text`` that starts with ``start``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if line.lstrip().startswith(start)]
    return hits[nth]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def by_label(root: Path, suite: str) -> dict[str, object]:
    return {r.spec["label"]: r for r in RunStore(root, suite).records()}


# --- 1. names never become paths --------------------------------------------------------------


def test_labels_and_sweep_values_never_become_paths(tmp_path, rogue_plugin):
    labels = ["../escape", "/tmp/absolute", "a/b", "..", "x" * 100]
    algorithms = "".join(rogue(label) for label in labels) + (
        "  - name: rogue\n    label: swept\n    sweep: {tag: ['../../up', 'c/d', '/abs']}\n")
    path = write(tmp_path / "suite", suite_text("paths", algorithms))
    root = tmp_path / "store" / "runs"
    specs = specs_of(path)
    outcome = run_specs(specs, str(root), wandb=False, progress=False)
    assert outcome.statuses == {"done": 8}
    store_dir = root / "paths"
    folders = [p for p in store_dir.iterdir() if p.is_dir() and p.name != "shared"]
    assert len(folders) == 8
    for folder in folders:  # every run folder is a direct child with a plain name
        assert folder.parent == store_dir and re.fullmatch(r"[A-Za-z0-9._=,+-]+", folder.name)
        assert not folder.name.startswith(".") and len(folder.name) <= 100
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["runs"]  # nothing escaped
    assert not Path("/tmp/absolute").exists()
    shown = sorted(load_store(store_dir).runs["label"])  # the labels, as written, in the report
    assert shown == sorted([*labels, "swept[tag=../../up]", "swept[tag=c/d]", "swept[tag=/abs]"])


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('label: "a\\0b"', "control character"),
        ('label: "tab\\there"', "control character"),
        ("label: " + "y" * 300, "300 characters; at most 100"),
        ('label: "  "', "empty"),
    ],
)
def test_a_label_that_cannot_be_shown_is_a_validate_error(tmp_path, rogue_plugin, snippet,
                                                          message):
    text = suite_text("labels", f"  - name: rogue\n    {snippet}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:{line_of(text, 'label:')}: algorithms.0.label: ")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ['"../up"', "a/b", "x" * 300, ".hidden", '"nul\\0"'])
def test_a_suite_name_is_a_folder_name(tmp_path, name):
    path = write(tmp_path, suite_text(name, rogue("r")))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:1: name: ") and "\n" not in str(err.value)


# --- 2. one writer per store ------------------------------------------------------------------


def test_a_second_run_on_a_store_exits_at_once_naming_the_holder(tmp_path, rogue_site,
                                                                  subprocess_env):
    path = write(tmp_path, suite_text("locked", rogue("slow", sleep=2.0)))
    env = subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0")
    args = ["run", str(path), "--root", str(tmp_path / "runs"), "--no-progress", "--no-report"]
    first = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    store = RunStore(tmp_path / "runs", "locked")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while store.holder() != first.pid:  # it holds the lock: its PID is in the lock file
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        second = cli(*args, env=env, cwd=tmp_path)
        assert time.monotonic() - started < 30  # at once, not after the first one
        assert first.poll() is None  # refused while the first was still running
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"in use by another rlhf-harness process (pid {first.pid})" in line
        assert "--wait" in line
        waited = cli(*args, "--wait", env=env, cwd=tmp_path)  # waits, then has nothing to do
        assert waited.returncode == 0, waited.stderr
        assert "1 already finished" in waited.stdout
        assert first.wait(timeout=TIMEOUT_S) == 0
    finally:
        first.kill()
        first.wait()
    [record] = store.records()
    assert record.state == "done" and record.summary["steps"] == 4


def test_the_lock_is_refused_across_processes_and_released_by_death(tmp_path):
    store = RunStore(tmp_path, "held")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from harness.engine.store import RunStore\n"
         f"with RunStore({str(tmp_path)!r}, 'held').lock():\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=f"pid {holder.pid}"), store.lock():
            pass
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        holder.wait()
    with store.lock():
        assert store.holder() == os.getpid()


# --- 3. run identity, stale runs, gc ----------------------------------------------------------


def test_an_edited_suite_does_not_mix_configurations(tmp_path, rogue_plugin, capsys):
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["--root", str(runs), "--no-progress", "--no-report", "--no-wandb"]
    path = write(tmp_path, suite_text("edited", rogue("r", learning_rate=0.1)))
    main(["run", str(path), *args])
    old = {r.run_id for r in RunStore(runs, "edited").records()}
    path.write_text(suite_text("edited", rogue("r", learning_rate=0.2)))
    main(["run", str(path), *args])
    records = {r.run_id: r for r in RunStore(runs, "edited").records()}
    assert len(records) == 2 and len(old) == 1
    [new] = set(records) - old
    assert records[new].spec["algorithm_config"]["learning_rate"] == 0.2

    data = load_store(runs / "edited")  # the report covers the suite as it is now
    assert data.runs["run_id"].tolist() == [new]
    assert data.stale["run_id"].tolist() == list(old)
    both = load_store(runs / "edited", include_stale=True)
    assert sorted(both.runs["run_id"]) == sorted(records)
    main(["report", str(runs / "edited"), "--out", str(reports)])
    text = (reports / "index.md").read_text()
    assert "1 runs are stale" in text and next(iter(old)) in text
    assert pd.read_csv(reports / "tables" / "stale_runs.csv")["run_id"].tolist() == list(old)

    capsys.readouterr()
    main(["gc", str(runs / "edited")])
    assert "removed 1 stale entries" in capsys.readouterr().out
    assert [r.run_id for r in RunStore(runs, "edited").records()] == [new]


def test_an_edited_data_file_makes_new_data_and_new_runs(tmp_path, rogue_plugin):
    data = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "0", "chosen": "1", "rejected": "2"}] * 4
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = suite_text("data", rogue("r")).replace(
        "preferences: {num_pairs: 50}", f"preferences: {{file: {json.dumps(str(data))}}}")
    path = write(tmp_path, text)
    [before] = specs_of(path)
    data.write_text("".join(json.dumps({**r, "chosen": "3"}) + "\n" for r in rows))
    [after] = specs_of(path)
    assert before.preferences["file"] == after.preferences["file"]
    assert before.preferences["file_sha256"] != after.preferences["file_sha256"]
    assert before.run_id != after.run_id
    assert shared_data_key(before.as_dict()) != shared_data_key(after.as_dict())
    data.unlink()
    line = line_of(text, "preferences:")
    with pytest.raises(ConfigError, match=rf"suite.yaml:{line}: preferences.file: cannot read"):
        specs_of(path)


def test_edited_plugin_code_or_version_makes_new_runs(tmp_path, dist_info_path, monkeypatch):
    dist = dist_info_path("rlhf-harness-test-rogue", "0.1", {"rogue": "rlhf_test_rogue"},
                          {"rlhf_test_rogue": ROGUE_PLUGIN})
    path = write(tmp_path, suite_text("code", rogue("r")))
    monkeypatch.setattr(harness.suite.hashing, "_SOURCE_HASHES", {})
    [first] = specs_of(path)
    assert first.code["algorithm"]["plugin"] == "rlhf-harness-test-rogue"
    assert first.code["algorithm"]["version"] == "0.1"
    [same] = specs_of(path)
    assert same.run_id == first.run_id  # stable while nothing changes
    module = dist.parent / "rlhf_test_rogue.py"
    module.write_text(module.read_text().replace("1.0 / self.calls", "2.0 / self.calls"))
    # a new process would hash anew
    monkeypatch.setattr(harness.suite.hashing, "_SOURCE_HASHES", {})
    [edited] = specs_of(path)
    assert edited.code["algorithm"]["source"] != first.code["algorithm"]["source"]
    assert edited.run_id != first.run_id
    metadata = dist / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 0.1", "Version: 0.2"))
    [bumped] = specs_of(path)
    assert bumped.code["algorithm"]["version"] == "0.2" and bumped.run_id != edited.run_id


# --- 4. limits and runs that die --------------------------------------------------------------


def test_limits_fail_the_run_alone(tmp_path, rogue_plugin):
    algorithms = (rogue("hangs", mode="hang", at=2) + rogue("idle", mode="idle")
                  + rogue("endless", sleep=0.0) + rogue("fine"))
    text = suite_text("limits", algorithms, "limits: {seconds: 1.5, stall_steps: 3, steps: 5}\n")
    text = text.replace("budget: {samples: 32}", "budget: {samples: 24}")
    specs = specs_of(write(tmp_path, text))
    specs = [s for s in specs if s.label != "endless"] + [
        s for s in specs_of(write(tmp_path / "b", text.replace("budget: {samples: 24}",
                                                                  "budget: {samples: 800}")))
        if s.label == "endless"]
    started = time.monotonic()
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert time.monotonic() - started < 60
    assert outcome.statuses == {"failed": 3, "done": 1}
    records = by_label(tmp_path / "runs", "limits")
    hung = records["hangs"]
    assert hung.status["reason"] == "limit: the run took more than limits.seconds = 1.5 s"
    assert hung.summary["steps"] == 1  # stopped inside its second step
    assert records["idle"].status["reason"].startswith(
        "limit: 3 steps in a row spent nothing of the budget (limits.stall_steps = 3)")
    assert records["endless"].status["reason"].startswith("limit: the run reached limits.steps")
    assert records["fine"].state == "done" and records["fine"].summary["steps"] == 3


def test_a_plugin_exiting_or_raising_keyboardinterrupt_fails_its_run_only(
    tmp_path, rogue_site, subprocess_env
):
    algorithms = rogue("exits", mode="exit", at=2) + rogue("ctrl-c", mode="interrupt") + \
        rogue("fine")
    path = write(tmp_path, suite_text("exits", algorithms))
    result = cli("run", str(path), "--root", str(tmp_path / "runs"), "--no-progress",
                 "--report-dir", str(tmp_path / "reports"),
                 env=subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "exits: 3 runs: done 1, failed 2" in result.stdout
    assert "report:" in result.stdout and (tmp_path / "reports" / "exits" / "index.md").exists()
    records = by_label(tmp_path / "runs", "exits")
    assert records["exits"].status["reason"] == "SystemExit: 3"
    assert records["ctrl-c"].status["reason"] == "KeyboardInterrupt raised by the run's code"
    assert records["fine"].state == "done"


def test_a_run_whose_process_dies_fails_after_its_second_death(tmp_path, rogue_site,
                                                               subprocess_env):
    path = write(tmp_path, suite_text("dies", rogue("a-fine") + rogue("killed", mode="kill")
                                      + rogue("z-fine")))
    env = subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0")
    args = ["run", str(path), "--root", str(tmp_path / "runs"), "--no-progress", "--no-report"]
    result = cli(*args, env=env, cwd=tmp_path)  # the suite's process outlives its run's
    assert result.returncode == 1, result.stderr
    assert "dies: 3 runs: done 2, failed 1" in result.stdout
    records = by_label(tmp_path / "runs", "dies")
    assert records["killed"].state == "failed"
    assert records["killed"].status["reason"] == (
        "crashed: its process died during the run (killed by SIGKILL; e.g. the out-of-memory "
        "killer), twice")
    assert {records["a-fine"].state, records["z-fine"].state} == {"done"}


def test_with_workers_a_dying_run_spares_its_neighbour(tmp_path, rogue_plugin):
    text = suite_text("pool", rogue("killed", mode="kill", at=2) + rogue("fine", sleep=0.3))
    outcome = run_specs(specs_of(write(tmp_path, text)), str(tmp_path / "runs"), workers=2,
                        wandb=False, progress=False)
    assert outcome.statuses == {"failed": 1, "done": 1}
    records = by_label(tmp_path / "runs", "pool")
    assert records["fine"].state == "done" and records["fine"].summary["steps"] == 4
    reason = records["killed"].status["reason"]
    assert reason == "crashed: its process died during the run (killed by SIGKILL; e.g. the " \
        "out-of-memory killer), twice"


def test_workers_die_with_a_killed_suite(tmp_path, rogue_site, subprocess_env):
    text = suite_text("orphans", rogue("h1", mode="hang") + rogue("h2", mode="hang"))
    path = write(tmp_path, text)
    env = subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(path), "--root",
         str(tmp_path / "runs"), "--workers", "2", "--no-progress", "--no-report"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_dir = tmp_path / "runs" / "orphans"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(list(store_dir.glob("*/status.json"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_ctrl_c_stops_the_suite_and_leaves_the_run_pending(tmp_path, rogue_site,
                                                           subprocess_env):
    path = write(tmp_path, suite_text("stopped", rogue("h", mode="hang")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(path), "--root", str(tmp_path / "runs"),
         "--no-progress", "--no-report"], env=subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: SIGINT at its default. A process started with SIGINT ignored (a
        # background job, or a test worker that inherited that) rightly keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = RunStore(tmp_path / "runs", "stopped")
    deadline = time.monotonic() + TIMEOUT_S
    while not list(store.records()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # inside the hanging step
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    [record] = store.records()
    assert record.state == "running" and record.status["interrupted"] == 1
    assert store.crashes(record.run_id) == 0  # not held against the run


def test_nan_parameters_with_finite_metrics_are_diverged(tmp_path, rogue_plugin):
    text = suite_text("nan", rogue("nan", mode="nan_params", at=2)).replace(
        "every: 1000", "every: 1")
    outcome = run_specs(specs_of(write(tmp_path, text)), str(tmp_path / "runs"), wandb=False,
                        progress=False)
    assert outcome.statuses == {"diverged": 1}
    [record] = RunStore(tmp_path / "runs", "nan").records()
    assert record.status["reason"].startswith("non-finite parameters at step 2 (")


# --- 5. no connection off the machine ---------------------------------------------------------

AUDIT = '''
import os, sys
_LOG = os.environ["RLHF_TEST_NET_LOG"]
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")

def _hook(event, args):
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not str(address[0]).startswith(_LOCAL):
            with open(_LOG, "a") as f:
                f.write(f"{os.getpid()} connect {address!r}\\n")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if host not in (None, "", b"") and not str(host).startswith(_LOCAL):
            with open(_LOG, "a") as f:
                f.write(f"{os.getpid()} getaddrinfo {host!r}\\n")

sys.addaudithook(_hook)
'''


def _loopback_namespace_works() -> str | None:
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"],
                               capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not usable here: {exc}"
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.decode().strip()}"
    return None


def test_run_report_validate_and_plugins_make_no_connection_off_the_machine(tmp_path,
                                                                           subprocess_env):
    reason = _loopback_namespace_works()
    if reason:
        pytest.skip(reason)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    log, trace = tmp_path / "audit.log", tmp_path / "strace.log"
    suite = write(tmp_path, """\
name: offline
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 50}
reward_model: {epochs: 2}
algorithms:
  - name: dpo
    config: {learning_rate: 0.05, warmup_steps: 0, batch_size: 16}
  - name: grpo
    config: {learning_rate: 0.05, num_generations: 2, prompts_per_step: 2}
seeds: [0]
budget: {steps: 2}
evaluation: {every: 1}
""")
    env = subprocess_env(hooks, RLHF_TEST_NET_LOG=str(log), HOME=str(tmp_path / "home"),
                         XDG_CACHE_HOME=str(tmp_path / "cache"))
    for var in ("WANDB_MODE", "WANDB_DISABLED", "RLHF_HARNESS_WANDB", "WANDB_API_KEY"):
        env.pop(var, None)  # the defaults: wandb on, mode not set by the user
    py = sys.executable
    run = f"{py} -m harness.cli run {suite} --root {tmp_path / 'runs'} --no-progress --no-report"
    strace = "/usr/bin/strace" if Path("/usr/bin/strace").exists() else None
    if strace:  # every process of the run, wandb's own service binary included (the other
        # commands start no program but Python, whose connections the audit hook logs)
        run = f"{strace} -f -qq -e trace=connect,sendto,sendmsg -o {trace} {run}"
    commands = " && ".join([
        f"{py} -m harness.cli validate {suite}",
        f"{py} -m harness.cli plugins",
        run,
        f"{py} -m harness.cli report {tmp_path / 'runs' / 'offline'} --out {tmp_path / 'rep'}",
    ])
    result = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && {commands}"],
                            capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=2 * TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    records = list(RunStore(tmp_path / "runs", "offline").records())
    assert len(records) == 2 and {r.state for r in records} == {"done"}
    assert list((records[0].path / "wandb").glob("offline-run-*"))  # wandb did log, offline
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", attempts
    if strace:
        inet = [line for line in trace.read_text().splitlines()
                if "AF_INET" in line and "127.0.0.1" not in line and "::1" not in line]
        assert inet == [], "\n".join(inet[:5])


# --- 6. bounded validation, one-line errors ---------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = write(tmp_path, "\n".join(lines) + "\nname: bomb\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert time.monotonic() - started < 5
    assert "aliases are expanded; at most 100,000" in str(err.value)


def test_a_duplicate_key_is_an_error(tmp_path, rogue_plugin):
    text = suite_text("dup", rogue("r")) + "seeds: [1]\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    first, second = line_of(text, "seeds:"), line_of(text, "seeds:", 1)
    assert str(err.value) == (f"{path}:{second}: duplicate key 'seeds' (first at line {first}); "
                              f"a key may appear once in a mapping")


def test_a_huge_sweep_grid_is_refused_unless_allowed(tmp_path, rogue_plugin, monkeypatch):
    rates = ", ".join(str(0.001 * (i + 1)) for i in range(1000))
    sleeps = ", ".join(str(0.001 * i) for i in range(1000))
    grid = f"  - name: rogue\n    sweep: {{learning_rate: [{rates}], sleep: [{sleeps}]}}\n"
    path = write(tmp_path, suite_text("huge", grid))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"expands to 1,000,000 runs .* needs --allow-large"):
        specs_of(path)
    assert time.monotonic() - started < 10  # counted, not expanded
    monkeypatch.setattr(harness.suite.schema, "MAX_RUNS", 10)
    small = write(tmp_path, suite_text("small", rogue("r") * 1 +
                                       "  - name: rogue\n    sweep: {sleep: [0, 0.001, 0.002, "
                                       "0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009]}\n"),
                  "small.yaml")
    with pytest.raises(ConfigError, match="11 runs"):
        specs_of(small)
    assert len(specs_of(small, allow_large=True)) == 11


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file (byte 0 is not UTF-8)"),
        (b"name: a\x00b\n", "invalid YAML"),
        (b'name: ok\ndescription: "a\\0b"\n', "description: holds the control character"),
    ],
)
def test_binary_and_nul_content_is_one_line(tmp_path, content, message):
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_small_slips_are_errors(tmp_path, rogue_plugin):
    cases = {
        "budget: {steps: true}": "budget.steps: expected a number, not the boolean true",
        "evaluation: {every: false, evaluators: [kl_ref]}": "evaluation.every: expected a number",
    }
    for snippet, message in cases.items():
        text = suite_text("slips", rogue("r"))
        key = snippet.split(":")[0]
        text = re.sub(rf"^{key}:.*$", snippet, text, flags=re.M)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_suite(write(tmp_path, text))
    config_bool = write(tmp_path, suite_text("slips", rogue("r", learning_rate=True)))
    with pytest.raises(ConfigError, match="'learning_rate': expected a number, not the boolean"):
        specs_of(config_bool)
    dup_sweep = write(tmp_path, suite_text(
        "slips", "  - name: rogue\n    sweep: {sleep: [0.0, 0.1, 0.0]}\n"))
    with pytest.raises(ConfigError, match=r"algorithms.0.sweep: .*sweep 'sleep' lists 0.0 twice"):
        load_suite(dup_sweep)


@pytest.mark.parametrize("workers", ["0", "-5"])
def test_workers_below_one_are_a_usage_error(tmp_path, workers, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(tmp_path / "x.yaml"), "--workers", workers])
    assert exit_.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_a_root_that_is_a_file_is_one_line(tmp_path, rogue_plugin, capsys):
    path = write(tmp_path, suite_text("rootfile", rogue("r")))
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--root", str(tmp_path / "afile"), "--no-report"])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"rlhf-harness: error: {tmp_path / 'afile'}: is a file, not a folder (a run " \
        "store is a folder)"


def test_a_full_disk_is_one_line_and_nothing_half_written(tmp_path, rogue_site,
                                                          subprocess_env):
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs "
                            f"{tmp_path}"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.decode().strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    path = write(tmp_path, suite_text("full", rogue("a") + rogue("b")))
    py = sys.executable
    run = (f"{py} -m harness.cli run {path} --root {disk}/runs --no-progress --no-report "
           "--no-wandb")
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {disk} && mkdir {disk}/runs && "
        # fill the disk but for a few KB: the preference data fit, the runs do not
        f"(dd if=/dev/zero of={disk}/filler bs=1k count=1000 2>/dev/null; true) && "
        f"rm {disk}/filler && dd if=/dev/zero of={disk}/filler bs=1k count=200 2>/dev/null; "
        f"{run} > {tmp_path}/first.out 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc; "
        f"find {disk}/runs -type f > {tmp_path}/files.txt; "
        f"for f in $(find {disk}/runs -name '*.json'); do {py} -c "
        f"\"import json,sys; json.load(open(sys.argv[1]))\" $f || echo BAD $f; done "
        f"> {tmp_path}/parse.txt 2>&1; "
        f"rm {disk}/filler; {run} > {tmp_path}/second.out 2>&1; echo $? > {tmp_path}/second.rc"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                            text=True, env=subprocess_env(rogue_site), timeout=TIMEOUT_S,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "first.rc").read_text().strip() == "2", (
        (tmp_path / "first.out").read_text() + (tmp_path / "first.err").read_text())
    line = one_error_line((tmp_path / "first.err").read_text())
    assert re.fullmatch(rf"rlhf-harness: error: {disk}/runs/full/\S+: no space left on device",
                        line), line
    files = (tmp_path / "files.txt").read_text().split()
    assert not [f for f in files if ".tmp" in Path(f).name]  # no half-written file left
    assert "BAD" not in (tmp_path / "parse.txt").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", \
        (tmp_path / "second.out").read_text()
    assert "full: 2 runs: done" in (tmp_path / "second.out").read_text()


# --- 7. corrupt run folders -------------------------------------------------------------------


def test_a_corrupt_run_folder_is_reported_and_skipped_then_redone(tmp_path, rogue_plugin):
    text = suite_text("corrupt", rogue("a") + rogue("b") + rogue("c"))
    specs = specs_of(write(tmp_path, text))
    root = tmp_path / "runs"
    run_specs(specs, str(root), wandb=False, progress=False)
    records = by_label(root, "corrupt")
    (records["a"].path / "summary.json").write_text('{"run_id": ')
    (records["b"].path / "metrics.parquet").write_bytes(b"PAR1 not really")
    untouched = (records["c"].path / "metrics.parquet").stat().st_mtime_ns

    data = load_store(root / "corrupt")
    assert data.runs["label"].tolist() == ["c"]
    assert sorted(data.corrupt["run_id"]) == sorted([records["a"].run_id, records["b"].run_id])
    problems = dict(zip(data.corrupt["run_id"], data.corrupt["problem"], strict=True))
    assert problems[records["a"].run_id].startswith("summary.json: ")
    assert problems[records["b"].run_id].startswith("metrics.parquet: ")
    from harness.report import write_report

    out = write_report(root / "corrupt", tmp_path / "report", figures=False)
    assert "2 run folders are corrupt" in (out / "index.md").read_text()

    outcome = run_specs(specs, str(root), wandb=False, progress=False)
    assert (outcome.skipped, outcome.statuses) == (1, {"done": 2})
    assert all(r.state == "done" for r in RunStore(root, "corrupt").records())
    assert (records["c"].path / "metrics.parquet").stat().st_mtime_ns == untouched
    assert load_store(root / "corrupt").corrupt.empty


def test_leftovers_of_killed_writers_are_cleaned(tmp_path, rogue_plugin):
    specs = specs_of(write(tmp_path, suite_text("leftovers", rogue("r"))))
    store_dir = tmp_path / "runs" / "leftovers"
    (store_dir / "shared" / ".abc.tmp-1234").mkdir(parents=True)
    (store_dir / "shared" / ".abc.tmp-1234" / "preferences.parquet").write_bytes(b"half")
    (store_dir / "shared" / ".old.trash-1-2").mkdir()
    run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert not [p for p in (store_dir / "shared").iterdir() if p.name.startswith(".")]


def test_gc_needs_the_suite_list_and_the_lock(tmp_path):
    store = RunStore(tmp_path, "nolist")
    store.ensure()
    with pytest.raises(StoreError, match=r"no runs\.json"):
        collect_garbage(store)


# --- 8. torch.load ----------------------------------------------------------------------------


def test_every_torch_load_is_weights_only_and_the_floor_makes_it_the_default():
    calls = []
    for folder in ("harness", "plugins", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if ".trl112" in path.parts:
                continue
            for match in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", path.read_text()):
                calls.append((path.name, match.group(0)))
    assert calls  # the reward-model cache is read with torch.load
    assert all("weights_only=True" in call for _, call in calls), calls
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)"', text)
    assert floor and (int(floor.group(1)), int(floor.group(2))) >= (2, 6)


# --- 9. kills from outside are interruptions, not failures -----------------------------------


def wait_for(condition, proc: subprocess.Popen, what: str) -> bool:
    """Poll ``condition`` until true (True), or until ``proc`` exits (False)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return True


@pytest.mark.slow  # five kills of a real suite; the same behaviour, faster: a killed suite
# resumes (test_runner), SIGTERM/SIGINT and a killed group (test_workers_die_with_a_killed_suite,
# test_ctrl_c_...), a run found running is redone however often (below)
def test_a_suite_killed_at_random_points_reports_no_failure(tmp_path, rogue_site,
                                                            subprocess_env):
    """SIGKILL and SIGTERM, to the suite's process or its whole process group, at random
    moments: every run ends done, however often its process was killed from outside."""
    rng = random.Random(31)
    algorithms = "".join(rogue(f"r{i}", sleep=0.15) for i in range(3))  # ≥ 0.6 s a run
    path = write(tmp_path, suite_text("kills", algorithms))
    env = subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0")
    # no report: what is asserted is the runs' state, and a report would only lengthen each run
    command = [sys.executable, "-m", "harness.cli", "run", str(path), "--root", "runs",
               "--no-progress", "--no-report"]
    store = RunStore(tmp_path / "runs", "kills")
    kills = [(signal.SIGKILL, False), (signal.SIGTERM, True), (signal.SIGKILL, True),
             (signal.SIGTERM, False), (signal.SIGKILL, False)]
    landed, most = 0, 0

    def attempts_now() -> set[tuple[str, int]]:
        return {(r.run_id, int(r.status.get("attempt", 1))) for r in store.records()
                if r.state == "running"}

    for k, (signum, group) in enumerate(kills):
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = attempts_now()
        try:
            started = wait_for(lambda before=before: attempts_now() - before, proc,
                               "no run started")
            # the first kills land in the first run (twice or more); the others anywhere
            time.sleep(rng.uniform(0.0, 0.3) if k < 3 else rng.uniform(0.0, 1.5))
            if started and proc.poll() is None:
                os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
                landed += 1
        finally:
            proc.wait(timeout=TIMEOUT_S)
        most = max([most, *(attempt for _, attempt in attempts_now())])
    assert landed >= 3
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stdout
    data = load_store(store.path)
    assert data.runs["status"].tolist() == ["done"] * 3
    assert not any(r.status.get("reason") for r in store.records())
    assert most >= 3  # one run was killed twice or more, and is done


def test_a_run_found_running_is_redone_however_often(tmp_path, rogue_plugin):
    """The store's part of it: an attempt that no supervisor saw crash is an interruption."""
    specs = specs_of(write(tmp_path, suite_text("often", rogue("r"))))
    store = RunStore(tmp_path / "runs", "often")
    store.ensure()
    for _ in range(5):  # five suites killed during this run
        store.start(specs[0].run_id, specs[0].as_dict())
    assert store.crashes(specs[0].run_id) == 0
    assert store.read_status(specs[0].run_id)["interrupted"] == 4
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"done": 1}


# --- 10. limits kept outside the run ----------------------------------------------------------


def test_a_plugin_cannot_switch_the_time_limits_off(tmp_path, rogue_plugin):
    algorithms = (rogue("deaf", mode="deaf", at=2) + rogue("no-alarm", mode="no_alarm", at=2)
                  + rogue("stalled", mode="hang", at=3) + rogue("fine"))
    text = suite_text("unstoppable", algorithms,
                      "limits: {seconds: 2, stall_seconds: 30}\n")
    specs = specs_of(write(tmp_path, text))
    stall = specs_of(write(tmp_path / "b", text.replace("seconds: 2, stall_seconds: 30",
                                                        "seconds: 1000, stall_seconds: 1.5")))
    specs = [s for s in specs if s.label != "stalled"] + [s for s in stall
                                                            if s.label == "stalled"]
    started = time.monotonic()
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert time.monotonic() - started < 90
    assert outcome.statuses == {"failed": 3, "done": 1}
    records = by_label(tmp_path / "runs", "unstoppable")
    for label in ("deaf", "no-alarm"):
        assert records[label].status["reason"] == \
            "limit: the run took more than limits.seconds = 2 s"
        assert records[label].summary["steps"] == 1
    assert records["stalled"].status["reason"] == (
        "limit: step 3 took more than limits.stall_seconds = 1.5 s; the run was stopped")
    assert records["fine"].state == "done"


SLOW_PACKAGE = {
    "__init__.py": "",
    # c binds b while b is half-imported (a circular import, as in large libraries)
    "c.py": "from rlhf_test_slow import b as _b\n\ndef value():\n    return _b.VALUE\n",
    "b.py": "import os\nimport time\n\nimport rlhf_test_slow.c\n\n"
            "time.sleep(float(os.environ['RLHF_TEST_SLOW']))\nVALUE = 42\n",
}


def test_a_limit_inside_an_import_does_not_poison_the_next_runs(tmp_path, dist_info_path,
                                                               monkeypatch):
    """A run stopped while its step imports a package: had the limit raised inside the import,
    ``c`` would keep the half-made ``b`` and every later import of it would break."""
    plugin = ROGUE_PLUGIN.replace(
        '        if mode != "idle":',
        '        if self.config.tag == "import":\n'
        '            import rlhf_test_slow.b\n'
        '            import rlhf_test_slow.c\n'
        '            assert rlhf_test_slow.c.value() == 42\n'
        '        if mode != "idle":')
    dist = dist_info_path("rlhf-harness-test-rogue", "0.1", {"rogue": "rlhf_test_rogue"},
                          {"rlhf_test_rogue": plugin})
    package = dist.parent / "rlhf_test_slow"
    package.mkdir()
    for name, source in SLOW_PACKAGE.items():
        (package / name).write_text(source)
    for name in ("rlhf_test_slow", "rlhf_test_slow.b", "rlhf_test_slow.c"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # dropped again after the test
    monkeypatch.setenv("RLHF_TEST_SLOW", "3")
    text = suite_text("imports", rogue("a-slow", tag="import") + rogue("b-after", tag="import")
                      + rogue("c-after", tag="import"), "limits: {seconds: 1}\n")
    specs = specs_of(write(tmp_path, text))
    outcome = run_specs(specs[:1], str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"failed": 1}  # stopped inside the import
    monkeypatch.setenv("RLHF_TEST_SLOW", "0")
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"done": 2}
    records = by_label(tmp_path / "runs", "imports")
    assert records["a-slow"].status["reason"].startswith("limit: the run took more than")


def test_a_plugin_that_changes_folders_moves_neither_store_nor_report(tmp_path, rogue_site,
                                                                      subprocess_env):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    work = tmp_path / "work"
    path = write(work, suite_text("moved", rogue("a-mover", mode="chdir", where=str(elsewhere))
                                  + rogue("b-next") + rogue("c-mover", mode="chdir",
                                                             where=str(elsewhere))))
    result = cli("run", str(path), "--no-progress", env=subprocess_env(
        rogue_site, RLHF_HARNESS_WANDB="0"), cwd=work)  # the default, relative root and report
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert sorted(r.state for r in RunStore(work / "runs", "moved").records()) == ["done"] * 3
    assert (work / "reports" / "moved" / "index.md").exists()


# --- 11. the core's versions ------------------------------------------------------------------


def test_runs_of_another_core_are_named_not_mixed(tmp_path, rogue_plugin, capsys):
    runs = tmp_path / "runs"
    args = ["--root", str(runs), "--no-progress", "--no-wandb", "--report-dir",
            str(tmp_path / "reports")]
    path = write(tmp_path, suite_text("cores", rogue("a") + rogue("b")))
    main(["run", str(path), *args])
    records = by_label(runs, "cores")
    versions = records["a"].summary["versions"]
    assert {"rlhf-harness", "rlhf-harness-source", "torch"} <= set(versions)
    old = dict(records["b"].summary, versions={**versions, "rlhf-harness-source": "0ld5ource",
                                               "torch": "1.0"})
    (records["b"].path / "summary.json").write_text(json.dumps(old))
    with pytest.raises(HarnessError) as err:
        load_store(runs / "cores")
    message = str(err.value)
    assert "\n" not in message and "different versions" in message
    assert "source 0ld5ource), torch 1.0: 1 runs" in message and records["b"].run_id in message
    assert "--allow-mixed-versions" in message
    assert len(load_store(runs / "cores", allow_mixed_versions=True).runs) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # reused as finished; the report refuses
        main(["run", str(path), *args])
    assert exit_.value.code == 2
    assert "different versions" in one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["report", str(runs / "cores"), "--out", str(tmp_path / "r2")])
    assert "different versions" in one_error_line(capsys.readouterr().err)
    main(["report", str(runs / "cores"), "--out", str(tmp_path / "r2"),
          "--allow-mixed-versions"])
    capsys.readouterr()
    main(["run", str(path), *args, "--redo-other-versions"])
    assert "cores: 2 runs: done 1; 1 already finished" in capsys.readouterr().out
    assert by_label(runs, "cores")["b"].summary["versions"] == versions


def test_the_core_source_hash_follows_the_harness_code(monkeypatch):
    from harness.suite import core_versions, source_hash

    first = core_versions()
    assert first["rlhf-harness-source"] == source_hash(core_versions)
    assert re.fullmatch(r"[0-9a-f]{16}", first["rlhf-harness-source"])
    monkeypatch.setattr(harness.suite.hashing, "_SOURCE_HASHES", {"harness": "edited"})
    assert core_versions()["rlhf-harness-source"] == "edited"


# --- 12. labels, journals, manifests, hostile inputs ------------------------------------------


def test_two_configurations_shown_alike_are_refused(tmp_path, rogue_plugin):
    algorithms = (rogue("x[tag=a]") + "  - name: rogue\n    label: x\n    sweep: {tag: [a, b]}\n")
    text = suite_text("shown", algorithms)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        specs_of(path)
    line = line_of(text, "- name: rogue", 1)
    assert str(err.value) == (
        f"{path}:{line}: algorithms.1: a configuration shown as 'x[tag=a]' is also "
        f"algorithms.0's; reports would merge the two; give each a distinct 'label' (or "
        f"distinct sweep values)")


def journal_with_a_trial(store_path: Path) -> Path:
    import optuna

    from harness.engine.tuning import JOURNAL, open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(store_path),
                                direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.5)
    return store_path / JOURNAL


def test_a_torn_journal_line_is_cut_and_garbage_is_one_line(tmp_path):
    import optuna

    from harness.engine.tuning import open_storage

    journal = journal_with_a_trial(tmp_path)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "a", "trial_id"')  # killed
    study = optuna.load_study(study_name="s", storage=open_storage(tmp_path))
    assert [t.value for t in study.get_trials()] == [0.5]
    assert journal.read_bytes() == whole
    for garbage in (b"\xff\xfe\x00garbage\n", b"not json at all\n", b"[1, 2]\n"):
        journal.write_bytes(whole + garbage)
        with pytest.raises(StoreError) as err:
            open_storage(tmp_path)
        lines = whole.count(b"\n") + 1
        assert str(err.value).startswith(f"{journal}: line {lines} is not a tuning record")


TUNED = """\
name: tunedgc
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 100}
reward_model: {epochs: 3}
algorithms:
  - name: dpo
    config: {optimizer: adam, batch_size: 16, warmup_steps: 0}
seeds: [0]
budget: {samples: 64}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref]}
tuning:
  trials: 2
  instances: [100]
  objective: j_beta
"""


def test_gc_keeps_the_trials_of_a_tuning_killed_midway(tmp_path, monkeypatch, capsys):
    import harness.engine.executors

    runs = tmp_path / "runs"
    args = ["--root", str(runs), "--no-progress", "--no-report", "--no-wandb"]
    path = write(tmp_path, TUNED)
    main(["run", str(path), *args])
    path.write_text(TUNED.replace("budget: {samples: 64}", "budget: {samples: 48}"))
    real = harness.engine.executors.run_specs
    batches: list[set[str]] = []

    def killed_after_one_batch(specs, *a, **k):
        if batches:
            raise KeyboardInterrupt  # the suite is killed during its second batch of trials
        batches.append({s.run_id for s in specs})
        return real(specs, *a, **k)

    monkeypatch.setattr(harness.engine.executors, "run_specs", killed_after_one_batch)
    with pytest.raises(SystemExit):
        main(["run", str(path), *args])
    [trials] = batches
    assert {r.run_id for r in RunStore(runs, "tunedgc").records()} >= trials
    main(["gc", str(runs / "tunedgc")])
    kept = {r.run_id for r in RunStore(runs, "tunedgc").records()}
    assert trials <= kept  # this suite's finished trials survive gc


def test_validation_refuses_hostile_values_in_one_line(tmp_path, rogue_plugin):
    cases = {
        "limits: {seconds: 1.0e+300}\n": "limits.seconds",
        "limits: {seconds: 1.0e-9}\n": "limits.seconds",
        "limits: {stall_seconds: .inf}\n": "limits.stall_seconds",
    }
    for extra, key in cases.items():
        path = write(tmp_path / str(len(key)), suite_text("hostile", rogue("r"), extra))
        with pytest.raises(ConfigError) as err:
            load_suite(path)
        assert key in str(err.value) and "\n" not in str(err.value)
    for budget in ("{seconds: .inf}", "{flops: .nan}"):
        path = write(tmp_path / "b", suite_text("hostile", rogue("r")).replace(
            "budget: {samples: 32}", f"budget: {budget}"))
        with pytest.raises(ConfigError, match=r"budget\.(seconds|flops): expected a finite"):
            load_suite(path)


def test_a_deeply_nested_suite_is_one_line(tmp_path):
    path = write(tmp_path, "name: deep\ntasks: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(err.value) == f"{path}: nested too deeply to read (a suite is a few levels deep)"


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_preference_file_that_is_no_file_is_refused_at_once(tmp_path, kind, rogue_site,
                                                              subprocess_env):
    if kind == "fifo":
        source = tmp_path / "prefs.jsonl"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    text = suite_text("fifo", rogue("r")).replace(
        "preferences: {num_pairs: 50}", f"preferences: {{file: {json.dumps(str(source))}}}")
    path = write(tmp_path, text)
    result = cli("validate", str(path), env=subprocess_env(rogue_site), cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"preferences.file: cannot read {str(source)!r} (not a regular file" in line


def test_a_huge_gpu_memory_is_one_line(tmp_path, capsys):
    from harness.engine.memory import parse_bytes

    for text in ("1e400GiB", "1e30GB"):
        with pytest.raises(ConfigError, match="more than any machine has"):
            parse_bytes(text)
    assert parse_bytes("80GiB") == 80 * 2**30


def test_a_lora_rank_beyond_the_layers_is_refused_before_allocating(tmp_path, capsys):
    text = """\
name: lora
tasks:
  - name: tiny-lm
preferences: {num_pairs: 16}
algorithms:
  - name: dpo
policy: {lora: {r: 1000000000}}
seeds: [0]
budget: {samples: 16}
"""
    path = write(tmp_path, text)
    before = psutil.Process().memory_info().rss
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(path), "--gpu-memory", "80GiB"])
    assert exit_.value.code == 2
    assert psutil.Process().memory_info().rss - before < 2**30  # nothing near 1e9 × width
    message = one_error_line(capsys.readouterr().err)
    assert message.startswith(f"rlhf-harness: error: {path}:{line_of(text, 'policy:')}: "
                              f"policy.lora.r: 1000000000 is above ")


def test_tuning_choices_are_checked_against_the_config(tmp_path):
    text = TUNED + "  space:\n    dpo:\n      batch_size: {choices: [16, large]}\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        check_suite(load_suite(path), path, get_plugin_host())
    assert "tuning.space.dpo.batch_size (dpo, value 'large')" in str(err.value)
    assert "\n" not in str(err.value)


def test_report_on_a_store_with_no_finished_run_is_one_line(tmp_path, rogue_plugin):
    specs = specs_of(write(tmp_path, suite_text("early", rogue("a") + rogue("b"))))
    store = RunStore(tmp_path / "runs", "early")
    store.ensure()
    store.write_manifest(s.run_id for s in specs)
    for spec in specs:  # a suite killed in its first minute
        store.start(spec.run_id, spec.as_dict())
    from harness.report import write_report

    with pytest.raises(HarnessError) as err:
        write_report(store.path, tmp_path / "report")
    assert str(err.value) == f"{store.path}: no run has finished yet (2 running)"


def test_gc_leaves_a_folder_that_is_no_store_untouched(tmp_path):
    folder = tmp_path / "not-a-store"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a run store"):
        collect_garbage(RunStore(tmp_path, "not-a-store"))
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_deleting_the_lock_file_lets_no_second_writer_in(tmp_path):
    store = RunStore(tmp_path, "held")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from harness.engine.store import RunStore\n"
         f"with RunStore({str(tmp_path)!r}, 'held').lock():\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (store.path / ".lock").unlink()  # by hand
        with pytest.raises(StoreError, match="in use by another rlhf-harness process"), \
                store.lock():
            pass
    finally:
        holder.kill()
        holder.wait()


def test_labels_that_read_as_formulas_reach_the_csv_tables_as_text(tmp_path, rogue_plugin):
    from harness.report import write_report

    labels = ["=HYPERLINK(\"http://x\")", "+1+1", "-cmd", "@SUM(A1)", "plain"]
    text = suite_text("formulas", "".join(rogue(label) for label in labels))
    run_specs(specs_of(write(tmp_path, text)), str(tmp_path / "runs"), wandb=False,
              progress=False)
    out = write_report(tmp_path / "runs" / "formulas", tmp_path / "report",
                       figures=False)
    tables = list((out / "tables").glob("*.csv"))
    assert tables
    cells = [str(v) for t in tables for v in pd.read_csv(t, dtype=str).to_numpy().ravel()]
    shown = [c for c in cells if c.lstrip("'") in labels]
    assert {c.lstrip("'") for c in shown} == set(labels)
    for cell in shown:
        assert not cell.startswith(("=", "+", "-", "@")), cell
    assert "plain" in shown


# --- runs written on another process's lock (Ray) ---------------------------------------------


def _finish_args() -> dict:
    return {"metrics": pd.DataFrame({"step": [0], "metric": ["kl_ref"], "value": [0.0],
                                     "source": ["eval"]}),
            "summary": {"run_id": "r", "status": "done"}}


def test_a_run_on_the_lease_of_a_held_lock_writes(tmp_path):
    from harness.engine.store import lease

    store = RunStore(tmp_path, "s")
    with store.lock():
        token = store.lease_token()
        assert token and (store.path / ".lock").read_text().split() == [str(os.getpid()), token]
        # a second descriptor of the folder, as a Ray worker on the same host would have
        with lease(tmp_path, "s", token):
            RunStore(tmp_path, "s").start("r", {"seed": 0})
            RunStore(tmp_path, "s").finish("r", "done", **_finish_args())
    assert store.status("r") == "done"
    assert store.lease_token() is None and store.holder() == os.getpid()


def test_a_run_that_outlives_its_suites_lock_writes_nothing(tmp_path):
    """A Ray worker lives on after its driver is killed: its writes must fail, leaving the run
    ``running`` for the next ``run`` to redo, and never a result without the lock held."""
    from harness.engine.store import lease

    store = RunStore(tmp_path, "s")
    with store.lock():
        token = store.lease_token()
        with lease(tmp_path, "s", token):
            store.start("r", {"seed": 0})
    assert token is not None
    # the lock is no longer held (its process ended): every kind of write is refused
    with lease(tmp_path, "s", token):
        with pytest.raises(StoreError, match=r"no longer holds the store's lock.*dropped"):
            store.finish("r", "done", **_finish_args())
        for write in (lambda: store.record_crash("r", "killed"), lambda: store.interrupted("r"),
                      lambda: store.mark_failed("r", {"seed": 0}, "crashed"),
                      lambda: store.start("r", {"seed": 0})):
            with pytest.raises(StoreError, match="no longer holds"):
                write()
    assert store.status("r") == "running"
    assert not (store.run_dir("r") / "summary.json").exists()
    # a later suite holds the lock under a new lease: the old lease is still refused
    with store.lock():
        assert store.lease_token() != token
        with lease(tmp_path, "s", token), pytest.raises(StoreError, match="no longer holds"):
            store.finish("r", "done", **_finish_args())
    assert store.status("r") == "running"
    # outside a lease, the process holding the lock writes as before
    with store.lock():
        store.finish("r", "done", **_finish_args())
    assert store.status("r") == "done"


WORKER = """
import sys

from harness.engine.executors import _leased_run
from harness.engine.plugins import get_plugin_host
from harness.suite import check_suite, load_suite

if __name__ == "__main__":  # the run's child process is spawned: it imports this file
    suite_path, root, token = sys.argv[1:4]
    [spec] = check_suite(load_suite(suite_path), suite_path, get_plugin_host())
    print("STATUS", _leased_run(spec.as_dict(), root, False, token))
"""


@pytest.mark.parametrize("driver_lives", [True, False], ids=["driver lives", "driver killed"])
def test_a_ray_task_writes_its_run_only_while_its_driver_holds_the_lock(
        tmp_path, rogue_site, subprocess_env, driver_lives):
    """What a Ray worker runs (``_leased_run``, on the lease of the driver's lock), in a process
    of its own: when the driver's lock is gone before the run ends, the run writes nothing and
    stays ``running`` (the next ``run`` redoes it); while it is held, the run is recorded."""
    path = write(tmp_path, suite_text("leased", rogue("slow", sleep=1.0)))
    (tmp_path / "worker.py").write_text(WORKER)
    root = tmp_path / "runs"
    store = RunStore(root, "leased")
    with store.lock():
        token = store.lease_token()
        assert token is not None
        worker = subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(path), str(root), token],
            env=subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0"), cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT_S
        while not [r for r in store.records() if r.state == "running"]:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if driver_lives:
            out, err = worker.communicate(timeout=TIMEOUT_S)
    if not driver_lives:  # the lock is released while the run is under way (4 steps of 1 s)
        out, err = worker.communicate(timeout=TIMEOUT_S)
    [record] = list(store.records())
    if driver_lives:
        assert worker.returncode == 0, err
        assert "STATUS done" in out and record.state == "done"
        return
    assert worker.returncode != 0
    assert "StoreError" in err and "no longer holds the store's lock" in err
    assert record.state == "running"
    assert not (store.run_dir(record.run_id) / "summary.json").exists()


def test_a_ray_task_keeps_the_runs_time_limits_a_hung_step_included(tmp_path, rogue_site,
                                                                     subprocess_env):
    """A Ray worker runs its run in a child it supervises, as the local executor does: a step
    that hangs is stopped at ``limits.stall_seconds`` and the run recorded failed at the limit,
    not left to Ray's timeout for a result."""
    path = write(tmp_path, suite_text("hung", rogue("hung", mode="hang"),
                                      "limits: {stall_seconds: 3}\n"))
    (tmp_path / "worker.py").write_text(WORKER)
    root = tmp_path / "runs"
    store = RunStore(root, "hung")
    with store.lock():
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(tmp_path / "worker.py"), str(path), str(root),
             store.lease_token() or ""],
            env=subprocess_env(rogue_site, RLHF_HARNESS_WANDB="0"), cwd=tmp_path,
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "STATUS failed" in done.stdout
    [record] = list(store.records())
    assert record.state == "failed"
    assert "limit" in str(record.status.get("reason")) and "3" in str(record.status["reason"])
    assert took < 60  # the hung step (an hour's sleep) was stopped by the supervisor
