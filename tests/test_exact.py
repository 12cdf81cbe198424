"""Exact answers (harness.exact) checked against numerical optimisation and their own identities.

Everything here runs on the bandit task, whose [P, K] tables are small enough for float64 LBFGS.
"""

from __future__ import annotations

import pytest
import torch

from harness.errors import ConfigError
from harness.exact import ExactProblem
from harness.tasks.bandit import BanditParams, BanditTask

BETAS = (0.1, 1.0, 10.0)


# reward_scale = 0.2 keeps r*/β ≲ 2·3 at β = 0.1, so every π*_β(k|x) is ≳ 1e-4. Ascent over
# softmax logits has ∂J/∂θ_k ∝ π_k: an arm that a line-search step pushes to π_k ≈ 0 sits on a
# plateau and never comes back, which for optima with arms at ~1e-6 (reward_scale ≥ 0.25 here)
# makes LBFGS stall. With this scale it converged on all 120 (seed, β) cases tried (seeds 0-39).
PARAMS = BanditParams(num_prompts=3, num_arms=6, reward="normal", reward_scale=0.2)


@pytest.fixture(scope="module")
def problem() -> ExactProblem:
    return ExactProblem.from_task(BanditTask(PARAMS, seed=1))


def _objective(theta: torch.Tensor, problem: ExactProblem, beta: float) -> torch.Tensor:
    """J_β of softmax(θ), written out independently of ExactProblem (differentiable)."""
    logp = torch.log_softmax(theta, dim=-1)
    per_prompt = (logp.exp() * (problem.reward - beta * (logp - problem.ref_logp))).sum(-1)
    return per_prompt.mean()


def _maximise(problem: ExactProblem, beta: float) -> torch.Tensor:
    """argmax_θ J_β(softmax θ) by LBFGS in float64, started at π_ref's logits."""
    theta = problem.ref_logp.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-16,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -_objective(theta, problem, beta)
        loss.backward()
        return loss

    opt.step(closure)
    return torch.log_softmax(theta.detach(), dim=-1)


@pytest.mark.parametrize("beta", BETAS)
def test_closed_form_optimum_matches_numerical_maximisation(
    problem: ExactProblem, beta: float
) -> None:
    numeric = _maximise(problem, beta)
    exact = problem.optimal_logprobs(beta)
    # LBFGS in float64 stops at |∇J| ≤ 1e-12; on this well-conditioned 3 × 6 problem (see
    # PARAMS) that puts J within ~1e-15 and the probabilities within ~1e-8 of the optimum
    # (observed), so 1e-6 leaves two orders of magnitude of slack.
    assert _objective(numeric, problem, beta).item() == pytest.approx(
        problem.optimal_objective(beta), abs=1e-6
    )
    assert torch.allclose(numeric.exp(), exact.exp(), atol=1e-6, rtol=0)
    # ... and nothing found numerically beats the closed form (up to float64 rounding).
    assert _objective(numeric, problem, beta).item() <= problem.optimal_objective(beta) + 1e-12


@pytest.mark.parametrize("beta", BETAS)
def test_objective_at_optimum_and_regret(problem: ExactProblem, beta: float) -> None:
    opt = problem.optimal_logprobs(beta)
    # Float64 sums over 3 × 6 terms of size ≤ ~10: rounding is ~1e-14.
    assert problem.objective(opt, beta) == pytest.approx(problem.optimal_objective(beta), abs=1e-10)
    assert problem.regret(opt, beta) == pytest.approx(0.0, abs=1e-10)

    ref_regret = problem.regret(problem.ref_logp, beta)
    assert ref_regret == pytest.approx(
        problem.optimal_objective(beta) - problem.objective(problem.ref_logp, beta), abs=1e-12
    )
    # π_ref ≠ π*_β (the rewards are not constant), so its regret is strictly positive.
    assert ref_regret > 0
    # At β → ∞ π*_β → π_ref; with β = 10 and |r*| ≲ 2 the regret is small but still positive,
    # and it decreases with β (a larger β pulls π*_β, and J's maximiser, towards π_ref).
    if beta == 10.0:
        assert ref_regret < problem.regret(problem.ref_logp, 1.0)


