"""REINFORCE Leave-One-Out (RLOO), Ahmadian et al. 2024, arXiv:2402.14740 ("Back to Basics:
Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs").

RLOO treats a whole response as one action and optimises the KL-regularised reward with plain
REINFORCE: no critic, no clipping, no per-token credit assignment. For each prompt x it samples
k responses y_1 … y_k from the current policy π and scores each with the *sequence-level*
reward, KL penalty included (as in the paper and in TRL's ``RLOOTrainer``):

    R_i = r̂(x, y_i) − β · (log π(y_i|x) − log π_ref(y_i|x)).

Each sample's baseline is the mean reward of the *other* k − 1 samples of its prompt (the
leave-one-out baseline of Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"),
and the policy-gradient estimate is

    ∇J ≈ 1/k Σ_i (R_i − b_i) ∇ log π(y_i|x),      b_i = 1/(k − 1) Σ_{j≠i} R_j,

i.e. the loss minimised here is (:func:`rloo_loss`)

    L(θ) = −mean_i (R_i − b_i) · log π_θ(y_i|x),

with log π_θ(y|x) = Σ_t log π_θ(y_t | x, y_<t) the sequence log-prob and the advantages
A_i = R_i − b_i held constant. The mean runs over all the step's k × ``prompts_per_step``
samples.

**Why its fixed point is π*_β.** b_i depends only on the other samples, which are independent of
y_i, so E[b_i ∇ log π(y_i)] = 0 and the estimate is unbiased for E_π[R ∇ log π]. With the KL in
R, that is ∇J_β(π) for J_β(π) = E_π r̂ − β KL(π‖π_ref): ∇ E_π[r̂ − β log(π/π_ref)] =
E_π[(r̂ − β log(π/π_ref)) ∇ log π] − β E_π[∇ log π], and the last term is 0. So, in
expectation, RLOO ascends J_β itself and its fixed point is the Gibbs policy
π*_β ∝ π_ref · exp(r̂/β) — unlike GRPO's, whose k3 penalty in the loss targets the forward KL
(see plugins/grpo). ``tests/test_rloo.py`` checks it on the bandit's exact optimum.

**Design choices.**

- *One update per batch* (on-policy; the paper's REINFORCE). TRL's trainer also allows μ > 1
  PPO-clipped passes over a batch (``num_iterations``); at its default μ = 1 its per-sequence
  ratio is 1 and its gradient is the one above.
- *Log-probs.* The update's own forward gives log π_θ(y|x): its detached value enters R (so
  π_θold = π_θ exactly and no second forward is needed), its differentiable value the loss. The
  sampler's log-probs are not used (a KV-cached sampling loop may round differently).
- *Temperature.* All log-probs (policy and reference) are those of the logits divided by
  ``temperature``, as TRL computes them: the estimate is then on-policy for the tempered
  sampler and the KL compares tempered distributions. At the default 1.0 they are π_θ and π_ref.
- *β = 0* never evaluates π_ref (:meth:`RLOO.models_resident` is then 2).
- *Randomness* comes only from ``ctx.generator`` (prompt order and sampling): the same seed
  gives bit-identical metrics on the CPU.

Metrics (besides the shared ``loss``, ``grad_norm`` (before clipping), ``kl_ref``, ``entropy``,
``response_length`` and ``reward``):

- ``kl_ref`` — mean over the samples of log π(y|x) − log π_ref(y|x) (the k1 estimate of the
  sequence KL(π‖π_ref), the one in R); absent when β = 0.
- ``reward`` / ``reward_std`` — mean and (unbiased) std of r̂ over the batch.
- ``rlhf_reward`` — mean R (r̂ minus the KL penalty): the objective RLOO ascends.
- ``advantage_mean`` / ``advantage_std`` — of A over the batch (the mean is 0 up to rounding:
  leave-one-out advantages sum to 0 within each prompt's group, unless normalised).
- ``frac_zero_std_groups`` — fraction of groups whose k rewards R are all equal: their
  advantages are 0 and they give no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from harness import hookimpl, rl
from harness.pieces import (
    OnlineAlgorithm,
    log_uniform,
    need,
    standard_space,
    tempered_token_logprobs,
)


@dataclass
class Config:
    """RLOO hyperparameters. Sources: Ahmadian et al. 2024 ("the paper") and TRL's
    ``RLOOConfig`` (``trl.trainer.rloo_config``), as noted per field."""

    k: int = 2
    """Samples per prompt, ≥ 2 (the leave-one-out baseline needs another sample). The paper
    compares k = 2 and k = 4; TRL's ``num_generations`` (formerly ``rloo_k``) defaults to 2."""
    prompts_per_step: int = 16
    """Prompts per step, each sampled k times. A harness default, as the grpo plugin's: the
    paper's and TRL's batch sizes are those of multi-GPU LLM runs."""
    learning_rate: float = 1e-6
    """Optimiser step size (TRL's ``RLOOConfig.learning_rate`` default 1e-6). Far too small for
    a table of logits (tabular tasks): 0.01–0.1 suits those."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser. TRL trains with AdamW at weight decay 0 (transformers' default), i.e. Adam."""
    beta: float = 0.05
    """β, the weight of the sequence-level KL penalty in the reward R (TRL's ``beta``, formerly
    ``kl_coef``: 0.05). 0: no penalty and π_ref is never evaluated."""
    normalize_advantages: bool = False
    """Standardise the advantages over the batch (mean 0, std 1; std + 1e-4 as TRL). TRL's
    ``normalize_advantages`` default False; the paper does not normalise. True breaks the
    exact-gradient property above (the step size then adapts to the reward scale)."""
    temperature: float = 1.0
    """Sampling temperature, > 0 (TRL's default 1.0). Log-probs in R and the loss use the same
    tempered logits (see the module docstring)."""
    max_new_tokens: int | None = None
    """Longest response to sample. None: the task's ``max_new_tokens``."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' ``TrainingArguments`` default, which TRL
    uses: 1.0). None: no clipping (the norm is still reported)."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages A_i = R_i − 1/(k − 1) Σ_{j≠i} R_j for rewards ``[N·k]`` in
    contiguous groups of k (group g is ``rewards[g·k:(g+1)·k]``); no gradient history."""
    if k < 2:
        raise ValueError(f"k must be >= 2 for a leave-one-out baseline, got {k}")
    if rewards.dim() != 1 or rewards.numel() == 0 or rewards.numel() % k:
        raise ValueError(
            f"rewards must be 1-D with a positive multiple of k={k} elements, got shape "
            f"{tuple(rewards.shape)}"
        )
    grouped = rewards.detach().view(-1, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def rloo_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """L = −mean_i A_i · log π(y_i|x) from ``[B]`` sequence log-probs and ``[B]`` advantages
    (the advantages are treated as constants)."""
    if logp.shape != advantages.shape or logp.dim() != 1:
        raise ValueError(
            f"logp and advantages must both be [B], got {tuple(logp.shape)} and "
            f"{tuple(advantages.shape)}"
        )
    return -(advantages.detach() * logp).mean()



def _check(cfg: Config) -> None:
    need(cfg.k >= 2, f"k must be >= 2 (the leave-one-out baseline), got {cfg.k}")
    need(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.beta >= 0, f"beta must be >= 0, got {cfg.beta}")
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(
        cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
        f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}",
    )
    need(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
        f"max_grad_norm must be > 0, got {cfg.max_grad_norm}",
    )


