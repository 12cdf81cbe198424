"""Model FLOP utilisation (MFU) of a benchmark's timed steps.

**MFU** (meant for ``--device cuda --dtype bf16 --size 100m``; printed everywhere): achieved
model FLOP/s over the device's measured dense matmul rate at the run's dtype (a timed 8192³
matmul on a GPU, 2048³ on a CPU), ``mfu``; and, for bf16 on a GPU whose name is in
:data:`SPECIFIED_BF16_DENSE_TFLOPS`, over the card's specified dense bf16 peak,
``mfu_specified_peak`` (the figure papers quote; the measured rate is what the card reaches on a
large matmul, usually 60–80% of it). Model FLOPs (:func:`model_flops`) are the work the algorithm
needs, the same for both sides whatever each implementation does beyond it or saves: 2 per
weight per token for a forward and 6 with its backward, the transformer blocks' weights on
every prompt and completion token of every row, the LM head's only where a log-prob or a
sample is needed (completion tokens), none for embedding look-ups; attention scores are left
out (under 3% at these lengths).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from common import DTYPES, NEW_TOKENS, PROMPT_LEN, cpu_model, sync, total_params
from torch import nn

SPECIFIED_BF16_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100 NVL", 835.5),
    (r"H100 PCIe", 756.5),
    (r"H100", 989.5),  # SXM5 (its name: "NVIDIA H100 80GB HBM3")
    (r"H200 NVL", 835.5),
    (r"H200", 989.5),  # SXM
    (r"A100", 312.0),
    (r"L40S", 362.05),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)
"""Specified dense bf16 tensor-core peaks (TFLOP/s, half the vendors' with-sparsity figures) by
a pattern of ``torch.cuda.get_device_name()``, first match wins; other cards: measured MFU only."""


def specified_peak_tflops(device_name: str) -> float | None:
    """The card's specified dense bf16 peak (:data:`SPECIFIED_BF16_DENSE_TFLOPS`), or None."""
    import re

    for pattern, tflops in SPECIFIED_BF16_DENSE_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return tflops
    return None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float:
    """The device's measured dense matmul rate (FLOP/s) at ``dtype``: a timed n×n×n matmul."""
    if device.type == "cpu":
        n = min(n, 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def model_flops(
    model: nn.Module,
    *,
    rows: int,
    prompt: int = PROMPT_LEN,
    completion: int = NEW_TOKENS,
    generate: int = 0,
    lm_forward: int = 0,
    lm_train: int = 0,
    scalar_forward: int = 0,
    scalar_train: int = 0,
) -> float:
    """Model FLOPs of a step (see the module docstring): ``rows`` sequences of ``prompt`` +
    ``completion`` tokens through that many passes of each kind. ``generate``: sampling the
    completions (the blocks read the prompt and the first ``completion − 1`` sampled tokens, the
    LM head gives ``completion`` distributions); ``lm_forward``/``lm_train``: log-probs of the
    completion tokens, without/with the backward; ``scalar_*``: a reward model or critic (the
    blocks plus a one-output head, negligible)."""
    head = model.get_output_embeddings().weight
    skip = {id(head), id(model.get_input_embeddings().weight)}
    blocks = sum(p.numel() for p in model.parameters() if id(p) not in skip and p.dim() > 1)
    tokens = prompt + completion
    lm = 2 * (blocks * tokens + head.numel() * completion) * rows
    scalar = 2 * blocks * tokens * rows
    gen = 2 * (blocks * (tokens - 1) + head.numel() * completion) * rows
    return float(generate * gen + lm_forward * lm + 3 * lm_train * lm
                 + scalar_forward * scalar + 3 * scalar_train * scalar)


def add_mfu(
    extra: dict[str, Any],
    times: dict[str, list[float]],
    model: nn.Module,
    args: argparse.Namespace,
    device: torch.device,
    flops: float,
) -> None:
    """Achieved model FLOP/s of each side and its MFU (see the module docstring); ``flops``
    is the step's model FLOPs (:func:`model_flops`)."""
    n = total_params(model)
    peak = matmul_flops_per_second(device, DTYPES[args.dtype])
    extra["params"] = n
    extra["model_tflop_per_step"] = round(flops / 1e12, 4)
    extra["matmul_tflops_measured"] = round(peak / 1e12, 3)
    achieved = {k: flops / statistics.median(v) for k, v in times.items()}
    extra["achieved_tflops"] = {k: round(v / 1e12, 4) for k, v in achieved.items()}
    extra["mfu"] = {k: round(v / peak, 4) for k, v in achieved.items()}
    extra["device_name"] = device_name(device)
    specified = (specified_peak_tflops(extra["device_name"])
                 if device.type == "cuda" and args.dtype == "bf16" else None)
    if specified is not None:
        extra["specified_peak_tflops"] = specified
        extra["mfu_specified_peak"] = {k: round(v / (specified * 1e12), 4)
                                       for k, v in achieved.items()}
