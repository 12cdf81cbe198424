"""DPO step: ours (``plugins/dpo``) against TRL's ``DPOTrainer`` on identical settings.

Settings (both sides): the same Llama weights (``--size``), ``--batch`` preference pairs per
step (default 8), prompts of 16 tokens, completions of 32 tokens (31 words and EOS: TRL appends
EOS to every completion, ours carries it in the data), β = 0.1, Adam(W) with weight decay 0 at a
constant learning rate 1e-6, gradient norm clipped at 1.0, the sigmoid loss. TRL: logging,
evaluation and saving off, ``report_to=[]``, ``use_cpu`` on the CPU. Each side's step is its
whole update; TRL's is one iteration of ``trainer.train()`` (see ``common.py``).

Reference log-probs: both sides do the same reference work in every timed step. By default both
recompute log π_ref of the step's pairs in every step: TRL by default, ours because the script
drops the log-probs its algorithm keeps (``harness.algorithm.LazyRows``: computed the first
time a batch holds a pair, then kept) before each step, outside the timing — without that, a
timed step after the first epoch (every one at ``--batch`` = ``--pairs``) would run no reference
pass while TRL's does. ``--trl-precompute-ref`` makes both precompute them once for the whole
data set instead, at set-up (TRL's ``precompute_ref_log_probs=True``, in its first, untimed
step; ours by asking its ``LazyRows`` for every row), and no timed step runs π_ref. The script
counts the reference model's forwards within every timed step on both sides (a forward hook)
and stops if a side's steps do not all match the mode (:func:`check_reference_work`); the
result records the counts. It also reports both sides' samples/s over one epoch of the data
(``--pairs`` pairs) with their set-up charged to it.

Numerics: steps 0 and 1 of ours are checked against the plain formula
−log σ(β((log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻)))) with log-probs from a plain
``model(input_ids).logits`` forward and ``log_softmax``, on the same rows and weights.

Run:  .venv/bin/python benchmarks/bench_dpo.py --size 2.7m   (needs TRL: see README.md)
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import common
import mfu
import peak_memory
import torch
import torch.nn.functional as F

BETA, LR = 0.1, 1e-6


def make_data(args, tokenizer):
    """``--pairs`` preference pairs of random words (prompt 16, completions 31 words + EOS)."""
    size = common.SIZES[args.size]
    n = args.pairs
    prompts = common.random_words(n, common.PROMPT_LEN, size.vocab, seed=1)
    chosen = common.random_words(n, common.NEW_TOKENS - 1, size.vocab, seed=2)
    rejected = common.random_words(n, common.NEW_TOKENS - 1, size.vocab, seed=3)
    eos = torch.full((n, 1), common.EOS_ID)
    return prompts, torch.cat([chosen, eos], 1), torch.cat([rejected, eos], 1)


def build_ours(args, device, model, tokenizer, data):
    import pandas as pd
    import rlhf_harness_dpo

    from harness.data import PreferenceDataset
    from harness.engine.runner import build_context, make_algorithm

    prompts, chosen, rejected = data
    frame = pd.DataFrame({
        "prompt": common.texts(prompts),
        "chosen": common.texts(chosen),
        "rejected": common.texts(rejected),
        "prompt_ids": prompts.tolist(),
        "chosen_ids": chosen.tolist(),
        "rejected_ids": rejected.tolist(),
        "prompt_index": list(range(len(prompts))),
    })
    task = common.make_task(model, tokenizer, prompts, str(device))
    start = time.perf_counter()
    ctx = build_context(task, rlhf_harness_dpo.DPO, seed=0, preferences=PreferenceDataset(frame))
    config = {"beta": BETA, "learning_rate": LR, "optimizer": "adam", "batch_size": args.batch,
              "warmup_steps": 0, "max_grad_norm": 1.0}
    algo = make_algorithm(rlhf_harness_dpo.DPO, config, ctx)
    common.sync(device)
    return algo, time.perf_counter() - start


def ours_for_memory(args, device, model, tokenizer, data):
    """Our side of the memory measurement, built: the base model stays on the host, where TRL's
    side leaves it, so that each side holds on the device only the models its algorithm keeps."""
    return build_ours(args, device, model, tokenizer, data)[0]


class ReferenceForwards:
    """Counts the forward calls of a reference model (a forward hook on it), per step of a side.

    :meth:`wrap` returns the side's step function, which appends the forwards each step ran to
    :attr:`per_step`.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.per_step: list[int] = []
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1

    def wrap(self, step):
        def counted() -> float:
            before = self.calls
            seconds = step()
            self.per_step.append(self.calls - before)
            return seconds

        return counted

    def close(self) -> None:
        self._handle.remove()