class RLOO(OnlineAlgorithm):
    """REINFORCE Leave-One-Out: k samples per prompt, one policy-gradient step per batch."""

    name = "rloo"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "k": 4, "prompts_per_step": 16},
    }
    """From suites/reproductions/tajwar_*.yaml (bandit); no shipped suite runs it on tiny-lm."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_std": "unbiased std of r̂ over the batch",
        "rlhf_reward": "mean R = r̂ − β (log π − log π_ref), the objective RLOO ascends",
        "advantage_mean": "mean leave-one-out advantage A = R − b over the batch",
        "advantage_std": "std of the leave-one-out advantages A = R − b over the batch",
        "frac_zero_std_groups": "fraction of groups whose rewards are all equal",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The standard space (:func:`harness.pieces.standard_space`) and the KL penalty's
        coefficient over two decades, log-uniform."""
        return standard_space(policy_kind, beta=log_uniform(0.01, 1.0))

    def models_resident(self) -> int:
        """Policy, π_ref and r̂; π_ref is not counted when β = 0 (it is never evaluated)."""
        return 3 if self.config.beta > 0 else 2

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g, k, temp = ctx.generator, cfg.k, cfg.temperature
        self.policy.train()

        # 1. k samples of each prompt, contiguous per prompt.
        prompts = self.prompts.select(self.next_rows(cfg.prompts_per_step)).repeat_interleave(k)
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(
                prompts, max_new_tokens=self.max_new_tokens, temperature=temp, generator=g
            )
        mask = responses.mask.bool()
        tokens = int(mask.sum())
        meter.generated(self.policy, len(prompts), tokens)

        # 2. r̂ and, with β > 0, log π_ref(y|x).
        with meter.phase("score"), torch.no_grad():
            scores = self.reward_model(prompts, responses).float()
            meter.forward(self.reward_model, tokens)
            ref_logp = None
            if cfg.beta > 0:
                ref_tok, _ = tempered_token_logprobs(ctx.reference, prompts, responses, temp)
                ref_logp = ref_tok.sum(-1)
                meter.forward(ctx.reference, tokens)

        # 3. One forward with gradient: log π_θ(y|x); R, leave-one-out advantages, the update.
        with meter.phase("train"):
            logp_tok, entropy = tempered_token_logprobs(self.policy, prompts, responses, temp,
                                                        entropy=True)
            logp = logp_tok.sum(-1)
            kl = None if ref_logp is None else logp.detach() - ref_logp
            rewards = scores if kl is None else scores - cfg.beta * kl
            advantages = rloo_advantages(rewards, k)
            if cfg.normalize_advantages:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4)
            loss = rloo_loss(logp, advantages)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            self.optimizer.step()
        meter.train(self.policy, tokens)

        assert entropy is not None
        groups = rewards.view(-1, k)
        metrics = {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(scores.mean()),
            "reward_std": float(scores.std()),
            "rlhf_reward": float(rewards.mean()),
            "advantage_mean": float(advantages.mean()),
            "advantage_std": float(advantages.std()),
            "frac_zero_std_groups": float(
                (groups.max(1).values == groups.min(1).values).float().mean()
            ),
        }
        if kl is not None:
            metrics["kl_ref"] = float(kl.mean())
        return metrics


@hookimpl
def register_algorithms(register) -> None:
    register(RLOO.name, RLOO)
