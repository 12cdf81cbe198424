"""REINFORCE with a moving-average baseline and a KL penalty, as an rlhf-harness plugin.

REINFORCE (Williams 1992) follows the score-function gradient of the expected reward. Here the
reward of a response is RLHF's KL-shaped reward (Ziegler et al. 2019, arXiv:1909.08593):

    R(x, y) = r̂(x, y) − β · (log π_θ(y|x) − log π_ref(y|x)),

whose expectation under π_θ is the objective J_β(π_θ) = E[r̂] − β · KL(π_θ ‖ π_ref). One step
draws B prompts (in shuffled passes over the train prompts), samples one response to each from
π_θ, and takes one Adam step on

    L(θ) = −1/B · Σ_i (R_i − b) · log π_θ(y_i | x_i),

where b is a moving average of the mean shaped reward of the previous steps (a "reinforcement
comparison" baseline). b does not depend on the step's samples and E_π[∇ log π_θ] = 0, so b
leaves the gradient unbiased and lowers its variance; as E_π[∇ log(π_θ/π_ref)] = 0 too, −∇L is
an unbiased estimate of ∇J_β, whose maximiser is π*_β ∝ π_ref · exp(r̂/β).

Metrics: the shared ``loss``, ``grad_norm`` (before clipping), ``kl_ref`` (mean over the batch of
log π_θ(y|x) − log π_ref(y|x), the k1 estimate of KL(π_θ ‖ π_ref) per sequence), ``entropy``
(mean per-token entropy of π_θ on its samples), ``response_length`` and ``reward`` (mean r̂);
and this algorithm's own ``shaped_reward`` (mean R), ``baseline`` (the b of this step) and
``advantage_std`` (the standard deviation of R − b over the batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness import hookimpl, rl
from harness.algorithm import RunContext
from harness.hookspecs import Register
from harness.pieces import OnlineAlgorithm, log_uniform, need, standard_space


@dataclass
class Config:
    """REINFORCE hyperparameters (every field is documented, every field has a default)."""

    learning_rate: float = 1e-5
    """Adam step size, for a large pretrained language model. The built-in tasks want far larger
    steps (a table of logits 0.1, the tiny LM about 1e-3): see ``Reinforce.suggested``."""
    batch_size: int = 64
    """Prompts per step, in shuffled passes over the train prompts; one response for each."""
    kl_coef: float = 0.05
    """β, the weight of the KL penalty in the shaped reward (the ppo plugin's default)."""
    baseline_decay: float = 0.9
    """α of the baseline's update b ← α · b + (1 − α) · mean(R), after each step; b starts at 0.
    0 makes b the previous step's mean shaped reward."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this; None: no clipping (the norm is still reported)."""

    def __post_init__(self) -> None:
        # Checks of values belong here: `rlhf-harness validate` reports them with their line.
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        need(self.kl_coef >= 0, f"kl_coef must be ≥ 0, got {self.kl_coef}")
        need(0.0 <= self.baseline_decay < 1.0,
             f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        need(self.max_grad_norm is None or self.max_grad_norm > 0,
             f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


class Reinforce(OnlineAlgorithm):
    """REINFORCE with a moving-average baseline: one batch of fresh samples per step."""

    name = "reinforce"
    Config = Config
    needs = frozenset({"reward"})  # online: it samples from π_θ and scores with r̂
    suggested: ClassVar[dict[str, dict[str, Any]]] = {"tabular": {"learning_rate": 0.1}}
    """Settings that learn on a table of logits (the bandit); `rlhf-harness show reinforce`
    prints them with every Config field."""
    metrics: ClassVar[dict[str, str]] = {
        "shaped_reward": "mean R = r̂ − β (log π_θ − log π_ref) over the batch",
        "baseline": "the moving-average baseline b used by this step",
        "advantage_std": "standard deviation of R − b over the batch",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The harness's learning-rate range for ``policy_kind`` and β over two decades."""
        return standard_space(policy_kind, kl_coef=log_uniform(0.01, 1.0))

    # OnlineAlgorithm's constructor sets self.reward_model, policy, prompts, max_new_tokens,
    # params, optimizer (Adam: this Config names no other) and the prompt order.
    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.baseline = 0.0

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g = ctx.generator  # the run's only source of randomness: same seed, same run
        prompts = self.prompts.select(self.next_rows(cfg.batch_size))

        # 1. Sample one response per prompt from π_θ.
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(prompts, max_new_tokens=self.max_new_tokens, generator=g)
        mask = responses.mask
        tokens = int(mask.sum())
        meter.generated(self.policy, len(prompts), tokens)

        # 2. Score: r̂(x, y) and log π_ref(y|x), without gradient.
        with meter.phase("score"), torch.no_grad():
            reward = self.reward_model(prompts, responses).float()
            ref_logp = ctx.reference.sequence_logprobs(prompts, responses)
        meter.forward(self.reward_model, tokens)
        meter.forward(ctx.reference, tokens)

        # 3. One gradient step on −mean((R − b) · log π_θ(y|x)).
        with meter.phase("train"):
            token_logp, entropy = self.policy.token_logprobs_and_entropy(prompts, responses)
            logp = token_logp.sum(-1)
            kl = logp.detach() - ref_logp
            shaped = reward - cfg.kl_coef * kl
            advantage = shaped - self.baseline
            loss = -(advantage * logp).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
            self.optimizer.step()
        meter.train(self.policy, tokens)

        baseline = self.baseline
        decay = cfg.baseline_decay
        self.baseline = decay * baseline + (1.0 - decay) * float(shaped.mean())
        assert entropy is not None
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "kl_ref": float(kl.mean()),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(reward.mean()),
            "shaped_reward": float(shaped.mean()),
            "baseline": baseline,
            "advantage_std": float(advantage.std()) if len(advantage) > 1 else 0.0,
        }


@hookimpl
def register_algorithms(register: Register) -> None:
    register(Reinforce.name, Reinforce)
