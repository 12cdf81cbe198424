"""The Ray executor: the same store as the local executor, and GPUs handed to the runs asking.

Ray runs in a subprocess inside a network namespace with only loopback (``unshare -n``), so the
local Ray instance can neither reach nor be reached from the network; usage statistics are off.
Every wait on Ray is bounded: ``run_specs``' ``ray_timeout`` for each result, and the
subprocess's own timeout around it all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.engine.executors import run_specs
from harness.engine.plugins import get_plugin_host
from harness.engine.store import RunStore
from harness.suite import check_suite, load_suite

pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'rlhf-harness[ray]'")

TIMEOUT_S = 240
RAY_TIMEOUT_S = 120
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RLHF_HARNESS_WANDB": "0",
}

SUITE = """\
name: ray-suite
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 200}
reward_model: {epochs: 5}
algorithms:
  - name: dpo
    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam, batch_size: 32, warmup_steps: 0}
  - name: grpo
    config: {learning_rate: 0.05, num_generations: 4, prompts_per_step: 4}
seeds: [0, 1]
budget: {samples: 160}
evaluation: {every: 3, samples_per_prompt: 2}
"""

GPU_PROBE_PLUGIN = '''
from __future__ import annotations

import os
from dataclasses import dataclass

from harness import hookimpl
from harness.algorithm import Algorithm


@dataclass
class Config:
    pass


class GpuProbe(Algorithm):
    """Reports the CUDA devices its process was given (-1: CUDA_VISIBLE_DEVICES unset)."""

    name = "gpu-probe"
    Config = Config
    needs = frozenset()

    def step(self):
        value = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = [d for d in (value or "").split(",") if d.strip()]
        return {
            "cuda_visible_set": float(value is not None),
            "cuda_visible_count": float(len(devices)),
            "cuda_visible_first": float(devices[0]) if devices else -1.0,
        }


@hookimpl
def register_algorithms(register):
    register("gpu-probe", GpuProbe)
'''

GPU_SUITE = """\
name: ray-gpus
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
algorithms:
  - name: gpu-probe
seeds: [0, 1]
budget: {steps: 2}
evaluation: {every: 2, evaluators: [kl_ref]}
gpus_per_run: 1
"""

DRIVER = textwrap.dedent(
    """
    import json
    import sys

    import ray

    from harness.engine.executors import run_specs
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    suite_path, root, logical_gpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
    specs = check_suite(load_suite(suite_path), suite_path, get_plugin_host())
    resources = None
    if logical_gpus:  # a Ray instance of our own, with logical GPUs; the executor joins it
        ray.init(num_cpus=2, num_gpus=logical_gpus, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
    try:
        outcome = run_specs(specs, root, executor="ray", wandb=False, progress=False,
                            ray_timeout=float(sys.argv[4]))
        still_up = ray.is_initialized()
    finally:
        if logical_gpus:
            ray.shutdown()
    print("RESULT " + json.dumps({
        "total": outcome.total, "skipped": outcome.skipped,
        "statuses": dict(outcome.statuses), "ray_still_initialized": still_up,
        "resources": resources,
    }))
    """
)


@pytest.fixture(scope="module")
def loopback_only():
    """A command prefix running its argument in a new network namespace with only loopback."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) to isolate Ray's network")
    probe = subprocess.run([unshare, "-n", "sh", "-c", "ip link set lo up"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not permitted here (needs root or CAP_SYS_ADMIN): "
                    f"{probe.stderr.strip()}")

    def wrap(command: list[str]) -> list[str]:
        return [unshare, "-n", "sh", "-c", f"ip link set lo up && exec {shlex.join(command)}"]

    return wrap


def run_driver(tmp_path: Path, suite: Path, root: Path, wrap, env: dict[str, str],
               logical_gpus: int = 0) -> dict:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    command = wrap([sys.executable, str(script), str(suite), str(root), str(logical_gpus),
                    str(RAY_TIMEOUT_S)])
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [line] = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def ray_env(subprocess_env, pythonpath: Path | None = None, **overrides: str) -> dict[str, str]:
    env = subprocess_env(pythonpath, **RAY_ENV, **overrides)
    env.pop("CUDA_VISIBLE_DEVICES", None)  # what the runs see must come from Ray
    return env


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=["wall_seconds"])
    return frame.sort_values(["step", "source", "metric"], kind="stable").reset_index(drop=True)


