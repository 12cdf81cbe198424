"""Compute accounting: where a run's time, tokens and FLOPs go.

Algorithms wrap their phases in ``meter.phase("generate" | "score" | "train" | "eval")`` and
report the tokens each model processed; the runner reads the totals after every step. Wall time
on a GPU is measured after synchronising the device, so a phase is charged for its own kernels.

**FLOPs** follow the standard estimate for dense transformers (Kaplan et al. 2020, "Scaling Laws
for Neural Language Models", §2.1): a forward pass costs 2·N FLOPs per token and a forward plus
backward pass 6·N, where N is the number of parameters of the model involved, embeddings
excluded. Tabular models count their parameters the same way, which overstates them (a table
lookup reads one row), but keeps one formula for all tasks. Attention's quadratic term is left
out: at the sequence lengths of these tasks it is a few percent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

PHASES = ("generate", "score", "train", "eval")


def flop_parameters(model: nn.Module) -> int:
    """N for the FLOP estimate: parameters outside embedding tables (all, for tabular models)."""
    total = 0
    embedded = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embedded += module.weight.numel()
    for p in model.parameters():
        total += p.numel()
    return total - embedded if embedded < total else total


@dataclass
class ComputeMeter:
    """Accumulates wall time per phase, token counts and estimated FLOPs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """The device whose work is timed (a CUDA device is synchronised around each phase)."""
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    """Wall seconds per phase: generate, score, train, eval."""
    samples: int = 0
    """Prompt-response pairs consumed (generated for online methods, read for offline ones)."""
    tokens_generated: int = 0
    """Response tokens sampled (:meth:`generated`)."""
    tokens_trained: int = 0
    """Response tokens that went through a backward pass (counted once per pass)."""
    flops: float = 0.0
    """Estimated FLOPs of every pass counted (2N per token forward, 6N forward-backward)."""
    _n_params: dict[int, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the wall time of the block to phase ``name``."""
        if name not in self.seconds:
            raise ValueError(f"unknown compute phase '{name}' (phases: {', '.join(PHASES)})")
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def forward(self, model: nn.Module, tokens: int) -> None:
        """``model`` ran a forward pass over ``tokens`` tokens: 2·N·tokens FLOPs."""
        self.flops += 2.0 * self._params(model) * tokens

    def train(self, model: nn.Module, tokens: int, *, count_tokens: bool = True) -> None:
        """``model`` ran forward and backward over ``tokens`` tokens: 6·N·tokens FLOPs.

        ``tokens_trained`` counts response tokens through a backward pass once per pass; when a
        second model (e.g. a critic) trains on the same tokens, pass ``count_tokens=False``.
        """
        self.flops += 6.0 * self._params(model) * tokens
        if count_tokens:
            self.tokens_trained += tokens

    def generated(self, model: nn.Module, samples: int, tokens: int) -> None:
        """``model`` generated ``samples`` responses, ``tokens`` tokens in all (2·N per token)."""
        self.samples += samples
        self.tokens_generated += tokens
        self.flops += 2.0 * self._params(model) * tokens

    @property
    def wall_seconds(self) -> float:
        """The seconds of every phase together."""
        return sum(self.seconds.values())

    def _params(self, model: nn.Module) -> int:
        key = id(model)
        if key not in self._n_params:
            self._n_params[key] = flop_parameters(model)
        return self._n_params[key]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
