"""bf16 autocast against fp32 on tiny-lm, on the CPU (CPU bf16 autocast standing in for CUDA's).

Prints what tests/test_precision.py bounds: one 2-epoch PPO step and one μ = 2 GRPO step in fp32,
in bf16 as the runner runs it (:func:`harness.engine.runner.precision_context`: no weight-cast
cache) and in bf16 under one cached autocast region per step (what the runner did before); then the
bf16 error of per-token log-probs, KL (k1, k3), r̂ and GRPO advantages on 256 responses of a
perturbed π_θ::

    .venv/bin/python benchmarks/bf16_precision.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import rl
from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, precision_context
from harness.reward import GoldRewardModel
from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

PPO = {"learning_rate": 3e-3, "rollout_batch_size": 32, "num_ppo_epochs": 2,
       "num_mini_batches": 2}
GRPO = {"learning_rate": 1e-2, "prompts_per_step": 8, "num_generations": 4, "num_iterations": 2}
CONTEXTS = {
    "fp32": lambda: precision_context("cpu", "fp32"),
    "bf16": lambda: precision_context("cpu", "bf16"),
    "bf16, cached": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


def step(task, name: str, config: dict, context) -> dict[str, float]:
    cls = get_plugin_host().algorithm(name)
    ctx = build_context(task, cls, seed=0, reward_model=GoldRewardModel(task))
    with context():
        return make_algorithm(cls, config, ctx).step()


def main() -> None:
    torch.set_num_threads(1)
    task = TinyLMTask(TinyLMParams(max_new_tokens=8), seed=0)
    for name, config, keys in (("ppo", PPO, ("approx_kl", "clip_frac", "value_clip_frac")),
                               ("grpo", GRPO, ("clip_frac", "ratio_mean"))):
        for label, context in CONTEXTS.items():
            m = step(task, name, config, context)
            print(f"{name:4s} {label:13s} " + "  ".join(f"{k} {m[k]:.5f}" for k in keys))
    ref = task.reference_policy()
    policy = ref.frozen_copy()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        prompts = task.train_prompts.select(torch.arange(64)).repeat_interleave(4)
        responses = policy.sample(prompts, max_new_tokens=8, generator=g)
    reward_model = task.make_reward_model()
    mask = responses.mask.bool()
    out = {}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), precision_context("cpu", precision):
            out[precision] = (policy.token_logprobs(prompts, responses).float(),
                              ref.token_logprobs(prompts, responses).float(),
                              reward_model(prompts, responses).float())
    (lp, lr, r), (lp16, lr16, r16) = out["fp32"], out["bf16"]
    err = (lp - lp16)[mask].abs()
    print(f"per-token log-prob error: max {err.max():.4f}, mean {err.mean():.5f}")
    for kind in ("k1", "k3"):
        f = getattr(rl, f"kl_{kind}")
        a = float(rl.masked_mean(f(lp, lr), mask))
        b = float(rl.masked_mean(f(lp16, lr16), mask))
        print(f"KL {kind}: fp32 {a:.6f}, bf16 {b:.6f}, relative error {abs(a - b) / a:.4f}")
    print(f"r̂ error: max {(r - r16).abs().max():.5f} (r̂ std {r.std():.4f})")
    adv = rl.group_advantages(r, 4) - rl.group_advantages(r16, 4)
    print(f"GRPO advantage error: max {adv.abs().max():.4f}, mean {adv.abs().mean():.5f}")


if __name__ == "__main__":
    main()
