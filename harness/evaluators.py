"""Built-in evaluators: what a run measures on its policy every k steps.

All evaluators of one evaluation share an :class:`EvalContext`. On tasks whose responses can be
enumerated, the context computes exact quantities from the full [P, N] tables of
:class:`~harness.exact.ExactProblem` (no sampling noise); on language-model tasks it draws
``samples_per_prompt`` responses per eval prompt from π (and as many from π_ref, for win rates)
with a generator seeded identically at every evaluation, scores them once, and every evaluator
reads from that one batch.

========================  ======================================================================
``gold_reward``           E_x E_{y~π} r*(x, y); ``gold_reward_sd``: its standard deviation over x
                          and y ~ π (exact on tabular tasks, the sample sd on samples)
``proxy_reward``          E_x E_{y~π} r̂(x, y)  (r̂: the suite's fitted reward model)
``kl_ref``                E_x KL(π(·|x) ‖ π_ref(·|x)); sampled: mean of Σ_t log π/π_ref (k1), or
                          ``policy.kl_to_reference()`` when π's log-probs are intractable
``win_rate_ref``          P(r*(x, y) > r*(x, y')) + ½ P(=) for y ~ π, y' ~ π_ref
``regret``                J_β(π*_β) − J_β(π), β = the suite's ``evaluation.beta`` (exact tasks)
``entropy``               mean per-token entropy of π on its own samples (needs π's log-probs)
``response_length``       mean number of response tokens of π's samples
========================  ======================================================================

Plugins add evaluators with the ``register_evaluators`` hook: subclass :class:`Evaluator` and
read what you need from the context.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import torch

from harness.exact import ExactProblem
from harness.hookspecs import Register, hookimpl
from harness.policy import Policy, PromptBatch, ResponseBatch
from harness.reward import RewardModel
from harness.tasks.base import Task


@dataclass
class Samples:
    """One evaluation's samples from a policy on the eval prompts, scored once."""

    prompts: PromptBatch
    responses: ResponseBatch
    gold: torch.Tensor
    logp: torch.Tensor | None
    """[B] float: log π(y|x) of each sample (None when ``policy.has_logprobs`` is False)."""
    entropy: torch.Tensor | None
    """[B, T] per-token entropies of π, 0 on padding (None when π's log-probs are intractable)."""


@dataclass
class EvalContext:
    """What evaluators see: the task, the policy, π_ref, r̂, and cached samples or exact tables."""

    task: Task
    policy: Policy
    reference: Policy
    reward_model: RewardModel | None
    beta: float
    samples_per_prompt: int = 4
    seed: int = 0
    exact: ExactProblem | None = None
    """The task's exact tables, when its responses can be enumerated (built once per run)."""
    _cache: dict = field(default_factory=dict)

    def _sample(self, policy: Policy) -> Samples:
        task = self.task
        prompts = task.eval_prompts.repeat_interleave(self.samples_per_prompt)
        generator = torch.Generator(device=policy.device).manual_seed(self.seed)
        responses = policy.sample(
            prompts, max_new_tokens=task.max_new_tokens, generator=generator
        )
        logp = entropy = None
        if policy.has_logprobs:
            logp_tok, entropy = policy.token_logprobs_and_entropy(prompts, responses)
            logp = logp_tok.sum(-1).double()
        return Samples(
            prompts=prompts,
            responses=responses,
            gold=task.gold_reward(prompts, responses).double(),
            logp=logp,
            entropy=entropy,
        )

    @cached_property
    def samples(self) -> Samples:
        """``samples_per_prompt`` samples of π per eval prompt."""
        return self._sample(self.policy)

    @cached_property
    def reference_samples(self) -> Samples:
        """As many samples of π_ref, for win rates."""
        return self._sample(self.reference)

    @cached_property
    def policy_table(self) -> torch.Tensor:
        """[P, N] log π over every enumerated response (exact tasks only)."""
        assert self.exact is not None
        return self.exact.policy_logprobs(self.policy)


class Evaluator(ABC):
    """A metric (or several) computed from an :class:`EvalContext`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Metric values by name; an empty dict when the metric does not apply to the task."""


