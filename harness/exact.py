"""Exact answers on tasks whose responses can be enumerated.

For a prompt x with reference policy π_ref and gold reward r*, the KL-regularised objective

    J_β(π) = E_x [ E_{y~π(·|x)} r*(x, y) − β · KL(π(·|x) ‖ π_ref(·|x)) ]

is maximised by the Gibbs policy π*_β(y|x) = π_ref(y|x) · exp(r*(x, y)/β) / Z_β(x), with value

    J_β(π*_β) = β · E_x log Z_β(x),   Z_β(x) = Σ_y π_ref(y|x) · exp(r*(x, y)/β).

(Insert π*_β into J_β: r* − β log(π*/π_ref) = β log Z_β(x) for every y.) Given all N responses,
every quantity here is a finite sum over an [P, N] table of log-probabilities (P prompts, prompts
weighted uniformly), computed in float64 on the CPU whatever the task's device (the tables are
small, and float64 is slow on GPUs): :meth:`ExactProblem.policy_logprobs` brings a policy's table
there. The regret of a policy is J_β(π*_β) − J_β(π) ≥ 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import ConfigError
from harness.policy import Policy, PromptBatch, ResponseBatch
from harness.tasks.base import Task


@dataclass
class ExactProblem:
    """[P, N] tables of a tabular task: π_ref's log-probs and r* for every prompt × response."""

    prompts: PromptBatch
    """The P prompts (the task's eval prompts, unless given)."""
    responses: ResponseBatch
    """All N responses the task can give, in the order of the tables' columns."""
    ref_logp: torch.Tensor
    """[P, N] float64, on the CPU: log π_ref(y_n | x_p)."""
    reward: torch.Tensor
    """[P, N] float64, on the CPU: r*(x_p, y_n)."""
    beta: float | None = None
    """The evaluation's β (the suite's ``evaluation.beta``: the J_β that reports score and the
    π*_β that regret is measured against), set by the runner; None outside a run. An
    algorithm's :meth:`~harness.algorithm.Algorithm.fixed_point` compares its own target with
    it to decide whether that target is π*_β (and then returns None)."""

    @classmethod
    def from_task(cls, task: Task, prompts: PromptBatch | None = None, *,
                  beta: float | None = None) -> ExactProblem:
        """Enumerate ``task``'s responses for ``prompts`` (default: its eval prompts);
        ``beta``: the evaluation's β (:attr:`beta`)."""
        responses = task.enumerate_responses()
        if responses is None:
            raise ConfigError(
                f"task '{task.name}' cannot enumerate its responses: no exact optimum is known"
            )
        prompts = task.eval_prompts if prompts is None else prompts
        pairs_p, pairs_r = _all_pairs(prompts, responses)
        with torch.no_grad():
            ref = task.reference_policy()
            ref_logp = ref.sequence_logprobs(pairs_p, pairs_r).double().cpu()
            reward = task.gold_reward(pairs_p, pairs_r).double().cpu()
        shape = (len(prompts), len(responses))
        # The enumeration is complete, so π_ref sums to 1 over it: renormalising in float64 removes
        # the rounding of a float32 policy (≈1e-7) from every exact quantity.
        ref_logp = torch.log_softmax(ref_logp.view(shape), dim=-1)
        return cls(prompts, responses, ref_logp, reward.view(shape), beta=beta)

    def policy_logprobs(self, policy: Policy) -> torch.Tensor:
        """[P, N] float64, on the CPU: log π(y_n | x_p) for every enumerated pair (renormalised
        in float64)."""
        pairs_p, pairs_r = _all_pairs(self.prompts, self.responses)
        device = policy.device
        with torch.no_grad():
            logp = policy.sequence_logprobs(pairs_p.to(device), pairs_r.to(device))
        return torch.log_softmax(logp.double().cpu().view(self.ref_logp.shape), -1)

    def optimal_logprobs(self, beta: float) -> torch.Tensor:
        """[P, N]: log π*_β = log_softmax(log π_ref + r*/β) over responses."""
        _check_beta(beta)
        return torch.log_softmax(self.ref_logp + self.reward / beta, dim=-1)

    def optimal_objective(self, beta: float) -> float:
        """J_β(π*_β) = β · mean_x log Σ_y π_ref(y|x) exp(r*(x, y)/β)."""
        _check_beta(beta)
        return float(beta * torch.logsumexp(self.ref_logp + self.reward / beta, dim=-1).mean())

    def expected_reward(self, logp: torch.Tensor) -> float:
        """mean_x E_{y~π(·|x)} r*(x, y)."""
        return float((logp.exp() * self.reward).sum(-1).mean())

    def kl(self, logp: torch.Tensor, other_logp: torch.Tensor) -> float:
        """mean_x KL(π(·|x) ‖ π'(·|x)) = mean_x Σ_y π(y|x) (log π(y|x) − log π'(y|x))."""
        p = logp.exp()
        # 0 · log 0 = 0: terms with π(y|x) = 0 contribute nothing even when π' is also 0.
        terms = torch.where(p > 0, p * (logp - other_logp), torch.zeros_like(p))
        return float(terms.sum(-1).mean())

    def kl_ref(self, logp: torch.Tensor) -> float:
        """mean_x KL(π ‖ π_ref)."""
        return self.kl(logp, self.ref_logp)

    def objective(self, logp: torch.Tensor, beta: float) -> float:
        """J_β(π) = mean_x [E_π r* − β KL(π ‖ π_ref)]."""
        return self.expected_reward(logp) - beta * self.kl_ref(logp)

    def regret(self, logp: torch.Tensor, beta: float) -> float:
        """J_β(π*_β) − J_β(π) ≥ 0."""
        return self.optimal_objective(beta) - self.objective(logp, beta)

    def kl_to_optimal(self, logp: torch.Tensor, beta: float) -> float:
        """mean_x KL(π ‖ π*_β)."""
        return self.kl(logp, self.optimal_logprobs(beta))


def _all_pairs(prompts: PromptBatch, responses: ResponseBatch) -> tuple[PromptBatch, ResponseBatch]:
    """Every prompt × response pair, prompt-major: row p·N + n is (x_p, y_n)."""
    n, p = len(responses), len(prompts)
    return prompts.repeat_interleave(n), ResponseBatch(
        tokens=responses.tokens.repeat(p, 1), mask=responses.mask.repeat(p, 1)
    )


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ConfigError(f"beta must be > 0 for the KL-regularised optimum, got {beta!r}")
