"""Online DPO, Guo et al. 2024, arXiv:2402.04792 ("Direct Language Model Alignment from Online AI
Feedback", OAIF).

DPO learns from a fixed dataset of pairs sampled from another policy; online DPO draws its pairs
from the *current* policy and has them labelled as it goes (the paper's Algorithm 1). Each step:

1. for each prompt x of the batch, sample two responses y¹, y² ~ π_θ(·|x);
2. label them with the annotator — here the suite's reward model r̂ in place of the paper's
   LLM annotator: the response of higher r̂ is y⁺ (``label="argmax"``, as TRL's
   ``OnlineDPOTrainer`` does with a reward model, ties to y¹), or y¹ ≻ y² is drawn with
   probability σ((r̂(y¹) − r̂(y²))/τ) (``label="btl"``, the preference model on r̂);
3. take one gradient step on DPO's loss (Rafailov et al. Eq. 7) on these pairs:

    L(θ) = −mean log σ( β [ log π_θ(y⁺|x)/π_ref(y⁺|x) − log π_θ(y⁻|x)/π_ref(y⁻|x) ] ).

**What it converges to.** At π*_β ∝ π_ref exp(r̂/β) the DPO margin h of every pair (a, b)
equals r̂(a) − r̂(b), so with ``label="btl"`` at τ = 1 each pair's
expected gradient is 0 *whatever policy sampled it*: online DPO has the same fixed point as DPO
with the Bradley-Terry model, π*_β (``tests/test_online_zoo.py`` measures it on the bandit).
With ``label="argmax"`` the labels are deterministic, and, as for DPO on deterministic preferences
(Azar et al. 2023), the KL term then does not hold the policy: it keeps sharpening towards the
response of highest r̂ among those it samples.

**Design choices.** Log-probs in the loss are those of π_θ and π_ref (untempered), whatever the
sampling temperature, as TRL computes them; the two responses of a prompt are sampled in one call,
from ``ctx.generator``; one optimiser step per batch (the paper's on-policy setting).

Metrics (besides the shared ``loss``, ``grad_norm``, ``kl_ref``, ``entropy``,
``response_length`` and ``reward``): ``kl_ref`` is the mean sequence log π_θ/π_ref of the step's
samples (the k1 estimate of KL(π_θ‖π_ref)); ``reward`` the mean r̂ of the samples;
``score_margin`` (mean r̂(y⁺) − r̂(y⁻)); ``reward_margin``, ``reward_accuracy`` (of the implicit
rewards, as the dpo plugin), ``frac_ties`` (pairs of equal r̂), ``learning_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from harness import hookimpl, rl
from harness.pieces import OnlineAlgorithm, log_uniform, need, standard_space
from harness.policy import PromptBatch


@dataclass
class Config:
    """Online DPO hyperparameters. Sources: Guo et al. 2024 (§4) and TRL's ``OnlineDPOConfig``,
    as noted per field."""

    beta: float = 0.1
    """β of the DPO loss (Guo et al. §4: 0.1; TRL's default 0.1)."""
    label: Literal["argmax", "btl"] = "argmax"
    """How a pair is labelled from r̂: ``"argmax"`` (the higher r̂ is preferred, ties to the
    first sample; TRL with a reward model, and the paper's annotator picks one) or ``"btl"``
    (drawn from the Bradley-Terry model on r̂ at scale ``label_scale``)."""
    label_scale: float = 1.0
    """τ of the Bradley-Terry labels, P(y¹ ≻ y²) = σ((r̂¹ − r̂²)/τ); used with ``label="btl"``
    (1.0: the harness's annotator default)."""
    prompts_per_step: int = 16
    """Prompts per step, each sampled twice (a harness default, as the grpo and rloo plugins')."""
    learning_rate: float = 5e-7
    """Step size (TRL's ``OnlineDPOConfig`` default 5e-7)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser (TRL trains with AdamW at weight decay 0, i.e. Adam)."""
    temperature: float = 0.9
    """Sampling temperature (TRL's default 0.9); the loss uses untempered log-probs."""
    max_new_tokens: int | None = None
    """Longest response to sample. None: the task's ``max_new_tokens``."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' default 1.0, which TRL uses). None: none."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def label_pairs(
    scores_first: torch.Tensor,
    scores_second: torch.Tensor,
    how: str,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[N] bool: whether the first response of each pair is preferred.

    ``"argmax"``: r̂¹ ≥ r̂² (ties to the first, as TRL); ``"btl"``: u < σ((r̂¹ − r̂²)/τ) with
    u ~ U(0, 1) drawn from ``generator``.
    """
    if how == "argmax":
        return scores_first >= scores_second
    p = torch.sigmoid((scores_first - scores_second).double() / scale)
    g = generator
    u = torch.rand(p.shape, generator=g, dtype=torch.float64,
                   device=g.device if g is not None else p.device).to(p.device)
    return u < p


def online_dpo_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    first_preferred: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss on online pairs: ``logp`` and ``ref_logp`` are [2N] sequence log-probs, the
    first responses of the N pairs then the second ones; ``first_preferred`` is [N] bool.

    h = β [(log π − log π_ref)(y⁺) − (log π − log π_ref)(y⁻)],   L = −mean log σ(h).
    Returns ``(loss, β log π/π_ref (y⁺), β log π/π_ref (y⁻))``.
    """
    n = first_preferred.shape[0]
    ratio = beta * (logp - ref_logp)
    first, second = ratio[:n], ratio[n:]
    chosen = torch.where(first_preferred, first, second)
    rejected = torch.where(first_preferred, second, first)
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


def _check(cfg: Config) -> None:
    need(cfg.beta > 0, f"beta must be > 0, got {cfg.beta}")
    need(cfg.label_scale > 0, f"label_scale must be > 0, got {cfg.label_scale}")
    need(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
         f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")


class OnlineDPO(OnlineAlgorithm):
    """Online DPO: two samples per prompt from π_θ, labelled by r̂, one DPO step per batch."""

    name = "online-dpo"
    Config = Config
    samples_per_prompt: ClassVar[int] = 2
    """Responses sampled per prompt each step (a pair): the memory plan reads it."""
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "prompts_per_step": 64, "label": "btl"},
        "neural": {"learning_rate": 1e-3, "prompts_per_step": 16},
    }
    """From tests/test_online_zoo.py (bandit, where BTL labels reach π*_β) and the tiny-lm check."""
    metrics: ClassVar[dict[str, str]] = {
        "score_margin": "mean r̂(y⁺) − r̂(y⁻) of the step's labelled pairs",
        "reward_margin": "mean difference of the implicit rewards of y⁺ and y⁻",
        "frac_ties": "fraction of pairs whose two samples have equal r̂",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those that
        train a table of logits, three for language models (a 0.3M-parameter LM trains at 1e-3,
        billion-parameter ones at 1e-5); β of the DPO loss over two decades, as the dpo plugin's."""
        return standard_space(policy_kind, beta=log_uniform(0.02, 2.0))

    def models_resident(self) -> int:
        """Policy, π_ref and r̂."""
        return 3

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g = ctx.generator
        self.policy.train()

        # 1. Two samples per prompt: rows [0, n) are the first of each pair, [n, 2n) the second.
        prompts = self.prompts.select(self.next_rows(cfg.prompts_per_step))
        n = len(prompts)
        both_prompts = PromptBatch.cat([prompts, prompts])
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(both_prompts, max_new_tokens=self.max_new_tokens,
                                           temperature=cfg.temperature, generator=g)
        mask = responses.mask.bool()
        tokens = int(mask.sum())
        meter.generated(self.policy, 2 * n, tokens)

        # 2. Labels from r̂; π_ref's log-probs.
        with meter.phase("score"), torch.no_grad():
            scores = self.reward_model(both_prompts, responses).float()
            meter.forward(self.reward_model, tokens)
            ref_logp = ctx.reference.sequence_logprobs(both_prompts, responses)
            meter.forward(ctx.reference, tokens)
        first_preferred = label_pairs(scores[:n], scores[n:], cfg.label, cfg.label_scale, g)

        # 3. One DPO step on the pairs.
        with meter.phase("train"):
            logp_tok, entropy = self.policy.token_logprobs_and_entropy(both_prompts, responses)
            logp = logp_tok.sum(-1)
            loss, chosen, rejected = online_dpo_loss(logp, ref_logp, first_preferred, cfg.beta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        meter.train(self.policy, tokens)

        assert entropy is not None
        margin = (chosen - rejected).detach()
        first, second = scores[:n], scores[n:]
        score_margin = torch.where(first_preferred, first - second, second - first)
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "kl_ref": float((logp.detach() - ref_logp).mean()),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(scores.mean()),
            "score_margin": float(score_margin.mean()),
            "reward_margin": float(margin.mean()),
            "reward_accuracy": float((margin > 0).float().mean()),
            "frac_ties": float((first == second).float().mean()),
            "learning_rate": float(cfg.learning_rate),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(OnlineDPO.name, OnlineDPO)
