"""Best-of-n sampling (BoN): draw n responses from π_ref, return the one r̂ scores highest.

BoN trains nothing. For a prompt x it draws y_1 … y_n i.i.d. from π_ref(·|x) and answers
y_{i*}, i* = argmax_i r̂(x, y_i) (ties: the first drawn). It is the inference-time baseline of
RLHF comparisons (Nakano et al. 2021, WebGPT, arXiv:2112.09332; Stiennon et al. 2020,
arXiv:2009.01325; Gao et al. 2023, "Scaling Laws for Reward Model Overoptimization",
arXiv:2210.10760), and it trades sampling cost — n generations and n reward evaluations per
response — for no training at all.

**The algorithm** (:class:`BestOfN`) takes one step and sets ``finished``: the step draws
``prompts_per_step`` train prompts, n candidates each, and reports what BoN achieves on them.
:meth:`BestOfN.eval_policy` is π_ref before that step (the runner's step-0 evaluation, as for every
algorithm) and the :class:`BestOfNPolicy` after it, so the evaluators measure BoN itself.

**Its distribution.** Rank the responses by r̂ and let F(y) = Σ_{y': r̂(y') ≤ r̂(y)} π_ref(y') be
π_ref's CDF in that order. With no ties in r̂, y is chosen iff all n draws score at most r̂(y)
and not all of them score below it:

    π_bon(y|x) = F(y)^n − F(y⁻)^n,      F(y⁻) = F(y) − π_ref(y).

*Ties* (equal r̂, e.g. a reward model that ignores part of the response): the responses of one
r̂ value form a block B with F_hi = F at B's top and F_lo = F below B. The maximum lies in B with
probability F_hi^n − F_lo^n, and the sampler keeps the *first* drawn of the candidates in B; given
which draws landed in B, their identities are i.i.d. ∝ π_ref on B, so the first is y ∈ B with
probability π_ref(y)/π_ref(B). Hence

    π_bon(y|x) = π_ref(y) · (F_hi^n − F_lo^n) / (F_hi − F_lo)
               = π_ref(y) · Σ_{k<n} F_hi^k F_lo^{n−1−k},

which is the formula above when B = {y}. :func:`best_of_n_logprobs` computes it in log space,
from the ratio (1 − ρ^n)/(1 − ρ), ρ = F_lo/F_hi, so tiny blocks lose no precision.

**Log-probs.** On tabular tasks (the task enumerates its responses) :class:`BestOfNPolicy` is
exact: :meth:`~BestOfNPolicy.sequence_logprobs` is log π_bon over the enumeration — what
:class:`harness.exact.ExactProblem` reads, so ``gold_reward``, ``kl_ref``, ``regret`` and
``win_rate_ref`` are exact — and :meth:`~BestOfNPolicy.logits` gives the per-token conditionals
π_bon(y_t | x, y_<t) (prefix marginals of π_bon), so per-token entropies are exact too. On LM tasks
π_bon's likelihood is intractable (F is a sum over all responses): ``has_logprobs`` is False,
the sampled evaluators that need no log-probs work (``gold_reward``, ``proxy_reward``,
``win_rate_ref``, ``response_length``), ``entropy`` is not reported, and ``kl_ref`` is the
closed form below (through :meth:`harness.policy.Policy.kl_to_reference`).

**KL.** For a continuous r̂ distribution (no atoms), F(y) is uniform on [0, 1] under π_ref and

    KL(π_bon ‖ π_ref) = log n − (n − 1)/n

(Stiennon et al. 2020; the formula Gao et al. 2023 use for their BoN curves). For a
discrete π_ref it is an *upper bound*: Beirami et al. 2024 ("Theoretical guarantees on the
best-of-n alignment policy", arXiv:2401.01879) prove KL ≤ log n − (n − 1)/n, tight only when
every response has a small probability under π_ref (ties in r̂ only shrink the KL further:
within a block of equal r̂, π_bon ∝ π_ref). The step's ``kl_ref`` and, on LM tasks, the
evaluators' are that bound; on tabular tasks the evaluators give the exact value. Both compare
with the *untempered* π_ref, so at ``temperature`` ≠ 1 no closed form is reported.

**Cost accounting.** The step charges its n × ``prompts_per_step`` generations (phase
``generate``) and reward evaluations (``score``); evaluation sampling is not charged, as for
every algorithm — but note that BoN's real cost is at inference: n generations per answer.

Metrics of the step: ``reward`` (mean r̂ of the chosen responses), ``reward_ref`` (mean r̂ of all
candidates: π_ref's), ``kl_ref`` (the closed-form bound, at temperature 1), ``response_length``
(of the chosen responses) and ``tie_frac`` (fraction of prompts whose best r̂ was drawn more
than once: there the first-drawn rule decides). BoN has no ``loss``, ``grad_norm`` or
``entropy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness import hookimpl
from harness.algorithm import Algorithm, RunContext
from harness.pieces import need, require_reward_model
from harness.policy import Policy, PromptBatch, ResponseBatch
from harness.reward import RewardModel


@dataclass
class Config:
    """Best-of-n settings."""

    n: int = 16
    """Candidates drawn from π_ref per prompt (≥ 1; 1 is π_ref itself). 16 is one of WebGPT's
    settings (Nakano et al. 2021 compare best-of-4, 16 and 64) and inside the range Gao et al.
    2023 sweep; the closed-form KL is then log 16 − 15/16 ≈ 1.83 nats."""
    temperature: float = 1.0
    """Sampling temperature of π_ref for the candidates, > 0. 1.0: the candidates come from π_ref
    itself, the policy the evaluators compare with, so the closed-form KL applies."""
    prompts_per_step: int = 64
    """Train prompts the one step measures BoN on (its metrics and compute); BoN trains nothing,
    so this only sizes that measurement."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check(self)


