"""Direct Preference Optimization (DPO), Rafailov et al. 2023, arXiv:2305.18290.

DPO fits the policy to the preference pairs directly, with no reward model and no sampling. Its
loss is the Bradley-Terry likelihood of the pairs under the policy's *implicit reward*
r_θ(x, y) = β · log(π_θ(y|x) / π_ref(y|x)) (Eq. 7 of the paper):

    L_DPO(π_θ; π_ref) = −E_{(x, y⁺, y⁻) ~ D} [ log σ( β · ( log π_θ(y⁺|x) − log π_ref(y⁺|x)
                                                        − log π_θ(y⁻|x) + log π_ref(y⁻|x) ) ) ]

Under the Bradley-Terry model with infinite data, its minimiser is the KL-regularised optimum
π*_β ∝ π_ref · exp(r*/β) (the paper's Eq. 4). The reference log-probs log π_ref(y|x) do not
change during training, so each pair's are computed once, the first time a batch holds it.

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``):
``reward_chosen`` / ``reward_rejected`` (mean implicit rewards), ``reward_margin`` (their mean
difference), ``reward_accuracy`` (fraction of pairs with r_θ(y⁺) > r_θ(y⁻)), ``logp_chosen`` /
``logp_rejected`` (mean sequence log-probs under π_θ). DPO never samples from π_θ, so it reports
no ``kl_ref`` of its own: the runner's evaluators measure KL(π_θ‖π_ref) on π_θ's samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from harness import hookimpl
from harness.pieces import OfflineAlgorithm, log_uniform, standard_space
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """DPO hyperparameters. Defaults: Rafailov et al. 2023, Appendix B, unless noted."""

    beta: float = 0.1
    """β, the strength of the KL constraint to π_ref ("Unless noted otherwise, we use β = 0.1")."""
    learning_rate: float = 1e-6
    """Step size (App. B: RMSprop with learning rate 1e-6)."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """Optimiser (App. B uses RMSprop; Adam is TRL's default)."""
    batch_size: int = 64
    """Preference pairs per step (App. B: batch size 64)."""
    warmup_steps: int = 150
    """Linear learning-rate warm-up from 0 over this many steps (App. B: 150)."""
    max_grad_norm: float = 10.0
    """Gradient clipping by global norm (the authors' reference code, config.yaml: 10.0)."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def _check(cfg: Config) -> None:
    for field, ok, rule in [
        ("beta", cfg.beta > 0, "> 0 (β ≤ 0 rewards moving away from the preferred responses)"),
        ("learning_rate", cfg.learning_rate > 0, "> 0"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("warmup_steps", cfg.warmup_steps >= 0, ">= 0"),
        ("max_grad_norm", cfg.max_grad_norm > 0, "> 0"),
    ]:
        if not ok:
            raise ValueError(f"{field} must be {rule}, got {getattr(cfg, field)}")


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_DPO on a batch of pairs, from sequence log-probs; also the implicit rewards.

    r_θ(x, y) = β (log π_θ(y|x) − log π_ref(y|x))   (Eq. 7)
    L = −mean log σ(r_θ(x, y⁺) − r_θ(x, y⁻))
    Returns ``(loss, r_θ(y⁺), r_θ(y⁻))``.
    """
    chosen_rewards = beta * (logp_chosen - ref_logp_chosen)
    rejected_rewards = beta * (logp_rejected - ref_logp_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards, rejected_rewards


class DPO(OfflineAlgorithm):
    """Direct Preference Optimization: one minibatch of pairs per step."""

    name = "dpo"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
        "neural": {"learning_rate": 1e-3, "optimizer": "adam", "warmup_steps": 0},
    }
    """From suites/quickstart.yaml (bandit; tiny-lm) and the reproductions on the bandit: the
    paper's RMSprop at 1e-6 with 150 warm-up steps trains nothing on these small models."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_chosen": "mean implicit reward β (log π(y⁺|x) − log π_ref(y⁺|x))",
        "reward_rejected": "mean implicit reward β (log π(y⁻|x) − log π_ref(y⁻|x))",
        "reward_margin": "mean difference of the implicit rewards of y⁺ and y⁻",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those
        that train a table of logits, three for language models (a 0.3M-parameter LM trains at
        1e-3, billion-parameter ones at 1e-5); β of the DPO loss (the quickstart's 0.4 inside)
        over two decades."""
        return standard_space(policy_kind, beta=log_uniform(0.02, 2.0))

    def step(self) -> dict[str, float]:
        cfg, meter = self.config, self.ctx.meter
        rows = self.next_rows(cfg.batch_size)
        batch = self.data.select(rows)
        ref_chosen, ref_rejected = self.ref(rows)
        with meter.phase("train"):
            self.policy.train()
            both = ResponseBatch.cat([batch.chosen, batch.rejected])
            prompts = PromptBatch.cat([batch.prompts, batch.prompts])
            logp_tok, entropy = self.policy.token_logprobs_and_entropy(prompts, both)
            logp = logp_tok.sum(-1)
            n = len(batch)
            logp_chosen, logp_rejected = logp[:n], logp[n:]
            loss, chosen_rewards, rejected_rewards = dpo_loss(
                logp_chosen, logp_rejected, ref_chosen, ref_rejected, cfg.beta
            )
            logits = chosen_rewards - rejected_rewards

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)  # free them before the next forward
            self.scheduler.step()
        tokens = int(both.mask.sum())
        meter.train(self.policy, tokens)
        meter.samples += n

        mask = both.mask
        loss, logits = loss.detach(), logits.detach()
        chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
        logp_chosen, logp_rejected = logp_chosen.detach(), logp_rejected.detach()
        return {
            "loss": float(loss),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward_chosen": float(chosen_rewards.mean()),
            "reward_rejected": float(rejected_rewards.mean()),
            "reward_margin": float(logits.mean()),
            "reward_accuracy": float((logits > 0).float().mean()),
            "logp_chosen": float(logp_chosen.mean()),
            "logp_rejected": float(logp_rejected.mean()),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(DPO.name, DPO)
