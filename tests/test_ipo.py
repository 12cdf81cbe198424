"""IPO (plugins/ipo), checked against hand computations and against DPO on deterministic
preferences, where IPO's regularisation holds and DPO's does not (Azar et al. 2023)."""

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
from harness.testing import conformance_tests

ipo_module = pytest.importorskip("rlhf_harness_ipo")


# The harness's conformance kit (config docs, metric names, accounting, determinism,
# finiteness, improvement on the bandit), at a step size suited to a table of logits.
test_conformance = conformance_tests("ipo", config={"learning_rate": 0.05})


@pytest.fixture(scope="module")
def ipo():
    return get_plugin_host().algorithm("ipo")


def test_discovered_through_its_entry_point(ipo):
    reg = get_plugin_host().registration("algorithm", "ipo")
    assert reg.plugin.distribution == "rlhf-harness-ipo"
    assert reg.plugin.entry_point == "ipo = rlhf_harness_ipo"
    assert ipo.needs == frozenset({"preferences"})


def test_loss_equals_a_hand_computation():
    tau = 0.3
    pc, pr = [-1.0, -2.5, -0.2], [-1.5, -0.5, -0.9]
    rc, rr = [-1.2, -2.0, -0.4], [-1.1, -0.7, -0.8]
    loss, h = ipo_module.ipo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), tau)
    margins = [(a - c) - (b - d) for a, b, c, d in zip(pc, pr, rc, rr, strict=True)]
    expected = sum((m - 1 / (2 * tau)) ** 2 for m in margins) / 3
    # float32 inputs of size O(1): rounding ~1e-7 on a loss of ~2.
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert h.tolist() == pytest.approx(margins, abs=1e-6)


def test_loss_needs_a_positive_tau():
    zero = torch.zeros(2)
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^tau must be > 0, got {tau}$"):
            ipo_module.ipo_loss(zero, zero, zero, zero, tau)
    # Any τ > 0 is allowed, also below 1: the target margin 1/(2τ) = 5 at τ = 0.1.
    loss, h = ipo_module.ipo_loss(zero, zero, zero, zero, 0.1)
    assert h.tolist() == [0.0, 0.0]
    assert loss.item() == pytest.approx(25.0, abs=1e-5)  # float32: (0 − 5)², rounding ~1e-6


