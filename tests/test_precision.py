"""bf16 autocast, checked on the CPU: CPU bf16 autocast stands in for CUDA's.

bf16 keeps 8 significant bits (7 stored, one implicit): rounding to nearest has relative error at
most u = 2⁻⁸ (half an ulp, 2⁻⁸ relative at worst just above a power of two). Every bound below
is derived from u and says which roundings it covers.

What is checked:

- a step runs in the run's precision with each update seeing the weights the previous update
  left (:func:`harness.engine.runner.precision_context` disables autocast's weight-cast cache): a
  2-epoch PPO step and a μ = 2 GRPO step move the policy as in fp32 (``approx_kl``, clip
  fractions), where the cached autocast freezes them at θ_old;
- a bf16 run computes DPO's reference log-probs in bf16 too (implicit rewards exactly 0 at the
  first step, as in fp32), and a bf16 run on the CPU is bf16, not silently fp32;
- scalar heads (r̂, V) stay float32 under autocast;
- the error of per-token log-probs, KL (k1, k3), r̂ and GRPO advantages against fp32 on tiny-lm.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from harness import rl
from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, precision_context, run_one
from harness.engine.store import RunStore
from harness.reward import GoldRewardModel
from harness.suite import check_suite, load_suite

U = 2.0**-8
"""bf16 unit roundoff (8 significant bits)."""

tiny_lm_module = pytest.importorskip("harness.tasks.tiny_lm")


@pytest.fixture(scope="module")
def tiny_lm():
    """tiny-lm with the default (cached) π_ref and 8-token responses, scored by the linear gold
    (``target_saturation=None``) the tolerances below were measured with."""
    task = tiny_lm_module.TinyLMTask(tiny_lm_module.TinyLMParams(
        max_new_tokens=8, target_saturation=None), seed=0)
    assert task.model is not None
    return task


def one_step(task, name: str, config: dict, context) -> dict[str, float]:
    """Build ``name`` on ``task`` and take one step, both inside ``context()``."""
    cls = get_plugin_host().algorithm(name)
    ctx = build_context(task, cls, seed=0, reward_model=GoldRewardModel(task))
    with context():
        algo = make_algorithm(cls, config, ctx)
        return algo.step()


def cached_autocast():
    """What the runner did before: one autocast region (weight-cast cache on) per step."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


# --- the weights an update sees -------------------------------------------------------------------

# Learning rates high enough that the clip binds in fp32 (clip fraction ≈ 0.2), so that a step
# frozen at θ_old (clip fraction 0) is far outside the tolerance.
PPO = {"learning_rate": 3e-3, "rollout_batch_size": 32, "num_ppo_epochs": 2,
       "num_mini_batches": 2}
GRPO = {"learning_rate": 1e-2, "prompts_per_step": 8, "num_generations": 4, "num_iterations": 2}


def clip_tolerance(fraction: float, tokens: int) -> float:
    """How far a bf16 clip fraction may be from fp32's: four binomial standard deviations over
    the step's tokens. bf16 moves each log-ratio by O(u · |logit|) ≈ 10⁻² (see the error test
    below), which flips the clip only for tokens that far from the boundary: a few percent of
    the tokens, well inside four standard deviations (≈ 0.1 here), while the stale-weights
    failure gives 0."""
    return 4 * math.sqrt(max(fraction * (1 - fraction), 0.05) / tokens)


def test_two_epoch_ppo_step_under_bf16_moves_as_in_fp32(tiny_lm):
    fp32 = one_step(tiny_lm, "ppo", PPO, lambda: precision_context("cpu", "fp32"))
    bf16 = one_step(tiny_lm, "ppo", PPO, lambda: precision_context("cpu", "bf16"))
    tokens = PPO["rollout_batch_size"] * 8 // PPO["num_mini_batches"]
    assert fp32["clip_frac"] > 0.1 and fp32["approx_kl"] > 0.01  # the clip binds in fp32
    assert bf16["approx_kl"] > 0.01
    # approx_kl = mean ½ (log ρ)²: bf16 changes each log ρ by O(u·|logit|) ≪ |log ρ| ≈ 0.3 here,
    # so the mean moves by a few percent at most; 25% leaves room for sampling differences.
    assert bf16["approx_kl"] == pytest.approx(fp32["approx_kl"], rel=0.25)
    assert abs(bf16["clip_frac"] - fp32["clip_frac"]) <= clip_tolerance(fp32["clip_frac"], tokens)
    assert abs(bf16["value_clip_frac"] - fp32["value_clip_frac"]) <= clip_tolerance(
        fp32["value_clip_frac"], tokens)
    # The same step under one cached autocast region keeps computing with θ_old: ρ ≈ 1.
    stale = one_step(tiny_lm, "ppo", PPO, cached_autocast)
    assert stale["clip_frac"] < 0.01 and stale["approx_kl"] < 1e-3


