"""Running suites: the run store's contents, shared data, equal budgets, resumption (also after
SIGKILL), failures and divergence, the process pool, and wandb tracking.

The suites are tiny (the bandit task, budgets of a few hundred samples), so every run takes well
under a second; the commands a user types run in subprocesses.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import config_hash
from harness.engine.executors import run_specs
from harness.engine.plugins import get_plugin_host
from harness.engine.store import FINISHED, METRIC_COLUMNS, RunStore
from harness.suite import check_suite, load_suite

TIMEOUT_S = 120

SUITE = """\
name: tiny
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 200}
reward_model: {epochs: 5}
algorithms:
  - name: dpo
    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam, batch_size: 32, warmup_steps: 0}
  - name: ppo
    config: {learning_rate: 0.05, rollout_batch_size: 32, num_ppo_epochs: 1}
  - name: grpo
    config: {learning_rate: 0.05, num_generations: 4, prompts_per_step: 4}
seeds: [0, 1]
budget: {samples: 200}
evaluation: {every: 3, samples_per_prompt: 2}
"""
BUDGET = 200

FAULTY_PLUGIN = '''
from __future__ import annotations

import math
from dataclasses import dataclass

from harness import hookimpl
from harness.algorithm import Algorithm


@dataclass
class Config:
    raise_at: int = 0
    """Raise RuntimeError on this call of step (0: never)."""
    nan_at: int = 0
    """Return a NaN loss on this call of step (0: never)."""


class Faulty(Algorithm):
    name = "faulty"
    Config = Config
    needs = frozenset()

    def __init__(self, config, context):
        super().__init__(config, context)
        self.calls = 0

    def step(self):
        self.calls += 1
        if self.calls == self.config.raise_at:
            raise RuntimeError(f"faulty plugin broke at call {self.calls}")
        return {"loss": math.nan if self.calls == self.config.nan_at else 1.0 / self.calls}


@hookimpl
def register_algorithms(register):
    register("faulty", Faulty)
'''


def faulty_distribution(write, root: Path | None = None) -> None:
    """The fake ``faulty`` plugin as an installed distribution (``write``: a conftest writer)."""
    args = ("rlhf-harness-test-faulty", "0.7", {"faulty-plugin": "rlhf_test_faulty_plugin"},
            {"rlhf_test_faulty_plugin": FAULTY_PLUGIN})
    if root is None:
        write(*args)
    else:
        write(root, *args)


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")


def write_suite(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def specs_of(path: Path) -> list:
    return check_suite(load_suite(path), path, get_plugin_host())


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, in the folder of the ``--root`` store (``run`` writes its report
    under ``reports/`` of the working directory)."""
    cwd = Path(args[args.index("--root") + 1]).parent if "--root" in args else None
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
        timeout=TIMEOUT_S, check=False, cwd=cwd,
    )


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: its modification time (ns) and content (the store's lock
    file aside: taking the lock writes the holder's PID)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def assert_store_parses(store_dir: Path) -> None:
    """Every JSON and parquet file of a store reads back (temporary files aside)."""
    files = [p for p in store_dir.rglob("*") if p.is_file() and ".tmp" not in p.name]
    parsed = 0
    for path in files:
        if path.suffix == ".json" or path.name == ".complete":
            json.loads(path.read_text())
            parsed += 1
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
            parsed += 1
    assert parsed > 0


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """A run's metrics without wall-clock time, in a canonical row order."""
    frame = frame.drop(columns=["wall_seconds"])
    return frame.sort_values(["step", "source", "metric"], kind="stable").reset_index(drop=True)


# --- one sequential suite, inspected by several tests -------------------------------------------


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The tiny suite (dpo, ppo, grpo × 2 seeds) run sequentially."""
    folder = tmp_path_factory.mktemp("sequential")
    path = write_suite(folder, SUITE)
    specs = specs_of(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_HARNESS_WANDB", "0")
        outcome = run_specs(specs, str(folder / "runs"), wandb=False, progress=False)
    return {"specs": specs, "outcome": outcome, "root": folder / "runs", "path": path}


def test_every_run_is_done(sequential):
    outcome, specs = sequential["outcome"], sequential["specs"]
    assert len(specs) == 6
    assert (outcome.total, outcome.skipped, outcome.failed) == (6, 0, 0)
    assert outcome.statuses == {"done": 6}
    store = RunStore(sequential["root"], "tiny")
    records = list(store.records())
    assert sorted(r.run_id for r in records) == sorted(s.run_id for s in specs)
    for record in records:
        assert record.state == "done"
        assert record.status["reason"] is None
        assert record.spec == next(s.as_dict() for s in specs if s.run_id == record.run_id)
        assert (record.path / "log.txt").read_text().strip().endswith("done")
        assert not (record.path / "traceback.txt").exists()


def test_metrics_are_a_tidy_table_with_every_x_axis(sequential):
    store = RunStore(sequential["root"], "tiny")
    for record in store.records():
        frame = record.metrics()
        assert tuple(frame.columns) == METRIC_COLUMNS
        assert set(frame["source"]) == {"train", "eval"}
        assert set(frame["run_id"]) == {record.run_id}
        axes = frame[["step", "samples", "tokens", "wall_seconds", "flops"]]
        assert not axes.isna().any().any()
        assert (axes >= 0).all().all()
        assert frame["value"].map(math.isfinite).all()
        train = frame[frame["source"] == "train"]
        steps = sorted(train["step"].unique())
        assert steps == list(range(1, record.summary["steps"] + 1))
        # Cumulative counters grow with the steps.
        per_step = train.groupby("step")[["samples", "tokens", "flops", "wall_seconds"]].max()
        assert per_step.diff().dropna().ge(0).all().all()
        assert per_step["samples"].diff().dropna().gt(0).all()
        assert {"loss", "grad_norm", "models_resident"} <= set(train["metric"])
        evals = frame[frame["source"] == "eval"]
        assert {"gold_reward", "proxy_reward", "kl_ref", "regret", "win_rate_ref"} <= set(
            evals["metric"])
        eval_steps = sorted(evals["step"].unique())
        assert eval_steps[0] == 0 and eval_steps[-1] == steps[-1]  # before training and at the end
        assert all(s % 3 == 0 for s in eval_steps[1:-1])  # every: 3
        initial_kl = evals[(evals["step"] == 0) & (evals["metric"] == "kl_ref")]["value"]
        assert initial_kl.tolist() == [0.0]  # π = π_ref before the first step


def test_summary_holds_compute_memory_models_versions_seed_and_hash(sequential):
    host = get_plugin_host()
    # grpo: π_ref counts while β > 0 (default 0.04); dpo: + r̂, resident for the proxy_reward
    # evaluator although DPO itself does not use it
    resident = {"dpo": 3, "ppo": 4, "grpo": 3}
    own = {"dpo": 2, "ppo": 4, "grpo": 3}
    store = RunStore(sequential["root"], "tiny")
    for record in store.records():
        summary, spec = record.summary, record.spec
        assert summary["run_id"] == record.run_id
        assert summary["status"] == "done"
        seconds = summary["compute"]["seconds"]
        assert {"generate", "score", "train", "eval"} <= set(seconds)
        assert all(v >= 0 for v in seconds.values())
        assert seconds["train"] > 0 and seconds["eval"] > 0
        if spec["algorithm"] != "dpo":  # online methods sample and score
            assert seconds["generate"] > 0 and seconds["score"] > 0
        cpu = summary["compute"]["cpu_seconds"]
        assert set(cpu) == set(seconds) and all(v >= 0 for v in cpu.values())
        assert cpu["train"] > 0
        # a tabular policy is a lookup table: no FLOPs, samples and tokens instead
        assert summary["compute"]["samples"] > 0 and summary["compute"]["flops"] is None
        assert summary["peak_host_memory_mb"] > 10
        assert summary["peak_gpu_memory_mb"] is None  # a CPU run records no GPU memory
        memory = summary["memory"]
        assert memory["kind"] == "rss" and memory["baseline_mb"] > 10
        assert memory["peak_above_baseline_mb"] >= 0
        assert memory["model_state_bytes"] > 0
        # the run holds more than the algorithm: r̂ for evaluation where the algorithm has none
        extra = memory["run_state_bytes"] - memory["model_state_bytes"]
        assert (extra > 0) == (spec["algorithm"] == "dpo")
        assert summary["models_resident"] == resident[spec["algorithm"]]
        assert summary["target"] is None  # π*_β, or (GRPO with std scaling) no closed form
        assert summary["models_resident_detail"] == {
            "algorithm": own[spec["algorithm"]], "task": 0,
            "evaluation_reward_model": resident[spec["algorithm"]] - own[spec["algorithm"]]}
        train = record.metrics().query("source == 'train' and metric == 'models_resident'")
        assert set(train["value"]) == {float(resident[spec["algorithm"]])}
        plugin = host.registration("algorithm", spec["algorithm"]).plugin
        assert plugin.distribution == f"rlhf-harness-{spec['algorithm']}"
        assert summary["versions"][plugin.distribution] == plugin.version
        assert {"rlhf-harness", "torch"} <= set(summary["versions"])
        assert summary["seed"] == spec["seed"]
        # Limits guard, not shape; an unset policy section is left out (runs keep their ids).
        identity = {k: v for k, v in spec.items()
                    if k != "limits" and not (k == "policy" and not v)}
        assert summary["config_hash"] == config_hash(identity)
        assert record.run_id.endswith(config_hash(identity, 10))
        assert spec["code"]["algorithm"]["plugin"] == plugin.distribution
        assert spec["code"]["algorithm"]["version"] == plugin.version
        assert len(spec["code"]["algorithm"]["source"]) == 16
        assert set(summary["final"]) >= {"gold_reward", "kl_ref", "regret"}
        assert summary["reward_model"]["train_pairs"] + summary["reward_model"][
            "heldout_pairs"] == 200


def test_preference_data_and_reward_model_are_built_once_per_seed(sequential):
    shared = sequential["root"] / "tiny" / "shared"
    prefs = sorted(shared.glob("*/preferences.parquet"))
    rewards = sorted(shared.glob("*/reward_model.pt"))
    assert len(prefs) == 2 and len(rewards) == 2  # 2 seeds, 3 algorithms each
    # Built once per seed, before the first run started; the runs read the files (a build
    # replaces its folder: one during the runs would leave a file newer than a run's start).
    started = min((p / "spec.json").stat().st_mtime_ns
                  for p in (sequential["root"] / "tiny").iterdir() if (p / "spec.json").exists())
    assert max(p.stat().st_mtime_ns for p in [*prefs, *rewards]) <= started
    frames = [pd.read_parquet(p) for p in prefs]
    assert all(len(f) == 200 for f in frames)
    assert not frames[0].equals(frames[1])  # each seed has its own data
    # Every reward-model report in the summaries of one seed is the same fit.
    store = RunStore(sequential["root"], "tiny")
    by_seed: dict[int, list] = {}
    for record in store.records():
        by_seed.setdefault(record.spec["seed"], []).append(record.summary["reward_model"])
    for reports in by_seed.values():
        assert len(reports) == 3 and all(r == reports[0] for r in reports)


def test_a_samples_budget_is_met_within_one_step(sequential):
    store = RunStore(sequential["root"], "tiny")
    for record in store.records():
        train = record.metrics().query("source == 'train'")
        samples = train.groupby("step")["samples"].max()
        per_step = samples.diff().dropna().unique()
        assert len(per_step) == 1  # a fixed batch of samples per step
        final = samples.iloc[-1]
        assert BUDGET <= final < BUDGET + per_step[0], (record.run_id, final, per_step)
        assert samples.iloc[-2] < BUDGET  # the run stopped at the first step past the budget
        assert record.summary["compute"]["samples"] == final


def test_running_again_reruns_nothing(sequential, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(sequential["root"], root)  # copy2 keeps modification times
    before = snapshot(root)
    outcome = run_specs(sequential["specs"], str(root), wandb=False, progress=False)
    assert (outcome.total, outcome.skipped) == (6, 6)
    assert sum(outcome.statuses.values()) == 0
    assert snapshot(root) == before


def test_process_pool_gives_the_sequential_store(sequential, tmp_path, monkeypatch):
    import harness.engine.runner

    def refused(*args, **kwargs):
        raise AssertionError("a task was built in the parent process")

    # Shared data and r̂ are prepared in a child process: this one never builds a task (on a GPU
    # host it would hold a CUDA context, and the fitted models, on GPU 0).
    monkeypatch.setattr(harness.engine.runner, "build_task", refused)
    root = tmp_path / "runs"
    outcome = run_specs(sequential["specs"], str(root), workers=2, wandb=False, progress=False)
    assert outcome.statuses == {"done": 6}
    pool = {r.run_id: r for r in RunStore(root, "tiny").records()}
    seq = {r.run_id: r for r in RunStore(sequential["root"], "tiny").records()}
    assert set(pool) == set(seq)
    for run_id, record in seq.items():
        other = pool[run_id]
        assert other.state == "done"
        pd.testing.assert_frame_equal(comparable(other.metrics()), comparable(record.metrics()))
        for key in ("final", "steps", "reward_model", "models_resident", "config_hash", "seed"):
            assert other.summary[key] == record.summary[key], key
        for key in ("samples", "tokens_generated", "tokens_trained", "flops"):
            assert other.summary["compute"][key] == record.summary["compute"][key], key
    for prefs in (sequential["root"] / "tiny" / "shared").glob("*/preferences.parquet"):
        twin = root / prefs.relative_to(sequential["root"])
        pd.testing.assert_frame_equal(pd.read_parquet(twin), pd.read_parquet(prefs))


# --- resumption after SIGKILL --------------------------------------------------------------------

SLOW_SUITE = SUITE.replace("name: tiny", "name: slow").replace(
    "budget: {samples: 200}", "budget: {seconds: 0.4}"
).replace("evaluation: {every: 3, samples_per_prompt: 2}",
          "evaluation: {every: 1000000, samples_per_prompt: 2}")


def statuses(store_dir: Path) -> dict[str, str]:
    out = {}
    for path in store_dir.glob("*/status.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            pass  # being replaced this instant: read it next time
    return out


def test_a_killed_suite_resumes_without_redoing_finished_runs(tmp_path, subprocess_env):
    path = write_suite(tmp_path, SLOW_SUITE)
    root = tmp_path / "runs"
    store_dir = root / "slow"
    env = subprocess_env(RLHF_HARNESS_WANDB="0")
    args = [sys.executable, "-m", "harness.cli", "run", str(path), "--root", str(root),
            "--no-wandb", "--no-progress", "--no-report"]  # the runs are what is checked
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=tmp_path)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while True:
                state = statuses(store_dir)
                done = [r for r, s in state.items() if s == "done"]
                running = [r for r, s in state.items() if s == "running"]
                if done and running:
                    break
                assert proc.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "no run finished in time"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL

    state = statuses(store_dir)
    finished = sorted(r for r, s in state.items() if s in FINISHED)
    interrupted = sorted(r for r, s in state.items() if s == "running")
    assert finished and interrupted
    assert len(state) < 6  # killed before the end
    kept = {
        run_id: {name: ((store_dir / run_id / name).stat().st_mtime_ns,
                        (store_dir / run_id / name).read_bytes())
                 for name in ("status.json", "metrics.parquet", "summary.json", "spec.json")}
        for run_id in finished
    }
    left_by_kill = {p for p in store_dir.rglob("*") if ".tmp" in p.name}

    outcome = run_specs(specs_of(path), str(root), wandb=False, progress=False)
    assert outcome.skipped == len(finished)  # only the unfinished runs ran this time
    assert outcome.statuses == {"done": 6 - len(finished)}

    final = list(RunStore(root, "slow").records())
    assert len(final) == 6
    assert all(r.state == "done" and r.summary is not None for r in final)
    for run_id, files in kept.items():  # not redone: same files, same times
        for name, (mtime, content) in files.items():
            path = store_dir / run_id / name
            assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content), path
    for run_id in interrupted:  # restarted from scratch and completed
        summary = json.loads((store_dir / run_id / "summary.json").read_text())
        assert summary["status"] == "done" and summary["steps"] > 0
    assert_store_parses(store_dir)
    # Temporary files: at most those a killed write left behind, none from the second run.
    assert {p for p in store_dir.rglob("*") if ".tmp" in p.name} <= left_by_kill
    assert len(list(store_dir.glob("shared/*/preferences.parquet"))) == 2


# --- failures and divergence ---------------------------------------------------------------------

FAULTY_SUITE = """\
name: faults
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 100}
algorithms:
  - name: faulty
    config: {raise_at: 3}
  - name: dpo
    config: {learning_rate: 0.05, warmup_steps: 0, batch_size: 16}