def check_reference_work(per_step: dict[str, list[int]], recompute: bool) -> None:
    """Stop unless every timed step of every side ran π_ref (``recompute``) or none did
    (precomputed): ``per_step`` maps a side to its timed steps' reference forwards."""
    for side, counts in per_step.items():
        if not counts:
            raise SystemExit(f"no timed step of {side} was counted")
        wrong = [i for i, c in enumerate(counts) if (c > 0) != recompute]
        if wrong:
            want = "recompute π_ref's log-probs" if recompute else "run no reference forward"
            raise SystemExit(f"unequal reference work: timed steps {wrong} of {side} do not "
                             f"{want} (reference forwards per step: {counts})")


def ours_reference_step(algo, recompute: bool):
    """Our side's step for the timing: with ``recompute``, each call first drops the reference
    log-probs the algorithm keeps, so that its step computes those of its pairs again."""
    from harness.algorithm import LazyRows

    def step() -> None:
        if recompute:
            algo.ref = LazyRows.reference(algo.data, algo.ctx)
        algo.step()

    return step


def precompute_ours(algo) -> None:
    """Compute the reference log-probs of every pair now (as TRL's
    ``precompute_ref_log_probs``), so that no step of ours runs π_ref."""
    algo.ref(torch.arange(len(algo.data), device=algo.ctx.device))


