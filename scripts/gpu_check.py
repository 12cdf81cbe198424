"""The Python steps of ``scripts/gpu-check.sh`` (see that script): ``probe``, ``runs``, ``compare``.

``--stand-in`` runs each step on the CPU stand-in of a GPU (:mod:`harness.models.device_trace`): the
same code paths, the device's memory counted by the tracer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ALGORITHM_CONFIGS = {
    "ppo": {"rollout_batch_size": 16, "num_ppo_epochs": 1},
    "grpo": {"prompts_per_step": 4, "num_generations": 4},
    "rloo": {"prompts_per_step": 4, "k": 4},
    "gspo": {"prompts_per_step": 4, "num_generations": 4},
    "reinforce-pp": {"prompts_per_step": 8},
    "online-dpo": {"prompts_per_step": 8},
    "bon": {},
}
"""Small batches for the runs of every algorithm (offline algorithms: batch_size 8)."""


def _device(stand_in: bool) -> contextlib.AbstractContextManager[Any]:
    if stand_in:
        from harness.models.device_trace import stand_in_device

        return stand_in_device()
    return contextlib.nullcontext()


class _NoNetwork:
    """Every outgoing connection refused (and counted) for the block."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __enter__(self) -> _NoNetwork:
        self._connect = socket.socket.connect
        attempts = self.attempts

        def refused(sock: socket.socket, address: Any) -> None:
            attempts.append(repr(address))
            raise OSError(f"gpu-check: no network (connection to {address!r} refused)")

        socket.socket.connect = refused  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        socket.socket.connect = self._connect  # type: ignore[method-assign]