seeds: [0]
budget: {steps: 5}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref]}
"""


def test_a_plugin_raising_fails_its_run_only(tmp_path, dist_writer, subprocess_env):
    site = tmp_path / "site"
    faulty_distribution(dist_writer, site)
    path = write_suite(tmp_path, FAULTY_SUITE)
    root = tmp_path / "runs"
    env = subprocess_env(site, RLHF_HARNESS_PLUGINS="faulty-plugin,dpo")
    result = run_cli("run", str(path), "--root", str(root), "--no-wandb", "--no-progress",
                     "--no-report", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 runs failed" in result.stderr
    assert "failed 1" in result.stdout and "done 1" in result.stdout
    records = {r.spec["algorithm"]: r for r in RunStore(root, "faults").records()}
    assert set(records) == {"faulty", "dpo"}
    faulty, dpo = records["faulty"], records["dpo"]
    assert faulty.state == "failed"
    assert faulty.status["reason"] == "RuntimeError: faulty plugin broke at call 3"
    traceback = (faulty.path / "traceback.txt").read_text()
    assert traceback.startswith("Traceback")
    assert "RuntimeError: faulty plugin broke at call 3" in traceback
    assert "rlhf_test_faulty_plugin.py" in traceback
    assert faulty.summary["steps"] == 3
    assert faulty.summary["versions"]["rlhf-harness-test-faulty"] == "0.7"
    train = faulty.metrics().query("source == 'train'")
    assert sorted(train["step"].unique()) == [1, 2]  # what it did before failing is kept
    assert dpo.state == "done" and dpo.summary["steps"] == 5
    assert not (dpo.path / "traceback.txt").exists()
    # A failed run counts as finished: running again retries it only when asked to.
    store = RunStore(root, "faults")
    assert store.is_finished(faulty.run_id)
    assert not store.is_finished(faulty.run_id, retry_failed=True)
    assert store.is_finished(dpo.run_id, retry_failed=True)


def test_a_nan_metric_marks_the_run_diverged(tmp_path, dist_info_path):
    faulty_distribution(dist_info_path)
    text = FAULTY_SUITE.replace("{raise_at: 3}", "{nan_at: 2}").replace(
        "  - name: dpo\n    config: {learning_rate: 0.05, warmup_steps: 0, batch_size: 16}\n", ""
    )
    specs = specs_of(write_suite(tmp_path, text))
    assert [s.algorithm for s in specs] == ["faulty"]
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"diverged": 1} and outcome.failed == 0
    [record] = RunStore(tmp_path / "runs", "faults").records()
    assert record.state == "diverged"
    assert record.status["reason"] == "non-finite loss at step 2"
    assert record.summary["steps"] == 2  # stopped at the bad step
    frame = record.metrics()
    assert frame["step"].max() == 2
    loss = frame.query("source == 'train' and metric == 'loss'").set_index("step")["value"]
    assert loss[1] == 1.0 and math.isnan(loss[2])
    assert 2 in set(frame.query("source == 'eval'")["step"])  # evaluated when it diverged
    assert not (record.path / "traceback.txt").exists()


def test_a_kl_beyond_max_kl_marks_the_run_diverged(tmp_path):
    text = SUITE.replace("name: tiny", "name: kl").replace(
        "budget: {samples: 200}", "budget: {steps: 20}\ndivergence: {max_kl: 1.0e-6}"
    ).replace("evaluation: {every: 3, samples_per_prompt: 2}",
              "evaluation: {every: 1, evaluators: [kl_ref, gold_reward]}").replace(
        "seeds: [0, 1]", "seeds: [0]")
    specs = [s for s in specs_of(write_suite(tmp_path, text)) if s.algorithm == "dpo"]
    assert specs[0].divergence == {"max_kl": 1e-6}
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"diverged": 1}
    [record] = RunStore(tmp_path / "runs", "kl").records()
    assert record.state == "diverged"
    reason = record.status["reason"]
    assert reason.startswith("kl_ref ") and "> max_kl 1e-06 at step 1" in reason
    kl = record.metrics().query("source == 'eval' and metric == 'kl_ref'").set_index("step")
    assert kl.loc[0, "value"] == 0.0  # not diverged at the start
    assert kl.loc[1, "value"] > 1e-6
    assert record.summary["steps"] == 1 < 20
    assert record.summary["final"]["kl_ref"] == kl.loc[1, "value"]


# --- wandb ---------------------------------------------------------------------------------------

WANDB_SUITE = """\
name: tracked
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 100}
algorithms:
  - name: dpo
    config: {learning_rate: 0.1, warmup_steps: 0, batch_size: 16}
