"""Group Sequence Policy Optimization (GSPO), Zheng et al. 2025, arXiv:2507.18071 (Qwen).

GSPO is GRPO with the importance ratio, and so the clipping, at the level of whole sequences
instead of tokens. For a prompt x it samples a group of G responses y_1 … y_G from π_θold, scores
them with r̂, and maximises (the paper's Eq. 5–7)

    J_GSPO(θ) = E [ 1/G Σ_i min( s_i(θ) Â_i, clip(s_i(θ), 1 − ε_low, 1 + ε_high) Â_i ) ],

    s_i(θ) = ( π_θ(y_i|x) / π_θold(y_i|x) )^{1/|y_i|}
           = exp( 1/|y_i| Σ_t log π_θ(y_i,t|x, y_i,<t) / π_θold(y_i,t|x, y_i,<t) ),

    Â_i = ( r̂(x, y_i) − mean_j r̂(x, y_j) ) / std_j r̂(x, y_j)          (group-normalised, Eq. 6).

The length normalisation keeps s_i in a range where one clip width suits every length; since s_i
is close to 1 the ranges are tiny (ε_low = 3e-4, ε_high = 4e-4, §5.1), and a sequence is either
clipped as a whole or not at all. Its gradient (Eq. 10) weights every token of y_i equally by
s_i Â_i / |y_i|, where GRPO weights token t by its own ratio.

With one update per batch (``num_mini_batches`` = 1) s_i = 1 exactly and GSPO's gradient is
GRPO's sequence-mean one; the paper splits each batch into 4 minibatches (§5.1), so that the
later ones are off-policy and the sequence clip acts — the default here.

**KL.** The paper has no KL term (as DAPO). ``beta`` > 0 adds GRPO's per-token k3 estimate of
KL(π_θ‖π_ref), averaged per sequence, as TRL's ``GRPOTrainer`` does with
``importance_sampling_level="sequence"`` (TRL's GSPO); at the default 0 the loss has no KL.
Without a KL term the fixed point is the reward maximiser, not π*_β.

**TRL.** The objective above weights every sequence of the batch equally (1/G each, whatever its
length), as the paper's Eq. 5 does. To compare with TRL's ``GRPOTrainer(importance_sampling_level=
"sequence")``, set ``loss_type="grpo"`` there, which averages per sequence then over sequences;
TRL's default, ``"dapo"``, divides by the batch's token count and so weights a sequence by its
length.

**Design choices.** Old log-probs come from one no-grad forward of the policy before the updates
(the sampler's own log-probs are not used; with one minibatch the update's forward serves).
Log-probs use the sampling temperature, as TRL computes them. Randomness comes only from
``ctx.generator``.

Metrics (besides the shared ``loss``, ``grad_norm``, ``kl_ref``, ``entropy``,
``response_length`` and ``reward``): ``kl_ref`` — the mean sequence Σ_t log π_θold/π_ref of the
samples (the k1 estimate of KL(π_θold‖π_ref); π_ref is evaluated for it even at β = 0);
``reward_std``;
``frac_zero_std_groups``; ``clip_frac`` (fraction of *sequences* clipped); ``ratio_mean`` (mean
s_i over the updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from harness import hookimpl, rl
from harness.pieces import OnlineAlgorithm, need, standard_space, tempered_token_logprobs


@dataclass
class Config:
    """GSPO hyperparameters. Sources: Zheng et al. 2025 §5.1 and TRL's ``GRPOConfig``, as noted
    per field."""

    num_generations: int = 8
    """G, responses per prompt (TRL's default 8; the paper does not state its G). At least 2."""
    prompts_per_step: int = 16
    """Prompts per step, each sampled G times (a harness default, as the grpo plugin's)."""
    num_mini_batches: int = 4
    """Minibatches each batch of rollouts is split into, one optimiser step each (§5.1: 4)."""
    epsilon_low: float = 3e-4
    """ε_low, the clip range of s_i below 1 (§5.1: 3e-4)."""
    epsilon_high: float = 4e-4
    """ε_high, the clip range of s_i above 1 (§5.1: 4e-4)."""
    beta: float = 0.0
    """β of an optional k3 KL penalty to π_ref (the paper has none: 0; TRL's default 0)."""
    learning_rate: float = 1e-6
    """Step size (TRL's ``GRPOConfig`` default 1e-6; the paper does not state its own)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser (TRL trains with AdamW at weight decay 0, i.e. Adam)."""
    temperature: float = 1.0
    """Sampling temperature (TRL's default 1.0); log-probs use the same tempered logits."""
    max_new_tokens: int | None = None
    """Longest response to sample. None: the task's ``max_new_tokens``."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' default 1.0, which TRL uses). None:
    none."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def sequence_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """s_i = exp(1/|y_i| Σ_t (log π_θ − log π_θold)) for ``[B, T]`` token log-probs (Eq. 7)."""
    return torch.exp(rl.masked_mean(logp - old_logp, mask, dim=1))


def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """−J_GSPO (Eq. 5) on a batch: ``[B, T]`` log-probs, ``[B]`` advantages.

    L = −mean_i min(s_i Â_i, clip(s_i, 1 − ε_low, 1 + ε_high) Â_i)  [+ β mean_i (mean_t k3_it)].
    Returns ``(loss, s, clipped)``, ``clipped`` [B] True where the clip zeroes the gradient.
    """
    s = sequence_ratio(logp, old_logp, mask)
    a = advantages.detach()
    unclipped = s * a
    clipped_term = torch.clamp(s, 1 - epsilon_low, 1 + epsilon_high) * a
    loss = -torch.minimum(unclipped, clipped_term).mean()
    if beta != 0:
        if ref_logp is None:
            raise ValueError("gspo_loss: ref_logp is needed when beta != 0")
        loss = loss + beta * rl.masked_mean(rl.kl_k3(logp, ref_logp), mask, dim=1).mean()
    return loss, s, clipped_term < unclipped



def _check(cfg: Config) -> None:
    need(cfg.num_generations >= 2, f"num_generations must be >= 2, got {cfg.num_generations}")
    need(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")
    batch = cfg.prompts_per_step * cfg.num_generations
    need(1 <= cfg.num_mini_batches <= batch,
         f"num_mini_batches must be in [1, {batch}], got {cfg.num_mini_batches}")
    need(0 <= cfg.epsilon_low < 1, f"epsilon_low must be in [0, 1), got {cfg.epsilon_low}")
    need(cfg.epsilon_high >= 0, f"epsilon_high must be >= 0, got {cfg.epsilon_high}")
    need(cfg.beta >= 0, f"beta must be >= 0, got {cfg.beta}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
         f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")


class GSPO(OnlineAlgorithm):
    """Group Sequence Policy Optimization: group rollouts, sequence-level ratio and clip."""

    name = "gspo"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "prompts_per_step": 4},
        "neural": {"learning_rate": 1e-3, "prompts_per_step": 8},
    }
    """From tests/test_online_zoo.py (bandit) and the token and tiny-lm checks."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_std": "unbiased std of r̂ over the batch",
        "frac_zero_std_groups": "fraction of groups whose rewards are all equal",
        "clip_frac": "fraction of sequences whose ratio s_i the clip holds (zero gradient)",
        "ratio_mean": "mean sequence ratio s_i over the step's updates",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those that
        train a table of logits, three for language models (a 0.3M-parameter LM trains at 1e-3,
        billion-parameter ones at 1e-5); GSPO has no KL term by default: the learning rate
        only."""
        return standard_space(policy_kind)

    def models_resident(self) -> int:
        """Policy, π_ref (for the penalty or the ``kl_ref`` metric) and r̂."""
        return 3

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g, group, temp = ctx.generator, cfg.num_generations, cfg.temperature
        self.policy.train()

        prompts = self.prompts.select(self.next_rows(cfg.prompts_per_step)).repeat_interleave(
            group
        )
        n = len(prompts)
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(prompts, max_new_tokens=self.max_new_tokens,
                                           temperature=temp, generator=g)
        mask = responses.mask.bool()
        tokens = int(mask.sum())
        meter.generated(self.policy, n, tokens)

        with meter.phase("score"), torch.no_grad():
            rewards = self.reward_model(prompts, responses).float()
            meter.forward(self.reward_model, tokens)
            # π_ref's log-probs for the KL metric (always) and the penalty (β > 0).
            ref_logp = tempered_token_logprobs(ctx.reference, prompts, responses, temp)[0]
            meter.forward(ctx.reference, tokens)
            old_logp, entropy = tempered_token_logprobs(self.policy, prompts, responses, temp,
                                                        entropy=True)
            meter.forward(self.policy, tokens)
        advantages = rl.group_advantages(rewards, group)

        losses, norms, ratios = [], [], []
        clipped_seqs = 0
        with meter.phase("train"):
            if cfg.num_mini_batches > 1:
                order = torch.randperm(n, generator=g, device=g.device).to(ctx.device)
                batches = order.tensor_split(cfg.num_mini_batches)
            else:
                batches = (torch.arange(n, device=ctx.device),)
            for rows in batches:
                logp, _ = tempered_token_logprobs(self.policy, prompts.select(rows),
                                                  responses.select(rows), temp)
                loss, s, clipped = gspo_loss(
                    logp, old_logp[rows], advantages[rows], mask[rows], cfg.epsilon_low,
                    cfg.epsilon_high, ref_logp[rows] if cfg.beta > 0 else None, cfg.beta,
                )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(rl.clip_grad_norm(self.params, cfg.max_grad_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                meter.train(self.policy, int(mask[rows].sum()))
                losses.append(loss.detach())
                ratios.append(s.detach())
                clipped_seqs += int(clipped.sum())

        assert entropy is not None
        groups = rewards.view(-1, group)
        return {
            "loss": float(torch.stack(losses).mean()),
            "grad_norm": float(torch.stack(norms).mean()),
            "kl_ref": float(rl.masked_sum(old_logp - ref_logp, mask, dim=1).mean()),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "frac_zero_std_groups": float(
                (groups.max(1).values == groups.min(1).values).float().mean()
            ),
            "clip_frac": clipped_seqs / n,
            "ratio_mean": float(torch.cat(ratios).mean()),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(GSPO.name, GSPO)
