"""SimPO, Simple Preference Optimization (Meng, Xia and Chen 2024, arXiv:2405.14734), as an
rlhf-harness plugin: an offline algorithm that learns from the suite's preference pairs.

SimPO's implicit reward of a response is its *length-normalised* log-probability under the
policy alone, with no reference model (the paper's Eq. 4):

    r_SimPO(x, y) = β / |y| · log π_θ(y|x) = β / |y| · Σ_t log π_θ(y_t | x, y_<t),

and its loss is the Bradley-Terry likelihood of the pairs with a target reward margin γ > 0
(Eq. 6):

    L_SimPO(π_θ) = −E_{(x, y⁺, y⁻) ~ D} [ log σ( r_SimPO(x, y⁺) − r_SimPO(x, y⁻) − γ ) ].

Compared with DPO it drops π_ref (no reference forward, one model fewer in memory) and the
length bias of summed log-probs. Nothing pulls π_θ back towards π_ref: the KL the evaluators
measure is whatever the margin γ and the number of steps make it.

Metrics: the shared ``loss``, ``grad_norm``, ``entropy`` (per token, over both responses),
``response_length``, ``logp_chosen`` / ``logp_rejected`` (mean *sequence* log-probs Σ_t, as the
shared names are defined) and ``reward_accuracy`` (fraction of pairs with r(y⁺) > r(y⁻)); and
SimPO's own ``avg_logp_chosen`` / ``avg_logp_rejected`` (mean per-token log-probs, the quantity
SimPO optimises), ``reward_chosen`` / ``reward_rejected`` (mean r_SimPO) and ``reward_margin``
(their mean difference; the loss pushes it past γ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness import hookimpl, rl
from harness.hookspecs import Register
from harness.pieces import OfflineAlgorithm, log_uniform, need, standard_space
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """SimPO hyperparameters. Defaults: Meng et al. 2024, §4 and App. B, unless noted."""

    beta: float = 2.0
    """β, the scale of the length-normalised reward (the paper uses 2.0 to 2.5)."""
    gamma: float = 1.0
    """γ, the target reward margin (the authors' repository suggests γ/β ≈ 0.5)."""
    learning_rate: float = 5e-7
    """Adam step size (the paper searches 3e-7 to 1e-6 for 7-8B models; a table of logits
    learns at 0.05)."""
    batch_size: int = 128
    """Preference pairs per step, in shuffled passes over the data (the paper: 128)."""
    max_grad_norm: float | None = None
    """Clip the gradient's global norm to this; None: no clipping (the norm is still reported)."""

    def __post_init__(self) -> None:
        # Checks of values belong here: `rlhf-harness validate` reports them with their line.
        need(self.beta > 0, f"beta must be > 0, got {self.beta}")
        need(self.gamma >= 0, f"gamma must be ≥ 0, got {self.gamma}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        need(self.max_grad_norm is None or self.max_grad_norm > 0,
             f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


def simpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    len_chosen: torch.Tensor,
    len_rejected: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_SimPO from sequence log-probs and lengths; also the rewards r(y⁺), r(y⁻) (Eq. 4, 6)."""
    chosen_rewards = beta * logp_chosen / len_chosen.clamp_min(1)
    rejected_rewards = beta * logp_rejected / len_rejected.clamp_min(1)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma).mean()
    return loss, chosen_rewards, rejected_rewards


class SimPO(OfflineAlgorithm):
    """SimPO: one minibatch of preference pairs per step, no reference model."""

    name = "my-simpo"
    Config = Config
    needs = frozenset({"preferences"})  # offline: ctx.preferences holds the suite's pairs
    uses_reference = False  # SimPO never reads π_ref: no self.ref
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "batch_size": 64},
    }
    """Settings that learn on a table of logits (the bandit), where the paper's step is far too
    small; `rlhf-harness show my-simpo` prints them."""
    metrics: ClassVar[dict[str, str]] = {
        "avg_logp_chosen": "mean per-token log π(y⁺|x), i.e. log π(y⁺|x) / |y⁺|",
        "avg_logp_rejected": "mean per-token log π(y⁻|x), i.e. log π(y⁻|x) / |y⁻|",
        "reward_chosen": "mean SimPO reward β/|y⁺| · log π(y⁺|x) (no reference)",
        "reward_rejected": "mean SimPO reward β/|y⁻| · log π(y⁻|x) (no reference)",
        "reward_margin": "mean r(y⁺) − r(y⁻) of SimPO's rewards; the loss pushes it past γ",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The harness's learning-rate range for ``policy_kind``, β over a decade and γ in
        [0, 2] (the paper's search)."""
        return standard_space(policy_kind, beta=log_uniform(0.5, 5.0),
                              gamma={"low": 0.0, "high": 2.0})

    # OfflineAlgorithm's constructor sets self.data (the pairs, on the run's device), policy,
    # params and optimizer (Adam: this Config names no other); next_rows() draws minibatches in
    # shuffled passes over the pairs, from ctx.generator only.

    def step(self) -> dict[str, float]:
        cfg, meter = self.config, self.ctx.meter
        batch = self.data.select(self.next_rows(cfg.batch_size))
        n = len(batch)
        with meter.phase("train"):
            # One forward over chosen and rejected responses: each prompt appears twice in the
            # batch, and the language-model policy computes it once.
            prompts = PromptBatch.cat([batch.prompts, batch.prompts])
            responses = ResponseBatch.cat([batch.chosen, batch.rejected])
            token_logp, entropy = self.policy.token_logprobs_and_entropy(prompts, responses)
            logp = token_logp.sum(-1)  # [2n] sequence log-probs
            lengths = responses.lengths.to(logp.dtype)
            loss, chosen_rewards, rejected_rewards = simpo_loss(
                logp[:n], logp[n:], lengths[:n], lengths[n:], cfg.beta, cfg.gamma
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
            self.optimizer.step()
        meter.train(self.policy, int(responses.mask.sum()))
        meter.samples += n  # offline: the pairs read are the budget's samples

        assert entropy is not None
        logp, margin = logp.detach(), (chosen_rewards - rejected_rewards).detach()
        average = logp / lengths.clamp_min(1)
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(rl.masked_mean(entropy, responses.mask)),
            "response_length": float(lengths.mean()),
            "logp_chosen": float(logp[:n].mean()),
            "logp_rejected": float(logp[n:].mean()),
            "reward_accuracy": float((margin > 0).float().mean()),
            "avg_logp_chosen": float(average[:n].mean()),
            "avg_logp_rejected": float(average[n:].mean()),
            "reward_chosen": float(chosen_rewards.detach().mean()),
            "reward_rejected": float(rejected_rewards.detach().mean()),
            "reward_margin": float(margin.mean()),
        }


@hookimpl
def register_algorithms(register: Register) -> None:
    register(SimPO.name, SimPO)