class GoldReward(Evaluator):
    """``gold_reward`` and ``gold_reward_sd``, the spread of r*(x, y) over the eval prompts x
    and responses y ~ π. At the first evaluation π is π_ref, so the run records π_ref's spread:
    a scale of the task instance alone, by which reports divide gold gains where the task knows
    no optimum (:mod:`harness.report.compare`)."""

    name = "gold_reward"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.exact is not None:
            ex = ctx.exact
            probs = ctx.policy_table.exp()
            mean = ex.expected_reward(ctx.policy_table)
            second = float((probs * ex.reward.square()).sum(-1).mean())
            return {"gold_reward": mean, "gold_reward_sd": math.sqrt(max(second - mean**2, 0.0))}
        gold = ctx.samples.gold
        if gold.numel() < 2:  # no spread to measure (and NaN would mark the run diverged)
            return {"gold_reward": float(gold.mean())}
        return {"gold_reward": float(gold.mean()), "gold_reward_sd": float(gold.std())}


class ProxyReward(Evaluator):
    name = "proxy_reward"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.reward_model is None:
            return {}
        if ctx.exact is not None:
            ex = ctx.exact
            p, n = ex.reward.shape
            prompts = ex.prompts.repeat_interleave(n)
            responses = ResponseBatch(
                tokens=ex.responses.tokens.repeat(p, 1), mask=ex.responses.mask.repeat(p, 1)
            )
            device = _device_of(ctx.reward_model, ctx.policy)
            proxy = ctx.reward_model(prompts.to(device), responses.to(device)).double().cpu()
            expected = (ctx.policy_table.exp() * proxy.view(p, n)).sum(-1)
            return {"proxy_reward": float(expected.mean())}
        s = ctx.samples
        return {"proxy_reward": float(ctx.reward_model(s.prompts, s.responses).double().mean())}


class KLRef(Evaluator):
    name = "kl_ref"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.exact is not None:
            return {"kl_ref": ctx.exact.kl_ref(ctx.policy_table)}
        closed_form = ctx.policy.kl_to_reference()
        if closed_form is not None:
            return {"kl_ref": closed_form}
        s = ctx.samples
        if s.logp is None:
            return {}
        ref_logp = ctx.reference.sequence_logprobs(s.prompts, s.responses).double()
        return {"kl_ref": float((s.logp - ref_logp).mean())}


class WinRateRef(Evaluator):
    name = "win_rate_ref"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.exact is not None:
            ex = ctx.exact
            pi, ref, r = ctx.policy_table.exp(), ex.ref_logp.exp(), ex.reward
            # Σ_{y, y'} π(y) π_ref(y') [1{r(y) > r(y')} + ½ 1{r(y) = r(y')}], per prompt.
            diff = r.unsqueeze(-1) - r.unsqueeze(-2)  # [P, N, N]: r(y) − r(y')
            score = (diff > 0).double() + 0.5 * (diff == 0).double()
            win = torch.einsum("pn,pnm,pm->p", pi, score, ref)
            return {"win_rate_ref": float(win.mean())}
        a, b = ctx.samples.gold, ctx.reference_samples.gold
        return {"win_rate_ref": float(((a > b).double() + 0.5 * (a == b).double()).mean())}


class Regret(Evaluator):
    name = "regret"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.exact is None:
            return {}
        return {
            "regret": ctx.exact.regret(ctx.policy_table, ctx.beta),
            "objective": ctx.exact.objective(ctx.policy_table, ctx.beta),
            "kl_optimal": ctx.exact.kl_to_optimal(ctx.policy_table, ctx.beta),
        }


class Entropy(Evaluator):
    name = "entropy"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        s = ctx.samples
        if s.entropy is None:
            return {}
        return {"entropy": float(s.entropy.sum() / s.responses.mask.sum().clamp_min(1))}


class ResponseLength(Evaluator):
    name = "response_length"

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        return {"response_length": float(ctx.samples.responses.lengths.double().mean())}


def _device_of(*modules: torch.nn.Module) -> torch.device:
    for m in modules:
        for p in m.parameters():
            return p.device
    return torch.device("cpu")


BUILTIN = (GoldReward, ProxyReward, KLRef, WinRateRef, Regret, Entropy, ResponseLength)


@hookimpl
def register_evaluators(register: Register) -> None:
    for cls in BUILTIN:
        register(cls.name, cls)
