"""REINFORCE++, Hu 2025, arXiv:2501.03262 ("REINFORCE++: A Simple and Efficient Approach for
Aligning Large Language Models"), as in OpenRLHF (``--advantage_estimator reinforce``).

REINFORCE++ is PPO without a critic and without per-prompt groups: one response per prompt, the
KL penalty folded into per-token rewards, returns normalised over the *whole batch*. For a
response y = (a_1 … a_T) to x, sampled from π_θold (the paper's §3):

    r_t = 1[t = T] · r̂(x, y) − β · KL_t,     KL_t = log π_θold(a_t|x, a_<t) − log π_ref(a_t|x, a_<t)
    G_t = Σ_{s=t}^{T} γ^{s−t} r_s                                   (the return, γ = 1)
    A_t = (G_t − mean(G)) / std(G)       (mean and std over every token of the batch, §3.3)

and the policy loss is PPO's clipped surrogate (Schulman et al. 2017, Eq. 7), averaged over the
batch's tokens:  L = −mean_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t),  ρ_t = π_θ/π_θold.

**Why REINFORCE++ and not ReMax.** Both are critic-free. ReMax (Li et al. 2023) subtracts the
reward of the *greedy* response to each prompt: one extra decode per prompt, and a greedy decoder
the harness's policies do not have (they sample). REINFORCE++'s baseline is the batch statistics,
free, and it is the critic-free estimator OpenRLHF and verl ship and compare against GRPO; against
the harness's rloo and grpo plugins (per-prompt baselines over k samples) it is the other design
point: one sample per prompt, a global baseline, the KL in the reward per token.

**What it converges to.** With γ = 1 the return of token t is r̂ minus the KL of the tokens from t
on, so the unnormalised estimate is the policy gradient of J_β = E r̂ − β KL(π‖π_ref) (as for
rloo, the k1 penalty in the reward); subtracting the batch mean adds a baseline, dividing by the
batch std rescales the step. So its fixed point is the Gibbs policy π*_β ∝ π_ref exp(r̂/β)
(``tests/test_online_zoo.py`` measures it on the bandit).

**The std.** std(G) is the *unbiased* standard deviation over the batch's N valid tokens,
√(Σ (G_t − mean G)² / (N − 1)) (:func:`harness.rl.masked_whiten`); OpenRLHF divides by the
population std (1/N inside the root). The advantages differ by the factor √((N − 1)/N): below
0.1% for a batch of 512 tokens, but not zero for tiny batches.

**Design choices.** With ``num_mini_batches`` = 1 (the default) the update's own forward gives
log π_θold (ρ = 1, no extra forward); with more, one no-grad forward of the policy computes them
first and each minibatch takes a step (ρ moves away from 1 and the clip acts). The sampler's
log-probs are not used. Randomness comes only from ``ctx.generator``.

Metrics (besides the shared ``loss``, ``grad_norm``, ``kl_ref``, ``entropy``, ``response_length``
and ``reward``): ``kl_ref`` — mean sequence Σ_t KL_t (k1) of the samples; ``reward_std``;
``return_mean`` / ``return_std`` (of G_t over tokens, before normalisation); ``clip_frac``.
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
    """REINFORCE++ hyperparameters. Sources: Hu 2025 (§4, the experimental settings) and
    OpenRLHF's defaults, as noted per field."""

    beta: float = 0.01
    """β, the per-token KL penalty coefficient in the reward (Hu 2025 §4: 0.01; OpenRLHF's
    ``init_kl_coef`` in its REINFORCE++ examples)."""
    gamma: float = 1.0
    """γ, the discount of the return (Hu 2025 and OpenRLHF: 1.0)."""
    epsilon: float = 0.2
    """ε, the clip range of ρ (PPO's 0.2; OpenRLHF's ``eps_clip`` default)."""
    prompts_per_step: int = 64
    """Prompts per step, one response each (a harness default: the global normalisation needs a
    batch of some size; OpenRLHF's batches are those of multi-GPU runs)."""
    num_mini_batches: int = 1
    """Minibatch updates per batch of rollouts (1: one on-policy step, ρ = 1)."""
    learning_rate: float = 5e-7
    """Step size (Hu 2025 §4: actor learning rate 5e-7)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser (OpenRLHF trains with Adam, weight decay 0)."""
    temperature: float = 1.0
    """Sampling temperature (OpenRLHF's default 1.0); log-probs use the same tempered logits."""
    max_new_tokens: int | None = None
    """Longest response to sample. None: the task's ``max_new_tokens``."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (OpenRLHF's default 1.0). None: no clipping."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def token_returns(
    score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """G_t = Σ_{s≥t} γ^{s−t} r_s with r_s = 1[s = T] r̂ − β KL_s, for ``[B, T]`` right-padded
    responses (``score`` is [B], ``kl`` [B, T]); 0 on padding, no gradient history."""
    m = mask.bool()
    rewards = -beta * torch.where(m, kl.detach(), torch.zeros_like(kl))
    last = (m.sum(-1) - 1).clamp(min=0)
    rewards[torch.arange(len(score)), last] += score.detach().to(rewards.dtype)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return torch.where(m, returns, torch.zeros_like(returns))


def reinforce_pp_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """−token-mean of min(ρ A, clip(ρ, 1 − ε, 1 + ε) A) over valid tokens; also the clip mask."""
    per_token, _, clipped = rl.clipped_surrogate(logp, old_logp, advantages.detach(), epsilon)
    return rl.masked_mean(per_token, mask), clipped


def _check(cfg: Config) -> None:
    need(cfg.beta >= 0, f"beta must be >= 0, got {cfg.beta}")
    need(0 < cfg.gamma <= 1, f"gamma must be in (0, 1], got {cfg.gamma}")
    need(0 <= cfg.epsilon < 1, f"epsilon must be in [0, 1), got {cfg.epsilon}")
    need(cfg.prompts_per_step >= 2, f"prompts_per_step must be >= 2, got {cfg.prompts_per_step}")
    need(1 <= cfg.num_mini_batches <= cfg.prompts_per_step,
         f"num_mini_batches must be in [1, prompts_per_step], got {cfg.num_mini_batches}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
         f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")



class ReinforcePP(OnlineAlgorithm):
    """REINFORCE++: one sample per prompt, batch-normalised returns, PPO-clipped updates."""

    name = "reinforce-pp"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "beta": 0.1},
        "neural": {"learning_rate": 1e-3, "prompts_per_step": 16},
    }
    """From tests/test_online_zoo.py (bandit) and the token and tiny-lm checks."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_std": "unbiased std of r̂ over the batch",
        "return_mean": "mean return G_t over the batch's tokens, before normalisation",
        "return_std": "std of the returns G_t over the batch's tokens, before normalisation",
        "clip_frac": "fraction of tokens where the clip zeroes the gradient",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The standard space (:func:`harness.pieces.standard_space`) and the KL penalty's
        coefficient over two decades, log-uniform."""
        return standard_space(policy_kind, beta=log_uniform(0.01, 1.0))

    def models_resident(self) -> int:
        """Policy, π_ref (not when β = 0) and r̂."""
        return 3 if self.config.beta > 0 else 2

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g, temp = ctx.generator, cfg.temperature
        self.policy.train()

        prompts = self.prompts.select(self.next_rows(cfg.prompts_per_step))
        n = len(prompts)
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(prompts, max_new_tokens=self.max_new_tokens,
                                           temperature=temp, generator=g)
        mask = responses.mask.bool()
        tokens = int(mask.sum())
        meter.generated(self.policy, n, tokens)

        one_step = cfg.num_mini_batches == 1
        with meter.phase("score"), torch.no_grad():
            scores = self.reward_model(prompts, responses).float()
            meter.forward(self.reward_model, tokens)
            ref_logp = None
            if cfg.beta > 0:
                ref_logp = tempered_token_logprobs(ctx.reference, prompts, responses, temp)[0]
                meter.forward(ctx.reference, tokens)
            old_logp = entropy = None
            if not one_step:
                old_logp, entropy = tempered_token_logprobs(self.policy, prompts, responses, temp,
                                                            entropy=True)
                meter.forward(self.policy, tokens)

        with meter.phase("train"):
            if one_step:
                logp, entropy = tempered_token_logprobs(self.policy, prompts, responses, temp,
                                                        entropy=True)
                old_logp = logp.detach()
            assert old_logp is not None
            kl = torch.zeros_like(old_logp) if ref_logp is None else old_logp - ref_logp
            returns = token_returns(scores, kl, mask, cfg.beta, cfg.gamma)
            advantages = rl.masked_whiten(returns, mask)
            losses, norms, clipped_tokens = [], [], 0
            if one_step:
                batches = (torch.arange(n, device=ctx.device),)
            else:
                order = torch.randperm(n, generator=g, device=g.device).to(ctx.device)
                batches = order.tensor_split(cfg.num_mini_batches)
            for rows in batches:
                if not one_step:
                    logp, _ = tempered_token_logprobs(self.policy, prompts.select(rows),
                                                      responses.select(rows), temp)
                loss, clipped = reinforce_pp_loss(logp, old_logp[rows], advantages[rows],
                                                  mask[rows], cfg.epsilon)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(rl.clip_grad_norm(self.params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                meter.train(self.policy, int(mask[rows].sum()))
                losses.append(loss.detach())
                clipped_tokens += int((clipped & mask[rows]).sum())

        assert entropy is not None
        valid = returns[mask]
        metrics = {
            "loss": float(torch.stack(losses).mean()),
            "grad_norm": float(torch.stack(norms).mean()),
            "kl_ref": float(rl.masked_sum(kl, mask, dim=1).mean()),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(scores.mean()),
            "reward_std": float(scores.std()),
            "return_mean": float(valid.mean()),
            "return_std": float(valid.std()) if valid.numel() > 1 else 0.0,
            "clip_frac": clipped_tokens / max(tokens, 1),
        }
        return metrics


@hookimpl
def register_algorithms(register) -> None:
    register(ReinforcePP.name, ReinforcePP)