def build_trl(args, device, model, tokenizer, data, max_steps):
    common.require_trl()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    prompts, chosen, rejected = data
    # Text that tokenizes back to the same ids; TRL sees "<eos>" at the end and adds no other.
    dataset = Dataset.from_dict({
        "prompt": [t + " " for t in common.texts(prompts)],
        "chosen": _words(chosen),
        "rejected": _words(rejected),
    })
    config = DPOConfig(
        output_dir=common.temp_dir(prefix="bench-dpo-"),
        per_device_train_batch_size=args.batch,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_steps=max_steps,
        max_length=None,
        precompute_ref_log_probs=args.trl_precompute_ref,
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
    policy, ref = copy.deepcopy(model).train(), copy.deepcopy(model)
    start = time.perf_counter()
    trainer = DPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.bench_reference = ref  # the module whose forwards are π_ref's
    return trainer, time.perf_counter() - start


def _words(ids: torch.Tensor) -> list[str]:
    rows = ids.tolist()
    return [" ".join("<eos>" if i == common.EOS_ID else f"w{i}" for i in row) for row in rows]


def preload() -> None:
    """Import what either side needs (so that imports are not charged to one side)."""
    import pandas  # noqa: F401
    import rlhf_harness_dpo  # noqa: F401

    import harness.data
    import harness.engine.runner  # noqa: F401

    common.require_trl()
    import datasets  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401


# --- numerics ----------------------------------------------------------------------------------


def plain_logps(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Σ_t log softmax(model(x ⧺ y).logits)[y_t], with a plain forward (no harness code)."""
    ids = torch.cat([prompts, responses], 1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    lp = prompts.shape[1]
    logp = torch.log_softmax(logits[:, lp - 1 : -1], -1)
    return logp.gather(-1, responses.unsqueeze(-1)).squeeze(-1).sum(-1)


def checked_step(algo, device, data) -> tuple[float, float]:
    """One step of ours; returns (its loss, the plain formula's on the same rows and weights)."""
    prompts, chosen, rejected = (t.to(device) for t in data)
    seen = []
    original = algo._rows.take
    algo._rows.take = lambda size: seen.append(original(size)) or seen[-1]
    policy = copy.deepcopy(algo.policy.model).eval()
    ref = algo.ctx.reference.model
    metrics = algo.step()
    algo._rows.take = original
    rows = seen[0]
    x, yc, yr = prompts[rows], chosen[rows], rejected[rows]
    margin = (plain_logps(policy, x, yc) - plain_logps(ref, x, yc)) - (
        plain_logps(policy, x, yr) - plain_logps(ref, x, yr)
    )
    return metrics["loss"], float(-F.logsigmoid(BETA * margin).mean())


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=256, help="preference pairs in the data set")
    p.add_argument("--trl-precompute-ref", action="store_true",
                   help="TRL precomputes reference log-probs once (precompute_ref_log_probs)")
    args = p.parse_args()
    if args.batch_sweep:
        common.batch_sweep(__file__, sys.argv[1:], args)
        return
    device = common.setup(args)
    tokenizer = common.build_tokenizer(common.SIZES[args.size].vocab)
    model = common.build_model(args.size, suppress_special=False)
    data = make_data(args, tokenizer)
    steps_trl = args.warmup + args.rounds * args.steps
    autocast = common.autocast(args, device)

    if args.child:  # peak memory of one side, in a fresh process
        preload()  # the same imports in both children, before the baseline
        baseline = peak_memory.baseline_mb()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if args.child == "ours":
            algo = ours_for_memory(args, device, model, tokenizer, data)
            for _ in range(args.warmup + args.steps):
                with autocast:
                    algo.step()
        else:
            trainer, _ = build_trl(args, device, model, tokenizer, data, args.warmup + args.steps)
            trainer.train()
        peak_memory.child_report(device, baseline)
        return

    sides = {}
    extra = {}
    recompute = not args.trl_precompute_ref
    counters: dict[str, ReferenceForwards] = {}
    if args.only != "trl":
        algo, ours_setup = build_ours(args, device, model.to(device), tokenizer, data)
        with autocast:
            checks = [checked_step(algo, device, data) for _ in range(2)]
        if not recompute:
            start = time.perf_counter()
            with autocast:
                precompute_ours(algo)
            common.sync(device)
            ours_setup += time.perf_counter() - start
        extra["ours_setup_seconds"] = round(ours_setup, 3)
        for i, (ours, plain) in enumerate(checks):
            print(f"  step {i}: our loss {ours:.7f}, plain formula {plain:.7f}", file=sys.stderr)
        extra["loss_check"] = [{"step": i, "ours": o, "plain": q, "abs_diff": abs(o - q)}
                               for i, (o, q) in enumerate(checks)]
        tol = common.loss_tolerance(args)
        if not all(abs(o - q) <= tol * max(1.0, abs(q)) for o, q in checks):
            raise SystemExit(f"DPO loss differs from the plain formula: {checks}")

        ours_step_fn = ours_reference_step(algo, recompute)

        def ours_step() -> float:
            with autocast:
                return common.timed(ours_step_fn, device)

        counters["ours"] = ReferenceForwards(algo.ctx.reference.model)
        sides["ours"] = counters["ours"].wrap(ours_step)
    if args.only != "ours":
        trainer, trl_setup = build_trl(args, device, model.cpu(), tokenizer, data, steps_trl)
        extra["trl_setup_seconds"] = round(trl_setup, 3)
        stepper = common.TRLStepper(trainer, device, args.threads)
        counters["trl"] = ReferenceForwards(trainer.bench_reference)
        sides["trl"] = counters["trl"].wrap(stepper.step)
    model.to(device)
    times = common.alternate(sides, warmup=args.warmup, rounds=args.rounds, steps=args.steps)
    if "trl" in sides:
        stepper.close()
    timed_refs = {k: c.per_step[args.warmup:] for k, c in counters.items()}
    for counter in counters.values():
        counter.close()
    check_reference_work(timed_refs, recompute)
    extra["reference_log_probs"] = "recomputed every step" if recompute else "precomputed"
    extra["reference_forwards_per_timed_step"] = timed_refs
    print(f"  reference log-probs {extra['reference_log_probs']} on both sides; reference "
          f"forwards per timed step: {timed_refs}", file=sys.stderr)
    memory = None
    if not args.no_memory:
        memory = peak_memory.measure_memory(__file__, sys.argv[1:], list(sides))

    # The policy's forward and backward over both responses of every pair (the reference
    # forward is not counted: both sides run it in every timed step, or neither with
    # --trl-precompute-ref).
    flops = mfu.model_flops(model, rows=2 * args.batch, lm_train=1)
    mfu.add_mfu(extra, times, model, args, device, flops)
    # One epoch over the data with each side's setup charged to it (TRL: tokenising, and its
    # reference pass with --trl-precompute-ref).
    setup = {"ours": extra.get("ours_setup_seconds"),
             "trl": extra.get("trl_setup_seconds")}
    epoch = {k: args.pairs / (setup[k] + args.pairs / args.batch * statistics.median(v))
             for k, v in times.items()}
    extra["samples_per_second_over_one_epoch_incl_setup"] = {k: round(v, 2) for k, v in
                                                            epoch.items()}
    if len(epoch) == 2:
        extra["ratio_over_one_epoch_incl_setup"] = round(epoch["ours"] / epoch["trl"], 2)
    extra["trl_precompute_ref_log_probs"] = args.trl_precompute_ref
    common.summarise("dpo", args, times, {k: args.batch for k in times}, memory, extra)


if __name__ == "__main__":
    main()