@pytest.mark.parametrize("beta", BETAS)
def test_kl_identities(problem: ExactProblem, beta: float) -> None:
    g = torch.Generator().manual_seed(0)
    opt = problem.optimal_logprobs(beta)
    policies = [problem.ref_logp, opt] + [
        torch.log_softmax(2 * torch.randn(problem.ref_logp.shape, generator=g,
                                          dtype=torch.float64), dim=-1)
        for _ in range(4)
    ]
    for i, logp in enumerate(policies):
        assert problem.kl(logp, logp) == pytest.approx(0.0, abs=1e-14)
        assert problem.kl_ref(logp) >= -1e-7  # KL ≥ 0 (Gibbs); slack: π_ref is float32 (below)
        assert problem.kl_to_optimal(logp, beta) >= -1e-14
        # J_β(π*) − J_β(π) = β · KL(π ‖ π*_β): insert r* = β log(π*/π_ref) + β log Z into J_β;
        # it needs Σ_y π(y|x) = 1. For π* and the random policies (normalised in float64) both
        # sides are float64 sums of 18 terms and agree to ~1e-12 relative. π_ref (i = 0) comes
        # from the policy's float32 log-softmax, so Σ π_ref = 1 ± ~1e-7 and the two sides differ
        # by up to β · |log Z| · 1e-7 (log Z = O(1) here): 1e-6 · β bounds that.
        gap = problem.optimal_objective(beta) - problem.objective(logp, beta)
        abs_tol = 1e-6 * beta if i == 0 else 1e-12
        assert gap == pytest.approx(
            beta * problem.kl_to_optimal(logp, beta), rel=1e-9, abs=abs_tol
        )
    assert problem.kl_to_optimal(opt, beta) == pytest.approx(0.0, abs=1e-12)
    # π_ref's own normalisation, the reason for the tolerance above.
    assert torch.allclose(problem.ref_logp.exp().sum(-1), torch.ones(3, dtype=torch.float64),
                          atol=1e-6)


def test_policy_logprobs_of_the_reference_are_its_table(problem: ExactProblem) -> None:
    task = BanditTask(PARAMS, seed=1)
    logp = problem.policy_logprobs(task.reference_policy())
    # Both come from the same float32 logits through the same code: identical.
    assert torch.equal(logp, problem.ref_logp)
    # The table is the softmax of the task's logits (float32: 1e-6).
    expected = torch.log_softmax(task.ref_logits[:, 0].double(), dim=-1)
    assert torch.allclose(logp, expected, atol=1e-6)


def test_beta_must_be_positive(problem: ExactProblem) -> None:
    with pytest.raises(ConfigError, match="beta"):
        problem.optimal_objective(0.0)


def test_a_response_the_policy_never_gives_counts_zero_in_kl_and_regret(
    problem: ExactProblem,
) -> None:
    """0 · log 0 = 0: a policy with π(y|x) = 0 for some y has finite KL to π_ref and regret.

    The policy is π_ref with response 0 removed and renormalised: KL(π ‖ π_ref) is
    −log(1 − π_ref(0|x)) per prompt (π/π_ref = 1/(1 − π_ref(0|x)) wherever π > 0), averaged.
    """
    beta = 1.0
    logp = problem.ref_logp.clone()
    logp[:, 0] = -torch.inf
    logp = torch.log_softmax(logp, dim=-1)
    assert bool((logp[:, 0] == -torch.inf).all())
    want = float(-torch.log1p(-problem.ref_logp[:, 0].exp()).mean())
    # float64 sums of 6 terms of size O(1) per prompt: 1e-12.
    assert problem.kl_ref(logp) == pytest.approx(want, abs=1e-12)
    assert problem.kl(logp, logp) == 0.0
    # Where both policies give 0 the term is still 0 (not 0 · (−inf + inf) = NaN).
    assert problem.kl(logp, logp - 1e-3) == pytest.approx(1e-3, abs=1e-12)
    regret = problem.regret(logp, beta)
    assert regret == pytest.approx(
        problem.optimal_objective(beta) - problem.expected_reward(logp) + beta * want, abs=1e-12
    )
    assert 0 < regret < float("inf")
    # The identity J(π*) − J(π) = β KL(π ‖ π*) holds for it as for any other policy (1e-12 as in
    # test_kl_identities).
    assert regret == pytest.approx(beta * problem.kl_to_optimal(logp, beta), rel=1e-9, abs=1e-12)