def test_ray_executor_gives_the_local_store(tmp_path, loopback_only, subprocess_env,
                                            monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    specs = check_suite(load_suite(suite), suite, get_plugin_host())
    assert len(specs) == 4
    local_root, ray_root = tmp_path / "local", tmp_path / "ray"
    assert run_specs(specs, str(local_root), wandb=False, progress=False).statuses == {"done": 4}

    result = run_driver(tmp_path, suite, ray_root, loopback_only, ray_env(subprocess_env))
    assert result["statuses"] == {"done": 4}
    assert (result["total"], result["skipped"]) == (4, 0)
    assert result["ray_still_initialized"] is False  # the instance it started is shut down

    local = {r.run_id: r for r in RunStore(local_root, "ray-suite").records()}
    remote = {r.run_id: r for r in RunStore(ray_root, "ray-suite").records()}
    assert set(remote) == set(local) == {s.run_id for s in specs}
    for run_id, record in local.items():
        other = remote[run_id]
        assert other.state == "done"
        assert other.summary["status"] == "done"
        pd.testing.assert_frame_equal(comparable(other.metrics()), comparable(record.metrics()))
        for key in ("final", "steps", "reward_model", "models_resident", "config_hash"):
            assert other.summary[key] == record.summary[key], key
        for key in ("samples", "tokens_generated", "tokens_trained", "flops"):
            assert other.summary["compute"][key] == record.summary["compute"][key], key
    # One preference set per seed, built once even though runs ran in parallel Ray workers.
    assert len(list((ray_root / "ray-suite" / "shared").glob("*/preferences.parquet"))) == 2
    assert not list((ray_root / "ray-suite").rglob(".*.tmp*"))

    # Run again through Ray: everything is finished, nothing runs (Ray is not even needed).
    again = run_specs(specs, str(ray_root), executor="ray", wandb=False, progress=False)
    assert (again.total, again.skipped, sum(again.statuses.values())) == (4, 4, 0)


def test_a_run_asking_for_a_gpu_gets_cuda_visible_devices(tmp_path, loopback_only, dist_writer,
                                                          subprocess_env):
    site = tmp_path / "site"
    dist_writer(site, "rlhf-harness-test-gpu-probe", "0.1",
                {"gpu-probe": "rlhf_test_gpu_probe_plugin"},
                {"rlhf_test_gpu_probe_plugin": GPU_PROBE_PLUGIN})
    suite = tmp_path / "gpus.yaml"
    suite.write_text(GPU_SUITE)
    root = tmp_path / "runs"
    env = ray_env(subprocess_env, site, RLHF_HARNESS_PLUGINS="gpu-probe")
    result = run_driver(tmp_path, suite, root, loopback_only, env, logical_gpus=2)
    assert result["resources"]["GPU"] == 2.0
    assert result["statuses"] == {"done": 2}, result

    records = list(RunStore(root, "ray-gpus").records())
    assert len(records) == 2
    for record in records:
        assert record.state == "done"
        assert record.spec["gpus"] == 1.0
        train = record.metrics().query("source == 'train'")
        seen = train.pivot(index="step", columns="metric", values="value")
        assert (seen["cuda_visible_set"] == 1.0).all(), seen
        assert (seen["cuda_visible_count"] == 1.0).all()  # exactly the one GPU it asked for
        assert set(seen["cuda_visible_first"]) <= {0.0, 1.0}  # one of the instance's 2 GPUs
        assert record.summary["versions"]["rlhf-harness-test-gpu-probe"] == "0.1"
    assert os.environ.get("RAY_ADDRESS") is None  # nothing leaked into this process


class _RecordingRay:
    """A stand-in for the ``ray`` module that records what each task asks for and runs
    nothing: each task reports its run ``done``."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, dict]] = []
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **_: object) -> None:
        self.up = True

    def shutdown(self) -> None:
        self.up = False

    def remote(self, fn):
        ray = self

        class _Task:
            def options(self, **options: object):
                ray.tasks.append((fn.__name__, options))
                return self

            def remote(self, *args: object) -> str:
                return "done"

        return _Task()

    def get(self, ref: str, timeout: float | None = None) -> str:
        return ref

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None):
        return refs[:num_returns], refs[num_returns:]

    def cancel(self, ref: object, force: bool = False) -> None:
        raise AssertionError("nothing is cancelled when every task returns")


def test_every_ray_task_reads_the_driver_s_model_cache(tmp_path, monkeypatch):
    """The task that prepares the shared artefacts and every run's task get the driver's cache
    folder (tiny-lm's pre-trained π_ref), so no run pre-trains a π_ref of its own; each asks for
    one CPU and the GPUs of its run."""
    from harness.engine import executors
    from harness.models.cache import CACHE_ENV

    cache = tmp_path / "driver-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    fake = _RecordingRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    specs = check_suite(load_suite(suite), suite, get_plugin_host())
    executors._ray(specs, str(tmp_path / "runs"), False, None, 5.0,
                   executors._Progress(False, len(specs), "ray-suite"))
    names = [name for name, _ in fake.tasks]
    assert names == ["_prepare_shared"] + ["_leased_run"] * len(specs)
    for _, options in fake.tasks:
        assert options["runtime_env"] == {"env_vars": {CACHE_ENV: str(cache.resolve())}}
        assert options["num_cpus"] == 1 and options["num_gpus"] == 0
    assert not fake.up  # the instance it started is shut down
