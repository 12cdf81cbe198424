"""Best-of-n (plugins/bon): its exact distribution against brute force and against its own
sampler, the closed-form KL bound, and whole runs through the runner on a bandit and on tiny-lm.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, run_one, train
from harness.engine.store import RunStore
from harness.exact import ExactProblem
from harness.models.tabular import TabularRewardModel
from harness.policy import PromptBatch
from harness.reward import GoldRewardModel
from harness.suite import check_suite, load_suite
from harness.tasks.bandit import BanditTask
from harness.tasks.token import TokenTask
from harness.testing import conformance_tests

bon_module = pytest.importorskip("rlhf_harness_bon")
BestOfNPolicy = bon_module.BestOfNPolicy
analytic_kl = bon_module.analytic_kl
best_of_n_logprobs = bon_module.best_of_n_logprobs


# The harness's conformance kit (config docs, metric names, accounting, determinism,
# finiteness, improvement on the bandit).
test_conformance = conformance_tests("bon", config={})


def bon_policy(task, n: int, reward_model=None) -> BestOfNPolicy:
    reward_model = GoldRewardModel(task) if reward_model is None else reward_model
    return BestOfNPolicy(task.reference_policy().frozen_copy(), reward_model, n,
                         responses=task.enumerate_responses())


def test_discovered_through_its_entry_point():
    host = get_plugin_host()
    reg = host.registration("algorithm", "bon")
    assert reg.plugin.distribution == "rlhf-harness-bon"
    assert reg.plugin.entry_point == "bon = rlhf_harness_bon"
    assert host.algorithm("bon").needs == frozenset({"reward"})


# --- the exact distribution ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exact_distribution_equals_brute_force_with_ties(n):
    """Every n-tuple of draws enumerated, the first-drawn maximum kept: the closed form (ties as
    blocks split ∝ π_ref) must agree to rounding. Arms 1, 4 and 0, 2 tie; arm 3 is the best."""
    p = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=torch.float64)
    r = torch.tensor([1.0, 2.0, 1.0, 3.0, 2.0])
    brute = torch.zeros(5, dtype=torch.float64)
    for draws in itertools.product(range(5), repeat=n):
        scores = [float(r[d]) for d in draws]
        brute[draws[scores.index(max(scores))]] += math.prod(float(p[d]) for d in draws)
    exact = best_of_n_logprobs(p.log(), r, n).exp()
    assert torch.allclose(exact, brute, rtol=0, atol=1e-15)
    if n == 1:
        assert torch.allclose(exact, p, rtol=0, atol=1e-15)


def test_exact_distribution_matches_the_sampler_over_100k_draws():
    """π_bon from the closed form against the frequencies of BestOfNPolicy.sample: 2 prompts ×
    50,000 draws of best-of-4 over 6 arms. Prompt 0's r̂ has ties (three arms share the top
    value, two the bottom one), prompt 1's has none. Each frequency must lie within 5 binomial
    standard deviations of its probability (a false alarm has probability < 1e-5 over all 12)."""
    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=6), seed=0)
    reward = TabularRewardModel(task.space, 2)
    with torch.no_grad():
        reward.table.copy_(torch.tensor([[0.3, 1.0, 1.0, -0.5, -0.5, 1.0],
                                         [0.1, -1.2, 0.7, 0.4, 2.0, -0.3]]))
    reward.requires_grad_(False)
    policy = bon_policy(task, 4, reward)
    exact = ExactProblem.from_task(task).policy_logprobs(policy).exp()  # [2, 6]
    draws = 50_000
    prompts = task.eval_prompts.repeat_interleave(draws)
    g = torch.Generator().manual_seed(0)
    responses = policy.sample(prompts, max_new_tokens=1, generator=g)
    counts = torch.stack([torch.bincount(responses.tokens[i * draws:(i + 1) * draws, 0],
                                         minlength=6) for i in range(2)]).double()
    sd = (draws * exact * (1 - exact)).sqrt()
    assert ((counts - draws * exact).abs() <= 5 * sd).all(), (counts / draws, exact)
    # Within prompt 0's top block, π_bon ∝ π_ref (the first-drawn rule).
    ref = ExactProblem.from_task(task).ref_logp.exp()
    top = [1, 2, 5]
    assert torch.allclose(exact[0, top] / exact[0, top].sum(), ref[0, top] / ref[0, top].sum())


def test_per_token_conditionals_are_exact_on_multi_token_responses():
    """On the token task (responses of 1-4 tokens), the per-token log-probs of logits() sum to
    log π_bon(y) for every response, and the chain rule holds for the per-token entropies:
    E_{π_bon}[Σ_t H_t] = H(π_bon)."""
    task = TokenTask(TokenTask.Params(num_prompts=2), seed=0)
    policy = bon_policy(task, 8)
    exact = ExactProblem.from_task(task)
    table = exact.policy_logprobs(policy)  # [P, N]
    prompts, responses = exact.prompts, exact.responses
    p, n = table.shape
    pairs_p = prompts.repeat_interleave(n)
    pairs_r = type(responses)(tokens=responses.tokens.repeat(p, 1),
                              mask=responses.mask.repeat(p, 1))
    logp_tok, entropy = policy.token_logprobs_and_entropy(pairs_p, pairs_r)
    assert torch.allclose(logp_tok.sum(-1).view(p, n), table, atol=1e-10)
    prob = table.exp()
    seq_entropy = -(prob * table).sum(-1)
    chain = (prob * entropy.sum(-1).view(p, n)).sum(-1)
    assert torch.allclose(chain, seq_entropy, atol=1e-10)


# --- KL and reward -------------------------------------------------------------------------------


def exact_kl(task, n: int, reward_model=None) -> float:
    exact = ExactProblem.from_task(task)
    return exact.kl_ref(exact.policy_logprobs(bon_policy(task, n, reward_model)))


@pytest.mark.parametrize("n", [4, 16, 64])
def test_kl_approaches_the_closed_form_without_ties(n):
    """Uniform π_ref over K arms, distinct r̂ (r* ~ N(0, 1)): π_bon(i-th arm from the bottom) =
    (i/K)^n − ((i−1)/K)^n, and KL = Σ_i π_bon log(K π_bon) is a Riemann sum of ∫ n u^(n−1)
    log(n u^(n−1)) du = log n − (n−1)/n. The property tested: KL ≤ log n − (n−1)/n (Beirami et
    al. 2024), and the gap shrinks like 1/K² (measured gap · K² ≈ 0.75, 10.7, 171 for n = 4, 16,
    64; deterministic: with a uniform π_ref the KL depends on the ranks only): at K = 1000 it is
    < 2e-4 for n ≤ 64, and ≥ 50× smaller than at K = 100 (100× for an exact 1/K² rate)."""
    gaps = []
    for arms in (100, 1000):
        task = BanditTask(BanditTask.Params(num_prompts=1, num_arms=arms, reference="uniform"),
                          seed=0)
        assert len(set(task.reward_table[0].tolist())) == arms  # no ties
        kl = exact_kl(task, n)
        assert kl <= analytic_kl(n) + 1e-12
        gaps.append(analytic_kl(n) - kl)
    assert gaps[1] < 2e-4 and gaps[1] * 50 < gaps[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_bound_holds_and_is_loose_for_a_peaked_reference(seed):
    """On 8 × 16 bandits with softmax π_ref at temperature 0.3 (atoms of mass up to ~0.9), the
    exact KL stays below the bound for every n, is 0 at n = 1, and is far below it at n = 64
    (the top atoms cap what π_bon can move: measured 1.48, 2.22, 1.69 nats vs 3.17)."""
    task = BanditTask(BanditTask.Params(num_prompts=8, num_arms=16, ref_temperature=0.3),
                      seed=seed)
    for n in (1, 2, 4, 16, 64):
        kl = exact_kl(task, n)
        assert kl <= analytic_kl(n) + 1e-12
        if n == 1:
            assert kl == pytest.approx(0.0, abs=1e-12)
    assert exact_kl(task, 64) < analytic_kl(64) - 0.5


def test_equal_rewards_give_the_reference_and_zero_kl():
    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=8), seed=0)
    reward = TabularRewardModel(task.space, 2)  # all zeros: one block
    exact = ExactProblem.from_task(task)
    logp = exact.policy_logprobs(bon_policy(task, 16, reward))
    assert torch.allclose(logp, exact.ref_logp, atol=1e-12)
    assert exact.kl_ref(logp) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_reward_increases_with_n(seed):
    task = BanditTask(BanditTask.Params(num_prompts=4, num_arms=8), seed=seed)
    exact = ExactProblem.from_task(task)
    rewards = [exact.expected_reward(exact.policy_logprobs(bon_policy(task, n)))
               for n in (1, 2, 4, 8, 16, 32)]
    assert rewards[0] == pytest.approx(exact.expected_reward(exact.ref_logp), abs=1e-12)
    assert all(b > a for a, b in itertools.pairwise(rewards)), rewards
    assert rewards[-1] <= float(exact.reward.max(-1).values.mean()) + 1e-12


def test_lm_policy_has_no_log_probs_but_the_closed_form_kl():
    """Without an enumeration (LM tasks) log-probs raise a clear error and the KL is the bound;
    with one, kl_to_reference is None (the exact KL is computed instead)."""
    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=4), seed=0)
    ref = task.reference_policy().frozen_copy()
    blind = BestOfNPolicy(ref, GoldRewardModel(task), 16)
    assert not blind.has_logprobs and blind.kl_to_reference() == pytest.approx(analytic_kl(16))
    with pytest.raises(NotImplementedError, match="intractable"):
        blind.sequence_logprobs(task.eval_prompts, task.enumerate_responses().select([0, 1]))
    tempered = BestOfNPolicy(ref, GoldRewardModel(task), 16, temperature=0.5)
    assert tempered.kl_to_reference() is None
    assert bon_policy(task, 16).kl_to_reference() is None


# --- the algorithm and whole runs ----------------------------------------------------------------


def test_one_step_then_finished_with_its_metrics():
    bon = get_plugin_host().algorithm("bon")
    task = BanditTask(BanditTask.Params(num_prompts=4, num_arms=8), seed=0)
    context = build_context(task, bon, seed=0, reward_model=GoldRewardModel(task))
    algo = make_algorithm(bon, {"n": 8, "prompts_per_step": 32}, context)
    assert algo.eval_policy() is context.policy and algo.models_resident() == 2
    records = train(algo, 50)
    assert len(records) == 1 and algo.finished
    assert isinstance(algo.eval_policy(), BestOfNPolicy)
    r = records[0]
    assert r["kl_ref"] == pytest.approx(math.log(8) - 7 / 8)
    assert r["reward"] > r["reward_ref"] and 0 <= r["tie_frac"] <= 1
    assert r["response_length"] == 1.0 and r["samples"] == 32 * 8


SUITE = """\
name: bon-{task}
tasks:
  - name: {task}
    params: {params}