def test_prompts_other_than_the_eval_prompts(problem: ExactProblem) -> None:
    """from_task(task, prompts) tabulates those prompts: eval prompts 2 and 0, in that order."""
    task = BanditTask(PARAMS, seed=1)
    sub = ExactProblem.from_task(task, task.eval_prompts.select([2, 0]))
    assert sub.ref_logp.shape == sub.reward.shape == (2, PARAMS.num_arms)
    # The same float32 policy on the same pairs, renormalised the same way: identical.
    assert torch.equal(sub.ref_logp, problem.ref_logp[[2, 0]])
    assert torch.equal(sub.reward, problem.reward[[2, 0]])
    # It keeps those prompts and the task's responses: a policy is tabulated on the same pairs.
    assert torch.equal(sub.policy_logprobs(task.reference_policy()), sub.ref_logp)


def test_errors_name_the_task_and_the_beta(problem: ExactProblem) -> None:
    class Unenumerable:
        name = "tiny-lm"

        def enumerate_responses(self) -> None:
            return None

    with pytest.raises(
        ConfigError,
        match=r"^task 'tiny-lm' cannot enumerate its responses: no exact optimum is known$",
    ):
        ExactProblem.from_task(Unenumerable())  # type: ignore[arg-type]
    for beta in (0.0, -1.0):
        message = rf"^beta must be > 0 for the KL-regularised optimum, got {beta}$"
        with pytest.raises(ConfigError, match=message):
            problem.optimal_logprobs(beta)
        with pytest.raises(ConfigError, match=message):
            problem.regret(problem.ref_logp, beta)


def test_a_run_hands_fixed_point_the_evaluation_s_beta(tmp_path, monkeypatch):
    """An algorithm whose target is π*_γ for its own γ needs the evaluation's β to say whether
    that is π*_β: the runner's ExactProblem carries it (exact.beta)."""
    import json

    from rlhf_harness_dpo import DPO

    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import run_one
    from harness.engine.store import RunStore
    from harness.suite import expand, load_suite

    seen: list[float | None] = []

    def fixed_point(self, exact: ExactProblem) -> torch.Tensor | None:
        seen.append(exact.beta)
        gamma = self.config.beta * 0.25  # BTL labels at scale 0.25: DPO aims at π*_{β·τ}
        return None if gamma == exact.beta else exact.optimal_logprobs(gamma)

    monkeypatch.setattr(DPO, "fixed_point", fixed_point)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: exact-beta\ntasks:\n  - name: bandit\n    params: {num_prompts: 2, num_arms: 4}\n"
        "preferences: {num_pairs: 64, scale: 0.25}\nalgorithms:\n  - name: dpo\n"
        "    sweep: {beta: [0.4, 0.8]}\n    config: {learning_rate: 0.05, optimizer: adam, "
        "batch_size: 8, warmup_steps: 0}\nseeds: [0]\nbudget: {steps: 2}\n"
        "evaluation: {every: 2, beta: 0.1, evaluators: [gold_reward, kl_ref, regret]}\n"
        "device: cpu\n")
    # in this process (the CLI would run them in a child, where the patch does not reach)
    for spec in expand(load_suite(suite), get_plugin_host()):
        assert run_one(spec.as_dict(), str(tmp_path / "runs")) == "done"
    assert seen == [0.1, 0.1]
    targets = {r.spec["algorithm_config"]["beta"]: json.loads((r.path / "summary.json")
                                                              .read_text())["target"]
               for r in RunStore(tmp_path / "runs", "exact-beta").records()}
    assert targets[0.4] is None  # 0.4 · 0.25 = 0.1: its target is π*_β
    assert targets[0.8]["regret"] > 0  # π*_0.2 is not π*_0.1
    problem = ExactProblem.from_task(BanditTask(BanditParams(num_prompts=2, num_arms=4), seed=0))
    assert problem.beta is None  # outside a run: unknown
