"""What the three algorithm benchmarks share: models, tokenizer, task, timing, results.

**Models.** A ``transformers`` Llama built from a config (:data:`SIZES`: ~2.7M, ~21M and ~100M
parameters, tied embeddings, no dropout), seeded, over a word-level tokenizer whose words are
``w4 … w{V-1}`` with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` at ids 0–3. Both sides get
copies of the same weights.

**Exactly 32 new tokens.** For the sampling benchmarks (GRPO, PPO) the LM head gets a fixed,
frozen bias of −10⁴ on the four special ids (``suppress_special=True``): their probability is
exactly 0 in float32, so neither our sampler nor ``transformers.generate`` can emit EOS or pad,
and every completion has the full length on both sides — with no logits processor on either.
The bias is not a parameter anyone trains (``requires_grad=False``); the DPO benchmark, which
never samples, uses the plain model.

**Timing.** :func:`alternate` runs warm-up steps of each side, then ``rounds`` rounds of
``steps`` of ours followed by ``steps`` of TRL's, so both see the same machine load. TRL's
trainer runs its own ``train()`` loop in a worker thread, paused at every ``on_step_end``
(:class:`TRLStepper`): a TRL step is the time between two ``on_step_end`` callbacks, i.e. its
whole loop iteration (data loading, generation, scoring, update, logging, its per-step
``gc.collect``) — what ``trainer.train()`` spends per step, without the one-off setup.

**Batch sweep.** ``--batch-sweep 8,64,256`` runs the whole measurement once per batch size,
each in a fresh process, and tabulates them (a batch of 8 cannot load a large GPU).

Peak memory is measured by :mod:`peak_memory`, MFU computed by :mod:`mfu`.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT_LEN = 16
"""Prompt tokens (all prompts have this length: no padding on either side)."""
NEW_TOKENS = 32
"""Completion tokens, on both sides."""
SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class Size:
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int


SIZES = {
    "2.7m": Size(vocab=4096, hidden=256, layers=2, heads=4, intermediate=768),
    "21m": Size(vocab=8192, hidden=512, layers=6, heads=8, intermediate=1152),
    "100m": Size(vocab=16384, hidden=768, layers=12, heads=12, intermediate=2048),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

TRL_HINT = (
    "TRL is an optional extra: install it with\n"
    "    .venv/bin/python -m pip install -q trl      # or: pip install -e '.[trl]'\n"
)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=sorted(SIZES), default="2.7m")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, the same for both sides (default 1: on a small "
                   "machine shared with other jobs, spinning OpenMP threads make timings erratic)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batch-sweep", type=_batches, metavar="B1,B2,...",
                   help="run the whole measurement once per batch size, each in a fresh "
                   "process, and tabulate them (e.g. 8,64,256)")
    p.add_argument("--rounds", type=int, default=5, help="alternations of ours and TRL's")
    p.add_argument("--steps", type=int, default=1, help="steps of each side per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each side first")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--only", choices=["ours", "trl"], help="time one side only")
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1: {text!r}")
    return values


def _without(argv: list[str], options: set[str]) -> list[str]:
    """``argv`` without ``options`` and their values (``--opt value`` or ``--opt=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in options:
            skip = True
            continue
        if arg.split("=", 1)[0] in options:
            continue
        out.append(arg)
    return out


def batch_sweep(script: str, argv: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``script`` with ``argv`` once per batch size of ``--batch-sweep``, each in a fresh
    process; print one line per batch and write ``{"sweep": [result, ...]}`` to ``--json``."""
    base = _without(argv, {"--batch-sweep", "--batch", "--json"})
    results = []
    for batch in args.batch_sweep:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            out = Path(tmp) / "result.json"
            command = [sys.executable, script, *base, "--batch", str(batch), "--json", str(out)]
            print(f"== batch {batch}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
            code = subprocess.run(command).returncode
            if code != 0:
                raise SystemExit(f"batch {batch}: {Path(script).name} exited with status {code}")
            results.append(json.loads(out.read_text()))
    print("\n== batch sweep ==")
    print("  batch   samples/s ours   samples/s TRL   MFU ours (measured, specified)")
    for result in results:
        rate, mfu = result.get("samples_per_second", {}), result.get("mfu", {})
        spec = result.get("mfu_specified_peak", {})
        print(f"  {result['batch']:5d}   {rate.get('ours', float('nan')):14.2f}   "
              f"{rate.get('trl', float('nan')):13.2f}   {mfu.get('ours', float('nan')):.4f}, "
              f"{spec.get('ours', float('nan')):.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sweep": results}, indent=2, default=str) + "\n")
    return results


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, quiet libraries; returns the device."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # TRL loads π_ref with from_pretrained, which in transformers >= 5 swaps layers for kernels
    # fetched from the Hub unless told not to: both sides run transformers' own layers, as the
    # harness does (harness/models/hub.py), and nothing is fetched on a host without Hub access.
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if args.dtype == "bf16" and args.device != "cuda":
        raise SystemExit("--dtype bf16 needs --device cuda (bf16 autocast on both sides)")
    return torch.device(args.device)


def autocast(args: argparse.Namespace, device: torch.device) -> Any:
    """The context our steps run in: the harness runner's (:func:`harness.engine.runner.
    precision_context`: bf16 autocast without the weight-cast cache, so that each update of a
    step computes with the weights the previous one left)."""
    from harness.engine.runner import precision_context

    return precision_context(device, "bf16" if args.dtype == "bf16" else "fp32")


def temp_dir(prefix: str) -> str:
    """A temporary folder (TRL's output folder, a saved model) removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def loss_tolerance(args: argparse.Namespace) -> float:
    """How close our step-0 loss must be to the plain formula's: float32 rounding, or bf16's."""
    return 1e-5 if args.dtype == "fp32" else 2e-2


def require_trl() -> Any:
    try:
        import trl
    except ImportError:
        raise SystemExit(TRL_HINT) from None
    return trl


# --------------------------------------------------------------------------------------------
# Tokenizer, model, task
# --------------------------------------------------------------------------------------------


def build_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer: ``<pad> <bos> <eos> <unk>`` then words ``w4 … w{vocab-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {tok: i for i, tok in enumerate(SPECIAL)}
    table.update({f"w{i}": i for i in range(len(SPECIAL), vocab)})
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>", clean_up_tokenization_spaces=False, padding_side="left",
    )


def build_model(
    size: str, *, suppress_special: bool, seed: int = 0, max_positions: int = 128
) -> nn.Module:
    """The benchmark's Llama (float32, CPU, eval mode); see the module docstring."""
    from harness.models.lm import build_causal_lm

    s = SIZES[size]
    model = build_causal_lm(
        "llama", vocab_size=s.vocab, hidden=s.hidden, layers=s.layers, heads=s.heads,
        intermediate=s.intermediate, max_positions=max_positions, seed=seed,
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID,
    )
    if suppress_special:
        bias = torch.zeros(s.vocab)
        bias[list(range(len(SPECIAL)))] = -1e4
        model.lm_head.bias = nn.Parameter(bias, requires_grad=False)
    model.generation_config.pad_token_id = PAD_ID
    return model


def freeze_bias(model: nn.Module) -> None:
    """Keep the special-token bias out of every optimiser (it is a constant of the model)."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and getattr(module, "bias", None) is not None:
            if module.bias.shape[0] > 1:  # the LM head's, not a scalar head's
                module.bias.requires_grad_(False)


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_words(n: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    """``[n, length]`` ids of ordinary words (never a special token)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(len(SPECIAL), vocab, (n, length), generator=g)


def texts(ids: torch.Tensor) -> list[str]:
    return [" ".join(f"w{i}" for i in row) for row in ids.tolist()]


def make_task(model: nn.Module, tokenizer: Any, prompt_ids: torch.Tensor, device: str) -> Any:
    """A harness :class:`~harness.tasks.lm_task.LMTask` over the benchmark's model and prompts."""
    from harness.policy import PromptBatch, ResponseBatch
    from harness.tasks.lm_task import LMTask

    class BenchTask(LMTask):
        name = "bench-lm"
        Params = dict

        def load_assets(self) -> tuple[nn.Module, Any]:
            return model, tokenizer

        def prompt_texts(self, split: str) -> list[str]:
            return texts(prompt_ids)

        def prompt_token_ids(self, prompts: list[str]) -> list[list[int]]:
            return tokenizer(list(prompts), add_special_tokens=False)["input_ids"]

        @property
        def max_new_tokens(self) -> int:
            return NEW_TOKENS

        def reference_policy(self) -> Any:
            policy = super().reference_policy()
            freeze_bias(policy)
            return policy

        def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
            raise NotImplementedError

    return BenchTask({}, seed=0, device=device)


def reward_and_value_for_trl(source: nn.Module, head: nn.Linear, size: str) -> nn.Module:
    """A ``LlamaForSequenceClassification`` (one label) with ``source``'s backbone weights and
    ``head`` as its score: TRL's form of our :class:`harness.models.lm.ScalarHeadModel`."""
    import transformers

    config = copy.deepcopy(source.config)
    config.num_labels = 1
    config.pad_token_id = PAD_ID
    model = transformers.LlamaForSequenceClassification(config)
    missing = model.model.load_state_dict(source.state_dict(), strict=True)
    assert not missing.missing_keys
    with torch.no_grad():
        model.score.weight.copy_(head.weight)
    assert float(head.bias.abs().max()) == 0.0  # TRL's score has no bias: ours starts at 0
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TRLStepper:
    """Runs ``trainer.train()`` in a worker thread, one step per :meth:`step` call.

    A callback blocks the trainer at every ``on_step_end`` until the next :meth:`step`; the
    time a :meth:`step` takes is one whole iteration of TRL's own loop. Call :meth:`close` after
    the last step (the trainer must have been built with exactly that many steps).
    """

    def __init__(self, trainer: Any, device: torch.device, threads: int) -> None:
        from transformers import TrainerCallback

        self.trainer = trainer
        self.device = device
        self.threads = threads
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._error: BaseException | None = None
        self._finished = False
        self._thread: threading.Thread | None = None
        self.losses: list[float] = []
        stepper = self

        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                sync(stepper.device)
                stepper._done.release()
                stepper._go.acquire()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    stepper.losses.append(float(logs["loss"]))

        trainer.add_callback(Pause())
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # printing logs is not part of the work

    def _run(self) -> None:
        torch.set_num_threads(self.threads)  # OpenMP settings are per thread
        try:
            self._go.acquire()
            self.trainer.train()
        except BaseException as exc:  # re-raised in the main thread
            self._error = exc
        finally:
            self._finished = True
            self._done.release()

    def step(self) -> float:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        start = time.perf_counter()
        self._go.release()
        self._done.acquire()
        elapsed = time.perf_counter() - start
        if self._error is not None:
            raise RuntimeError("TRL's trainer failed") from self._error
        if self._finished:
            raise RuntimeError("TRL's trainer stopped before the requested number of steps")
        return elapsed

    def close(self) -> None:
        if self._thread is not None and not self._finished:
            self._go.release()
            self._thread.join()
        if self._error is not None:
            raise RuntimeError("TRL's trainer failed") from self._error


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def alternate(
    sides: dict[str, Callable[[], float]], *, warmup: int, rounds: int, steps: int
) -> dict[str, list[float]]:
    """Per-step seconds of each side: ``warmup`` untimed steps each, then ``rounds`` rounds of
    ``steps`` steps of each side in turn. Each callable runs one step and returns its seconds."""
    for name, step in sides.items():
        for _ in range(warmup):
            step()
        print(f"  warmed up {name}", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, step in sides.items():
            for _ in range(steps):
                times[name].append(step())
        line = ", ".join(f"{n} {statistics.median(t[-steps:]):.3f}s" for n, t in times.items())
        print(f"  round {r + 1}/{rounds}: {line}", file=sys.stderr, flush=True)
    return times


def median_phases(steps: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per compute phase (``generate``, ``score``, ``train``) over timed steps;
    phases a step never entered are left out."""
    names = [k for k in steps[0] if any(s[k] > 0 for s in steps)]
    return {k: round(statistics.median(s[k] for s in steps), 4) for k in names}


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__}
    trl = sys.modules.get("trl")
    if trl is not None:
        out["trl"] = f"{trl.__version__} ({Path(trl.__file__).parent})"
    return out


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def summarise(
    name: str,
    args: argparse.Namespace,
    times: dict[str, list[float]],
    samples_per_step: dict[str, int],
    memory: dict[str, float] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Print the result table and return it as a dict."""
    rate = {k: samples_per_step[k] / statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "benchmark": name,
        "size": args.size,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "cpu": cpu_model(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": os.getloadavg(),
        "step_seconds": times,
        "samples_per_step": samples_per_step,
        "samples_per_second": rate,
        **extra,
    }
    print(f"\n== {name}, {args.size}, {args.device}/{args.dtype}, {args.threads} threads, "
          f"batch {args.batch}, {args.rounds}×{args.steps} alternating steps (median) ==")
    for side, t in times.items():
        line = (f"  {side:5s}: {rate[side]:8.2f} samples/s   median step "
                f"{statistics.median(t):.3f}s   (steps: {', '.join(f'{x:.3f}' for x in t)})")
        if memory and side in memory:
            line += f"   peak memory {memory[side]:.0f} MiB"
        print(line)
    if "ours" in rate and "trl" in rate:
        result["ratio"] = rate["ours"] / rate["trl"]
        print(f"  ratio ours/TRL: {result['ratio']:.2f}×")
        if memory and "ours" in memory and "trl" in memory:
            print(f"  peak memory ours/TRL: {memory['ours'] / memory['trl']:.2f}")
    if memory:
        result["peak_memory_mb"] = memory
    for key, value in extra.items():
        print(f"  {key}: {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def collect() -> None:
    gc.collect()
