"""The online plugins added beside ppo, grpo and rloo: online DPO, REINFORCE++ and GSPO.

Each loss against a plain computation of the paper's formula on random float64 inputs (≤ 1e-6),
then behaviour on the 4 × 8 bandit with the oracle reward r* (its exact optimum π*_β known): Adam
at 0.05 on a table of logits, 64 prompts per step, no gradient clipping (it would only rescale
Adam's steps), 300 steps. About 1 s a run.
"""

from __future__ import annotations

import math
import random

import pytest
import rlhf_harness_gspo as gspo
import rlhf_harness_online_dpo as online_dpo
import rlhf_harness_reinforce_pp as reinforce_pp
import torch

from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, train
from harness.exact import ExactProblem
from harness.reward import GoldRewardModel
from harness.tasks.bandit import BanditTask


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- losses against the papers' formulas ----------------------------------------------------------


def test_online_dpo_loss_is_dpo_on_the_labelled_pairs():
    rng = random.Random(0)
    n, beta = 10, 0.3
    logp = [-rng.random() * 5 for _ in range(2 * n)]
    ref = [x + rng.gauss(0, 0.5) for x in logp]
    scores = [rng.gauss(0, 1) for _ in range(2 * n)]
    scores[n + 3] = scores[3]
    expected = 0.0
    for i in range(n):
        w, lo = (i, n + i) if scores[i] >= scores[n + i] else (n + i, i)  # ties to the first
        h = beta * ((logp[w] - ref[w]) - (logp[lo] - ref[lo]))
        expected += math.log1p(math.exp(-h))
    first = online_dpo.label_pairs(t64(scores[:n]), t64(scores[n:]), "argmax")
    loss, _, _ = online_dpo.online_dpo_loss(t64(logp), t64(ref), first, beta)
    assert abs(loss.item() - expected / n) <= 1e-6


def test_btl_labels_follow_the_preference_model():
    g = torch.Generator().manual_seed(0)
    diff = torch.full((20_000,), 1.0, dtype=torch.float64)
    first = online_dpo.label_pairs(diff, torch.zeros_like(diff), "btl", 2.0, g)
    # P = σ(1/2) = 0.622; the std of a mean of 20k draws is 0.0034.
    assert abs(float(first.double().mean()) - 1 / (1 + math.exp(-0.5))) < 0.015


