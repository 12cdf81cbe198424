"""Group Relative Policy Optimization (GRPO), Shao et al. 2024, arXiv:2402.03300 (DeepSeekMath).

GRPO is PPO without a critic: for each prompt q it samples a *group* of G responses o_1 … o_G
from the current policy π_θold, scores them with the reward model, and uses each response's
reward relative to its group as the advantage of every one of its tokens. The objective
(DeepSeekMath §4.1, Eq. 3) is

    J(θ) = E_{q, {o_i} ~ π_θold} [ 1/G Σ_i 1/|o_i| Σ_t { min(ρ_{i,t} Â_{i,t},
                       clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_{i,t}) − β D_KL[π_θ ‖ π_ref] } ]

with ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_θold(o_{i,t} | q, o_{i,<t}), the KL to π_ref
estimated per token with Schulman's k3 (Eq. 4),

    D_KL[π_θ ‖ π_ref] = π_ref/π_θ − log(π_ref/π_θ) − 1     (at token o_{i,t}),

and, with outcome supervision (§4.1.2), Â_{i,t} = (r_i − mean(r)) / std(r) over the group. The
penalty sits in the loss rather than in the reward (as PPO's RLHF does), so the advantages are
not mixed with the KL. The iterative version (Algorithm 1) samples with π_θold, then takes μ
gradient steps on the same rollouts (``num_iterations``): only then does ρ move away from 1 and
the clip act. With μ = 1 and one minibatch, ρ = 1 exactly and the gradient is the plain policy
gradient of the group-normalised rewards (plus the KL term); that is the setting of
DeepSeekMath's own experiments ("the policy model only has a single update following each
exploration stage", §4.2).

**Variants**, each one documented switch of :class:`Config`:

- ``epsilon_high`` — DAPO's *clip-higher* (Yu et al. 2025, arXiv:2503.14476, §3.1): a larger
  upper clip 1 + ε_high (0.28) than the lower one 1 − ε_low, so unlikely tokens can gain mass.
- ``loss_type`` — how per-token losses are averaged: ``"sequence"`` (GRPO: mean over each
  response's tokens, then over responses, the 1/G Σ_i 1/|o_i| Σ_t above); ``"token"`` (DAPO's
  token-level loss, §3.3: one mean over all tokens of the batch, so long responses weigh more);
  ``"constant"`` (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783, §3.1: the sum over tokens divided
  by responses × ``max_new_tokens``, a constant, which removes the per-response mean's length
  bias).
- ``scale_rewards`` — ``"group"`` (GRPO: divide by the group's std), ``"batch"`` (by the std of
  the whole batch's rewards, centred per group; TRL's option) or ``"none"`` (Dr. GRPO: no
  division, which removes the bias towards questions of low reward variance, §3.1).
- ``beta`` = 0 — no KL term (DAPO §2.3 removes it; TRL's default is now 0); π_ref is then never
  evaluated.

**Design choices.**

- *Old log-probs.* With ``num_iterations`` = 1 and ``num_mini_batches`` = 1 the update's own
  forward serves: log π_θold = the detached log π_θ (ρ = 1 exactly, no extra forward; as TRL
  does). Otherwise one no-grad forward of the policy before the updates computes them. The
  sampler's log-probs are not used: they come from a different code path (a KV-cached sampling
  loop for LMs) whose rounding may differ from the training forward, and ρ must be exactly 1
  where the policy has not moved.
- *Temperature.* All log-probs (policy, old, reference) are those of the logits divided by
  ``temperature``, as TRL computes them, so the ratio is exactly on-policy for the tempered
  sampler and the KL compares the tempered distributions. At the default 1.0 they are π_θ and
  π_ref themselves.
- *What the k3 term optimises.* Differentiated on samples of π_θ, the gradient of E_π[k3]
  through the formula (the samples held fixed) is Σ_y (π_θ − π_ref) ∇log π_θ = ∇ KL(π_ref ‖ π_θ):
  in expectation the penalty is the *forward* KL, not the reverse KL of the RLHF objective
  J_β = E r − β KL(π‖π_ref). So GRPO's fixed point is not the Gibbs policy π_ref·exp(r/β)/Z,
  and with ``scale_rewards="group"`` the rewards are in units of their group std, so β is
  relative to that, not to r. The bandit test in ``tests/test_grpo.py`` measures both effects.
  The advantage r_i − mean(r_group) also includes r_i in its own baseline, which scales the
  expected policy gradient by c = 1 − 1/G. With ``scale_rewards="none"`` GRPO's fixed point is
  therefore the maximiser of c·E_π r − β KL(π_ref ‖ π), π(y) = β π_ref(y) / (λ − c r(y)):
  :func:`forward_kl_fixed_point` computes it exactly on enumerable tasks with one-token
  responses, and :meth:`GRPO.fixed_point` hands it to the runner, whose reports split GRPO's
  regret into the part this objective causes and the part the optimisation leaves.
- *Memory.* :meth:`GRPO.models_resident` is 3 (policy, π_ref, r̂) when β > 0 and 2 when β = 0:
  GRPO never reads π_ref then, so a deployment need not load it (the harness's context still
  holds it).
- *Randomness* comes only from ``ctx.generator``: prompt order, sampling, minibatch shuffling.
  The same seed gives bit-identical metrics on the CPU.

Metrics (besides the shared ``loss``, ``grad_norm``, ``kl_ref``, ``entropy``,
``response_length`` and ``reward``). ``loss`` and ``grad_norm`` (before clipping) are means
over the step's μ × ``num_mini_batches`` updates; the token fractions below are over all the
tokens of those updates.

- ``kl_ref`` — mean over the rollouts of Σ_t k1 = Σ_t log(π_θold/π_ref): an unbiased estimate
  of the sequence-level KL(π_θold ‖ π_ref) of the policy that sampled; ``kl_k3`` — the same with
  k3 per token (also unbiased, ≥ 0, lower variance). Both are absent when β = 0 (no π_ref
  forward is made; the runner's evaluators measure KL).
- ``entropy`` — mean per-token entropy of π_θold on its samples.
- ``reward`` / ``reward_std`` — mean and (unbiased) std of r̂ over the batch.
- ``advantage_std`` — std of the advantages over the batch (≈ 1 with std scaling, smaller
  when groups have equal rewards).
- ``frac_zero_std_groups`` — fraction of groups whose G rewards are all equal: their advantages
  are 0, so they give no policy-gradient signal (DAPO's dynamic sampling, §3.2, filters them).
- ``clip_frac`` — fraction of tokens where the clip zeroes the gradient; ``clip_frac_low``
  (Â < 0 and ρ < 1 − ε_low) and ``clip_frac_high`` (Â > 0 and ρ > 1 + ε_high) split it.
- ``ratio_mean`` — mean ρ over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import torch

from harness import hookimpl, rl
from harness.pieces import (
    OnlineAlgorithm,
    log_uniform,
    need,
    standard_space,
    tempered_token_logprobs,
)

if TYPE_CHECKING:
    from harness.exact import ExactProblem


@dataclass
class Config:
    """GRPO hyperparameters. Sources: DeepSeekMath (Shao et al. 2024) §4.2 and TRL's
    ``GRPOConfig``, as noted per field."""

    num_generations: int = 8
    """G, responses sampled per prompt (TRL's default 8; DeepSeekMath §4.2 samples 64, which
    costs 8× more per prompt on these small tasks). At least 2: the baseline is the group mean."""
    prompts_per_step: int = 16
    """Prompts per step, each sampled G times (DeepSeekMath §4.2: a batch of 1024 responses, 64
    per question, i.e. 16 questions). Prompts are drawn in shuffled passes over the train split."""
    learning_rate: float = 1e-6
    """Step size (DeepSeekMath §4.2: 1e-6 for the policy; also TRL's default)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Optimiser. DeepSeekMath does not name it; TRL trains with AdamW at weight decay 0
    (transformers' default), which is Adam."""
    beta: float = 0.04
    """β, the weight of the k3 KL penalty to π_ref in the loss (DeepSeekMath §4.2: 0.04). TRL's
    current default is 0.0, as DAPO §2.3 removes the term; at 0 π_ref is never evaluated."""
    epsilon: float = 0.2
    """ε (ε_low), the clip range of ρ below 1 and, unless ``epsilon_high`` is set, above 1
    (PPO's 0.2, Schulman et al. 2017; TRL's default; DeepSeekMath does not report its ε)."""
    epsilon_high: float | None = None
    """ε_high, the clip range above 1 (DAPO's clip-higher, Yu et al. 2025 §3.1: 0.28). None:
    ε_high = ε (symmetric, GRPO)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Â = (r − group mean) / std with the std of the ``"group"`` (GRPO §4.1.2) or of the
    ``"batch"`` (TRL's option), or Â = r − group mean with ``"none"`` (Dr. GRPO, Liu et al.
    2025 §3.1). The std gets ε = 1e-4 added, as TRL does, so a group of equal rewards has Â = 0."""
    loss_type: Literal["sequence", "token", "constant"] = "sequence"
    """Aggregation of the per-token loss: ``"sequence"`` (GRPO Eq. 3: per-response mean, then
    mean over responses), ``"token"`` (DAPO §3.3: mean over all tokens of the batch) or
    ``"constant"`` (Dr. GRPO §3.1: sum over tokens / (responses × ``max_new_tokens``))."""
    num_iterations: int = 1
    """μ, gradient passes over each batch of rollouts (DeepSeekMath §4.2 and TRL: 1). Above 1 the
    ratio ρ departs from 1 and the clip acts (DeepSeekMath Algorithm 1)."""
    num_mini_batches: int = 1
    """Minibatches per pass: each pass shuffles the rollouts (with the run's generator) and takes
    one optimiser step per minibatch. 1: one step on the whole batch (DeepSeekMath §4.2)."""
    temperature: float = 1.0
    """Sampling temperature (TRL's default 1.0), > 0. Log-probs in the loss use the same
    tempered logits (see the module docstring)."""
    max_new_tokens: int | None = None
    """Longest response to sample, and Dr. GRPO's constant normaliser. None: the task's
    ``max_new_tokens`` (TRL's ``max_completion_length`` plays both roles)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by global norm (transformers' ``TrainingArguments`` default, which TRL
    uses: 1.0). None: no clipping (the norm is still reported)."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def forward_kl_fixed_point(ref_logp: torch.Tensor, reward: torch.Tensor, *, beta: float,
                           group: int) -> torch.Tensor:
    """``[P, N]`` log-probs of argmax_π c·E_π r − β KL(π_ref ‖ π), c = 1 − 1/G, per prompt.

    Stationarity on the simplex: c·r(y) + β π_ref(y)/π(y) = λ, so π(y) = β π_ref(y) / (λ − c r(y))
    with λ > c·max r chosen so that Σ_y π(y) = 1 (the sum falls as λ grows: bisection, in
    float64). At β = 0 the maximiser puts all mass on the best responses (shared equally).
    """
    c = 1 - 1 / group
    ref, r = ref_logp.double().exp(), reward.double()
    if beta == 0:
        best = (r == r.max(-1, keepdim=True).values).double()
        return (best / best.sum(-1, keepdim=True)).log()
    lo = (c * r).max(-1, keepdim=True).values
    hi = lo + beta + c * (r.max(-1, keepdim=True).values - r.min(-1, keepdim=True).values) + 1
    for _ in range(200):
        mid = (lo + hi) / 2
        too_much = (beta * ref / (mid - c * r)).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(too_much, mid, lo), torch.where(too_much, hi, mid)
    pi = beta * ref / (hi - c * r)
    return (pi / pi.sum(-1, keepdim=True)).log()


class LossTerms(NamedTuple):
    """What :func:`grpo_loss` returns."""

    loss: torch.Tensor
    """Scalar loss to minimise (−J of one batch)."""
    ratio: torch.Tensor
    """[B, T] ρ = exp(logp − old_logp) (1 on padding)."""
    clipped: torch.Tensor
    """[B, T] bool: where the clip zeroes the surrogate's gradient (may be True on padding)."""
    kl: torch.Tensor | None
    """[B, T] k3 per token (0 on padding), or None when β = 0."""


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    beta: float,
    loss_type: Literal["sequence", "token", "constant"],
    max_len: int | None = None,
) -> LossTerms:
    """The GRPO loss of a batch of ``[B, T]`` per-token log-probs, one advantage per response.

    Per token:  L_t = −min(ρ_t Â, clip(ρ_t, 1 − ε, 1 + ε_high) Â) + β · k3_t,
    ρ_t = exp(logp_t − old_logp_t),  k3_t = exp(ref_logp_t − logp_t) − (ref_logp_t − logp_t) − 1;
    then averaged over valid tokens by ``loss_type`` (see :func:`harness.rl.aggregate_loss`):
    ``"sequence"`` (mean per response, then over responses), ``"token"`` (over all tokens) or
    ``"constant"`` (sum / (B · ``max_len``)). ``ref_logp`` may be None when ``beta`` is 0.
    """
    per_token, ratio, clipped = rl.clipped_surrogate(
        logp, old_logp, advantages, epsilon, epsilon_high
    )
    kl = None
    if beta != 0:
        if ref_logp is None:
            raise ValueError("grpo_loss: ref_logp is needed when beta != 0")
        kl = rl.kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    if loss_type == "constant":
        if max_len is None:
            raise ValueError("grpo_loss: loss_type 'constant' needs max_len")
        loss = rl.aggregate_loss(per_token, mask, "constant", float(max_len))
    else:
        loss = rl.aggregate_loss(per_token, mask, loss_type)
    return LossTerms(loss, ratio, clipped, kl)



def _check(cfg: Config) -> None:
    need(cfg.num_generations >= 2, f"num_generations must be >= 2, got {cfg.num_generations}")
    need(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(cfg.beta >= 0, f"beta must be >= 0, got {cfg.beta}")
    need(0 <= cfg.epsilon < 1, f"epsilon must be in [0, 1), got {cfg.epsilon}")
    need(
        cfg.epsilon_high is None or cfg.epsilon_high >= 0,
        f"epsilon_high must be >= 0, got {cfg.epsilon_high}",
    )
    need(cfg.num_iterations >= 1, f"num_iterations must be >= 1, got {cfg.num_iterations}")
    batch = cfg.prompts_per_step * cfg.num_generations
    need(
        1 <= cfg.num_mini_batches <= batch,
        f"num_mini_batches must be between 1 and the batch size {batch}, "
        f"got {cfg.num_mini_batches}",
    )
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(
        cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
        f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}",
    )
    need(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
        f"max_grad_norm must be > 0, got {cfg.max_grad_norm}",
    )


class GRPO(OnlineAlgorithm):
    """Group Relative Policy Optimization: one batch of group rollouts per step, then μ passes."""

    name = "grpo"
    Config = Config
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "prompts_per_step": 8, "num_generations": 8,
                    "scale_rewards": "none"},
        "neural": {"learning_rate": 1e-3, "prompts_per_step": 8, "num_generations": 8,
                   "scale_rewards": "none"},
    }
    """From suites/quickstart.yaml (bandit; tiny-lm) and the reproductions on the bandit."""
    metrics: ClassVar[dict[str, str]] = {
        "kl_k3": "mean over the rollouts of Σ_t k3(π_θold, π_ref), the sequence KL (k3)",
        "reward_std": "unbiased std of r̂ over the batch",
        "advantage_std": "std of the group-relative advantages over the batch",
        "frac_zero_std_groups": "fraction of groups whose rewards are all equal",
        "clip_frac": "fraction of tokens where the clip zeroes the gradient",
        "clip_frac_low": "fraction of tokens with Â < 0 and ρ < 1 − ε_low",
        "clip_frac_high": "fraction of tokens with Â > 0 and ρ > 1 + ε_high",
        "ratio_mean": "mean ρ = π_θ/π_old over tokens",
    }


    def fixed_point(self, exact: ExactProblem) -> torch.Tensor | None:
        """The forward-KL fixed point (:func:`forward_kl_fixed_point`) where it is exact:
        ``scale_rewards="none"``, temperature 1 and one-token responses. With std scaling the
        effective β moves with the policy (no closed form): None."""
        cfg = self.config
        one_token = bool((exact.responses.mask.sum(-1) == 1).all())
        if cfg.scale_rewards != "none" or cfg.temperature != 1.0 or not one_token:
            return None
        return forward_kl_fixed_point(exact.ref_logp, exact.reward, beta=cfg.beta,
                                      group=cfg.num_generations)

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The standard space (:func:`harness.pieces.standard_space`) and the KL penalty's
        coefficient over two decades, log-uniform."""
        return standard_space(policy_kind, beta=log_uniform(0.01, 1.0))

    def models_resident(self) -> int:
        """Policy, π_ref and r̂; π_ref is not counted when β = 0 (it is never evaluated)."""
        return 3 if self.config.beta > 0 else 2

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g, group, temp = ctx.generator, cfg.num_generations, cfg.temperature
        # One mode throughout (no dropout toggling): the sampler, the old log-probs and the
        # updates then see the same distribution.
        self.policy.train()

        # 1. Rollouts: each prompt G times in a row, so groups are contiguous.
        prompts = self.prompts.select(self.next_rows(cfg.prompts_per_step)).repeat_interleave(
            group
        )
        n = len(prompts)
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(
                prompts, max_new_tokens=self.max_new_tokens, temperature=temp, generator=g
            )
        mask = responses.mask.bool()
        tokens = int(mask.sum())
        meter.generated(self.policy, n, tokens)

        # 2. Rewards, π_ref's log-probs (β > 0 only), π_θold's log-probs (when they differ from
        #    the first update's forward), in chunks of the minibatch size.
        reuse_forward = cfg.num_iterations == 1 and cfg.num_mini_batches == 1
        chunks = torch.arange(n, device=ctx.device).tensor_split(cfg.num_mini_batches)
        ref_logp = old_logp = entropy = None
        with meter.phase("score"), torch.no_grad():
            rewards = torch.cat(
                [self.reward_model(prompts.select(c), responses.select(c)) for c in chunks]
            ).float()
            meter.forward(self.reward_model, tokens)
            if cfg.beta > 0:
                ref_logp = torch.cat(
                    [
                        tempered_token_logprobs(ctx.reference, prompts.select(c),
                                                responses.select(c), temp)[0]
                        for c in chunks
                    ]
                )
                meter.forward(ctx.reference, tokens)
            if not reuse_forward:
                parts = [
                    tempered_token_logprobs(self.policy, prompts.select(c), responses.select(c),
                                            temp, entropy=True)
                    for c in chunks
                ]
                old_logp = torch.cat([lp for lp, _ in parts])
                entropy = torch.cat([e for _, e in parts if e is not None])
                meter.forward(self.policy, tokens)
        advantages = rl.group_advantages(
            rewards,
            group,
            scale_std=cfg.scale_rewards != "none",
            std_over="batch" if cfg.scale_rewards == "batch" else "group",
        )

        # 3. μ passes of clipped-surrogate + β·k3 updates.
        losses: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        counts = torch.zeros(5, dtype=torch.float64)  # tokens, clipped, low, high, Σρ
        with meter.phase("train"):
            for _ in range(cfg.num_iterations):
                if cfg.num_mini_batches > 1:
                    order = torch.randperm(n, generator=g, device=g.device).to(ctx.device)
                    batches = order.tensor_split(cfg.num_mini_batches)
                else:
                    batches = (torch.arange(n, device=ctx.device),)
                for rows in batches:
                    p_mb, r_mb = prompts.select(rows), responses.select(rows)
                    m_mb = mask[rows]
                    logp, ent = tempered_token_logprobs(
                        self.policy, p_mb, r_mb, temp, entropy=reuse_forward
                    )
                    if reuse_forward:
                        old_logp, entropy = logp.detach(), ent
                    assert old_logp is not None
                    terms = grpo_loss(
                        logp,
                        old_logp if reuse_forward else old_logp[rows],
                        None if ref_logp is None else ref_logp[rows],
                        advantages[rows],
                        m_mb,
                        epsilon=cfg.epsilon,
                        epsilon_high=cfg.epsilon_high,
                        beta=cfg.beta,
                        loss_type=cfg.loss_type,
                        max_len=self.max_new_tokens,
                    )
                    self.optimizer.zero_grad(set_to_none=True)
                    terms.loss.backward()
                    norms.append(rl.clip_grad_norm(self.params, cfg.max_grad_norm))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)  # free them before the next forward
                    meter.train(self.policy, int(m_mb.sum()))

                    losses.append(terms.loss.detach())
                    adv = advantages[rows].unsqueeze(1)
                    clipped = terms.clipped & m_mb
                    counts += torch.stack(
                        [
                            m_mb.sum(),
                            clipped.sum(),
                            (clipped & (adv < 0)).sum(),
                            (clipped & (adv > 0)).sum(),
                            rl.masked_sum(terms.ratio.detach(), m_mb),
                        ]
                    ).double().cpu()

        assert old_logp is not None and entropy is not None
        n_tok = max(float(counts[0]), 1.0)
        groups = rewards.view(-1, group)
        metrics = {
            "loss": float(torch.stack(losses).mean()),
            "grad_norm": float(torch.stack(norms).mean()),
            "entropy": float(rl.masked_mean(entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "advantage_std": float(advantages.std()),
            "frac_zero_std_groups": float(
                (groups.max(1).values == groups.min(1).values).float().mean()
            ),
            "clip_frac": float(counts[1]) / n_tok,
            "clip_frac_low": float(counts[2]) / n_tok,
            "clip_frac_high": float(counts[3]) / n_tok,
            "ratio_mean": float(counts[4]) / n_tok,
        }
        if ref_logp is not None:
            k1 = rl.masked_sum(rl.kl_k1(old_logp, ref_logp), mask, dim=1)
            k3 = rl.masked_sum(rl.kl_k3(old_logp, ref_logp), mask, dim=1)
            metrics["kl_ref"] = float(k1.mean())
            metrics["kl_k3"] = float(k3.mean())
        return metrics


@hookimpl
def register_algorithms(register) -> None:
    register(GRPO.name, GRPO)
