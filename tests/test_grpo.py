"""GRPO (plugins/grpo), checked against hand computations, theory and the bandit's exact optimum.

Runtime: every run here is small (a few hundred steps on a 4 × 8 bandit, a few steps on the
token task, 5 steps on tiny-lm), with torch limited to one thread (see ``_one_thread``).
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, train
from harness.exact import ExactProblem
from harness.reward import GoldRewardModel
from harness.tasks.bandit import BanditTask
from harness.tasks.token import TokenTask


@pytest.fixture(scope="module")
def grpo():
    return get_plugin_host().algorithm("grpo")


def run(grpo, task, config: dict, steps: int, seed: int = 0):
    """``steps`` GRPO steps on ``task`` with the oracle reward r*; returns (context, records)."""
    context = build_context(task, grpo, seed=seed, reward_model=GoldRewardModel(task))
    records = train(make_algorithm(grpo, config, context), steps)
    return context, records


def bandit(seed: int) -> BanditTask:
    """4 prompts × 8 arms, π_ref a softmax of N(0, 1) logits, r* ~ N(0, 1) (the defaults)."""
    return BanditTask(BanditTask.Params(num_prompts=4, num_arms=8), seed=seed)


def strip_wall(records: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]


# --- plugin and loss -----------------------------------------------------------------------------


def test_discovered_through_its_entry_point(grpo):
    reg = get_plugin_host().registration("algorithm", "grpo")
    assert reg.plugin.distribution == "rlhf-harness-grpo"
    assert reg.plugin.entry_point == "grpo = rlhf_harness_grpo"
    assert grpo.name == "grpo" and grpo.needs == frozenset({"reward"})


# Three responses of lengths 3, 1 and 2 (T = 3). Values at padded positions are arbitrary finite
# numbers: they must not count. Rows 0 and 2 have ratios outside [1 − ε, 1 + ε_high] on both
# sides, with advantages of both signs, so both branches of the min are exercised.
LOGP = [[-0.5, -1.0, -0.2], [-2.0, 7.0, 7.0], [-0.1, -3.0, 5.0]]
OLD = [[-0.9, -0.8, -0.2], [-1.5, 3.0, 3.0], [-0.6, -2.0, -4.0]]
REF = [[-0.7, -1.3, -0.1], [-1.0, 1.0, 1.0], [-0.3, -2.5, 2.0]]
ADV = [1.5, -0.7, -1.2]
LENGTHS = [3, 1, 2]


def hand_loss(loss_type: str, eps: float, eps_high: float, beta: float, max_len: int) -> float:
    """The GRPO loss in plain Python: −min(ρA, clip(ρ)A) + β k3 per token, then aggregated."""
    per_seq_sums, per_seq_means, total, count = [], [], 0.0, 0
    for lp_row, old_row, ref_row, a, n in zip(LOGP, OLD, REF, ADV, LENGTHS, strict=True):
        s = 0.0
        for t in range(n):
            rho = math.exp(lp_row[t] - old_row[t])
            clipped_rho = min(max(rho, 1 - eps), 1 + eps_high)
            log_r = ref_row[t] - lp_row[t]
            k3 = math.exp(log_r) - log_r - 1
            s += -min(rho * a, clipped_rho * a) + beta * k3
        per_seq_sums.append(s)
        per_seq_means.append(s / n)
        total += s
        count += n
    if loss_type == "sequence":
        return sum(per_seq_means) / len(per_seq_means)
    if loss_type == "token":
        return total / count
    return total / (len(per_seq_sums) * max_len)


@pytest.mark.parametrize("loss_type", ["sequence", "token", "constant"])
@pytest.mark.parametrize(("eps_high", "beta"), [(None, 0.04), (0.28, 0.0), (0.28, 0.5)])
def test_loss_equals_a_hand_computation(loss_type, eps_high, beta):
    import rlhf_harness_grpo

    eps, max_len = 0.2, 5
    tensors = [torch.tensor(v) for v in (LOGP, OLD, REF)]  # float32, as in training
    mask = torch.tensor([[t < n for t in range(3)] for n in LENGTHS])
    terms = rlhf_harness_grpo.grpo_loss(
        tensors[0], tensors[1], tensors[2] if beta else None, torch.tensor(ADV), mask,
        epsilon=eps, epsilon_high=eps_high, beta=beta, loss_type=loss_type, max_len=max_len,
    )
    expected = hand_loss(loss_type, eps, eps if eps_high is None else eps_high, beta, max_len)
    # float32 inputs of size O(1) through a few exp/min ops: rounding error ~1e-7 × a handful
    # of terms, so 1e-6 absolute is tight but safe (the values are of order 0.1 to 1).
    assert terms.loss.item() == pytest.approx(expected, abs=1e-6)
    assert (terms.kl is None) == (beta == 0)
    # Row 0, token 1: ρ = e^{-0.2} ≈ 0.82 > 0.8, not clipped; token 0: ρ = e^{0.4} ≈ 1.49 with
    # A > 0 is clipped at 1 + ε_high (1.2 or 1.28); row 2 token 0: ρ ≈ 1.65 with A < 0 is not.
    assert terms.clipped[0, 0] and not terms.clipped[0, 1] and not terms.clipped[2, 0]
    # Row 2, token 1: ρ = e^{-1} ≈ 0.37 < 0.8 with A < 0: clipped from below.
    assert terms.clipped[2, 1]


def test_loss_argument_errors():
    import rlhf_harness_grpo

    t = torch.zeros(2, 3)
    adv, mask = torch.zeros(2), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^grpo_loss: ref_logp is needed when beta != 0$"):
        rlhf_harness_grpo.grpo_loss(t, t, None, adv, mask, epsilon=0.2, beta=0.1,
                                    loss_type="token")
    with pytest.raises(ValueError, match=r"^grpo_loss: loss_type 'constant' needs max_len$"):
        rlhf_harness_grpo.grpo_loss(t, t, t, adv, mask, epsilon=0.2, beta=0.1,
                                    loss_type="constant")


# --- reference model -----------------------------------------------------------------------------


class _NoReference:
    """Stands in for π_ref: any use at all fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"beta = 0 must not touch the reference model (accessed .{name})")

    def __call__(self, *args, **kwargs):
        raise AssertionError("beta = 0 must not call the reference model")