def test_btl_labels_are_a_uniform_below_sigma_of_the_scaled_difference():
    """"btl": first preferred where u < σ((r̂¹ − r̂²)/τ), u the float64 uniforms of the given
    generator (or torch's default one), τ = 1 unless given."""
    rng = random.Random(5)
    n = 200
    first_scores = [rng.gauss(0, 2) for _ in range(n)]
    second_scores = [rng.gauss(0, 2) for _ in range(n)]

    def expected(u: torch.Tensor, scale: float) -> list[bool]:
        return [ui < 1 / (1 + math.exp(-(a - b) / scale))
                for ui, a, b in zip(u.tolist(), first_scores, second_scores, strict=True)]

    g = torch.Generator().manual_seed(5)
    first = online_dpo.label_pairs(t64(first_scores), t64(second_scores), "btl", 0.5, g)
    u = torch.rand(n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert first.tolist() == expected(u, 0.5)
    with torch.random.fork_rng():
        torch.manual_seed(6)
        first = online_dpo.label_pairs(t64(first_scores), t64(second_scores), "btl")
        torch.manual_seed(6)
        u = torch.rand(n, dtype=torch.float64)
    assert first.tolist() == expected(u, 1.0)
    assert 0 < sum(first.tolist()) < n


def test_reinforce_pp_returns_and_loss_are_the_papers():
    rng = random.Random(1)
    beta, gamma, eps = 0.1, 0.9, 0.2
    lengths = [3, 1, 4, 2]
    b, t = len(lengths), max(lengths)
    score = [rng.gauss(0, 1) for _ in range(b)]
    kl = [[rng.gauss(0, 0.3) for _ in range(t)] for _ in range(b)]
    logp = [[-rng.random() for _ in range(t)] for _ in range(b)]
    old = [[x + rng.gauss(0, 0.1) for x in row] for row in logp]
    mask = torch.tensor([[j < n for j in range(t)] for n in lengths])
    # G_t = Σ_{s≥t} γ^{s−t} r_s,  r_s = 1[s = T] r̂ − β KL_s
    expected_g = [[0.0] * t for _ in range(b)]
    for i, n in enumerate(lengths):
        for j in range(n):
            expected_g[i][j] = sum(
                gamma ** (s - j) * ((score[i] if s == n - 1 else 0.0) - beta * kl[i][s])
                for s in range(j, n))
    returns = reinforce_pp.token_returns(t64(score), t64(kl), mask, beta, gamma)
    assert torch.allclose(returns, t64(expected_g), atol=1e-12)
    valid = [expected_g[i][j] for i in range(b) for j in range(lengths[i])]
    mean = sum(valid) / len(valid)
    std = math.sqrt(sum((v - mean) ** 2 for v in valid) / (len(valid) - 1))
    expected = 0.0
    for i in range(b):
        for j in range(lengths[i]):
            a = (expected_g[i][j] - mean) / std
            rho = math.exp(logp[i][j] - old[i][j])
            expected += -min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
    from harness import rl

    advantages = rl.masked_whiten(returns, mask, eps=0.0)
    loss, _ = reinforce_pp.reinforce_pp_loss(t64(logp), t64(old), advantages, mask, eps)
    assert abs(loss.item() - expected / len(valid)) <= 1e-6


def test_gspo_loss_is_eq_5_with_the_sequence_ratio_of_eq_7():
    rng = random.Random(2)
    lengths = [2, 5, 1, 3]
    b, t = len(lengths), max(lengths)
    lo, hi, beta = 0.05, 0.08, 0.04
    logp = [[-rng.random() for _ in range(t)] for _ in range(b)]
    old = [[x + rng.gauss(0, 0.1) for x in row] for row in logp]
    ref = [[x + rng.gauss(0, 0.2) for x in row] for row in logp]
    adv = [rng.gauss(0, 1) for _ in range(b)]
    mask = torch.tensor([[j < n for j in range(t)] for n in lengths])
    expected = 0.0
    for i, n in enumerate(lengths):
        s = math.exp(sum(logp[i][j] - old[i][j] for j in range(n)) / n)  # Eq. 7
        expected += -min(s * adv[i], min(max(s, 1 - lo), 1 + hi) * adv[i])  # Eq. 5
        k3 = [math.exp(ref[i][j] - logp[i][j]) - (ref[i][j] - logp[i][j]) - 1 for j in range(n)]
        expected += beta * sum(k3) / n
    loss, _, _ = gspo.gspo_loss(t64(logp), t64(old), t64(adv), mask, lo, hi, t64(ref), beta)
    assert abs(loss.item() - expected / b) <= 1e-6


def test_gspo_clips_whole_sequences():
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-0.01] * 3, [0.0] * 3], dtype=torch.float64)  # s = e^0.01 and 1
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, s, clipped = gspo.gspo_loss(logp, old, t64([1.0, 1.0]), mask, 3e-4, 4e-4)
    loss.backward()
    assert s[0].item() == pytest.approx(math.exp(0.01)) and s[1].item() == 1.0
    assert clipped.tolist() == [True, False]
    assert logp.grad[0].abs().max() == 0 and logp.grad[1].abs().min() > 0


