"""Odds Ratio Preference Optimization (ORPO), Hong et al. 2024, arXiv:2403.07691 ("ORPO:
Monolithic Preference Optimization without Reference Model").

ORPO learns offline from preference pairs (x, y_w, y_l) with no reference model and no separate
supervised fine-tuning stage: an SFT loss on the preferred response carries an odds-ratio term
that pushes the rejected one down. With P_θ(y|x) the length-normalised likelihood
exp(1/|y| Σ_t log π_θ(y_t | x, y_<t)) (the paper's Eq. 2 average) and its odds
odds_θ(y|x) = P_θ(y|x) / (1 − P_θ(y|x)) (Eq. 4), the objective is (Eq. 6, 7)

    L_ORPO = E_{(x, y_w, y_l) ~ D} [ L_SFT + λ · L_OR ],
    L_SFT  = −1/|y_w| Σ_t log π_θ(y_w,t | x, y_w,<t),
    L_OR   = −log σ( log( odds_θ(y_w|x) / odds_θ(y_l|x) ) ).

log odds(y) = log P − log(1 − P) is computed with a stable log(1 − eˣ) (``log1mexp``), and the
average log-prob is kept below 0 by the smallest float: a response of probability 1 (a table of
logits can get there) would give log(1 − P) = −∞.

**What it converges to.** No π_ref appears. With λ = 0 ORPO is SFT on the preferred responses:
its population minimiser is the distribution of y_w given x in D
(``tests/test_preference_zoo.py`` checks this exactly on the bandit); λ > 0 adds the odds-ratio
contrast, which moves mass from responses that lose comparisons to those that win them beyond
that distribution.

**TRL.** ``ORPOTrainer`` (in ``trl.experimental.orpo`` since TRL 1.0) computes the same odds
ratio, with ``beta`` = λ. Its SFT term differs: it is one token-mean over all tokens of the
batch's chosen sequences *prompt tokens included*, on purpose (huggingface/trl#1516; the revert
in #2527 kept it), where this plugin's is the paper's per-response mean over the response tokens
only, then the mean over pairs; so the SFT terms differ whenever prompts have tokens, equal
response lengths or not. ``tests/test_against_trl.py`` compares the
odds-ratio term with TRL's ``odds_ratio_loss``. TRL computes log(1 − P) as
``log1p(−exp(·))``, which is the same function (and −∞ at P = 1).

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``):
``sft_loss`` (L_SFT), ``or_loss`` (L_OR), ``log_odds_ratio`` (mean log(odds(y_w)/odds(y_l))),
``reward_accuracy`` (fraction of pairs where it is > 0), ``logp_chosen`` / ``logp_rejected``
(mean sequence log-probs), ``learning_rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from harness import hookimpl, rl
from harness.algorithm import RunContext
from harness.pieces import OfflineAlgorithm, log_uniform, need, standard_space
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """ORPO hyperparameters. Defaults: Hong et al. 2024 §6.1 and TRL's ``ORPOConfig``, as noted
    per field."""

    lam: float = 0.1
    """λ, the weight of the odds-ratio term (the paper's §6.1: λ = 0.1 for Phi-2 and Llama-2;
    TRL's ``beta``, default 0.1)."""
    learning_rate: float = 1e-6
    """Step size (TRL's ``ORPOConfig`` default 1e-6; the paper tunes it per model)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser (TRL trains with AdamW at weight decay 0, transformers' default, i.e. Adam)."""
    batch_size: int = 64
    """Preference pairs per step (a harness default, as the dpo plugin's, so that the offline
    methods see the same data per step)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps (transformers' default 0, which
    TRL uses)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' default 1.0, which TRL uses). None: no
    clipping."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate everywhere (Mächler 2012): log(−expm1(x)) near 0,
    log1p(−eˣ) below −log 2."""
    # Each branch sees only the inputs it is accurate (and finite) for, so that the branch
    # torch.where discards has no inf or NaN gradient either.
    near = x > -math.log(2.0)
    small = torch.where(near, x, torch.full_like(x, -1.0))
    large = torch.where(near, torch.full_like(x, -1.0), x)
    return torch.where(near, torch.log(-torch.expm1(small)), torch.log1p(-torch.exp(large)))


def orpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    len_chosen: torch.Tensor,
    len_rejected: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_ORPO (Eq. 6) on a batch of pairs, from sequence log-probs and response lengths.

    a = log π(y|x) / |y| (the log of P_θ, Eq. 2), log odds = a − log(1 − eᵃ) (Eq. 4),
    L_SFT = −mean a_w,  L_OR = −mean log σ(log odds_w − log odds_l)  (Eq. 7),
    L = L_SFT + λ L_OR.   Returns ``(loss, L_SFT, L_OR, log odds ratio per pair)``.
    """
    below_one = -torch.finfo(logp_chosen.dtype).tiny
    avg_chosen = (logp_chosen / len_chosen).clamp(max=below_one)
    avg_rejected = (logp_rejected / len_rejected).clamp(max=below_one)
    log_odds = (avg_chosen - log1mexp(avg_chosen)) - (avg_rejected - log1mexp(avg_rejected))
    sft = -avg_chosen.mean()
    odds_ratio = -F.logsigmoid(log_odds).mean()
    return sft + lam * odds_ratio, sft, odds_ratio, log_odds


def _check(cfg: Config) -> None:
    need(cfg.lam >= 0, f"lam must be >= 0, got {cfg.lam}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.warmup_steps >= 0, f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")


class ORPO(OfflineAlgorithm):
    """Odds Ratio Preference Optimization: one minibatch of pairs per step, no reference."""

    name = "orpo"
    Config = Config
    uses_reference = False
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05},
        "neural": {"learning_rate": 1e-3},
    }
    """From tests/test_preference_zoo.py (bandit) and the token and tiny-lm checks."""
    metrics: ClassVar[dict[str, str]] = {
        "sft_loss": "L_SFT: mean over pairs of −log π(y⁺|x)/|y⁺|",
        "or_loss": "L_OR: mean −log σ(log odds(y⁺) − log odds(y⁻))",
        "log_odds_ratio": "mean log(odds(y⁺)/odds(y⁻)), odds = P/(1 − P), P the per-token mean",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those
        that train a table of logits, three for language models (a 0.3M-parameter LM trains at
        1e-3, billion-parameter ones at 1e-5); λ of the odds-ratio term over two decades."""
        return standard_space(policy_kind, lam=log_uniform(0.01, 1.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.len_chosen = self.data.chosen.mask.sum(-1).clamp(min=1)
        self.len_rejected = self.data.rejected.mask.sum(-1).clamp(min=1)

    def models_resident(self) -> int:
        """The policy only: ORPO never evaluates π_ref."""
        return 1

    def step(self) -> dict[str, float]:
        cfg, meter = self.config, self.ctx.meter
        rows = self.next_rows(cfg.batch_size)
        batch = self.data.select(rows)
        n = len(batch)
        with meter.phase("train"):
            self.policy.train()
            both = ResponseBatch.cat([batch.chosen, batch.rejected])
            prompts = PromptBatch.cat([batch.prompts, batch.prompts])
            logp_tok, entropy = self.policy.token_logprobs_and_entropy(prompts, both)
            logp = logp_tok.sum(-1)
            logp_chosen, logp_rejected = logp[:n], logp[n:]
            loss, sft, odds_ratio, log_odds = orpo_loss(
                logp_chosen, logp_rejected, self.len_chosen[rows], self.len_rejected[rows],
                cfg.lam,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        mask = both.mask
        meter.train(self.policy, int(mask.sum()))
        meter.samples += n

        assert entropy is not None
        log_odds = log_odds.detach()
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "sft_loss": float(sft.detach()),
            "or_loss": float(odds_ratio.detach()),
            "log_odds_ratio": float(log_odds.mean()),
            "reward_accuracy": float((log_odds > 0).float().mean()),
            "logp_chosen": float(logp_chosen.detach().mean()),
            "logp_rejected": float(logp_rejected.detach().mean()),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(ORPO.name, ORPO)