def test_beta_zero_never_uses_the_reference(grpo):
    task = TokenTask(TokenTask.Params(), seed=0)
    context = build_context(task, grpo, seed=0, reward_model=GoldRewardModel(task))
    context.reference = _NoReference()  # type: ignore[assignment]
    algo = make_algorithm(grpo, {"beta": 0.0, "learning_rate": 0.05, "num_iterations": 2}, context)
    records = train(algo, 3)
    assert len(records) == 3 and "kl_ref" not in records[-1] and "kl_k3" not in records[-1]
    assert algo.models_resident() == 2


def test_beta_positive_uses_the_reference_once_per_step(grpo):
    """The control for the test above: with β > 0 π_ref is evaluated, once per step (one chunk)."""
    task = TokenTask(TokenTask.Params(), seed=0)
    context = build_context(task, grpo, seed=0, reward_model=GoldRewardModel(task))
    calls = []
    original = context.reference.logits

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    context.reference.logits = counting  # type: ignore[method-assign]
    algo = make_algorithm(grpo, {"beta": 0.04, "learning_rate": 0.05}, context)
    records = train(algo, 3)
    assert len(calls) == 3
    assert algo.models_resident() == 3
    # At step 1 π = π_ref exactly, so every per-token log-ratio, hence both KL estimates, is 0.
    assert records[0]["kl_ref"] == 0.0 and records[0]["kl_k3"] == 0.0
    assert records[-1]["kl_k3"] > 0


# --- ratio and clipping --------------------------------------------------------------------------


def _recording_loss(monkeypatch) -> list[tuple[float, float]]:
    """Patch the module's grpo_loss to record (clip fraction, max |ρ − 1|) of every update."""
    import rlhf_harness_grpo

    seen: list[tuple[float, float]] = []
    original = rlhf_harness_grpo.grpo_loss

    def recording(logp, old_logp, ref_logp, advantages, mask, **kwargs):
        terms = original(logp, old_logp, ref_logp, advantages, mask, **kwargs)
        m = mask.bool()
        frac = float((terms.clipped & m).sum() / m.sum())
        seen.append((frac, float((terms.ratio.detach() - 1).abs()[m].max())))
        return terms

    monkeypatch.setattr(rlhf_harness_grpo, "grpo_loss", recording)
    return seen


def test_ratio_and_clip_act_only_after_the_first_iteration(grpo, monkeypatch):
    """μ = 4 on one minibatch: the first update sees the rollout policy itself (ρ = 1 exactly,
    nothing clipped); the next three see a moved policy, and at this step size (Adam at 0.1 on
    a table of logits, i.e. ~0.1 nats per logit per update) some tokens leave [0.8, 1.2]."""
    seen = _recording_loss(monkeypatch)
    task = TokenTask(TokenTask.Params(), seed=0)
    _, records = run(grpo, task, {"learning_rate": 0.1, "num_iterations": 4}, steps=2)
    assert len(seen) == 8
    for step in (0, 1):
        first, later = seen[4 * step], seen[4 * step + 1 : 4 * step + 4]
        assert first == (0.0, 0.0)
        assert max(frac for frac, _ in later) > 0
    for r in records:
        assert r["clip_frac"] > 0
        assert r["clip_frac"] == pytest.approx(r["clip_frac_low"] + r["clip_frac_high"])


