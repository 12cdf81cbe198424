"""Identity Preference Optimisation (IPO), Azar et al. 2023, arXiv:2310.12036 ("A General
Theoretical Paradigm to Understand Learning from Human Preferences").

IPO, like DPO, learns offline from preference pairs (x, y⁺, y⁻) with no reward model and no
sampling, through the log-ratio margin of the policy against π_ref:

    h_π(x, y⁺, y⁻) = log(π(y⁺|x) / π_ref(y⁺|x)) − log(π(y⁻|x) / π_ref(y⁻|x)).

Where DPO maximises log σ(β h) — the Bradley-Terry likelihood, which keeps pushing h up on every
pair it is sure of — IPO *regresses* h onto a fixed target (the paper's empirical loss, Eq. 17):

    L_IPO(π) = E_{(x, y⁺, y⁻) ~ D} ( h_π(x, y⁺, y⁻) − 1/(2τ) )²,

τ > 0 playing the role of DPO's β (the strength of the pull towards π_ref). The paper's point:
when preferences are deterministic (y⁺ ≻ y⁻ with probability 1, or nearly so, as
with finite data), DPO's optimum has π(y⁻) → 0 *whatever β* — the KL regularisation is not
effective — while IPO's keeps h = 1/(2τ) finite. ``tests/test_ipo.py`` shows both on a bandit.

**Log-probs: sum or mean.** The paper writes h with sequence log-probs, log π(y|x) = Σ_t
log π(y_t | x, y_<t), and so does this plugin by default. TRL's ``DPOTrainer`` with
``loss_type="ipo"`` divides each response's log-ratio by its number of tokens (its comment: the
IPO authors confirmed their reported results use this normalised form). ``length_normalize``
selects that variant; on one-token responses (the bandit) the two coincide.

The reference log-probs log π_ref(y|x) do not change during training, so each pair's are
computed once, the first time a batch holds it (as the dpo plugin does).

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``):
``logratio_chosen`` / ``logratio_rejected`` (mean log π/π_ref of y⁺ and y⁻, as they enter h:
per token when ``length_normalize``), ``margin`` (mean h; IPO's target is 1/(2τ)),
``reward_accuracy`` (fraction of pairs with h > 0), ``logp_chosen`` / ``logp_rejected`` (mean
sequence log-probs under π) and ``learning_rate``. IPO never samples from π, so it reports no
``kl_ref``: the runner's evaluators measure KL(π‖π_ref).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from harness import hookimpl
from harness.algorithm import RunContext
from harness.pieces import OfflineAlgorithm, log_uniform, need, standard_space
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """IPO hyperparameters. "TRL" is TRL's ``DPOConfig`` with ``loss_type="ipo"``; the paper
    reports no LLM training settings to take defaults from."""

    tau: float = 0.1
    """τ, the regularisation (the paper's τ; TRL's ``beta``, which for IPO is τ: default 0.1).
    The loss's target margin is 1/(2τ) = 5 nats at 0.1."""
    learning_rate: float = 1e-6
    """Step size (TRL: 1e-6)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser (TRL trains with AdamW at weight decay 0, i.e. Adam; the DPO paper's RMSprop is
    available for comparisons with the dpo plugin)."""
    batch_size: int = 64
    """Preference pairs per step (the DPO paper's 64, as the dpo plugin, so that the two see the
    same data per step; TRL's per-device default 8 is multiplied by devices and accumulation)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps (TRL: transformers'
    ``warmup_steps`` default, 0)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (TRL: transformers' default 1.0). None: no clipping."""
    length_normalize: bool = False
    """Use each response's per-token mean log-ratio in h (TRL's IPO) instead of its sum (the
    paper's Eq. 17, the default). See the module docstring."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def ipo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_IPO on a batch of pairs, and the margins h.

    h = (log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻)),   L = mean (h − 1/(2τ))².
    The inputs are sequence log-probs (or per-token means, for the length-normalised variant).
    Returns ``(loss, h)``.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    h = (logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected)
    return ((h - 1.0 / (2.0 * tau)) ** 2).mean(), h


def _check(cfg: Config) -> None:
    need(cfg.tau > 0, f"tau must be > 0, got {cfg.tau}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.warmup_steps >= 0, f"warmup_steps must be >= 0, got {cfg.warmup_steps}")
    need(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
        f"max_grad_norm must be > 0, got {cfg.max_grad_norm}",
    )


class IPO(OfflineAlgorithm):
    """Identity Preference Optimisation: one minibatch of pairs per step."""

    name = "ipo"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
    }
    """From suites/reproductions/azar_*.yaml (bandit); no shipped suite runs it on tiny-lm."""
    metrics: ClassVar[dict[str, str]] = {
        "logratio_chosen": "mean log π(y⁺|x)/π_ref(y⁺|x), per token when length_normalize",
        "logratio_rejected": "mean log π(y⁻|x)/π_ref(y⁻|x), per token when length_normalize",
        "margin": "mean h = logratio_chosen − logratio_rejected; IPO's target is 1/(2τ)",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those
        that train a table of logits, three for language models (a 0.3M-parameter LM trains at
        1e-3, billion-parameter ones at 1e-5); τ of the IPO loss over two decades."""
        return standard_space(policy_kind, tau=log_uniform(0.01, 1.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.len_chosen = self.data.chosen.mask.sum(-1).clamp(min=1)
        self.len_rejected = self.data.rejected.mask.sum(-1).clamp(min=1)

    def step(self) -> dict[str, float]:
        cfg, meter = self.config, self.ctx.meter
        rows = self.next_rows(cfg.batch_size)
        batch = self.data.select(rows)
        n = len(batch)
        ref_chosen, ref_rejected = self.ref(rows)
        with meter.phase("train"):
            self.policy.train()
            both = ResponseBatch.cat([batch.chosen, batch.rejected])
            prompts = PromptBatch.cat([batch.prompts, batch.prompts])
            logp_tok, entropy = self.policy.token_logprobs_and_entropy(prompts, both)
            logp = logp_tok.sum(-1)
            logp_chosen, logp_rejected = logp[:n], logp[n:]
            if cfg.length_normalize:
                len_c, len_r = self.len_chosen[rows], self.len_rejected[rows]
                loss, h = ipo_loss(logp_chosen / len_c, logp_rejected / len_r,
                                   ref_chosen / len_c, ref_rejected / len_r, cfg.tau)
                ratio_c = (logp_chosen.detach() - ref_chosen) / len_c
                ratio_r = (logp_rejected.detach() - ref_rejected) / len_r
            else:
                loss, h = ipo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, cfg.tau)
                ratio_c = logp_chosen.detach() - ref_chosen
                ratio_r = logp_rejected.detach() - ref_rejected
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            self.optimizer.step()
            self.scheduler.step()
        mask = both.mask
        meter.train(self.policy, int(mask.sum()))
        meter.samples += n

        h = h.detach()
        assert entropy is not None
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "logratio_chosen": float(ratio_c.mean()),
            "logratio_rejected": float(ratio_r.mean()),
            "margin": float(h.mean()),
            "reward_accuracy": float((h > 0).float().mean()),
            "logp_chosen": float(logp_chosen.detach().mean()),
            "logp_rejected": float(logp_rejected.detach().mean()),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }


@hookimpl
def register_algorithms(register) -> None:
    register(IPO.name, IPO)