seeds: [0]
budget: {steps: 4}
evaluation: {every: 2, evaluators: [gold_reward, kl_ref]}
"""


def wandb_env(tmp_path: Path, subprocess_env, **overrides: str) -> dict[str, str]:
    env = subprocess_env(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
                         XDG_CACHE_HOME=str(tmp_path / "cache"), **overrides)
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                "WANDB_CONFIG_DIR", "WANDB_API_KEY", "WANDB_DISABLED", "RLHF_HARNESS_WANDB"):
        if var not in overrides:
            env.pop(var, None)
    return env


def test_wandb_logs_offline_into_the_run_folder(tmp_path, subprocess_env):
    path = write_suite(tmp_path, WANDB_SUITE)
    root = tmp_path / "runs"
    result = run_cli("run", str(path), "--root", str(root), "--no-progress", "--no-report",
                     env=wandb_env(tmp_path, subprocess_env))
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = RunStore(root, "tracked").records()
    assert record.state == "done"
    offline = list((record.path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].is_dir()
    [log] = offline[0].glob("run-*.wandb")
    data = log.read_bytes()
    assert record.run_id.encode() in data  # the wandb run is named after the harness run
    assert b"eval/gold_reward" in data  # and the evaluations were logged
    assert "wandb disabled" not in (record.path / "log.txt").read_text()


def test_wandb_switched_off_by_environment_leaves_no_trace(tmp_path, monkeypatch):
    """``RLHF_HARNESS_WANDB=0`` wins even where the caller asks for tracking (the default)."""
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "runs"
    outcome = run_specs(specs_of(write_suite(tmp_path, WANDB_SUITE)), str(root), progress=False)
    assert outcome.statuses == {"done": 1}
    [record] = RunStore(root, "tracked").records()
    assert record.state == "done"
    assert not [p for p in root.rglob("*") if "wandb" in p.name]


def test_replicates_share_the_instance_and_vary_the_algorithm(tmp_path):
    text = SUITE.replace("seeds: [0, 1]", "seeds: {instances: [0], replicates: 2}").replace(
        "  - name: dpo\n    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam, "
        "batch_size: 32, warmup_steps: 0}\n", "").replace(
        "  - name: grpo\n    config: {learning_rate: 0.05, num_generations: 4, "
        "prompts_per_step: 4}\n", "")
    specs = specs_of(write_suite(tmp_path, text))
    assert [(s.algorithm, s.replicate) for s in specs] == [("ppo", 0), ("ppo", 1)]
    plain = [s for s in specs_of(write_suite(tmp_path, SUITE, "plain.yaml"))
             if s.algorithm == "ppo" and s.seed == 0]
    assert specs[0].run_id == plain[0].run_id  # replicate 0 is the plain run
    outcome = run_specs(specs, str(tmp_path / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"done": 2}
    records = {r.spec["replicate"]: r for r in RunStore(tmp_path / "runs", "tiny").records()}
    first, second = records[0], records[1]
    # one instance: the same preference data and r̂ (built once), the same step-0 evaluation
    assert first.summary["reward_model"] == second.summary["reward_model"]
    assert len(list((tmp_path / "runs" / "tiny" / "shared").glob("*-reward-*"))) == 1
    m0, m1 = first.metrics(), second.metrics()
    start = "source == 'eval' and step == 0"
    pd.testing.assert_frame_equal(comparable(m0.query(start)).drop(columns="run_id"),
                                  comparable(m1.query(start)).drop(columns="run_id"))
    # another replicate: the algorithm's own randomness differs, so training differs
    loss0 = m0.query("source == 'train' and metric == 'loss'")["value"].to_numpy()
    loss1 = m1.query("source == 'train' and metric == 'loss'")["value"].to_numpy()
    assert not np.array_equal(loss0, loss1)


def test_grpo_records_the_regret_of_its_own_fixed_point(tmp_path):
    text = SUITE.replace("prompts_per_step: 4}", "prompts_per_step: 4, scale_rewards: none, "
                         "beta: 0.1}").replace("seeds: [0, 1]", "seeds: [0]")
    specs = [s for s in specs_of(write_suite(tmp_path, text)) if s.algorithm == "grpo"]
    assert run_specs(specs, str(tmp_path / "runs"), wandb=False,
                     progress=False).statuses == {"done": 1}
    [record] = RunStore(tmp_path / "runs", "tiny").records()
    target = record.summary["target"]
    assert target["kind"] == "grpo fixed point"
    # the forward-KL fixed point loses part of the gap, never more than π_ref does
    assert 0 < target["regret"] < target["regret_ref"]
    assert target["kl_ref"] > 0
    initial = record.metrics().query("source == 'eval' and step == 0 and metric == 'regret'")
    assert initial["value"].iloc[0] == pytest.approx(target["regret_ref"])


def test_a_second_suite_of_this_process_reuses_a_ready_child(tmp_path, monkeypatch):
    """A child left ready is reused while nothing it started with changed (then the second
    suite pays no start-up), in whatever folder the suite runs; a changed environment or an
    edited plugin gets a fresh child."""
    import rlhf_harness_dpo

    import harness.engine.executors as executors

    for child in list(executors._IDLE):  # what earlier tests left
        executors._IDLE.remove(child)
        executors._stop_child(child)
    specs = [s for s in specs_of(write_suite(tmp_path, SUITE)) if s.algorithm == "dpo"]

    def run(name: str) -> list[int]:
        outcome = run_specs(specs, str(tmp_path / name), wandb=False, progress=False)
        assert outcome.statuses == {"done": 2}
        return [c.process.pid for c in executors._IDLE]

    first = run("a")
    assert len(first) == 1
    old = executors._IDLE[0]
    assert run("b") == first  # same child, same results as a fresh one
    monkeypatch.chdir(tmp_path)  # each request carries the suite's folder
    assert run("b2") == first
    same = {r.run_id: comparable(r.metrics()) for r in RunStore(tmp_path / "a", "tiny").records()}
    for record in RunStore(tmp_path / "b", "tiny").records():
        pd.testing.assert_frame_equal(comparable(record.metrics()), same[record.run_id])

    monkeypatch.setenv("RLHF_HARNESS_TEST_MARK", "1")
    changed = run("c")
    assert changed != first and len(changed) == 1
    assert not old.process.is_alive()  # stopped, not left behind
    monkeypatch.delenv("RLHF_HARNESS_TEST_MARK")
    source = Path(rlhf_harness_dpo.__file__)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert run("d") not in (first, changed)
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.kill(executors._IDLE[0].process.pid, signal.SIGKILL)  # an idle child that died
    executors._IDLE[0].process.join()
    assert len(run("e")) == 1
