"""Simple Preference Optimization (SimPO), Meng et al. 2024, arXiv:2405.14734 ("SimPO: Simple
Preference Optimization with a Reference-Free Reward").

SimPO learns offline from preference pairs (x, y_w, y_l) like DPO, but with no reference model.
Its implicit reward is the policy's *length-normalised* log-likelihood (the paper's Eq. 4),

    r_SimPO(x, y) = β / |y| · log π_θ(y|x) = β / |y| · Σ_t log π_θ(y_t | x, y_<t),

and the Bradley-Terry likelihood of the pairs gets a target reward margin γ > 0 (Eq. 5, 6):

    L_SimPO(π_θ) = −E_{(x, y_w, y_l) ~ D} [ log σ( β/|y_w| log π_θ(y_w|x)
                                                 − β/|y_l| log π_θ(y_l|x) − γ ) ].

No π_ref appears: one model is resident, and nothing anchors π_θ to π_ref but the number of
steps. **What it converges to.** With one-token responses (the bandit) and γ = 0, the loss is the
Bradley-Terry likelihood of rewards β log π_θ(y|x); with BTL labels at scale 1 its population
minimiser is β log π_θ(y|x) = r*(x, y) + c(x), i.e. π_θ ∝ exp(r*/β): the KL-regularised optimum
for a *uniform* reference, not for π_ref (``tests/test_preference_zoo.py`` measures it). With
γ > 0 every preferred margin is pushed γ further, so the policy is sharper than that.

**TRL.** TRL implements SimPO as ``CPOTrainer`` with ``loss_type="simpo"``: the same loss, with
``simpo_gamma`` = γ and ``beta`` = β, plus CPO's behaviour-cloning term ``cpo_alpha`` · NLL(y_w)
unless ``cpo_alpha=0`` (its default 1.0 is "CPO-SimPO", not the paper's SimPO). This plugin is
the paper's (no NLL term). ``label_smoothing`` is the paper's code's option for noisy labels
(the reference implementation's ``label_smoothing``, default 0); TRL applies it the same way.

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``):
``reward_chosen`` / ``reward_rejected`` (mean β/|y| log π_θ(y|x)), ``reward_margin`` (mean of
their difference), ``reward_accuracy`` (fraction of pairs with r(y_w) > r(y_l)),
``logp_chosen`` / ``logp_rejected`` (mean sequence log-probs), ``learning_rate``.
"""

from __future__ import annotations

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
    """SimPO hyperparameters. Defaults: Meng et al. 2024 and their reference implementation
    (github.com/princeton-nlp/SimPO, ``training_configs/``), as noted per field."""

    beta: float = 2.0
    """β, the scale of the length-normalised reward (the paper's §3/App. B: β = 2.0 to 2.5;
    2.0 in the reference configs for Mistral and Llama-3 base models)."""
    gamma: float = 1.0
    """γ, the target reward margin (the reference configs' ``gamma_beta_ratio`` 0.5 × β = 1.0;
    the paper searches γ/β in [0, 1.6])."""
    label_smoothing: float = 0.0
    """ε of conservative labels: the loss becomes (1 − ε) L(y_w ≻ y_l) + ε L(y_l ≻ y_w) (the
    reference implementation's ``label_smoothing``, default 0)."""
    learning_rate: float = 5e-7
    """Step size (the paper's App. B: learning rates 3e-7 to 1e-6; 5e-7 for Mistral-Base)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser (the reference code trains with AdamW at weight decay 0, i.e. Adam)."""
    batch_size: int = 128
    """Preference pairs per step (the paper's App. B: batch size 128)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps (the paper warms up over 10% of
    training; a suite's budget is not known here, so 0 unless set)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' default 1.0, which the reference code
    uses). None: no clipping."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def simpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    len_chosen: torch.Tensor,
    len_rejected: torch.Tensor,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_SimPO (Eq. 6) on a batch of pairs, from sequence log-probs and response lengths.

    r(y) = β · log π_θ(y|x) / |y|   (Eq. 4),   u = r(y_w) − r(y_l) − γ,
    L = mean [ −(1 − ε) log σ(u) − ε log σ(−u) ].
    Returns ``(loss, r(y_w), r(y_l))``.
    """
    chosen_rewards = beta * logp_chosen / len_chosen
    rejected_rewards = beta * logp_rejected / len_rejected
    u = chosen_rewards - rejected_rewards - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)
    return losses.mean(), chosen_rewards, rejected_rewards


def _check(cfg: Config) -> None:
    need(cfg.beta > 0, f"beta must be > 0, got {cfg.beta}")
    need(cfg.gamma >= 0, f"gamma must be >= 0, got {cfg.gamma}")
    need(0 <= cfg.label_smoothing < 0.5,
         f"label_smoothing must be in [0, 0.5), got {cfg.label_smoothing}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.warmup_steps >= 0, f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
         f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")


class SimPO(OfflineAlgorithm):
    """Simple Preference Optimization: one minibatch of pairs per step, no reference model."""

    name = "simpo"
    Config = Config
    uses_reference = False
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "gamma": 0.0},
        "neural": {"learning_rate": 1e-3},
    }
    """From tests/test_preference_zoo.py (bandit) and the token and tiny-lm checks; γ = 0 on a table
    of one-token responses, where the margin only sharpens the policy."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_chosen": "mean length-normalised reward β/|y⁺| · log π(y⁺|x)",
        "reward_rejected": "mean length-normalised reward β/|y⁻| · log π(y⁻|x)",
        "reward_margin": "mean difference of the length-normalised rewards of y⁺ and y⁻",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those that
        train a table of logits, three for language models (a 0.3M-parameter LM trains at 1e-3,
        billion-parameter ones at 1e-5); β over a decade around the paper's 2–2.5, and the margin γ
        uniform in [0, 2] (the paper's γ/β search)."""
        return standard_space(
            policy_kind, beta=log_uniform(0.5, 5.0), gamma={"low": 0.0, "high": 2.0}
        )

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.len_chosen = self.data.chosen.mask.sum(-1).clamp(min=1)
        self.len_rejected = self.data.rejected.mask.sum(-1).clamp(min=1)

    def models_resident(self) -> int:
        """The policy only: SimPO never evaluates π_ref."""
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
            loss, r_chosen, r_rejected = simpo_loss(
                logp_chosen, logp_rejected, self.len_chosen[rows], self.len_rejected[rows],
                cfg.beta, cfg.gamma, cfg.label_smoothing,
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
        margin = (r_chosen - r_rejected).detach()
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward_chosen": float(r_chosen.detach().mean()),
            "reward_rejected": float(r_rejected.detach().mean()),
            "reward_margin": float(margin.mean()),
            "reward_accuracy": float((margin > 0).float().mean()),
            "logp_chosen": float(logp_chosen.detach().mean()),
            "logp_rejected": float(logp_rejected.detach().mean()),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(SimPO.name, SimPO)