def test_no_clipping_with_one_iteration_and_one_minibatch(grpo, monkeypatch):
    seen = _recording_loss(monkeypatch)
    task = TokenTask(TokenTask.Params(), seed=0)
    _, records = run(grpo, task, {"learning_rate": 0.1}, steps=5)
    # old log-probs are the detached log-probs of the same forward: ρ = exp(0) = 1 bit for bit.
    assert seen == [(0.0, 0.0)] * 5
    assert all(r["clip_frac"] == 0.0 and r["ratio_mean"] == 1.0 for r in records)


# --- the bandit: exact optimum -------------------------------------------------------------------

# Documented settings: bandit(seed) above; β = 0.1; G = 16 responses per prompt; 4 prompts per
# step (one pass over the prompts); Adam at 0.05 (a table of logits, not an LM: the paper's 1e-6
# would not move it); no gradient clipping (it would only rescale Adam's steps); 300 steps.
# Responses are one token, so loss_type does not matter; num_iterations = 1 (ρ ≡ 1).
BANDIT = {
    "beta": 0.1, "num_generations": 16, "prompts_per_step": 4, "learning_rate": 0.05,
    "optimizer": "adam", "max_grad_norm": None,
}
BANDIT_STEPS = 300

# THEORY. The comparison target is J_β(π) = E_π r* − β KL(π‖π_ref), maximised by the Gibbs policy
# π*_β ∝ π_ref exp(r*/β). GRPO does not ascend J_β exactly, for two reasons:
#  1. k3 is differentiated on samples of π, through its formula: the expected gradient of
#     E_π[k3] is Σ_y (π − π_ref) ∇log π = ∇ KL(π_ref‖π), the FORWARD KL.
#  2. The advantage r_i − mean(r_group) includes r_i in the mean: E[Â_i ∇log π(y_i)] =
#     (1 − 1/G) ∇ E_π r. And with std scaling (GRPO's default), r is divided by the group std,
#     so β is in units of that std, not of r*.
# So Dr. GRPO (scale_rewards="none") converges to the maximiser of (1 − 1/G) E_π r − β KL(π_ref‖π),
# which has the closed form π(y) = β π_ref(y) / (λ − (1 − 1/G) r(y)) (λ normalises; see
# `forward_kl_optimum`), not π*_β. On these three bandits, that fixed point itself closes
# 95.5–96.8% of the gap J_β(π*_β) − J_β(π_ref) at β = 0.1 (G = 16); it is the ceiling.
#
# Measured closure (fraction of the J_β gap closed; seeds 0, 1, 2; G = 16; 300–500 steps):
#   scale_rewards="none"  (Dr. GRPO): β=0.1: .968 .962 .956 | β=0.25: .944 .941 .931
#                                     β=0.5: .929 .936 .909 | β=1.0:  .920 .854 .881
#     — within ±0.01 of the forward-KL fixed point's closure at every β (the theory holds);
#       at β = 1 the fixed point itself closes only 83–92%, so 90% is not reachable there.
#   scale_rewards="group" (GRPO default): β=0.1: .972 .980 .972 | β=0.25: .894 .961 .937
#                                         β=0.5: .791 .922 .872 | β=1.0:  .716 .846 .782
#     — no closed form; std scaling makes the effective β = β·σ_group shrink as π concentrates.
# The tests assert 90% at β = 0.1 for both, plus the fixed-point prediction for Dr. GRPO.


def forward_kl_optimum(exact: ExactProblem, beta: float, group: int) -> torch.Tensor:
    """[P, N] log-probs of argmax_π (1 − 1/G) E_π r* − β KL(π_ref‖π): the plugin's own
    computation, which the runner records and the tests below check against training."""
    from rlhf_harness_grpo import forward_kl_fixed_point

    return forward_kl_fixed_point(exact.ref_logp, exact.reward, beta=beta, group=group)


def gap_closed(exact: ExactProblem, logp: torch.Tensor, beta: float) -> float:
    j_ref = exact.objective(exact.ref_logp, beta)
    return (exact.objective(logp, beta) - j_ref) / (exact.optimal_objective(beta) - j_ref)


