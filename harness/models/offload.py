"""Offloading frozen models: π_ref and r̂ live on the CPU and visit the run's device per call.

A suite's ``policy: {offload_frozen: true}`` wraps a run's frozen π_ref (its own copy; a LoRA
policy's π_ref is the policy itself and holds nothing to offload) and its r̂ so that their weights
stay in host memory: each forward (``logits``, ``sample``, scoring) copies the weights to the
run's device, runs the model there, and drops the device copy (the host weights are frozen, so
nothing is copied back). The device then holds them only while they compute — the score phase
of an online step, DPO's reference log-probs — at the price of one copy of their weights across
the host link per call, which :class:`Offloaded` counts (``bytes_moved``, ``seconds``; in the
run's summary under ``memory_plan.offload``). The frozen copies are built in host memory
(:func:`harness.engine.runner.build_context`): they never sit on the device beside the policy. On a
CPU run the switch does nothing: the models are on the CPU already.

The gold reward is the task's business: the ``classifier`` gold reward runs on its own
``device`` (``gold_reward_params.device``, the CPU unless set).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from harness.policy import Policy, PromptBatch, ResponseBatch
from harness.reward import RewardModel

__all__ = ["Offloaded", "OffloadedPolicy", "OffloadedReward", "offload_totals"]


class Offloaded:
    """A frozen module kept on the CPU and moved to ``device`` for the duration of a call."""

    def __init__(self, module: nn.Module, device: torch.device | str) -> None:
        self.module = module.to("cpu")  # a no-op for a module built in host memory
        self.device = torch.device(device)
        self.bytes_moved = 0
        """Bytes copied between host and device so far (both directions)."""
        self.seconds = 0.0
        """Wall seconds spent copying so far."""
        self._size = sum(t.numel() * t.element_size()
                         for t in [*module.parameters(), *module.buffers()])

    @contextlib.contextmanager
    def on_device(self) -> Iterator[nn.Module]:
        """The module on the device for the block, back on the CPU after it."""
        if self.device.type == "cpu":
            yield self.module
            return
        start = time.perf_counter()
        tensors = [*self.module.parameters(), *self.module.buffers()]
        host = [t.data for t in tensors]
        try:
            for t in tensors:
                t.data = t.data.to(self.device)
            self.seconds += time.perf_counter() - start
            self.bytes_moved += self._size
            yield self.module
        finally:
            for t, data in zip(tensors, host, strict=True):  # the frozen host weights, unchanged
                t.data = data


class OffloadedPolicy(Policy):
    """A frozen policy (π_ref) kept on the CPU; see the module docstring. It holds no
    parameters of its own (the wrapped policy is not a submodule: moving or freezing the wrapper
    touches nothing)."""

    def __init__(self, policy: Policy, device: torch.device | str) -> None:
        super().__init__()
        object.__setattr__(self, "offload", Offloaded(policy, device))
        self.vocab_size, self.pad_id, self.eos_id = policy.vocab_size, policy.pad_id, policy.eos_id
        self.has_logprobs = policy.has_logprobs

    @property
    def compute_module(self) -> nn.Module:
        """The wrapped policy (for FLOP counts)."""
        return self.offload.module

    @property
    def device(self) -> torch.device:
        return self.offload.device

    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        with self.offload.on_device() as policy:
            return policy.logits(prompts, responses)

    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        with self.offload.on_device() as policy:
            return policy.sample(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                 generator=generator)

    def frozen_copy(self) -> Policy:
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped policy's weights, on the CPU."""
        return self.offload.module.state_dict(*args, **kwargs)


class OffloadedReward(RewardModel):
    """A frozen reward model (r̂) kept on the CPU; see the module docstring."""

    def __init__(self, model: RewardModel, device: torch.device | str) -> None:
        super().__init__()
        object.__setattr__(self, "offload", Offloaded(model, device))

    @property
    def compute_module(self) -> nn.Module:
        return self.offload.module

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        with self.offload.on_device() as model:
            return model(prompts, responses)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's weights (e.g. for PPO's ``value_init: reward``), on the CPU."""
        return self.offload.module.state_dict(*args, **kwargs)


def offload_totals(*models: Any) -> dict[str, float]:
    """``bytes_moved`` and ``seconds`` summed over the offloaded ones among ``models``."""
    found = [m.offload for m in models if isinstance(getattr(m, "offload", None), Offloaded)]
    return {"bytes_moved": float(sum(o.bytes_moved for o in found)),
            "seconds": sum(o.seconds for o in found)}
