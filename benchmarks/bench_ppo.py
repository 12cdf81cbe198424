"""PPO step: ours (``plugins/ppo``) against TRL's ``PPOTrainer`` on identical settings.

**Which TRL.** TRL 1.16 (the current release) has no PPO trainer; its last one is
``trl.experimental.ppo`` of TRL 1.12, which imports fine beside transformers 5. It is unpacked
from its wheel into ``benchmarks/.trl112/`` (not committed; see README.md) and put first on
``sys.path`` by this script, so here ``import trl`` is TRL 1.12 — the other benchmarks use the
installed TRL.

Settings (both sides): the same Llama weights (``--size``) for the policy and π_ref; a reward
model and a critic that are the same backbone with a seeded scalar head (ours:
:class:`harness.models.lm.LMRewardModel` and the task's :class:`harness.models.lm.LMValueModel`;
TRL: ``LlamaForSequenceClassification`` models holding the same weights); ``--batch`` rollouts per
step (default 8), prompts of 16 tokens, exactly 32 sampled tokens (``common.py``), temperature
1, one minibatch, 4 PPO epochs per rollout, k1 KL penalty at β = 0.05 in the reward, GAE
γ = 1, λ = 0.95, advantages whitened, rewards not, ε = ε_v = 0.2, c_v = 0.1, one Adam(W)
(weight decay 0, ε = 1e-5) over policy and critic at a constant 3e-6. TRL's PPO does not clip
gradients, so ours runs with ``max_grad_norm=None`` (it still computes the norm, for its
metric). TRL: sample generations, logging output, evaluation and saving off, ``report_to=[]``,
``use_cpu`` on the CPU.

Precision: both sides sample and score — π_ref, r̂ and V_old (and log π_old) — in the same
precision as they train: fp32 with ``--dtype fp32``, bf16 autocast (the harness's
``precision_context``: no weight-cast cache) with ``--dtype bf16``. Ours runs its whole step in
that context. TRL 1.12 runs only its training forward under accelerate's autocast; it generates
(``batch_generation``) and scores (``forward`` for π_ref, ``get_reward`` for r̂ and V_old)
outside it, in fp32, so this script runs those three functions of its trainer's module in the
same context as ours (:func:`same_rollout_precision`), and checks that TRL's steps called them.

Numerics: at step 0 the first update has ρ = 1 and V = V_old, so its loss must equal
mean_t(−Â_t) + c_v · ½ · mean_t (A_t)² (Â the whitened GAE advantages, A before whitening, so
R − V = A); this script computes A with a plain backward loop from plain reward, critic, policy
and reference forwards on the rollout our step sampled, and compares.

Run:  .venv/bin/python benchmarks/bench_ppo.py --size 2.7m   (needs TRL 1.12: see README.md)
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import common
import mfu
import peak_memory
import torch

TRL112 = Path(__file__).resolve().parent / ".trl112"
LR, EPS_ADAM, KL, LAM, VF = 3e-6, 1e-5, 0.05, 0.95, 0.1
EPOCHS, NUM_PROMPTS = 4, 64


def import_trl112():
    """TRL 1.12 from ``benchmarks/.trl112`` (first on sys.path), or exit with instructions."""
    if not (TRL112 / "trl").is_dir():
        raise SystemExit(
            "The PPO benchmark needs TRL 1.12's PPOTrainer (TRL >= 1.13 has none). Unpack it:\n"
            "    .venv/bin/python -m pip download 'trl==1.12.*' --no-deps -d /tmp/trl112\n"
            "    unzip -q -o /tmp/trl112/trl-1.12.*.whl -d benchmarks/.trl112\n"
            "(it also needs accelerate and datasets: " + common.TRL_HINT.strip() + ")"
        )
    sys.path.insert(0, str(TRL112))
    import trl

    assert Path(trl.__file__).is_relative_to(TRL112), trl.__file__
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    return PPOConfig, PPOTrainer


def build_ours(args, device, model, tokenizer, prompts, reward_model):
    import rlhf_harness_ppo

    from harness.engine.runner import build_context, make_algorithm

    task = common.make_task(model, tokenizer, prompts, str(device))
    start = time.perf_counter()
    ctx = build_context(task, rlhf_harness_ppo.PPO, seed=0, reward_model=reward_model)
    config = {"rollout_batch_size": args.batch, "num_mini_batches": 1,
              "num_ppo_epochs": EPOCHS, "learning_rate": LR, "adam_eps": EPS_ADAM,
              "max_grad_norm": None, "temperature": 1.0, "kl_coef": KL, "kl_estimator": "k1",
              "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": VF, "gamma": 1.0, "lam": LAM,
              "whiten_rewards": False, "whiten_advantages": True, "value_init": "policy"}
    algo = make_algorithm(rlhf_harness_ppo.PPO, config, ctx)
    common.sync(device)
    return algo, time.perf_counter() - start


def ours_for_memory(args, device, model, tokenizer, prompts, reward_model):
    """Our side of the memory measurement, built: the base model stays on the host, where TRL's
    side leaves it, so that each side holds on the device only the models its algorithm keeps."""
    return build_ours(args, device, model, tokenizer, prompts, reward_model)[0]


TRL_ROLLOUT_CALLS = ("batch_generation", "forward", "get_reward")
"""The functions TRL 1.12's PPO trainer generates and scores with (from its module's globals)."""


def same_rollout_precision(trainer_module, context) -> dict[str, int]:
    """Make ``trainer_module``'s generation and scoring functions (:data:`TRL_ROLLOUT_CALLS`)
    run inside ``context()`` (a fresh context manager per call: our step's precision); returns
    the calls made so far, by name, updated as they are made. Stops if one is missing."""
    calls = dict.fromkeys(TRL_ROLLOUT_CALLS, 0)
    for name in TRL_ROLLOUT_CALLS:
        original = getattr(trainer_module, name, None)
        if not callable(original):
            raise SystemExit(f"{trainer_module.__name__} has no {name}: TRL's rollout changed, "
                             "so its precision cannot be set to ours")
        original = getattr(original, "bench_original", original)  # patched before: re-patch

        def in_context(*a, _original=original, _name=name, **k):
            calls[_name] += 1
            with context():
                return _original(*a, **k)

        in_context.bench_original = original
        setattr(trainer_module, name, in_context)
    return calls


def build_trl(args, device, model, tokenizer, prompts, reward_model, value_model, steps):
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    PPOConfig, PPOTrainer = import_trl112()
    rollout_calls = same_rollout_precision(sys.modules[PPOTrainer.__module__],
                                           lambda: common.autocast(args, device))
    config = PPOConfig(
        output_dir=common.temp_dir(prefix="bench-ppo-"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=EPOCHS,
        total_episodes=args.batch * steps,
        response_length=common.NEW_TOKENS,
        temperature=1.0,
        learning_rate=LR,
        adam_epsilon=EPS_ADAM,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        kl_coef=KL,
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=VF,
        gamma=1.0,
        lam=LAM,
        whiten_rewards=False,
        missing_eos_penalty=None,
        stop_token=None,
        num_sample_generations=0,
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
    dataset = Dataset.from_dict({"input_ids": prompts.tolist()})
    rm = common.reward_and_value_for_trl(reward_model.scalar.backbone, reward_model.scalar.head,
                                         args.size)
    vm = common.reward_and_value_for_trl(value_model.scalar.backbone, value_model.scalar.head,
                                         args.size)
    vm.train()
    policy, ref = copy.deepcopy(model).train(), copy.deepcopy(model)
    start = time.perf_counter()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref,
                         reward_model=rm, value_model=vm, train_dataset=dataset,
                         eval_dataset=dataset)
    trainer.remove_callback(PrinterCallback)  # PPO logs every step; printing is not its work
    trainer.bench_rollout_calls = rollout_calls
    return trainer, time.perf_counter() - start


def preload() -> None:
    """Import what either side needs (so that imports are not charged to one side)."""
    import datasets  # noqa: F401
    import rlhf_harness_ppo  # noqa: F401

    import harness.engine.runner  # noqa: F401

    import_trl112()


# --- numerics ----------------------------------------------------------------------------------


def plain_token_logps(model, ids: torch.Tensor, lp: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[:, lp - 1 : -1], -1)
    return logp.gather(-1, ids[:, lp:].unsqueeze(-1)).squeeze(-1)


def plain_scalars(scalar_model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hidden = scalar_model.backbone(input_ids=ids).last_hidden_state
        return scalar_model.head(hidden).squeeze(-1)


def checked_step(algo) -> tuple[float, float]:
    """Step 0 of ours: the loss of its first update and the plain expression of it."""
    import rlhf_harness_ppo

    losses = []
    original = rlhf_harness_ppo.ppo_loss

    def recording(*a, **k):
        out = original(*a, **k)
        losses.append(float(out.loss.detach()))
        return out

    policy = copy.deepcopy(algo.policy.model).eval()
    critic = copy.deepcopy(algo.value_model.scalar).eval()
    rlhf_harness_ppo.ppo_loss = recording
    try:
        algo.step()
    finally:
        rlhf_harness_ppo.ppo_loss = original
    ro = algo.rollout
    assert bool(ro.responses.mask.all()), "every completion must have 32 tokens"
    x, y = ro.prompts.ids, ro.responses.tokens
    ids, lp, t = torch.cat([x, y], 1), x.shape[1], y.shape[1]
    score = plain_scalars(algo.reward_model.scalar, ids)[:, -1]
    values = plain_scalars(critic, ids)[:, lp - 1 : -1]
    kl = plain_token_logps(policy, ids, lp) - plain_token_logps(algo.ctx.reference.model, ids, lp)
    rewards = -KL * kl
    rewards[:, -1] += score
    adv = torch.zeros_like(rewards)
    next_value = next_adv = torch.zeros(len(ids), device=ids.device)
    for i in reversed(range(t)):
        delta = rewards[:, i] + next_value - values[:, i]
        adv[:, i] = next_adv = delta + LAM * next_adv
        next_value = values[:, i]
    whitened = (adv - adv.mean()) / torch.sqrt(adv.var() + 1e-8)
    plain = float((-whitened).mean() + VF * 0.5 * (adv**2).mean())
    return losses[0], plain


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    if args.batch_sweep:
        common.batch_sweep(__file__, sys.argv[1:], args)
        return
    device = common.setup(args)
    if args.only != "ours" or args.child == "trl":
        import_trl112()
    size = common.SIZES[args.size]
    tokenizer = common.build_tokenizer(size.vocab)
    model = common.build_model(args.size, suppress_special=True)
    prompts = common.random_words(NUM_PROMPTS, common.PROMPT_LEN, size.vocab, seed=1)
    from harness.models.lm import LMRewardModel, LMValueModel

    reward_model = LMRewardModel(model, seed=1).eval()
    steps_trl = args.warmup + args.rounds * args.steps
    autocast = common.autocast(args, device)

    def trl_value_model():
        return LMValueModel(model, seed=0)  # what ours builds: the task's critic, seed 0

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
                                   trl_value_model(), args.warmup + args.steps)
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
        print(f"  step 0: our first-update loss {ours_loss:.7f}, plain expression {plain:.7f}",
              file=sys.stderr)
        diff = abs(ours_loss - plain)
        extra["loss_check"] = {"ours": ours_loss, "plain": plain, "abs_diff": diff}
        if diff > common.loss_tolerance(args) * max(1.0, abs(plain)):
            raise SystemExit(f"PPO loss differs from the plain expression: {ours_loss} vs {plain}")

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
                                       reward_model, trl_value_model(), steps_trl)
        extra["trl_setup_seconds"] = round(trl_setup, 3)
        stepper = common.TRLStepper(trainer, device, args.threads)
        sides["trl"] = stepper.step
    model.to(device)
    times = common.alternate(sides, warmup=args.warmup, rounds=args.rounds, steps=args.steps)
    if "ours" in sides:  # where our step's time goes (the algorithm's compute phases)
        extra["ours_phase_seconds"] = common.median_phases(phases[-len(times["ours"]):])
    if "trl" in sides:
        stepper.close()
        calls = trainer.bench_rollout_calls
        if not all(calls.values()):
            raise SystemExit(f"TRL's steps did not generate and score through {calls}: its "
                             "rollout ran outside our precision")
        extra["trl_rollout_calls_in_our_precision"] = dict(calls)
    extra["rollout_precision"] = ("bf16 autocast, both sides" if args.dtype == "bf16"
                                  else "fp32, both sides")
    print(f"  generation and scoring (π_ref, r̂, V_old): {extra['rollout_precision']}",
          file=sys.stderr)
    memory = None
    if not args.no_memory:
        memory = peak_memory.measure_memory(__file__, sys.argv[1:], list(sides))

    # generation; the π_ref and r̂ forwards; 4 epochs of policy and critic forward and backward
    # (log π_old and V_old are the first epoch's forward: no pass of their own)
    flops = mfu.model_flops(model, rows=args.batch, generate=1, lm_forward=1,
                               scalar_forward=1, lm_train=EPOCHS, scalar_train=EPOCHS)
    mfu.add_mfu(extra, times, model, args, device, flops)
    common.summarise("ppo", args, times, {k: args.batch for k in times}, memory, extra)


if __name__ == "__main__":
    main()
