"""What offloading a frozen model costs per call, measured on the CPU.

Builds suites/gpu.yaml's 34M-parameter Llama (8 layers of width 512, random weights) as π_ref and
times, under the CPU stand-in device (:func:`harness.models.device_trace.stand_in_device`: moving to
"cuda" is a copy in host memory), the round trip of :class:`harness.models.offload.Offloaded` around
one teacher-forced forward of 64 responses of 24 tokens, against that forward alone and against
two plain copies of the weights in host memory; and counts
the bytes a round trip moves, which on a GPU the host link's bandwidth turns into time::

    .venv/bin/python benchmarks/offload_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.models.device_trace import STAND_IN, stand_in_device
from harness.models.lm import LMPolicy, build_causal_lm
from harness.models.offload import OffloadedPolicy
from harness.policy import PromptBatch, ResponseBatch

REPEATS = 3


def main() -> None:
    torch.set_num_threads(1)
    model = build_causal_lm("llama", 4096, hidden=512, layers=8, heads=8, intermediate=2048,
                            max_positions=64, seed=0)
    policy = LMPolicy(model, pad_id=0, eos_id=None).eval()
    g = torch.Generator().manual_seed(0)
    prompts = PromptBatch(index=torch.arange(64), ids=torch.randint(1, 4096, (64, 8), generator=g),
                          mask=torch.ones(64, 8, dtype=torch.bool))
    responses = ResponseBatch(tokens=torch.randint(1, 4096, (64, 24), generator=g),
                              mask=torch.ones(64, 24, dtype=torch.bool))
    with stand_in_device(), torch.no_grad():
        ref = OffloadedPolicy(policy, STAND_IN)
        p, r = prompts.to(STAND_IN), responses.to(STAND_IN)
        resident = ref.offload.module.to(STAND_IN)  # the same forward without the round trip
        forward = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            resident.logits(p, r)
            forward.append(time.perf_counter() - start)
        resident.to("cpu")
        ref.logits(p, r)  # warm up
        ref.offload.seconds, ref.offload.bytes_moved = 0.0, 0
        for _ in range(REPEATS):
            ref.logits(p, r)
    tensors = [*policy.parameters(), *policy.buffers()]
    copies = []
    for _ in range(REPEATS):  # the same bytes copied twice in host memory, without the tracer
        start = time.perf_counter()
        for t in tensors:
            t.clone().clone()
        copies.append(time.perf_counter() - start)
    moved = ref.offload.bytes_moved / REPEATS
    print(f"π_ref: {moved / 2 / 2**20:.1f} MiB of weights; a call moves {moved / 2**20:.1f} MiB")
    print(f"forward alone: {min(forward) * 1e3:.0f} ms; round trip of the weights (host copies): "
          f"{ref.offload.seconds / REPEATS * 1e3:.0f} ms per call under the stand-in's tracer, "
          f"{min(copies) * 1e3:.0f} ms as two plain host copies")
    print(f"on a GPU at 25 GB/s (PCIe 4 x16, pinned): ~{moved / 25e9 * 1e3:.0f} ms per call")


if __name__ == "__main__":
    main()
