"""scripts/gpu-check.sh: the first hour on a GPU host as one script, dry-run on the CPU stand-in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


def test_the_script_parses_and_runs_every_step_into_one_folder():
    script = ROOT / "scripts" / "gpu-check.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for step in ("step probe", "step tests", "step runs", '"bench_$algo"', "step plan",
                 "step compare"):
        assert step in text
    assert "HF_HUB_OFFLINE=1" in text and "GPU_CHECK_STAND_IN" in text


def test_the_probe_passes_on_the_stand_in_and_refuses_every_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # no Hub kernels for a model read on a "GPU"
    assert gpu_check.probe(tmp_path, stand_in=True) == 0
    report = json.loads((tmp_path / "probe.json").read_text())
    assert report["stand_in"] and report["problems"] == []
    with gpu_check._NoNetwork() as net:
        with pytest.raises(OSError, match="no network"):
            socket.create_connection(("192.0.2.1", 80), timeout=1)
    assert net.attempts


def test_every_algorithm_has_a_run_in_the_checks_suite(tmp_path):
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    path = tmp_path / "gpu-check.yaml"
    path.write_text(gpu_check.suite_text(stand_in=True))
    specs = check_suite(load_suite(path), path, get_plugin_host())
    assert {s.algorithm for s in specs} == set(get_plugin_host().names("algorithm"))
    assert {(s.device, s.precision) for s in specs} == {("cuda", "bf16")}


@pytest.mark.slow
def test_the_dry_run_on_the_stand_in(tmp_path):
    """The whole script on the CPU stand-in (about 3 minutes here): every step but the
    benchmarks' TRL side, each step's log and status in the folder."""
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_STAND_IN": "1", "USE_HUB_KERNELS": "0",
           "PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(out)], env=env,
                            capture_output=True, text=True, timeout=1800)
    rows = dict(line.split("\t")[:2] for line in
                (out / "summary.tsv").read_text().splitlines()[1:])
    assert set(rows) == {"probe", "tests", "runs", "bench_ppo", "bench_grpo", "bench_dpo",
                         "plan", "compare"}
    for step in ("probe", "tests", "runs", "bench_ppo", "bench_grpo", "bench_dpo", "plan"):
        assert rows[step] == "0", (step, (out / f"{step}.log").read_text()[-2000:])
    assert (out / "plan_vs_peak.tsv").is_file() and (out / "probe.json").is_file()
    assert f"everything is in {out}" in result.stdout