def probe(out: Path, stand_in: bool) -> int:
    """No kernel and no weight fetched: a tiny-lm model loaded, moved to the device and switched
    between train and eval (transformers fetches Hub kernels at a mode switch when they are on)
    with every connection refused; then no kernel mapping is active on it."""
    import torch

    from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

    report: dict[str, Any] = {"torch": torch.__version__, "stand_in": stand_in,
                              "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available() and not stand_in:
        report["device"] = torch.cuda.get_device_name()
    problems: list[str] = []
    with _NoNetwork() as net, _device(stand_in):
        params = TinyLMParams(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                              corpus_size=400, pretrain_steps=2)
        task = TinyLMTask(params, seed=0, device="cuda")
        policy = task.reference_policy()
        try:
            policy.train()
            policy.eval()
            policy.train()
        except Exception as exc:
            problems.append(f"a mode switch raised {type(exc).__name__}: {exc}")
        for name, model in (("task model", task.model), ("policy", policy.model)):
            if getattr(model, "use_kernels", False) or getattr(model, "_kernels_mode", None):
                problems.append(f"{name}: Hub kernels are on (use_kernels / kernels mode set)")
    if net.attempts:
        problems.append(f"{len(net.attempts)} connection(s) attempted: {net.attempts[:3]}")
    report["problems"] = problems
    (out / "probe.json").write_text(json.dumps(report, indent=2))
    print("probe:", "ok" if not problems else "; ".join(problems))
    return 1 if problems else 0


def suite_text(stand_in: bool) -> str:
    """One run of each algorithm on a small tiny-lm in bf16 on the device."""
    from harness.engine.plugins import get_plugin_host

    host = get_plugin_host()
    lines = []
    for name in host.names("algorithm"):
        cls = host.algorithm(name)
        config = dict(ALGORITHM_CONFIGS.get(name, {}))
        if {"preferences", "unpaired"} & cls.needs:
            config["batch_size"] = 8
        if name != "bon":
            config["learning_rate"] = 0.0003
        lines.append(f"  - name: {name}\n    config: {json.dumps(config)}")
    head = textwrap.dedent("""\
        name: gpu-check
        tasks:
          - name: tiny-lm
            params: {hidden_size: WIDTH, num_layers: 2, num_heads: 4, intermediate_size: MLP,
                     corpus_size: 1000, pretrain_steps: PRETRAIN, num_train_prompts: 64,
                     num_eval_prompts: 16, max_new_tokens: 8}
        preferences: {num_pairs: 64}
        algorithms:
        """).replace("PRETRAIN", "2" if stand_in else "200").replace(
            "WIDTH", "32" if stand_in else "64").replace("MLP", "128" if stand_in else "256")
    return head + "\n".join(lines) + textwrap.dedent("""
        seeds: [0]
        budget: {steps: 2}
        evaluation: {every: 2, samples_per_prompt: 1}
        device: cuda
        precision: bf16
        """)


def runs(out: Path, stand_in: bool) -> int:
    """Every algorithm once (``suite_text``), each run's device memory recorded: on a GPU a
    ``torch.cuda.memory`` history per run (``memory/<run>.pickle``, for pytorch.org/memory_viz),
    on the stand-in its placement checks and counters."""
    import torch

    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import run_one
    from harness.engine.store import RunStore
    from harness.suite import check_suite, load_suite

    path = out / "gpu-check.yaml"
    path.write_text(suite_text(stand_in))
    root = out / "runs"
    failed = 0
    record_history = torch.cuda.is_available() and not stand_in
    (out / "memory").mkdir(exist_ok=True)
    with _NoNetwork() as net, _device(stand_in):
        specs = check_suite(load_suite(path), path, get_plugin_host())
        for spec in specs:
            if record_history:
                torch.cuda.memory._record_memory_history(max_entries=200_000)
            start = time.perf_counter()
            status = run_one(spec.as_dict(), str(root))
            if record_history:
                torch.cuda.memory._dump_snapshot(str(out / "memory" / f"{spec.run_id}.pickle"))
                torch.cuda.memory._record_memory_history(enabled=None)
            print(f"run {spec.label}: {status} ({time.perf_counter() - start:.1f} s)", flush=True)
            failed += status != "done"
    for record in RunStore(root, "gpu-check").records():
        if record.status.get("state") not in (None, "done") and record.status.get("reason"):
            print(f"  {record.run_id}: {record.status.get('reason')}")
    if net.attempts:
        print(f"runs: {len(net.attempts)} connection(s) attempted: {net.attempts[:3]}")
        failed += 1
    return 1 if failed else 0


def compare(out: Path) -> int:
    """The plan's phases beside each run's measured peaks (``plan_vs_peak.tsv``); exit 1 when a
    run's plan is off by more than 15% or below its peak by more than its headroom."""
    from harness.engine.store import RunStore

    rows = ["run\tphase\tplanned_bytes\tmeasured_bytes\tratio"]
    bad = 0
    fit: tuple[int, int, str] | None = None  # r̂ is fitted by the instance's first run only
    for record in RunStore(out / "runs", "gpu-check").records():
        memory = (record.summary or {}).get("memory_plan") or {}
        planned = (memory.get("planned") or {}).get("phases") or {}
        if not planned or "peak_device_bytes" not in memory:
            rows.append(f"{record.run_id}\t-\t-\t-\tno plan or no peak")
            continue
        pairs = [("run", max(v for k, v in planned.items() if k != "prepare"),
                  memory["peak_device_bytes"])]
        if "prepare" in planned and memory.get("peak_prepare_bytes"):
            if fit is None or memory["peak_prepare_bytes"] > fit[1]:
                fit = (planned["prepare"], memory["peak_prepare_bytes"], record.run_id)
        for phase, plan, peak in pairs:
            ratio = plan / peak if peak else float("inf")
            rows.append(f"{record.run_id}\t{phase}\t{plan}\t{peak}\t{ratio:.3f}")
            bad += not 0.85 <= ratio <= 1.15
    if fit is not None:
        ratio = fit[0] / fit[1]
        rows.append(f"{fit[2]}\tprepare (r̂'s fit)\t{fit[0]}\t{fit[1]}\t{ratio:.3f}")
        bad += not 0.85 <= ratio <= 1.15
    (out / "plan_vs_peak.tsv").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"compare: {bad} phase(s) outside ±15%")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=["probe", "runs", "compare"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--stand-in", action="store_true",
                        help="run on the CPU stand-in of a GPU (harness/models/device_trace.py)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RLHF_HARNESS_WANDB", "0")
    if args.step == "probe":
        return probe(args.out, args.stand_in)
    if args.step == "runs":
        return runs(args.out, args.stand_in)
    return compare(args.out)


if __name__ == "__main__":
    sys.exit(main())