def test_two_iteration_grpo_step_under_bf16_moves_as_in_fp32(tiny_lm):
    fp32 = one_step(tiny_lm, "grpo", GRPO, lambda: precision_context("cpu", "fp32"))
    bf16 = one_step(tiny_lm, "grpo", GRPO, lambda: precision_context("cpu", "bf16"))
    tokens = GRPO["prompts_per_step"] * GRPO["num_generations"] * 4  # ≥ 4 tokens a response
    assert fp32["clip_frac"] > 0.1
    assert abs(bf16["clip_frac"] - fp32["clip_frac"]) <= clip_tolerance(fp32["clip_frac"], tokens)
    assert abs(bf16["ratio_mean"] - 1) > 0.01  # the second iteration sees updated weights
    stale = one_step(tiny_lm, "grpo", GRPO, cached_autocast)
    assert stale["clip_frac"] == 0.0


def test_the_context_is_bf16_autocast_without_the_weight_cache():
    with precision_context("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.is_autocast_cache_enabled()
    with precision_context("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")


# --- a bf16 run: the reference pass, the precision honoured ---------------------------------------

TINY_DPO = """\
name: dpo-bf16
tasks:
  - name: tiny-lm
    params: {max_new_tokens: 8}
preferences: {num_pairs: 64}
algorithms:
  - name: dpo
    config: {batch_size: 32, warmup_steps: 0}
seeds: [0]
budget: {steps: 1}
evaluation: {every: 1, evaluators: [kl_ref]}
device: cpu
"""


def first_step(tmp_path: Path, precision: str) -> dict[str, float]:
    path = tmp_path / "suite.yaml"
    path.write_text(TINY_DPO)
    [spec] = check_suite(load_suite(path), path, get_plugin_host())
    spec = dataclasses.replace(spec, precision=precision)  # a suite refuses bf16 on the CPU
    root = tmp_path / f"runs-{precision}"
    assert run_one(spec.as_dict(), str(root)) == "done"
    [record] = RunStore(root, "dpo-bf16").records()
    train = record.metrics().query("source == 'train' and step == 1")
    return dict(zip(train["metric"], train["value"], strict=True))


def test_a_bf16_run_is_bf16_and_its_dpo_reference_too(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    fp32, bf16 = first_step(tmp_path, "fp32"), first_step(tmp_path, "bf16")
    # bf16 is in effect (not silently fp32): the log-probs differ, by bf16's O(u·|logit|)
    assert bf16["logp_chosen"] != fp32["logp_chosen"]
    assert bf16["logp_chosen"] == pytest.approx(fp32["logp_chosen"], abs=0.1)
    # π_θ = π_ref at the first step, both in bf16: the implicit rewards are exactly 0 (a
    # reference pass in fp32 would leave bf16 noise: reward_accuracy ≈ 0.4, margins ≈ 3e-4)
    assert bf16["reward_margin"] == 0.0 and bf16["reward_accuracy"] == 0.0
    assert bf16["loss"] == pytest.approx(math.log(2), abs=1e-6)


# --- scalar heads ---------------------------------------------------------------------------------


def test_scalar_heads_stay_float32_under_autocast(tiny_lm):
    reward_model = tiny_lm.make_reward_model()
    scalar = reward_model.scalar
    prompts = tiny_lm.train_prompts.select(torch.arange(8))
    with torch.no_grad():
        responses = tiny_lm.reference_policy().sample(prompts, max_new_tokens=8)
        with precision_context("cpu", "bf16"):
            hidden = scalar.backbone(input_ids=torch.cat([prompts.ids, responses.tokens], 1))
            hidden = hidden.last_hidden_state  # float32 (residual stream), bf16-rounded terms
            head = scalar._head(hidden)
        exact = (hidden.float() @ scalar.head.weight.float().T + scalar.head.bias).squeeze(-1)
    # the head's own arithmetic in float32: equal to float32 rounding (bf16 would be ≈ u·|r|)
    assert head.dtype == torch.float32
    torch.testing.assert_close(head, exact, rtol=1e-6, atol=1e-6)


# --- errors against fp32 --------------------------------------------------------------------------


def test_bf16_errors_of_logprobs_kl_reward_and_advantages_are_bounded(tiny_lm):
    """bf16 vs fp32 on 256 responses of a perturbed π_θ (so that KL ≠ 0) and π_ref."""
    ref = tiny_lm.reference_policy()
    policy = ref.frozen_copy()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        prompts = tiny_lm.train_prompts.select(torch.arange(64)).repeat_interleave(4)
        responses = policy.sample(prompts, max_new_tokens=8, generator=g)
    reward_model = tiny_lm.make_reward_model()
    mask = responses.mask.bool()
    out = {}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), precision_context("cpu", precision):
            out[precision] = {
                "logp": policy.token_logprobs(prompts, responses).float(),
                "ref": ref.token_logprobs(prompts, responses).float(),
                "logits": policy.logits(prompts, responses).float(),
                "reward": reward_model(prompts, responses).float(),
            }
    a, b = out["fp32"], out["bf16"]
    logits = a["logits"][a["logits"].isfinite()]
    # Per-token log-probs: log p_y = z_y − logsumexp(z). Rounding each logit to bf16 moves it by
    # ≤ u·|z|, so log p_y by ≤ 2u·max|z|; the upstream layers' roundings add errors of the same
    # order, which the measured figure (max 0.021, mean 0.0045; max|z| ≈ 17) stays inside.
    err = (a["logp"] - b["logp"])[mask].abs()
    bound = 2 * U * float(logits.abs().max())
    assert 0 < float(err.max()) <= bound
    assert float(err.mean()) <= U * float(logits.abs().mean()) * 2
    # KL. k1 = mean(log π − log π_ref): its error is at most the mean of the two log-prob
    # errors. k3 = mean(e^δ − 1 − δ), δ = log π_ref − log π: dk3/dδ = e^δ − 1, so its error is
    # at most mean(|e^δ − 1| · |Δδ|) to first order.
    err_ref = (a["ref"] - b["ref"]).abs()
    delta = a["ref"] - a["logp"]
    k1 = [float(rl.masked_mean(rl.kl_k1(x["logp"], x["ref"]), mask)) for x in (a, b)]
    k3 = [float(rl.masked_mean(rl.kl_k3(x["logp"], x["ref"]), mask)) for x in (a, b)]
    both = (a["logp"] - b["logp"]).abs() + err_ref
    assert k1[0] > 0.005 and k3[0] > 0.005
    assert abs(k1[0] - k1[1]) <= float(rl.masked_mean(both, mask))
    assert abs(k3[0] - k3[1]) <= 1.1 * float(rl.masked_mean((delta.exp() - 1).abs() * both, mask))
    # r̂: a float32 head (w, b) on the bf16 last hidden state h. Rounding h moves r̂ by
    # ≤ u·Σ|w_i h_i|; the roundings inside the backbone add as much again at most.
    scalar = reward_model.scalar
    with torch.no_grad():
        ids = torch.cat([prompts.ids, responses.tokens], 1)
        hidden = scalar.backbone(input_ids=ids).last_hidden_state
    last = prompts.ids.shape[1] + mask.sum(-1) - 1
    h = hidden[torch.arange(len(ids)), last]
    budget = 2 * U * (h.abs() * scalar.head.weight.abs()).sum(-1)
    reward_err = (a["reward"] - b["reward"]).abs()
    assert float(reward_err.max()) > 0
    assert bool((reward_err <= budget).all()), float((reward_err - budget).max())
    # GRPO advantages A = (r − mean_G r) / (std_G r + ε): an error Δr ≤ e in every reward moves
    # the centred reward by ≤ 2e and the group's std by ≤ 2e·√(G/(G−1)), so A by
    # ≤ (2e + |A|·2e·√(G/(G−1))) / std to first order.
    group = 4
    adv = [rl.group_advantages(x["reward"], group) for x in (a, b)]
    e = (a["reward"] - b["reward"]).abs().view(-1, group).max(-1).values.repeat_interleave(group)
    std = a["reward"].view(-1, group).std(-1).repeat_interleave(group)
    allowed = (2 * e + adv[0].abs() * 2 * e * math.sqrt(group / (group - 1))) / std
    assert bool(((adv[0] - adv[1]).abs() <= 1.1 * allowed + 1e-6).all())