@pytest.mark.parametrize(("beta", "group"), [(0.1, 8), (0.5, 2), (0.04, 64)])
def test_forward_kl_fixed_point_is_the_stationary_maximum(beta, group):
    exact = ExactProblem.from_task(bandit(3))
    fixed = forward_kl_optimum(exact, beta, group)
    assert torch.allclose(fixed.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    c = 1 - 1 / group
    ref = exact.ref_logp.exp()

    def objective(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        return (c * (logp.exp() * exact.reward).sum(-1) + beta * (ref * logp).sum(-1)).sum()

    logits = fixed.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(logits), logits)
    assert grad.abs().max() < 1e-10  # stationary: GRPO's expected update is zero there
    noise = torch.randn(fixed.shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(objective(fixed + 0.05 * k * noise) < objective(fixed) for k in (-1, 1, 3))
    # it is not π*_β: less concentrated on the best arm than the Gibbs policy
    assert exact.kl(fixed, exact.optimal_logprobs(beta)) > 1e-3
    assert exact.regret(fixed, beta) > 0


def test_grpo_states_its_fixed_point_only_where_it_is_exact(grpo):
    task = bandit(0)
    exact = ExactProblem.from_task(task)
    for config, exact_known in (({"scale_rewards": "none", "beta": 0.1}, True),
                                ({"scale_rewards": "group", "beta": 0.1}, False),
                                ({"scale_rewards": "none", "temperature": 0.7}, False)):
        context = build_context(task, grpo, seed=0, reward_model=GoldRewardModel(task))
        algo = make_algorithm(grpo, config, context)
        point = algo.fixed_point(exact)
        assert (point is not None) == exact_known
        if point is not None:
            assert torch.equal(point, forward_kl_optimum(exact, 0.1, 8))
    # at β = 0: all mass on the best arm
    zero = forward_kl_optimum(exact, 0.0, 8).exp()
    assert torch.equal(zero.argmax(-1), exact.reward.argmax(-1))
    assert torch.allclose(zero.max(-1).values, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dr_grpo_closes_90_percent_of_the_gap_at_its_predicted_fixed_point(grpo, seed):
    task = bandit(seed)
    context, _ = run(grpo, task, {**BANDIT, "scale_rewards": "none"}, BANDIT_STEPS, seed=seed)
    exact = ExactProblem.from_task(task)
    logp = exact.policy_logprobs(context.policy)
    beta = BANDIT["beta"]
    assert gap_closed(exact, logp, beta) >= 0.9
    # The learned policy is the forward-KL fixed point, not π*_β: measured KL(π‖fixed point)
    # 1e-4 to 4e-4 (the jitter of constant-step Adam on 64 samples a step), against KL(π‖π*_β)
    # ≈ 0.52–0.60. Bounds 0.01 and 0.1 leave a margin of ≥ 5× on each side.
    fixed = forward_kl_optimum(exact, beta, BANDIT["num_generations"])
    assert exact.kl(logp, fixed) < 0.01
    assert exact.kl_to_optimal(logp, beta) > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_std_scaled_grpo_closes_90_percent_of_the_gap(grpo, seed):
    """Empirical (no closed form, see THEORY): 97.2–98.0% measured at β = 0.1."""
    task = bandit(seed)
    context, _ = run(grpo, task, {**BANDIT, "scale_rewards": "group"}, BANDIT_STEPS, seed=seed)
    exact = ExactProblem.from_task(task)
    assert gap_closed(exact, exact.policy_logprobs(context.policy), BANDIT["beta"]) >= 0.9


@pytest.mark.parametrize("scale_rewards", ["none", "group"])
def test_large_beta_stays_close_to_the_reference(grpo, scale_rewards):
    """β = 10. Near π_ref the fixed point is π ≈ π_ref (1 + c·(u − E_ref u)/β), u the reward in
    the advantage's units, so KL(π‖π_ref) ≈ c² Var_ref(u) / (2β²). With "none" u = r* ~ N(0, 1);
    with "group" u = r*/σ_group has unit variance by construction: either way ≈ 1/(2·100) =
    0.005 (measured 0.003–0.006, plus ~1e-3 of Adam jitter). 0.02 is 4× that estimate, and 100×
    below the KL of the β = 0.1 solutions (1.6–1.9)."""
    task = bandit(0)
    config = {**BANDIT, "beta": 10.0, "scale_rewards": scale_rewards}
    context, _ = run(grpo, task, config, steps=200)
    exact = ExactProblem.from_task(task)
    assert exact.kl_ref(exact.policy_logprobs(context.policy)) < 0.02


# --- the token task: variants and metrics --------------------------------------------------------

SHARED = ("loss", "grad_norm", "kl_ref", "entropy", "response_length", "reward")
OWN = ("clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "advantage_std",
       "reward_std", "frac_zero_std_groups", "kl_k3")

VARIANTS = {
    "grpo": {},
    "dapo": {"epsilon_high": 0.28, "loss_type": "token", "beta": 0.0},
    "dr_grpo": {"scale_rewards": "none", "loss_type": "constant", "beta": 0.0},
    "batch_std_minibatches": {"scale_rewards": "batch", "num_iterations": 2, "num_mini_batches": 4},
    "temperature": {"temperature": 0.7, "num_iterations": 2},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_run_on_the_token_task(grpo, variant):
    task = TokenTask(TokenTask.Params(), seed=0)
    config = {"learning_rate": 0.05, "prompts_per_step": 8, **VARIANTS[variant]}
    _, records = run(grpo, task, config, steps=4)
    assert len(records) == 4 and "diverged" not in records[-1]
    assert all(math.isfinite(v) for r in records for v in r.values())
    expected = set(SHARED + OWN)
    if config.get("beta", 0.04) == 0:
        expected -= {"kl_ref", "kl_k3"}
    assert expected <= set(records[-1])
    r = records[-1]
    assert 0 <= r["frac_zero_std_groups"] <= 1 and 0 <= r["clip_frac"] <= 1
    assert 1 <= r["response_length"] <= task.max_new_tokens
    assert records[-1]["samples"] == 4 * 8 * 8  # steps × prompts × G


def test_grpo_raises_the_gold_reward_on_the_token_task(grpo):
    """Exact expected r* over the eval prompts, before and after 30 steps of the defaults
    (but for the step size of a table: Adam at 0.05)."""
    task = TokenTask(TokenTask.Params(), seed=0)
    exact = ExactProblem.from_task(task)
    before = exact.expected_reward(exact.ref_logp)
    context, _ = run(grpo, task, {"learning_rate": 0.05}, steps=30)
    after = exact.expected_reward(exact.policy_logprobs(context.policy))
    assert after > before + 0.1  # measured: 0.153 → 0.354


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_metrics_bit_for_bit(grpo):
    # Minibatches, μ > 1 and a temperature: every use of the generator is exercised.
    config = {"learning_rate": 0.05, "num_iterations": 2, "num_mini_batches": 2,
              "temperature": 0.8, "prompts_per_step": 4}

    def go(seed: int):
        task = TokenTask(TokenTask.Params(), seed=0)
        context, records = run(grpo, task, config, steps=5, seed=seed)
        return strip_wall(records), context.policy.state_dict()["table"].clone()

    rec_a, table_a = go(3)
    rec_b, table_b = go(3)
    assert rec_a == rec_b and torch.equal(table_a, table_b)
    rec_c, table_c = go(4)
    assert rec_a != rec_c and not torch.equal(table_a, table_c)


# --- tiny-lm -------------------------------------------------------------------------------------


def test_gold_reward_rises_on_tiny_lm(grpo):
    """5 steps of 4 prompts × G = 8 at lr 1e-3 (Adam; the defaults but for the step size, so that
    5 steps move a 0.28M-parameter model), oracle reward r*. Mean r* of 256 samples on the eval
    prompts, drawn with the same generator seed before and after: measured 1.09 → 3.16 (r* counts
    colour words; its std over samples is ≈ 1, so the standard error of a 256-sample mean is
    ≈ 0.06 and a rise of 0.5 is > 5 standard errors)."""
    tiny_lm = pytest.importorskip("harness.tasks.tiny_lm")
    # The linear r* its figures were measured with (the default saturates).
    task = tiny_lm.TinyLMTask(tiny_lm.TinyLMTask.Params(target_saturation=None), seed=0)

    def mean_gold(policy) -> float:
        g = torch.Generator().manual_seed(123)
        prompts = task.eval_prompts
        p = prompts.select(torch.randint(len(prompts), (256,), generator=g))
        with torch.no_grad():
            responses = policy.sample(p, max_new_tokens=task.max_new_tokens, generator=g)
        return float(task.gold_reward(p, responses).mean())

    context = build_context(task, grpo, seed=0, reward_model=GoldRewardModel(task))
    before = mean_gold(context.policy)
    config = {"learning_rate": 1e-3, "num_generations": 8, "prompts_per_step": 4}
    records = train(make_algorithm(grpo, config, context), 5)
    assert all(math.isfinite(v) for r in records for v in r.values())
    assert mean_gold(context.policy) > before + 0.5
