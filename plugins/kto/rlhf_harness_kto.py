"""Kahneman-Tversky Optimization (KTO), Ethayarajh et al. 2024, arXiv:2402.01306 ("KTO: Model
Alignment as Prospect Theoretic Optimization").

KTO learns offline from *unpaired* binary feedback: single responses y to prompts x, each marked
desirable or undesirable. With the implied reward r_θ(x, y) = log π_θ(y|x) / π_ref(y|x) and a
reference point z₀ = KL(π_θ(y'|x) ‖ π_ref(y'|x)), its value function is (the paper's Eq. 8)

    v(x, y) = λ_D σ(β (r_θ(x, y) − z₀))   if y is desirable given x,
              λ_U σ(β (z₀ − r_θ(x, y)))   if y is undesirable given x,

and the loss is L_KTO(π_θ, π_ref) = E_{x, y ~ D} [ λ_y − v(x, y) ].

**The reference point.** z₀ is estimated per batch from *mismatched* pairs, as the paper (§4.1)
and its reference implementation (and TRL's ``KTOTrainer``) do: example i's prompt with example
i − 1's response (the batch's responses rotated by one), z₀ = max(0, mean_i log π_θ(y_{i−1}|x_i)
/ π_ref(y_{i−1}|x_i)), computed without gradient ("we do not back-propagate through the KL term",
§4.1). It costs one extra forward of π_θ and one of π_ref per step (counted as such).

**Where the examples come from.** The harness's data are preference pairs. Like TRL's
``unpair_preference_dataset``, each pair (x, y⁺, y⁻) gives two examples: (x, y⁺) desirable and
(x, y⁻) undesirable (:meth:`harness.data.PreferenceBatches.unpaired`); a batch is drawn from
all 2N examples in shuffled passes, so a pair's two halves rarely meet in one batch. A suite that
marks its data unpaired (``preferences.unpaired: true``) keeps one response per pair, chosen or
rejected by a fair coin (the paper's "one-y-per-x" setting, §4.3), so the pairing carries no
information at all. KTO therefore declares ``needs = {"unpaired"}``, which every suite can feed.

**Weights.** λ_D and λ_U default to 1; the paper (§4.2) recommends λ_D n_D / (λ_U n_U) in
[1, 4/3]. With data from pairs n_D = n_U, so 1 and 1 are in range.

**TRL.** ``KTOTrainer`` (``loss_type="kto"``) computes the same loss: losses (1 − σ(·)) weighted
by ``desirable_weight`` / ``undesirable_weight`` and averaged over the batch's examples, with z₀
from rotated completions, detached and clamped at 0; ``tests/test_against_trl.py`` runs its
``_compute_loss`` on the same log-probs. TRL pairs completions with prompts once, when the dataset
is tokenised; here the rotation is within each step's shuffled batch.

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``): ``kl``
(z₀ of the step), ``reward_desirable`` / ``reward_undesirable`` (mean β r_θ of each kind in the
batch; absent when the batch has none of that kind), ``frac_desirable``, ``learning_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from harness import hookimpl, rl
from harness.pieces import OfflineAlgorithm, log_uniform, standard_space


@dataclass
class Config:
    """KTO hyperparameters. Defaults: Ethayarajh et al. 2024 §4.2 and TRL's ``KTOConfig``, as
    noted per field."""

    beta: float = 0.1
    """β, the risk aversion of the value function and the strength of the pull to π_ref (the
    paper's §4.2 and TRL: 0.1)."""
    desirable_weight: float = 1.0
    """λ_D, the weight of desirable examples (the paper and TRL: 1.0)."""
    undesirable_weight: float = 1.0
    """λ_U, the weight of undesirable examples (the paper and TRL: 1.0)."""
    learning_rate: float = 1e-6
    """Step size (TRL's ``KTOConfig`` default 1e-6; the paper tunes it per model)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimiser (the reference code and TRL train with AdamW at weight decay 0, i.e. Adam)."""
    batch_size: int = 32
    """Examples per step (the paper's reference runs use an effective batch of 32; at least 2,
    for the mismatched pairs of z₀)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps (transformers' default 0)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' default 1.0, which TRL uses). None: no
    clipping."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def _check(cfg: Config) -> None:
    for field, ok, rule in [
        ("beta", cfg.beta > 0, "> 0"),
        ("desirable_weight", cfg.desirable_weight > 0, "> 0"),
        ("undesirable_weight", cfg.undesirable_weight > 0, "> 0"),
        ("learning_rate", cfg.learning_rate > 0, "> 0"),
        ("batch_size", cfg.batch_size >= 2, ">= 2"),
        ("warmup_steps", cfg.warmup_steps >= 0, ">= 0"),
        ("max_grad_norm", cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "> 0"),
    ]:
        if not ok:
            raise ValueError(f"{field} must be {rule}, got {getattr(cfg, field)}")


def kto_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_KTO (Eq. 8) on a batch of examples, from sequence log-probs and the reference point.

    r = log π_θ(y|x) − log π_ref(y|x);  v = λ_D σ(β(r − z₀)) if desirable else λ_U σ(β(z₀ − r));
    L = mean (λ_y − v).  ``kl`` is z₀ (treated as a constant).  Returns ``(loss, r)``.
    """
    r = logp - ref_logp
    z0 = kl.detach()
    weight = torch.full_like(r, undesirable_weight).masked_fill(desirable, desirable_weight)
    value = weight * torch.sigmoid(torch.where(desirable, beta * (r - z0), beta * (z0 - r)))
    return (weight - value).mean(), r


def reference_point(
    logp_mismatched: torch.Tensor, ref_logp_mismatched: torch.Tensor
) -> torch.Tensor:
    """z₀ = max(0, mean log π_θ(y_{i−1}|x_i) / π_ref(y_{i−1}|x_i)), without gradient (§4.1)."""
    return (logp_mismatched - ref_logp_mismatched).detach().mean().clamp(min=0)


class KTO(OfflineAlgorithm):
    """Kahneman-Tversky Optimization: one minibatch of unpaired examples per step."""

    name = "kto"
    Config = Config
    needs = frozenset({"unpaired"})
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05},
        "neural": {"learning_rate": 1e-3},
    }
    """From tests/test_preference_zoo.py (bandit) and the token and tiny-lm checks."""
    metrics: ClassVar[dict[str, str]] = {
        "kl": "z₀ of the step: max(0, mean log π/π_ref of mismatched prompt–response pairs)",
        "frac_desirable": "fraction of the step's examples that are desirable",
        "reward_desirable": "mean β log π(y|x)/π_ref(y|x) of the step's desirable examples",
        "reward_undesirable": "mean β log π(y|x)/π_ref(y|x) of the step's undesirable examples",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those
        that train a table of logits, three for language models (a 0.3M-parameter LM trains at
        1e-3, billion-parameter ones at 1e-5); β over two decades."""
        return standard_space(policy_kind, beta=log_uniform(0.01, 1.0))

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        rows = self.next_rows(cfg.batch_size)
        batch = self.data.select(rows)
        (ref_logp,) = self.ref(rows)
        desirable = batch.desirable
        # z₀ from mismatched pairs: prompt i with response i − 1.
        shifted = batch.responses.select(torch.roll(torch.arange(len(batch)), 1).to(ctx.device))
        tokens_kl = int(shifted.mask.sum())
        with meter.phase("score"), torch.no_grad():
            ref_kl = ctx.reference.sequence_logprobs(batch.prompts, shifted)
            policy_kl = self.policy.sequence_logprobs(batch.prompts, shifted)
        meter.forward(ctx.reference, tokens_kl)
        meter.forward(self.policy, tokens_kl)
        z0 = reference_point(policy_kl, ref_kl)
        with meter.phase("train"):
            self.policy.train()
            logp_tok, entropy = self.policy.token_logprobs_and_entropy(batch.prompts,
                                                                      batch.responses)
            logp = logp_tok.sum(-1)
            loss, r = kto_loss(logp, ref_logp, desirable, z0, cfg.beta,
                               cfg.desirable_weight, cfg.undesirable_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        mask = batch.responses.mask
        meter.train(self.policy, int(mask.sum()))
        meter.samples += len(batch)

        assert entropy is not None
        r = r.detach()
        metrics = {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "kl": float(z0),
            "frac_desirable": float(desirable.float().mean()),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }
        if bool(desirable.any()):
            metrics["reward_desirable"] = float(cfg.beta * r[desirable].mean())
        if bool((~desirable).any()):
            metrics["reward_undesirable"] = float(cfg.beta * r[~desirable].mean())
        return metrics


@hookimpl
def register_algorithms(register) -> None:
    register(KTO.name, KTO)