def analytic_kl(n: int) -> float:
    """log n − (n − 1)/n: KL(π_bon ‖ π_ref) for a continuous r̂, an upper bound otherwise."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_logprobs(ref_logp: torch.Tensor, reward: torch.Tensor, n: int) -> torch.Tensor:
    """``[..., N]`` log π_bon from ``[..., N]`` log π_ref (normalised over the N responses) and r̂.

    π_bon(y) = π_ref(y) · Σ_{k<n} F_hi^k F_lo^{n−1−k}, with F_hi and F_lo π_ref's CDF in r̂ order
    at the top of and below y's block of equal r̂ (see the module docstring); computed in float64
    as log π_ref(y) + (n − 1) log F_hi + log[(1 − ρ^n)/(1 − ρ)], ρ = F_lo / F_hi.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if ref_logp.shape != reward.shape:
        raise ValueError(
            f"ref_logp and reward must have one shape, got {tuple(ref_logp.shape)} and "
            f"{tuple(reward.shape)}"
        )
    lp, r = ref_logp.double(), reward.double()
    order = torch.argsort(r, dim=-1, stable=True)
    lp_s, r_s = lp.gather(-1, order), r.gather(-1, order)
    size = r_s.shape[-1]
    log_cdf = torch.logcumsumexp(lp_s, dim=-1)  # log F at each sorted position
    positions = torch.arange(size, device=r_s.device).expand_as(r_s)
    new_value = torch.ones_like(r_s, dtype=torch.bool)
    new_value[..., 1:] = r_s[..., 1:] != r_s[..., :-1]
    last = torch.ones_like(new_value)
    last[..., :-1] = new_value[..., 1:]
    # Block bounds for every position: its block's last index and the index before its first.
    block_last = torch.where(last, positions, size).flip(-1).cummin(-1).values.flip(-1)
    block_first = torch.where(new_value, positions, 0).cummax(-1).values
    log_hi = log_cdf.gather(-1, block_last)
    below = (block_first - 1).clamp(min=0)
    log_lo = torch.where(block_first > 0, log_cdf.gather(-1, below), -math.inf)
    delta = log_lo - log_hi  # log ρ ≤ 0; −inf for the lowest block
    ratio = torch.where(delta < 0, torch.expm1(n * delta) / torch.expm1(delta), float(n))
    out_s = lp_s + (n - 1) * log_hi + ratio.log()
    # A response π_ref never gives is never chosen (and must not turn a block of them into NaN).
    out_s = torch.where(torch.isneginf(lp_s), lp_s, out_s)
    return torch.empty_like(out_s).scatter_(-1, order, out_s)