reward_model: {{kind: gold}}
algorithms:
  - name: bon
    config: {{n: {n}, prompts_per_step: 16}}
seeds: [0]
budget: {{steps: 100}}
evaluation: {{every: 10, samples_per_prompt: {spp}}}
device: cpu
"""


def run_suite(tmp_path: Path, task: str, params: str, n: int, spp: int):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(task=task, params=params, n=n, spp=spp))
    (spec,) = check_suite(load_suite(path), path, get_plugin_host())
    status = run_one(spec.as_dict(), str(tmp_path / "runs"))
    run_dir = RunStore(tmp_path / "runs", spec.suite).run_dir(spec.run_id)
    summary = json.loads((run_dir / "summary.json").read_text())
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    evals = frame[frame.source == "eval"].pivot(index="step", columns="metric", values="value")
    return status, summary, evals


def test_runs_through_the_runner_on_a_bandit(tmp_path, monkeypatch):
    """A whole run: the step-0 evaluation is π_ref, the run stops after one step (budget 100),
    and the final evaluation is π_bon's, exact (tabular): KL below the bound, r* up."""
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    status, summary, evals = run_suite(tmp_path, "bandit", "{num_prompts: 4, num_arms: 8}", 16, 2)
    assert status == "done" and summary["steps"] == 1
    assert list(evals.index) == [0, 1]
    before, after = evals.loc[0], evals.loc[1]
    assert before["kl_ref"] == pytest.approx(0.0, abs=1e-9)
    assert 0.3 < after["kl_ref"] <= analytic_kl(16)
    assert after["gold_reward"] > before["gold_reward"] + 0.5
    assert after["win_rate_ref"] > 0.5 and "entropy" in evals.columns
    assert summary["models_resident"] == 2


