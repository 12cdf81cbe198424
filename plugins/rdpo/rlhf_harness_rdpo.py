"""DPO under label noise: robust DPO (rDPO), Chowdhury et al. 2024, arXiv:2403.00409 ("Provably
Robust DPO: Aligning Language Models with Noisy Feedback"), and conservative DPO (cDPO), Mitchell
2023 ("A note on DPO with noisy preferences & relationship to IPO").

Both assume each preference label was flipped with a known probability ε < 1/2 — the simulated
annotator's ``flip_rate`` — and correct DPO's loss for it. With the DPO margin
h = β (log π_θ(y⁺|x)/π_ref(y⁺|x) − log π_θ(y⁻|x)/π_ref(y⁻|x)) and ℓ(h) = −log σ(h) (DPO's
per-pair loss, Rafailov et al. Eq. 7):

    rDPO (Chowdhury et al., Eq. 8):   ℓ_ε(h) = [ (1 − ε) ℓ(h) − ε ℓ(−h) ] / (1 − 2ε),
    cDPO (Mitchell 2023):             ℓ_ε(h) = (1 − ε) ℓ(h) + ε ℓ(−h),

each averaged over the pairs of a batch. **What each one converges to.** rDPO's loss is an
*unbiased* estimate of the clean loss: its expectation over the flips equals ℓ of the un-flipped
label, so its population minimiser under flipped labels is clean DPO's, π*_β ∝ π_ref exp(r*/β)
(Chowdhury et al., Lemma 3.1). cDPO is label smoothing: a pair labelled a ≻ b with probability q
is fitted as if with probability (1 − ε) q + ε (1 − q), so its minimiser is *more* conservative
than DPO's on the same noisy data (closer to π_ref), which stops h from growing without bound on
pairs the data show only one way (Mitchell's motivation) but does not undo the noise.
``tests/test_preference_zoo.py`` measures both on the bandit with 20% of the labels flipped.

rDPO's per-pair loss is unbounded below when −ε ℓ(−h) dominates (h → +∞), so on finite data a
pair type whose observed label frequency is more extreme than 1 − ε can make it diverge
(Chowdhury et al. bound the error for a finite step count); ``max_grad_norm`` limits each step.

**ε.** ``epsilon`` in the config, or, when it is None (the default), the rate the suite flipped
its simulated labels at (``preferences.flip_rate``, given as ``RunContext.label_noise``): hence
``needs = {"preferences", "label_noise"}``, and ``rlhf-harness validate`` refuses a suite that
loads its data from a file (whose noise rate it cannot know) unless ``epsilon`` is set, and any
ε ≥ 1/2 (rDPO divides by 1 − 2ε; at 1/2 cDPO's loss no longer depends on the labels).

**TRL.** ``DPOTrainer(loss_type="robust", label_smoothing=ε)`` is rDPO, the same formula. cDPO
is not ``loss_type="sigmoid"`` with ``label_smoothing`` = ε: in TRL 1.12 to 1.16 the sigmoid loss
never reads ``label_smoothing``: it is plain DPO's loss whatever ε (at a margin h = 0.5 and
ε = 0.1, −log σ(h) = 0.474 where cDPO's is 0.524). The formula above is Mitchell's, which is what
this plugin computes; ``tests/test_against_trl.py`` checks both facts.

Metrics (besides the shared ``loss``, ``grad_norm``, ``entropy``, ``response_length``): as the dpo
plugin's (``reward_chosen``, ``reward_rejected``, ``reward_margin``, ``reward_accuracy``,
``logp_chosen``, ``logp_rejected``, ``learning_rate``), and ``epsilon`` (the ε in use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from harness import hookimpl, rl
from harness.algorithm import RunContext
from harness.errors import ConfigError
from harness.pieces import OfflineAlgorithm, log_uniform, standard_space
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """rDPO and cDPO hyperparameters: the dpo plugin's (Rafailov et al. 2023, App. B), so that a
    comparison under label noise changes only the loss, plus ε."""

    epsilon: float | None = None
    """ε, the probability that a label was flipped. None: the suite's ``preferences.flip_rate``
    (known when the harness simulates the data; Chowdhury et al. assume ε known, §3)."""
    beta: float = 0.1
    """β, the strength of the KL constraint to π_ref (DPO App. B: 0.1; Chowdhury et al. §6 also
    use β = 0.1)."""
    learning_rate: float = 1e-6
    """Step size (DPO App. B: RMSprop with learning rate 1e-6)."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """Optimiser (DPO App. B uses RMSprop; Adam is TRL's default)."""
    batch_size: int = 64
    """Preference pairs per step (DPO App. B: 64)."""
    warmup_steps: int = 150
    """Linear learning-rate warm-up from 0 over this many steps (DPO App. B: 150)."""
    max_grad_norm: float | None = 10.0
    """Gradient clipping by global norm (the DPO authors' reference code: 10.0). None: none."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def _check(cfg: Config) -> None:
    for field, ok, rule in [
        ("epsilon", cfg.epsilon is None or 0 <= cfg.epsilon < 0.5, "in [0, 0.5)"),
        ("beta", cfg.beta > 0, "> 0"),
        ("learning_rate", cfg.learning_rate > 0, "> 0"),
        ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("warmup_steps", cfg.warmup_steps >= 0, ">= 0"),
        ("max_grad_norm", cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "> 0"),
    ]:
        if not ok:
            raise ValueError(f"{field} must be {rule}, got {getattr(cfg, field)}")


def _dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta):
    chosen_rewards = beta * (logp_chosen - ref_logp_chosen)
    rejected_rewards = beta * (logp_rejected - ref_logp_rejected)
    return chosen_rewards, rejected_rewards


def rdpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rDPO (Chowdhury et al. Eq. 8): mean [(1 − ε) ℓ(h) − ε ℓ(−h)] / (1 − 2ε), ℓ = −log σ.

    Returns ``(loss, β log π/π_ref (y⁺), β log π/π_ref (y⁻))``.
    """
    if not 0 <= epsilon < 0.5:
        raise ValueError(f"rdpo needs 0 <= epsilon < 0.5, got {epsilon}")
    chosen, rejected = _dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen,
                                   ref_logp_rejected, beta)
    h = chosen - rejected
    losses = (-(1 - epsilon) * F.logsigmoid(h) + epsilon * F.logsigmoid(-h)) / (1 - 2 * epsilon)
    return losses.mean(), chosen, rejected


def cdpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cDPO (Mitchell 2023): mean [(1 − ε) ℓ(h) + ε ℓ(−h)], ℓ = −log σ.

    Returns ``(loss, β log π/π_ref (y⁺), β log π/π_ref (y⁻))``.
    """
    if not 0 <= epsilon < 0.5:
        raise ValueError(f"cdpo needs 0 <= epsilon < 0.5, got {epsilon}")
    chosen, rejected = _dpo_margin(logp_chosen, logp_rejected, ref_logp_chosen,
                                   ref_logp_rejected, beta)
    h = chosen - rejected
    losses = -(1 - epsilon) * F.logsigmoid(h) - epsilon * F.logsigmoid(-h)
    return losses.mean(), chosen, rejected


class RobustDPO(OfflineAlgorithm):
    """rDPO: DPO with an unbiased correction for labels flipped at rate ε."""

    name = "rdpo"
    Config = Config
    needs = frozenset({"preferences", "label_noise"})
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
        "neural": {"learning_rate": 1e-3, "optimizer": "adam", "warmup_steps": 0},
    }
    """The dpo plugin's, as the comparison under noise should change only the loss."""
    metrics: ClassVar[dict[str, str]] = {
        "reward_chosen": "mean implicit reward β (log π(y⁺|x) − log π_ref(y⁺|x))",
        "reward_rejected": "mean implicit reward β (log π(y⁻|x) − log π_ref(y⁻|x))",
        "reward_margin": "mean difference of the implicit rewards of y⁺ and y⁻",
        "epsilon": "the label-noise rate ε in use (config, or the suite's flip_rate)",
    }
    label_noise_key = "epsilon"
    loss = staticmethod(rdpo_loss)

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those that
        train a table of logits, three for language models (a 0.3M-parameter LM trains at 1e-3,
        billion-parameter ones at 1e-5); β of the DPO loss over two decades, as the dpo plugin's."""
        return standard_space(policy_kind, beta=log_uniform(0.02, 2.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        epsilon = config.epsilon if config.epsilon is not None else context.label_noise
        if epsilon is None:
            raise ConfigError(
                f"algorithm '{self.name}': the label-noise rate ε is unknown (the suite's data "
                f"were not simulated by the harness); set config.epsilon"
            )
        if not 0 <= epsilon < 0.5:  # the suite's flip rate (validate refuses one >= 0.5)
            raise ConfigError(f"algorithm '{self.name}': the label-noise rate ε must be in "
                              f"[0, 0.5), got {epsilon}")
        self.epsilon = float(epsilon)
        super().__init__(config, context)

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
            loss, chosen, rejected = self.loss(
                logp_chosen, logp_rejected, ref_chosen, ref_rejected,
                cfg.beta, self.epsilon,
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
        margin = (chosen - rejected).detach()
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(entropy.sum() / mask.sum().clamp_min(1)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward_chosen": float(chosen.detach().mean()),
            "reward_rejected": float(rejected.detach().mean()),
            "reward_margin": float(margin.mean()),
            "reward_accuracy": float((margin > 0).float().mean()),
            "logp_chosen": float(logp_chosen.detach().mean()),
            "logp_rejected": float(logp_rejected.detach().mean()),
            "epsilon": self.epsilon,
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }


class ConservativeDPO(RobustDPO):
    """cDPO: DPO with labels smoothed by ε (conservative, biased towards π_ref)."""

    name = "cdpo"
    loss = staticmethod(cdpo_loss)


@hookimpl
def register_algorithms(register) -> None:
    register(RobustDPO.name, RobustDPO)
    register(ConservativeDPO.name, ConservativeDPO)