def test_gspo_clips_below_for_negative_advantages_and_needs_ref_logp_for_its_kl():
    """s = e^−0.01 < 1 − ε_low with Â = −1: the clipped term −(1 − ε_low) is the smaller, so
    the loss is 1 − ε_low and the sequence gets no gradient."""
    logp = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    old = torch.full((1, 3), 0.01, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, _, clipped = gspo.gspo_loss(logp, old, t64([-1.0]), mask, 3e-4, 4e-4)
    loss.backward()
    assert loss.item() == pytest.approx(1 - 3e-4, rel=0, abs=1e-15)
    assert clipped.tolist() == [True] and logp.grad.abs().max() == 0
    with pytest.raises(ValueError, match=r"^gspo_loss: ref_logp is needed when beta != 0$"):
        gspo.gspo_loss(logp, old, t64([-1.0]), mask, 0.2, 0.2, beta=0.1)


# --- the bandit -----------------------------------------------------------------------------------

ONLINE = {"learning_rate": 0.05, "max_grad_norm": None}


def bandit_run(name: str, config: dict, seed: int, steps: int = 300):
    task = BanditTask(BanditTask.Params(num_prompts=4, num_arms=8), seed=seed)
    cls = get_plugin_host().algorithm(name)
    context = build_context(task, cls, seed=seed, reward_model=GoldRewardModel(task))
    records = train(make_algorithm(cls, config, context), steps)
    assert all(math.isfinite(v) for r in records for v in r.values())
    exact = ExactProblem.from_task(task)
    return exact, exact.policy_logprobs(context.policy), records


def gap_closed(exact: ExactProblem, logp: torch.Tensor, beta: float) -> float:
    j_ref = exact.objective(exact.ref_logp, beta)
    return (exact.objective(logp, beta) - j_ref) / (exact.optimal_objective(beta) - j_ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_online_dpo_with_btl_labels_approaches_pi_star_like_dpo(seed):
    """THEORY (plugins/online_dpo): with BTL labels at scale 1 every pair's expected gradient is
    0 at π*_β whatever policy sampled it. Measured at β = 0.5 (seeds 0, 1, 2): closure .986
    .983 .989, KL(π ‖ π*_β) 0.030 0.028 0.013 — DPO's own bandit test asks 0.9; so does this.
    With argmax labels the KL term does not hold: KL(π ‖ π_ref) 1.92–2.07 against π*_β's
    0.88–1.29 (measured), i.e. beyond the optimum's."""
    beta = 0.5
    config = {**ONLINE, "beta": beta, "prompts_per_step": 64, "temperature": 1.0}
    exact, logp, _ = bandit_run("online-dpo", {**config, "label": "btl"}, seed)
    assert gap_closed(exact, logp, beta) >= 0.9
    exact, greedy, _ = bandit_run("online-dpo", {**config, "label": "argmax"}, seed)
    assert exact.kl_ref(greedy) > exact.kl_ref(exact.optimal_logprobs(beta))


@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_pp_reaches_pi_star(seed):
    """THEORY (plugins/reinforce_pp): the k1 penalty in the reward makes the estimate the
    policy gradient of J_β; the batch mean and std only shift and scale it. Measured at β = 0.5
    (seeds 0, 1, 2): closure .995 .999 .993, KL(π ‖ π*_β) 0.010 0.002 0.008. Bound 0.95."""
    beta = 0.5
    exact, logp, _ = bandit_run("reinforce-pp", {**ONLINE, "beta": beta}, seed)
    assert gap_closed(exact, logp, beta) >= 0.95


def test_gspo_without_kl_maximises_reward_and_its_clip_acts():
    """No KL term (the paper's): the fixed point is the reward maximiser. Measured after 100
    steps of 4 prompts × 8 samples: E r* 1.81 and 1.92 against a maximum of 1.85 and 1.95
    (seeds 0, 1), from π_ref's 0.05 and 0.15. Bound: within 0.2 of the maximum. With 4
    minibatches the later ones are off-policy and some sequences are clipped."""
    exact, logp, records = bandit_run("gspo", {**ONLINE, "prompts_per_step": 4}, 0, steps=100)
    best = float(exact.reward.max(-1).values.mean())
    assert exact.expected_reward(logp) > best - 0.2
    assert max(r["clip_frac"] for r in records) > 0