class BestOfNPolicy(Policy):
    """π_bon: n candidates from π_ref at ``temperature``, the one with the highest r̂ kept.

    :param reference: π_ref (frozen; kept in eval mode whatever mode this policy is put in).
    :param reward_model: r̂ (frozen).
    :param n: candidates per prompt.
    :param responses: every response of the task (``task.enumerate_responses()``), or None for
        tasks that cannot enumerate them: then π_bon's log-probs are intractable
        (``has_logprobs`` False) and only sampling and :meth:`kl_to_reference` are available.
    """

    def __init__(
        self,
        reference: Policy,
        reward_model: RewardModel,
        n: int,
        *,
        temperature: float = 1.0,
        responses: ResponseBatch | None = None,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.base = reference
        self.reward_model = reward_model
        self.n = int(n)
        self.temperature = float(temperature)
        self.vocab_size = reference.vocab_size
        self.pad_id = reference.pad_id
        self.eos_id = reference.eos_id
        self.responses = responses
        self.has_logprobs = responses is not None
        self.train(False)

    def train(self, mode: bool = True) -> BestOfNPolicy:
        """Records the mode only: π_ref and r̂ stay in eval mode (nothing here trains)."""
        self.training = mode
        return self

    # --- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def candidates(
        self, prompts: PromptBatch, *, max_new_tokens: int, generator: torch.Generator | None
    ) -> ResponseBatch:
        """n responses of π_ref per prompt, in one batched call: rows ``i·n … i·n + n − 1`` are
        prompt i's candidates, in the order drawn."""
        return self.base.sample(
            prompts.repeat_interleave(self.n),
            max_new_tokens=max_new_tokens,
            temperature=self.temperature,
            generator=generator,
        )

    @torch.no_grad()
    def scores(self, prompts: PromptBatch, candidates: ResponseBatch) -> torch.Tensor:
        """[B, n] r̂ of :meth:`candidates`' output for ``prompts``."""
        rewards = self.reward_model(prompts.repeat_interleave(self.n), candidates)
        return rewards.float().view(len(prompts), self.n)

    @staticmethod
    def pick(scores: torch.Tensor) -> torch.Tensor:
        """[B] long: per row, the index of the highest score, the first one among equals."""
        # torch.argmax returns the first maximal index (documented since torch 1.7).
        return scores.argmax(dim=1)

    @torch.no_grad()
    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        """One BoN response per prompt. ``temperature`` must be 1: π_bon's own temperature is the
        one it was built with (that of its candidates). ``logprobs`` is None (π_bon's per-token
        log-probs are given by :meth:`token_logprobs` where they are tractable)."""
        if temperature != 1.0:
            raise ValueError(
                "BestOfNPolicy samples at the temperature it was built with; pass temperature=1.0"
            )
        cands = self.candidates(prompts, max_new_tokens=max_new_tokens, generator=generator)
        return self.choose(cands, self.pick(self.scores(prompts, cands)))

    def choose(self, candidates: ResponseBatch, best: torch.Tensor) -> ResponseBatch:
        """The ``best[i]``-th candidate of each prompt, trimmed to the longest chosen response."""
        rows = torch.arange(len(best), device=best.device) * self.n + best
        chosen = candidates.select(rows)
        width = max(int(chosen.mask.sum(-1).max()) if len(chosen) else 1, 1)
        return ResponseBatch(
            tokens=chosen.tokens[:, :width],
            mask=chosen.mask[:, :width],
            logprobs=None,
            finished=chosen.finished,
        )

    # --- exact log-probs (tasks that enumerate their responses) -------------------------------

    def kl_to_reference(self) -> float | None:
        """log n − (n − 1)/n where log-probs are intractable and the temperature is 1 (an upper
        bound on KL(π_bon ‖ π_ref); see the module docstring); None otherwise."""
        if self.has_logprobs or self.temperature != 1.0:
            return None
        return analytic_kl(self.n)

    def _enumeration(self) -> ResponseBatch:
        if self.responses is None:
            raise NotImplementedError(
                "best-of-n log-probs are intractable on a task that cannot enumerate its "
                "responses (has_logprobs is False); use kl_to_reference() for the KL"
            )
        return self.responses.to(self.device)

    @torch.no_grad()
    def table(self, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_bon over the enumeration for the distinct prompts of ``prompts``.

        Returns ``(inverse [B], logp [U, N])``: row ``inverse[b]`` of ``logp`` belongs to prompt
        b. π_ref's sequence log-probs (tempered) are renormalised over the enumeration in
        float64, as :class:`harness.exact.ExactProblem` does, before the BoN transform.
        """
        enum = self._enumeration()
        key = torch.cat([prompts.index.unsqueeze(1), prompts.ids, prompts.mask.long()], dim=1)
        _, inverse = torch.unique(key, dim=0, return_inverse=True)
        count = int(inverse.max()) + 1 if len(inverse) else 0
        first = torch.full((count,), len(inverse), dtype=torch.long, device=inverse.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(inverse), device=inverse.device),
                                     reduce="amin")
        distinct = prompts.select(first)
        size = len(enum)
        pairs_p = distinct.repeat_interleave(size)
        pairs_r = ResponseBatch(
            tokens=enum.tokens.repeat(count, 1), mask=enum.mask.repeat(count, 1)
        )
        if self.temperature == 1.0:
            ref = self.base.sequence_logprobs(pairs_p, pairs_r)
        else:
            logits = self.base.logits(pairs_p, pairs_r).double() / self.temperature
            tok = torch.log_softmax(logits, -1).gather(-1, pairs_r.tokens.unsqueeze(-1))
            ref = tok.squeeze(-1).masked_fill(~pairs_r.mask, 0.0).sum(-1)
        ref = torch.log_softmax(ref.double().view(count, size), dim=-1)
        reward = self.reward_model(pairs_p, pairs_r).double().view(count, size)
        return inverse, best_of_n_logprobs(ref, reward, self.n)

    def _match(self, responses: ResponseBatch) -> torch.Tensor:
        """[B] long: each response's row in the enumeration; ValueError if one is not there."""
        enum = self._enumeration()
        width = max(responses.tokens.shape[1], enum.tokens.shape[1])
        query = _masked_tokens(responses, width)
        table = _masked_tokens(enum, width)
        chunk = max(1, 2**24 // max(1, len(enum) * width))
        found = []
        for start in range(0, len(query), chunk):
            eq = (query[start : start + chunk, None, :] == table[None]).all(-1)  # [b, N]
            idx = torch.where(eq.any(-1), eq.float().argmax(-1), -1)
            found.append(idx)
        index = torch.cat(found) if found else torch.empty(0, dtype=torch.long)
        if bool((index < 0).any()):
            row = int((index < 0).nonzero()[0, 0])
            seq = responses.tokens[row][responses.mask[row]].tolist()
            raise ValueError(
                f"response row {row} (tokens {seq}) is not one of the task's responses"
            )
        return index

    def sequence_logprobs(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float64: log π_bon(y | x), exact (from the enumeration)."""
        inverse, logp = self.table(prompts)
        return logp[inverse, self._match(responses)]

    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T, V] float64: log π_bon(· | x, y_<t), the exact next-token conditionals.

        π_bon(a | x, y_<t) = P_bon(y_<t a) / P_bon(y_<t), with P_bon(prefix) the π_bon mass of
        the enumerated responses that begin with it. Impossible tokens get the most negative
        finite float64 (not −inf, so entropies stay finite); padded positions are 0.
        """
        inverse, logp = self.table(prompts)
        enum = self._enumeration()
        batch, steps = responses.tokens.shape
        width = max(steps, enum.tokens.shape[1])
        enum_tok = _masked_tokens(enum, width)  # −1 where there is no token
        rows = logp[inverse]  # [B, N]
        agree = torch.ones_like(rows, dtype=torch.bool)
        out = torch.zeros(batch, steps, self.vocab_size, dtype=torch.float64, device=rows.device)
        very_negative = torch.finfo(torch.float64).min
        for t in range(steps):
            has = agree & (enum_tok[:, t] >= 0)  # [B, N]: responses continuing this prefix
            masked = rows.masked_fill(~has, -math.inf)
            top = masked.max(-1, keepdim=True).values
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            weight = (masked - top).exp()  # 0 where not continuing
            tok = enum_tok[:, t].clamp(min=0).expand(batch, -1)
            mass = torch.zeros(batch, self.vocab_size, dtype=torch.float64, device=rows.device)
            mass.scatter_add_(1, tok, weight)
            total = mass.sum(-1, keepdim=True)
            live = (total > 0) & responses.mask[:, t : t + 1]
            cond = torch.log(mass / total.clamp(min=torch.finfo(torch.float64).tiny))
            cond = cond.clamp(min=very_negative)
            out[:, t] = torch.where(live, cond, torch.zeros_like(cond))
            agree = agree & (enum_tok[:, t] == responses.tokens[:, t : t + 1])
        return out


def _masked_tokens(responses: ResponseBatch, width: int) -> torch.Tensor:
    """[B, width] long: the tokens, −1 where the mask is False (and beyond the batch's width)."""
    tokens = responses.tokens.masked_fill(~responses.mask.bool(), -1)
    extra = width - tokens.shape[1]
    if extra > 0:
        tokens = torch.nn.functional.pad(tokens, (0, extra), value=-1)
    return tokens


def _check(cfg: Config) -> None:
    need(cfg.n >= 1, f"n must be >= 1, got {cfg.n}")
    need(cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}")
    need(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")


class BestOfN(Algorithm):
    """Best-of-n over π_ref: one measuring step, then ``finished`` (see the module docstring)."""

    name = "bon"
    Config = Config
    needs = frozenset({"reward"})
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "neural": {"prompts_per_step": 16},
    }
    """From suites/reproductions/gao_overoptimisation.yaml (tiny-lm, n swept 1 to 256)."""
    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """n, log-uniform over the integers 1–256, the range Gao et al. 2023 sweep (Fig. 1: KL up
        to log 256 − 255/256 ≈ 4.5 nats); the same on every policy kind, as BoN trains nothing."""
        return {"n": {"low": 1, "high": 256, "log": True, "int": True}}

    metrics: ClassVar[dict[str, str]] = {
        "reward": "mean r̂ of the chosen (best of n) responses",
        "reward_ref": "mean r̂ of all candidates: π_ref's",
        "kl_ref": "the closed-form KL of best-of-n to π_ref, log n − (n − 1)/n (temperature 1)",
        "tie_frac": "fraction of prompts whose best r̂ was drawn more than once",
    }

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.policy = BestOfNPolicy(
            context.reference,
            require_reward_model(context, self.name),
            config.n,
            temperature=config.temperature,
            responses=context.task.enumerate_responses(),
        )

    def models_resident(self) -> int:
        """π_ref and r̂ (the context's trainable copy of π_ref is never used)."""
        return 2

    def eval_policy(self) -> Policy:
        """π_ref until the step has run (the step-0 evaluation), then π_bon."""
        return self.policy if self.finished else self.ctx.policy

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g = ctx.generator
        train = ctx.task.train_prompts.to(ctx.device)
        passes = -(-cfg.prompts_per_step // len(train))
        order = torch.cat(
            [torch.randperm(len(train), generator=g, device=g.device) for _ in range(passes)]
        )
        prompts = train.select(order[: cfg.prompts_per_step].to(ctx.device))
        with meter.phase("generate"):
            cands = self.policy.candidates(
                prompts, max_new_tokens=ctx.task.max_new_tokens, generator=g
            )
        tokens = int(cands.mask.sum())
        meter.generated(ctx.reference, len(cands), tokens)
        with meter.phase("score"):
            scores = self.policy.scores(prompts, cands)
        meter.forward(self.policy.reward_model, tokens)
        best = self.policy.pick(scores)
        chosen = self.policy.choose(cands, best)
        top = scores.max(dim=1, keepdim=True).values
        self.finished = True
        metrics = {
            "reward": float(scores.gather(1, best.unsqueeze(1)).mean()),
            "reward_ref": float(scores.mean()),
            "response_length": float(chosen.mask.sum(-1).float().mean()),
            "tie_frac": float(((scores == top).sum(1) > 1).float().mean()),
        }
        if cfg.temperature == 1.0:
            metrics["kl_ref"] = analytic_kl(cfg.n)
        return metrics


@hookimpl
def register_algorithms(register) -> None:
    register(BestOfN.name, BestOfN)
