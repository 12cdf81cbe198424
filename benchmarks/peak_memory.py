"""Peak memory of each side of a benchmark, measured in a fresh child process per side.

**Memory.** Peak memory is measured in a fresh child process per side (the same script with
``--child ours|trl``); each side holds on the device only the models its algorithm keeps (the
base model both are copied from stays on the host): on the CPU the peak RSS (``VmHWM``, reset at
the baseline) minus the RSS after the imports of *both* sides, the tokenizer, the base model and
the data are in place (the same for both sides), with glibc returning large frees to the OS
(:func:`child_env`); on CUDA ``torch.cuda.max_memory_allocated``. Measuring both in the timing
process would mix the two.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def baseline_mb() -> float:
    """The RSS now, and the peak-RSS mark reset to it (Linux: ``clear_refs``), so that the
    peak read later is the peak since this point."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mb()


def peak_rss_mb() -> float:
    """The process's peak RSS: ``VmHWM`` (this process's own address space; ``ru_maxrss`` is
    not, as it carries the parent's peak across fork and exec)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_report(device: torch.device, baseline_mb: float) -> None:
    """Print this child's peak memory (see the module docstring) as the last line of stdout."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        kind = "cuda_max_allocated"
    else:
        peak = peak_rss_mb() - baseline_mb
        kind = "cpu_peak_rss_above_baseline"
    print(json.dumps({"peak_mb": peak, "kind": kind}), flush=True)


def child_env() -> dict[str, str]:
    """The children's environment: glibc returns every free of 64 KiB or more to the OS.

    By default glibc raises its mmap threshold as large blocks are freed, after which big
    tensors live in the heap and freed ones stay in the RSS: the peak RSS would then depend on
    each side's allocation history more than on what it holds. With a fixed threshold the RSS
    tracks the live memory, for both sides alike.
    """
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_",
                                                                    "65536")}


def measure_memory(script: str, argv: list[str], sides: list[str]) -> dict[str, float]:
    """Run ``script --child SIDE`` for each side in a fresh process; their peak MiB."""
    out: dict[str, float] = {}
    clean = []
    skip = False
    for a in argv:  # drop options that only concern the parent
        if skip:
            skip = False
            continue
        if a in ("--json", "--child", "--only", "--rounds"):
            skip = True
            continue
        if a.startswith(("--json=", "--child=", "--only=", "--rounds=")) or a == "--no-memory":
            continue
        clean.append(a)
    for side in sides:
        print(f"  measuring peak memory of {side} in a child process", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, script, *clean, "--child", side],
            capture_output=True, text=True, check=False, env=child_env(),
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"memory child for {side} failed")
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
    return out
