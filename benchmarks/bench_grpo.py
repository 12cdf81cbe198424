"""GRPO step: ours (``plugins/grpo``) against TRL's ``GRPOTrainer`` on identical settings.

Settings (both sides): the same Llama weights (``--size``) for the policy and π_ref; a reward
model r̂ = the same backbone with a seeded scalar head (ours:
:class:`harness.models.lm.LMRewardModel`,
TRL: a ``LlamaForSequenceClassification`` holding the same weights), read at the last token;
``--batch`` completions per step (default 8 = 2 prompts × 4 generations), prompts of 16
tokens, exactly 32 sampled tokens (the special tokens have probability 0: ``common.py``),
temperature 1, β = 0.04 (k3 penalty, so π_ref is evaluated each step on both sides), ε = 0.2,
rewards scaled by the group std, per-sequence loss mean (TRL ``loss_type="grpo"``), one
iteration per batch, Adam(W) with weight decay 0 at a constant 1e-6, gradient norm clipped at 1.
TRL: sampling with ``transformers.generate`` (its default path without vLLM), logging,
evaluation and saving off, ``report_to=[]``, ``use_cpu`` on the CPU.

Numerics: at step 0 the ratio is 1 and π = π_ref, so our loss must equal
−mean_i Â_i + β · mean_i mean_t k3_it, computed here from a plain reward-model forward, plain
policy and reference forwards (``log_softmax`` of ``model(input_ids).logits``) and the group
normalisation Â = (r − mean_group) / (std_group + 1e-4) on the responses our step sampled.

Run:  .venv/bin/python benchmarks/bench_grpo.py --size 2.7m   (needs TRL: see README.md)
"""

from __future__ import annotations

import copy
import sys
import time

import common
import mfu
import peak_memory
import torch

BETA, LR, GROUP, EPS = 0.04, 1e-6, 4, 0.2
NUM_PROMPTS = 64


def build_ours(args, device, model, tokenizer, prompts, reward_model):
    import rlhf_harness_grpo

    from harness.engine.runner import build_context, make_algorithm

    task = common.make_task(model, tokenizer, prompts, str(device))
    start = time.perf_counter()
    ctx = build_context(task, rlhf_harness_grpo.GRPO, seed=0, reward_model=reward_model)
    config = {"num_generations": GROUP, "prompts_per_step": args.batch // GROUP,
              "learning_rate": LR, "optimizer": "adam", "beta": BETA, "epsilon": EPS,
              "scale_rewards": "group", "loss_type": "sequence", "num_iterations": 1,
              "num_mini_batches": 1, "temperature": 1.0, "max_new_tokens": common.NEW_TOKENS,
              "max_grad_norm": 1.0}
    algo = make_algorithm(rlhf_harness_grpo.GRPO, config, ctx)
    common.sync(device)
    return algo, time.perf_counter() - start


def ours_for_memory(args, device, model, tokenizer, prompts, reward_model):
    """Our side of the memory measurement, built: the base model stays on the host, where TRL's
    side leaves it, so that each side holds on the device only the models its algorithm keeps."""
    return build_ours(args, device, model, tokenizer, prompts, reward_model)[0]


