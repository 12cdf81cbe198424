"""DPO, checked against hand computations and the exact optimum of the bandit."""

from __future__ import annotations

import math

import pytest
import torch

from harness.engine.annotator import simulate_preferences
from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, train
from harness.exact import ExactProblem
from harness.preference import BradleyTerry
from harness.tasks.bandit import BanditTask
from harness.tasks.token import TokenTask


@pytest.fixture(scope="module")
def dpo():
    return get_plugin_host().algorithm("dpo")


def test_discovered_through_its_entry_point():
    reg = get_plugin_host().registration("algorithm", "dpo")
    assert reg.plugin.distribution == "rlhf-harness-dpo"
    assert reg.plugin.entry_point == "dpo = rlhf_harness_dpo"


def test_loss_equals_a_hand_computation():
    import rlhf_harness_dpo

    beta = 0.3
    pc, pr = [-1.0, -2.5, -0.2], [-1.5, -0.5, -0.9]
    rc, rr = [-1.2, -2.0, -0.4], [-1.1, -0.7, -0.8]
    loss, chosen, rejected = rlhf_harness_dpo.dpo_loss(
        *(torch.tensor(v, dtype=torch.float64) for v in (pc, pr, rc, rr)), beta
    )
    expected = 0.0
    for a, b, c, d in zip(pc, pr, rc, rr, strict=True):
        z = beta * ((a - c) - (b - d))
        expected += -math.log(1.0 / (1.0 + math.exp(-z)))
    expected /= 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert chosen.tolist() == pytest.approx([beta * (a - c) for a, c in zip(pc, rc, strict=True)])
    assert rejected.tolist() == pytest.approx([beta * (b - d) for b, d in zip(pr, rr, strict=True)])


# Documented settings for the bandit: 4 prompts × 8 arms, π_ref a random softmax, r* ~ N(0, 1),
# 20k pairs labelled by BTL at τ = 1 (DPO's own model, so its population optimum is π*_β), β = 0.5,
# Adam at 0.05 (a table of logits, not an LM: the paper's 1e-6 would not move it), 512 pairs per
# step, 400 steps (≈ 10 passes over the data).
BANDIT_CONFIG = {
    "beta": 0.5, "learning_rate": 0.05, "optimizer": "adam", "batch_size": 512,
    "warmup_steps": 0,
}


def run_bandit(dpo, seed: int, config: dict, steps: int = 400, num_pairs: int = 20_000):
    task = BanditTask(BanditTask.Params(num_prompts=4, num_arms=8), seed=seed)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=num_pairs, seed=seed)
    context = build_context(task, dpo, seed=seed, preferences=data)
    records = train(make_algorithm(dpo, config, context), steps)
    exact = ExactProblem.from_task(task)
    return exact, exact.policy_logprobs(context.policy), records


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closes_90_percent_of_the_gap_on_the_bandit(dpo, seed):
    beta = BANDIT_CONFIG["beta"]
    exact, logp, _ = run_bandit(dpo, seed, BANDIT_CONFIG)
    j_ref = exact.objective(exact.ref_logp, beta)
    closed = (exact.objective(logp, beta) - j_ref) / (exact.optimal_objective(beta) - j_ref)
    assert closed >= 0.9, closed


def test_large_beta_stays_close_to_the_reference(dpo):
    """At β = 20 the optimum itself is within KL ≈ Var(r*)/(2β²) ≈ 1e-3 of π_ref (r* ~ N(0, 1));
    DPO's finite-data solution adds the noise of 20k pairs. 0.02 leaves a margin of 10×."""
    exact, logp, _ = run_bandit(dpo, 0, {**BANDIT_CONFIG, "beta": 20.0}, steps=200)
    assert exact.kl_to_optimal(exact.optimal_logprobs(20.0), 20.0) == pytest.approx(0, abs=1e-12)
    assert exact.kl_ref(exact.optimal_logprobs(20.0)) < 2e-3
    assert exact.kl_ref(logp) < 0.02