def test_runs_through_the_runner_on_tiny_lm(tmp_path, monkeypatch):
    """tiny-lm with 8 eval prompts × 8 samples, best-of-8 under r*: the sampled evaluators work,
    kl_ref is the closed form, entropy (which needs log-probs) is not reported after the step.
    Measured mean r* 0.58 → 1.40 and win rate 0.93 (0.60 → 1.53 and 0.94 with another language
    seed). r* has sd ≈ 0.6 per sample, so the difference of two 64-sample means has sd ≈ 0.11:
    the bound 0.4 is ≈ 4 sd below the measured gain."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    # The linear r* its figures were measured with (the default saturates).
    params = ("{num_train_prompts: 16, num_eval_prompts: 8, max_new_tokens: 12,"
              " target_saturation: null}")
    status, summary, evals = run_suite(tmp_path, "tiny-lm", params, 8, 8)
    assert status == "done" and summary["steps"] == 1
    before, after = evals.loc[0], evals.loc[1]
    assert after["kl_ref"] == pytest.approx(analytic_kl(8))
    assert math.isnan(after.get("entropy", math.nan))
    assert after["gold_reward"] > before["gold_reward"] + 0.4
    assert after["win_rate_ref"] > 0.7
    assert 1 <= after["response_length"] <= 12


def test_sample_returns_one_trimmed_response_per_prompt():
    task = TokenTask(TokenTask.Params(num_prompts=3), seed=0)
    policy = bon_policy(task, 4)
    prompts = PromptBatch.cat([task.eval_prompts] * 5)
    out = policy.sample(prompts, max_new_tokens=task.max_new_tokens,
                        generator=torch.Generator().manual_seed(1))
    assert len(out) == 15 and out.logprobs is None
    assert out.tokens.shape[1] == int(out.mask.sum(-1).max())
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(prompts, max_new_tokens=4, temperature=0.7)


def test_a_response_of_negligible_but_nonzero_probability_gets_a_finite_log_prob():
    """π_ref(y) = e^−800 adds nothing to π_ref's CDF in float64, so its block has F_lo = F_hi
    (ρ = 1): the factor Σ_{k<n} ρ^k is then n, its limit, and log π_bon(y) is finite.

    Sorted by r̂ the arms are 0 (r̂ 0), 1 (r̂ 1, the tiny one), 2 (r̂ 2), so F_hi at arm 1 is
    F(0) = π_ref(0) and log π_bon(1) = log π_ref(1) + (n − 1) log π_ref(0) + log n.
    """
    lp = torch.log_softmax(torch.tensor([0.0, -800.0, 0.5], dtype=torch.float64), -1)
    r = torch.tensor([0.0, 1.0, 2.0])
    for n in (2, 5):
        out = best_of_n_logprobs(lp, r, n)
        assert bool(torch.isfinite(out).all()), out
        want = lp[1] + (n - 1) * lp[0] + math.log(n)
        # float64 sums of three O(800) numbers: rounding ~1e-13; 1e-10 is ample.
        assert out[1].item() == pytest.approx(want.item(), abs=1e-10)
        # The other two are exact best-of-n probabilities of a two-arm problem (the tiny arm
        # changes them by ~e^−800): F(0)^n for the worst, 1 − F(0)^n for the best.
        p0 = lp[0].exp().item()
        assert out[[0, 2]].exp().tolist() == pytest.approx([p0**n, 1 - p0**n], abs=1e-15)


def test_argument_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        analytic_kl(0)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        best_of_n_logprobs(torch.zeros(3), torch.zeros(3), 0)
    with pytest.raises(
        ValueError, match=r"^ref_logp and reward must have one shape, got \(3,\) and \(2,\)$"
    ):
        best_of_n_logprobs(torch.zeros(3), torch.zeros(2), 2)
    assert analytic_kl(1) == 0.0  # n = 1 is π_ref itself