def test_length_normalize_divides_each_log_ratio_by_its_length(ipo, monkeypatch):
    """With ``length_normalize`` the loss sees each response's log-probs (policy and reference)
    divided by its token count (TRL's IPO); responses of 1-4 tokens make the check meaningful."""
    seen: list[list[torch.Tensor]] = []
    original = ipo_module.ipo_loss

    def recording(*args):
        seen.append([a.detach().clone() for a in args[:4]])
        return original(*args)

    monkeypatch.setattr(ipo_module, "ipo_loss", recording)
    task = TokenTask(TokenTask.Params(eos_bias=-1.0), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=64, seed=0)
    context = build_context(task, ipo, seed=0, preferences=data)
    algo = make_algorithm(ipo, {"tau": 0.5, "learning_rate": 0.05, "batch_size": 64,
                                "length_normalize": True}, context)
    first = algo.step()
    rows = algo._rows._order[:64]  # the first pass's order: this step's pairs
    batch = algo.data.select(rows)
    len_c, len_r = batch.chosen.mask.sum(-1), batch.rejected.mask.sum(-1)
    assert len(set(len_c.tolist() + len_r.tolist())) > 1
    with torch.no_grad():  # π = π_ref at step 1
        lc = context.reference.sequence_logprobs(batch.prompts, batch.chosen)
        lr = context.reference.sequence_logprobs(batch.prompts, batch.rejected)
    for got, want in zip(seen[0], (lc / len_c, lr / len_r, lc / len_c, lr / len_r), strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    # h = 0 at π = π_ref, so the loss is (1/(2τ))² = 1.
    assert first["margin"] == 0.0 and first["loss"] == pytest.approx(1.0, abs=1e-6)


# --- deterministic preferences: IPO's margin stays at 1/(2τ), DPO's grows -----------------------

# Documented settings: a bandit with 4 prompts and 2 arms (softmax π_ref, r* ~ N(0, 1): the two
# arms differ, so one is better), 4000 pairs from π_ref labelled by BTL at scale 1e-6 — every
# pair of distinct arms is labelled better ≻ worse (σ(Δr/1e-6) = 1 in float64); pairs of one arm
# twice carry no signal (h ≡ 0) — τ = β = 0.5, batches of 256, Adam at 0.05, no clipping.
#
# THEORY. All informative pairs are (better, worse), so L_IPO = const · (h − 1/(2τ))² per prompt
# plus constants: its minimiser is h = 1/(2τ) exactly, i.e. π_IPO(better) = σ(Δ_ref + 1/(2τ))
# with Δ_ref π_ref's logit gap. DPO's loss −log σ(β h) has gradient −β σ(−β h) ≠ 0 for every
# finite h: no finite minimiser, π(worse) → 0 whatever β (the paper's argument).
# Measured (seeds 0, 1, 2): IPO's margin after 200, 300, 400 steps within 3.3e-5, 3e-7, 2e-7
# of 1/(2τ) = 1 on every prompt; DPO's at 100, 200, 300, 400 steps ≈ 5.9, 7.8, 9.0, 9.9.
# The tolerance 1e-3 on IPO's margin is 5000× the final measurement and ≈ 2000× below DPO's
# drift over the last 200 steps (≈ 2).
TAU = 0.5
DETERMINISTIC = {"learning_rate": 0.05, "batch_size": 256}


def deterministic_bandit(seed: int):
    task = BanditTask(BanditTask.Params(num_prompts=4, num_arms=2), seed=seed)
    data = simulate_preferences(task, BradleyTerry(1e-6), num_pairs=4000, seed=seed)
    return task, data


def margins(exact: ExactProblem, logp: torch.Tensor) -> torch.Tensor:
    """[P] log-ratio margin h(better, worse) of the policy with log-probs ``logp`` [P, 2]."""
    ratio = logp - exact.ref_logp
    better = exact.reward.argmax(-1, keepdim=True)
    return (ratio.gather(1, better) - ratio.gather(1, 1 - better)).squeeze(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ipo_margin_converges_to_its_target_while_dpo_grows(ipo, seed):
    task, data = deterministic_bandit(seed)
    chosen_gold = torch.tensor(data.frame["gold_chosen"].to_numpy())
    rejected_gold = torch.tensor(data.frame["gold_rejected"].to_numpy())
    assert bool((chosen_gold >= rejected_gold).all())  # deterministic labels
    exact = ExactProblem.from_task(task)

    context = build_context(task, ipo, seed=seed, preferences=data)
    algo = make_algorithm(ipo, {**DETERMINISTIC, "tau": TAU, "max_grad_norm": None}, context)
    train(algo, 400)
    logp = exact.policy_logprobs(context.policy)
    assert torch.allclose(margins(exact, logp), torch.full((4,), 1 / (2 * TAU), dtype=logp.dtype),
                          atol=1e-3, rtol=0)
    # The closed form: π_IPO(better) = σ(Δ_ref + 1/(2τ)), Δ_ref = log π_ref(better/worse).
    better = exact.reward.argmax(-1, keepdim=True)
    delta_ref = (exact.ref_logp.gather(1, better) - exact.ref_logp.gather(1, 1 - better)).squeeze(1)
    expected = torch.sigmoid(delta_ref + 1 / (2 * TAU))
    assert torch.allclose(logp.exp().gather(1, better).squeeze(1), expected, atol=1e-3)

    dpo = get_plugin_host().algorithm("dpo")
    context = build_context(task, dpo, seed=seed, preferences=data)
    algo = make_algorithm(dpo, {**DETERMINISTIC, "beta": TAU, "optimizer": "adam",
                                "warmup_steps": 0}, context)
    train(algo, 200)
    half = margins(exact, exact.policy_logprobs(context.policy))
    train(algo, 200)
    full = margins(exact, exact.policy_logprobs(context.policy))
    assert bool((full > half + 1.0).all()), (half, full)
    assert bool((full > 5 / (2 * TAU)).all())


# --- reference, determinism, other tasks ---------------------------------------------------------


def test_reference_log_probs_are_computed_once_per_pair(ipo):
    """π_ref scores a pair the first time a batch holds it, never again (batches of 64: all
    1000 pairs are seen by step 16; steps 17–20 compute nothing)."""
    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=4), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=1000, seed=0)
    context = build_context(task, ipo, seed=0, preferences=data)
    rows: list[int] = []
    original = context.reference.logits

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        rows.append(out.shape[0])
        return out

    context.reference.logits = counting  # type: ignore[method-assign]
    algo = make_algorithm(ipo, {"learning_rate": 0.05, "batch_size": 64}, context)
    assert rows == []
    train(algo, 16)
    assert sum(rows) == 2 * 1000
    train(algo, 4)
    assert sum(rows) == 2 * 1000


