"""LoRA through PEFT, activation checkpointing, and π_ref as the base with its adapters off.

A suite's ``policy`` section switches them on for neural policies (``tiny-lm``, ``hf``)::

    policy:
      lora: {r: 16, alpha: 32, target_modules: [q_proj, v_proj]}
      activation_checkpointing: true

**LoRA** (Hu et al. 2021, arXiv:2106.09685) is injected with ``peft`` (the library TRL uses)
into the policy's causal LM: the base weights are frozen and only the adapters train, so
gradients and Adam state exist for the adapters alone. π_ref is then *the same model with its
adapters disabled* (:class:`AdapterOffReference`, as TRL does for a PEFT model): no second copy
of the weights. Every algorithm sees the usual :class:`~harness.algorithm.RunContext`; one that
builds on ``policy.parameters()`` with ``requires_grad`` (every shipped plugin) trains the
adapters unchanged. An algorithm that cannot run with LoRA sets
:attr:`~harness.algorithm.Algorithm.supports_lora` to False and such a run is refused.

What may share the frozen base:

- π_ref always does (above).
- r̂ does not: it is fitted once per task instance, full-weight, and shared by every algorithm of
  the comparison (with or without LoRA), so that they are scored alike.
- A critic (PPO's) does not in this version: it is a trainable copy of π_ref's backbone with a
  scalar head, as without LoRA. GRPO, RLOO, DPO, IPO and best-of-n have no critic.

**Activation checkpointing** recomputes each transformer block's activations in the backward
pass instead of keeping them (``gradient_checkpointing_enable`` of ``transformers``, non-reentrant
so that a frozen embedding with LoRA still gets gradients through). Under it the policy runs its
forwards without the shared-prompt KV cache (``harness.models.lm``'s fallback: one forward over
every row), which gives the same log-probs and gradients.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError
from harness.policy import Policy, PromptBatch, ResponseBatch

__all__ = [
    "AdapterOffReference",
    "apply_lora",
    "enable_activation_checkpointing",
    "has_lora",
    "linear_module_names",
]


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of a model's linear layers (what ``target_modules`` may name),
    the output head excepted."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        # GPT-2 builds its projections from transformers' Conv1D, which peft also adapts.
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names[name.rsplit(".", 1)[-1]] = None
    return list(names)


def adapted_width(model: nn.Module, targets: list[str] | None) -> int | None:
    """The smallest input or output width among the linear layers LoRA would adapt (``targets``
    by last name; None: all but the output head); None when there is none. A rank above it
    adds parameters and no expressiveness: ``BA`` of a d×k layer has rank at most min(d, k)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    widths = []
    for name, module in model.named_modules():
        if module is head or not name or (targets is not None
                                          and name.rsplit(".", 1)[-1] not in targets):
            continue
        if isinstance(module, nn.Linear):
            widths += [module.in_features, module.out_features]
        elif type(module).__name__ == "Conv1D":
            widths += [int(d) for d in module.weight.shape]
    return min(widths) if widths else None


def has_lora(policy: nn.Module) -> bool:
    """Whether ``policy`` (an :class:`~harness.models.lm.LMPolicy`) carries LoRA adapters."""
    return getattr(policy, "_peft_model", None) is not None


