"""Repeated prompts computed once: our GRPO step with ``share_prompts`` on against off.

GRPO samples G responses per prompt, so each step's batch holds every prompt G times. With
``share_prompts`` (the default of :class:`harness.models.lm.LMPolicy` and the scalar heads) the
sampler's prefill, the reward model's and π_ref's scoring forwards and the policy's update
forward compute each distinct prompt once and repeat its KV cache to its G rows; off, every
row runs its own prompt ⧺ response. Both algorithms are built from the same seed and weights
and alternate step by step in one process (warm-up step each, then ``--rounds`` rounds), with
the settings of ``bench_grpo.py`` (β = 0.04, 32 new tokens, one iteration, Adam at 1e-6) and
``--prompts`` prompts per step, for each prompt length × group size asked for.

Numerics: at step 0 both sample the same responses (same generator; the prefill logits differ
by float rounding only) and their losses must agree to 1e-5.

Printed per setting: samples/s of each and the ratio shared/full (median over rounds).

Run:  .venv/bin/python benchmarks/bench_shared_prompts.py --size 21m
"""

from __future__ import annotations

import statistics
import sys

import common

BETA, LR = 0.04, 1e-6


def build(model, tokenizer, prompts, reward_model, group: int, per_step: int, share: bool):
    import rlhf_harness_grpo

    from harness.engine.runner import build_context, make_algorithm

    task = common.make_task(model, tokenizer, prompts, "cpu")
    ctx = build_context(task, rlhf_harness_grpo.GRPO, seed=0, reward_model=reward_model)
    config = {"num_generations": group, "prompts_per_step": per_step, "learning_rate": LR,
              "optimizer": "adam", "beta": BETA, "epsilon": 0.2, "scale_rewards": "group",
              "loss_type": "sequence", "num_iterations": 1, "num_mini_batches": 1,
              "temperature": 1.0, "max_new_tokens": common.NEW_TOKENS, "max_grad_norm": 1.0}
    algo = make_algorithm(rlhf_harness_grpo.GRPO, config, ctx)
    ctx.policy.share_prompts = share
    ctx.reference.share_prompts = share
    algo.reward_model.scalar.share_prompts = share
    return algo


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.set_defaults(size="21m", rounds=3)
    p.add_argument("--prompt-lengths", default="16,128", help="comma-separated (default 16,128)")
    p.add_argument("--groups", default="4,8", help="generations per prompt (default 4,8)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step (default 2)")
    args = p.parse_args()
    device = common.setup(args)
    if device.type != "cpu":
        raise SystemExit("bench_shared_prompts.py runs on the CPU")
    size = common.SIZES[args.size]
    tokenizer = common.build_tokenizer(size.vocab)
    lengths = [int(x) for x in args.prompt_lengths.split(",")]
    groups = [int(x) for x in args.groups.split(",")]
    model = common.build_model(args.size, suppress_special=True,
                               max_positions=max(lengths) + common.NEW_TOKENS)
    from harness.models.lm import LMRewardModel

    reward_model = LMRewardModel(model, seed=1).eval()
    rows = []
    for length in lengths:
        prompts = common.random_words(64, length, size.vocab, seed=1)
        for group in groups:
            algos = {name: build(model, tokenizer, prompts, reward_model, group, args.prompts,
                                 share=name == "shared")
                     for name in ("shared", "full")}
            losses = {name: algo.step()["loss"] for name, algo in algos.items()}  # step 0
            diff = abs(losses["shared"] - losses["full"])
            if diff > 1e-5:
                raise SystemExit(f"step-0 losses differ: {losses}")
            sides = {name: (lambda a=algo: common.timed(a.step, device))
                     for name, algo in algos.items()}
            print(f"prompt {length} tokens, {group} generations per prompt:", file=sys.stderr)
            times = common.alternate(sides, warmup=0, rounds=args.rounds, steps=args.steps)
            batch = group * args.prompts
            rate = {k: batch / statistics.median(v) for k, v in times.items()}
            rows.append((length, group, rate["shared"], rate["full"],
                         rate["shared"] / rate["full"], diff))
    print(f"\n== GRPO step, shared prompts on/off, {args.size}, cpu/fp32, {args.threads} "
          f"threads, {args.prompts} prompts per step, {common.NEW_TOKENS} new tokens, "
          f"{args.rounds} alternating rounds (median) ==")
    print("  prompt  G   shared samples/s   full samples/s   shared/full   |Δ loss step 0|")
    for length, group, shared, full, ratio, diff in rows:
        print(f"  {length:6d} {group:2d}   {shared:16.2f}   {full:14.2f}   {ratio:10.2f}×"
              f"   {diff:.1e}")


if __name__ == "__main__":
    main()