def test_reference_log_probs_are_computed_once_per_pair(dpo):
    """π_ref scores a pair's two responses the first time a batch holds the pair, never again:
    1000 pairs in batches of 64 are all seen by step 16; steps 17–30 compute nothing."""
    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=4), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=1000, seed=0)
    context = build_context(task, dpo, seed=0, preferences=data)
    rows: list[int] = []
    original = context.reference.logits

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        rows.append(out.shape[0])
        return out

    context.reference.logits = counting
    algo = make_algorithm(dpo, {**BANDIT_CONFIG, "batch_size": 64}, context)
    assert rows == []  # nothing up front
    train(algo, 1)
    assert sum(rows) == 2 * 64
    train(algo, 15)
    assert sum(rows) == 2 * 1000
    train(algo, 14)
    assert sum(rows) == 2 * 1000


def test_same_seed_same_metrics_bit_for_bit(dpo):
    _, logp_a, rec_a = run_bandit(dpo, 3, BANDIT_CONFIG, steps=30, num_pairs=2000)
    _, logp_b, rec_b = run_bandit(dpo, 3, BANDIT_CONFIG, steps=30, num_pairs=2000)
    strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rec_a]
    assert strip == [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rec_b]
    assert torch.equal(logp_a, logp_b)
    _, logp_c, _ = run_bandit(dpo, 4, BANDIT_CONFIG, steps=30, num_pairs=2000)
    assert not torch.equal(logp_a, logp_c)


def test_metric_vocabulary_and_accuracy_rises(dpo):
    _, _, records = run_bandit(dpo, 0, BANDIT_CONFIG, steps=100, num_pairs=5000)
    for name in ("loss", "grad_norm", "entropy", "response_length", "reward_accuracy",
                 "reward_margin", "samples", "tokens", "flops", "wall_seconds"):
        assert name in records[-1], name
    assert all(math.isfinite(v) for r in records for v in r.values())
    # At step 1 π = π_ref: every implicit reward is 0, so the loss is exactly log 2.
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["reward_accuracy"] > 0.5


def test_runs_on_the_token_task(dpo):
    task = TokenTask(TokenTask.Params(), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=500, seed=0)
    context = build_context(task, dpo, seed=0, preferences=data)
    exact = ExactProblem.from_task(task)
    before = exact.expected_reward(exact.policy_logprobs(context.policy))
    records = train(make_algorithm(dpo, {**BANDIT_CONFIG, "batch_size": 128}, context), 60)
    assert all(math.isfinite(v) for r in records for v in r.values())
    after = exact.expected_reward(exact.policy_logprobs(context.policy))
    assert after > before


def test_gold_reward_rises_on_tiny_lm(dpo):
    """DPO on 600 pairs labelled from r* by BTL, 30 steps of 32 pairs at Adam 1e-3, β = 0.1.

    Mean r* of 256 samples under fixed generators (common random numbers) has sd ≈ 0.05 under
    π_ref (per-sample sd ≈ 0.7); a rise of 0.3 is ≈ 6 sd.
    """
    from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

    # The linear r* its figures were measured with (the default saturates).
    task = TinyLMTask(TinyLMParams(max_new_tokens=8, target_saturation=None), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=600, seed=0)
    context = build_context(task, dpo, seed=0, preferences=data)
    algo = make_algorithm(dpo, {"beta": 0.1, "learning_rate": 1e-3, "optimizer": "adam",
                                "batch_size": 32, "warmup_steps": 0}, context)

    def mean_gold(policy) -> float:
        g = torch.Generator().manual_seed(1234)
        rows = torch.randint(len(task.train_prompts), (256,), generator=g)
        prompts = task.train_prompts.select(rows)
        with torch.no_grad():
            responses = policy.sample(prompts, max_new_tokens=task.max_new_tokens, generator=g)
        return float(task.gold_reward(prompts, responses).mean())

    before = mean_gold(context.reference)
    records = train(algo, 30)
    assert all(math.isfinite(v) for r in records for v in r.values())
    assert mean_gold(context.policy) > before + 0.3