def build_trl(args, device, model, tokenizer, prompts, reward_model, max_steps):
    common.require_trl()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    # TRL builds π_ref with from_pretrained(model.config._name_or_path): save the weights.
    saved = common.temp_dir(prefix="bench-grpo-model-")
    policy = copy.deepcopy(model).train()
    policy.save_pretrained(saved)
    policy.config._name_or_path = saved
    config = GRPOConfig(
        output_dir=common.temp_dir(prefix="bench-grpo-"),
        per_device_train_batch_size=args.batch,
        num_generations=GROUP,
        max_completion_length=common.NEW_TOKENS,
        temperature=1.0,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=BETA,
        epsilon=EPS,
        scale_rewards="group",
        loss_type="grpo",
        num_iterations=1,
        max_steps=max_steps,
        logging_strategy="no",
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        bf16=args.dtype == "bf16",
        dataloader_num_workers=0,
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": [t + " " for t in common.texts(prompts)]})
    rm = common.reward_and_value_for_trl(reward_model.scalar.backbone, reward_model.scalar.head,
                                         args.size)
    start = time.perf_counter()
    trainer = GRPOTrainer(model=policy, reward_funcs=[rm], args=config, train_dataset=dataset,
                          processing_class=tokenizer, reward_processing_classes=[tokenizer])
    # from_pretrained drops the LM head's fixed bias (not a Llama weight): give it back to π_ref.
    bias = policy.lm_head.bias
    trainer.ref_model.lm_head.bias = torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
    for (name, a), (_, b) in zip(policy.state_dict().items(),
                                 trainer.ref_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    return trainer, time.perf_counter() - start


def preload() -> None:
    """Import what either side needs (so that imports are not charged to one side)."""
    import rlhf_harness_grpo  # noqa: F401

    import harness.engine.runner  # noqa: F401

    common.require_trl()
    import datasets  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer  # noqa: F401


# --- numerics ----------------------------------------------------------------------------------


def plain_token_logps(model, ids: torch.Tensor, lp: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[:, lp - 1 : -1], -1)
    return logp.gather(-1, ids[:, lp:].unsqueeze(-1)).squeeze(-1)


def checked_step(algo) -> tuple[float, float]:
    """Step 0 of ours and the plain expression of its loss (see the module docstring)."""
    seen = {}
    sample = algo.policy.sample

    def recording(prompts, **kwargs):
        seen["prompts"], seen["responses"] = prompts, sample(prompts, **kwargs)
        return seen["responses"]

    algo.policy.sample = recording
    policy = copy.deepcopy(algo.policy.model).eval()
    metrics = algo.step()
    del algo.policy.sample
    x, y = seen["prompts"].ids, seen["responses"].tokens
    assert bool(seen["responses"].mask.all()), "every completion must have 32 tokens"
    ids, lp = torch.cat([x, y], 1), x.shape[1]
    rm = algo.reward_model.scalar
    with torch.no_grad():
        rewards = rm.head(rm.backbone(input_ids=ids).last_hidden_state[:, -1]).squeeze(-1)
    groups = rewards.view(-1, GROUP)
    adv = ((groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)).view(-1)
    logp = plain_token_logps(policy, ids, lp)
    ref = plain_token_logps(algo.ctx.reference.model, ids, lp)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    plain = float((-adv).mean() + BETA * k3.mean(1).mean())
    return metrics["loss"], plain


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    if args.batch_sweep:
        common.batch_sweep(__file__, sys.argv[1:], args)
        return
    if args.batch % GROUP:
        raise SystemExit(f"--batch must be a multiple of {GROUP} (generations per prompt)")
    device = common.setup(args)
    size = common.SIZES[args.size]
    tokenizer = common.build_tokenizer(size.vocab)
    model = common.build_model(args.size, suppress_special=True)
    prompts = common.random_words(NUM_PROMPTS, common.PROMPT_LEN, size.vocab, seed=1)
    from harness.models.lm import LMRewardModel

    reward_model = LMRewardModel(model, seed=1).eval()
    steps_trl = args.warmup + args.rounds * args.steps
    autocast = common.autocast(args, device)

    if args.child:  # peak memory of one side, in a fresh process
        preload()  # the same imports in both children, before the baseline
        baseline = peak_memory.baseline_mb()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if args.child == "ours":
            algo = ours_for_memory(args, device, model, tokenizer, prompts, reward_model)
            del reward_model  # build_context keeps its own frozen copy
            for _ in range(args.warmup + args.steps):
                with autocast:
                    algo.step()
        else:
            trainer, _ = build_trl(args, device, model, tokenizer, prompts, reward_model,
                                   args.warmup + args.steps)
            del reward_model
            trainer.train()
        peak_memory.child_report(device, baseline)
        return

    sides, extra = {}, {}
    if args.only != "trl":
        algo, ours_setup = build_ours(args, device, model.to(device), tokenizer, prompts,
                                      reward_model)
        extra["ours_setup_seconds"] = round(ours_setup, 3)
        with autocast:
            ours_loss, plain = checked_step(algo)
        print(f"  step 0: our loss {ours_loss:.8f}, plain expression {plain:.8f}", file=sys.stderr)
        diff = abs(ours_loss - plain)
        extra["loss_check"] = {"ours": ours_loss, "plain": plain, "abs_diff": diff}
        if diff > common.loss_tolerance(args):
            raise SystemExit(f"GRPO loss differs from the plain expression: {ours_loss} vs {plain}")

        phases: list[dict[str, float]] = []

        def ours_step() -> float:
            before = dict(algo.ctx.meter.seconds)
            with autocast:
                seconds = common.timed(algo.step, device)
            phases.append({k: v - before[k] for k, v in algo.ctx.meter.seconds.items()})
            return seconds

        sides["ours"] = ours_step
    if args.only != "ours":
        trainer, trl_setup = build_trl(args, device, model.cpu(), tokenizer, prompts,
                                       reward_model, steps_trl)
        extra["trl_setup_seconds"] = round(trl_setup, 3)
        stepper = common.TRLStepper(trainer, device, args.threads)
        sides["trl"] = stepper.step
    model.to(device)
    times = common.alternate(sides, warmup=args.warmup, rounds=args.rounds, steps=args.steps)
    if "ours" in sides:  # where our step's time goes (the algorithm's compute phases)
        extra["ours_phase_seconds"] = common.median_phases(phases[-len(times["ours"]):])
    if "trl" in sides:
        stepper.close()
    memory = None
    if not args.no_memory:
        memory = peak_memory.measure_memory(__file__, sys.argv[1:], list(sides))

    # generation, the π_ref and r̂ forwards, one policy update
    flops = mfu.model_flops(model, rows=args.batch, generate=1, lm_forward=1,
                               scalar_forward=1, lm_train=1)
    mfu.add_mfu(extra, times, model, args, device, flops)
    common.summarise("grpo", args, times, {k: args.batch for k in times}, memory, extra)


if __name__ == "__main__":
    main()