def test_same_seed_same_metrics_bit_for_bit(ipo):
    def go(seed: int):
        task = TokenTask(TokenTask.Params(), seed=0)
        data = simulate_preferences(task, BradleyTerry(), num_pairs=300, seed=0)
        context = build_context(task, ipo, seed=seed, preferences=data)
        records = train(make_algorithm(ipo, {"learning_rate": 0.05, "batch_size": 32}, context),
                        15)
        strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]
        return strip, context.policy.state_dict()["table"].clone()

    rec_a, table_a = go(3)
    rec_b, table_b = go(3)
    assert rec_a == rec_b and torch.equal(table_a, table_b)
    rec_c, table_c = go(4)
    assert rec_a != rec_c and not torch.equal(table_a, table_c)


@pytest.mark.parametrize("length_normalize", [False, True])
def test_runs_on_the_token_task(ipo, length_normalize):
    """500 BTL pairs (τ_annotator = 1 on r* ∈ [0, 1]: weak preferences), τ = 0.1, Adam at 0.05,
    60 steps of 128 pairs. Exact expected r*: measured 0.153 → 0.177 for both variants."""
    task = TokenTask(TokenTask.Params(), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=500, seed=0)
    context = build_context(task, ipo, seed=0, preferences=data)
    exact = ExactProblem.from_task(task)
    before = exact.expected_reward(exact.policy_logprobs(context.policy))
    config = {"tau": 0.1, "learning_rate": 0.05, "batch_size": 128,
              "length_normalize": length_normalize}
    records = train(make_algorithm(ipo, config, context), 60)
    assert all(math.isfinite(v) for r in records for v in r.values())
    for name in ("loss", "grad_norm", "entropy", "response_length", "margin", "reward_accuracy",
                 "logratio_chosen", "logratio_rejected", "logp_chosen", "logp_rejected"):
        assert name in records[-1], name
    # At step 1 π = π_ref: h = 0, so the loss is exactly (1/(2τ))² = 25.
    assert records[0]["loss"] == pytest.approx(25.0, abs=1e-4)
    assert records[-1]["loss"] < records[0]["loss"]
    after = exact.expected_reward(exact.policy_logprobs(context.policy))
    assert after > before + 0.01


def test_gold_reward_rises_on_tiny_lm(ipo):
    """IPO on 600 pairs labelled from r* by BTL, 30 steps of 32 pairs at Adam 1e-3, τ = 0.1 (as
    the DPO test). Mean r* of 256 samples under fixed generators (common random numbers):
    measured 0.59 → 1.05; r* has sd ≈ 0.55 per sample, so a 256-sample mean has a standard
    error ≈ 0.035 and a rise of 0.25 is ≈ 7 of them."""
    from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

    # The linear r* its figures were measured with (the default saturates).
    task = TinyLMTask(TinyLMParams(max_new_tokens=8, target_saturation=None), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=600, seed=0)
    context = build_context(task, ipo, seed=0, preferences=data)
    algo = make_algorithm(ipo, {"tau": 0.1, "learning_rate": 1e-3, "batch_size": 32}, context)

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
    assert mean_gold(context.policy) > before + 0.25