def apply_lora(policy: Any, lora: dict[str, Any], *, seed: int = 0) -> Any:
    """Inject LoRA adapters into ``policy.model`` (in place) and freeze its base weights.

    :param policy: an :class:`~harness.models.lm.LMPolicy`.
    :param lora: ``{"r", "alpha", "dropout", "target_modules"}`` as in a suite; target modules
        None: every linear layer but the output head (peft's ``"all-linear"``).
    :param seed: seeds the adapters' initialisation (A random, B zero, as peft initialises
        them), inside a forked RNG: the global generators are left as they were.
    :raises ConfigError: one line naming ``policy.lora.target_modules`` when a target matches
        no module of the model, or ``policy.lora.r`` when the rank exceeds the narrowest
        adapted layer (:func:`adapted_width`).
    """
    from peft import LoraConfig, get_peft_model

    from harness.models.lm import LMPolicy

    if not isinstance(policy, LMPolicy):
        raise ConfigError(
            f"policy.lora: LoRA applies to language-model policies, not to "
            f"{type(policy).__name__}"
        )
    model = policy.model
    available = linear_module_names(model)
    targets = lora.get("target_modules")
    if targets is not None:
        missing = [t for t in targets if t not in available]
        if missing:
            raise ConfigError(
                f"policy.lora.target_modules: {', '.join(repr(t) for t in missing)} matches no "
                f"module of {type(model).__name__}; its linear layers: {', '.join(available)}"
            )
    rank = int(lora.get("r", 8))
    width = adapted_width(model, list(targets) if targets is not None else None)
    if width is not None and rank > width:  # refused before peft allocates the adapters
        raise ConfigError(
            f"policy.lora.r: {rank} is above {width}, the narrowest adapted layer of "
            f"{type(model).__name__}; an adapter's rank is at most its layer's width"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=float(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=list(targets) if targets is not None else "all-linear",
        bias="none",
        # GPT-2's projections are transformers' Conv1D, whose weight is stored transposed.
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in model.modules()),
    )
    was_training = model.training
    with warnings.catch_warnings():  # peft reads transformers' deprecated checkpointing flag
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated",
                                FutureWarning)
        device = next(model.parameters()).device
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            peft_model = get_peft_model(model, config)
    # The policy keeps the transformers model (now holding LoRA layers) as its submodule, so
    # its forwards, cache and state-dict names stay those of a causal LM; the PEFT wrapper is
    # kept beside it, not registered, for switching the adapters off.
    object.__setattr__(policy, "_peft_model", peft_model)
    policy.model.train(was_training)
    return policy


class AdapterOffReference(Policy):
    """π_ref of a LoRA policy: the policy's own model with its adapters disabled.

    It holds no weights of its own (its ``parameters()`` are empty, so freezing it or moving it
    touches nothing); every forward switches the policy's adapters off and the model to eval
    mode for the call, then restores both. The results are the base model's, bit for bit.
    """

    def __init__(self, policy: Any) -> None:
        super().__init__()
        if not has_lora(policy):
            raise ValueError("AdapterOffReference needs a policy with LoRA adapters")
        object.__setattr__(self, "_policy", policy)  # not a submodule: no weights of its own
        self.vocab_size = policy.vocab_size
        self.pad_id = policy.pad_id
        self.eos_id = policy.eos_id

    @property
    def compute_module(self) -> nn.Module:
        """The module whose weights a forward runs (for FLOP counts): the policy's model."""
        return self._policy.model

    @property
    def device(self) -> torch.device:
        return self._policy.device

    @contextlib.contextmanager
    def _base(self) -> Iterator[None]:
        policy = self._policy
        was_training = policy.training
        policy.eval()
        try:
            with policy._peft_model.disable_adapter():
                yield
        finally:
            policy.train(was_training)

    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        with self._base():
            return self._policy.logits(prompts, responses)

    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        with self._base():
            return self._policy.sample(
                prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                generator=generator,
            )

    def frozen_copy(self) -> Policy:
        """Itself: it is frozen already, and a copy would copy the policy's weights."""
        return self


def enable_activation_checkpointing(policy: Any) -> None:
    """Turn on activation checkpointing in ``policy.model`` (non-reentrant)."""
    from harness.models.lm import LMPolicy

    if not isinstance(policy, LMPolicy):
        raise ConfigError(
            f"policy.activation_checkpointing: applies to language-model policies, not to "
            f"{type(policy).__name__}"
        )
    model = policy.model
    # transformers 5 renamed gradient_checkpointing_enable(gradient_checkpointing_kwargs=...).
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None and "activation_checkpointing_kwargs" in str(_signature(enable)):
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None or not getattr(model, "supports_gradient_checkpointing", True):
        raise ConfigError(
            f"policy.activation_checkpointing: {type(model).__name__} does not support it"
        )
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _signature(fn: Any) -> Any:
    import inspect

    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return ""
