"""The harness's own overhead: ``run_one`` on a tiny-lm suite against a bare ``algo.step()`` loop.

For each algorithm (DPO, GRPO, PPO; quickstart-like configs on the default ``tiny-lm`` task):

- **harness** — :func:`harness.engine.runner.run_one` on a one-run suite of ``--steps`` steps
  (budget in
  steps) into a store under a temporary folder, tracking off (``--tracking off``, the default)
  or wandb offline (``--tracking offline``). The suite asks for no evaluators: evaluation is the
  same work for every algorithm, not overhead of the loop. What remains around ``algo.step()``
  is the runner's: budget accounting, metric rows, divergence checks, RSS sampling, tracking,
  the run's log and its store.
- **bare** — the same setup functions (task; preference data or reward model from the same
  store's cache; :func:`~harness.engine.runner.build_context`;
  :func:`~harness.engine.runner.make_algorithm`) and a plain loop of ``algo.step()``.

``run_one`` runs in a worker thread that pauses in its ``on_step`` callback, so the two are
interleaved *step by step* (which of the two goes first alternates) and see the same machine
load: a harness step is the time from releasing ``run_one`` to its next ``on_step`` (one whole
iteration of its loop), a bare step one ``algo.step()``. Both start fresh from the same seed,
so their i-th steps do the same computation. The first step of each run (setup) and the last
(the final evaluation and the store's writes) are timed apart: they are the run's fixed cost,
printed in seconds next to the bare path's setup.

Printed: per algorithm, the median harness and bare step and their ratio (the per-step
overhead), and the fixed per-run cost.

Run:  .venv/bin/python benchmarks/bench_overhead.py [--tracking offline]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALGORITHMS = {
    "dpo": {"beta": 0.4, "optimizer": "adam", "batch_size": 64, "warmup_steps": 0,
            "learning_rate": 1e-3},
    "grpo": {"beta": 0.1, "prompts_per_step": 8, "num_generations": 8, "scale_rewards": "none",
             "learning_rate": 1e-3},
    "ppo": {"kl_coef": 0.1, "rollout_batch_size": 64, "num_ppo_epochs": 2,
            "learning_rate": 1e-3},
}


def spec_for(algorithm: str, steps: int) -> dict:
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    suite = {
        "name": f"overhead-{algorithm}",
        "tasks": [{"name": "tiny-lm", "params": {"max_new_tokens": 16}}],
        "preferences": {"num_pairs": 512, "preference_model": "btl", "scale": 0.25},
        "reward_model": {"kind": "gold"},
        "algorithms": [{"name": algorithm, "config": ALGORITHMS[algorithm]}],
        "seeds": [0],
        "budget": {"steps": steps},
        "evaluation": {"every": steps, "evaluators": []},
        "device": "cpu",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(suite, f)
    (run,) = check_suite(load_suite(f.name), f.name, get_plugin_host())
    os.unlink(f.name)
    return run.as_dict()


class HarnessStepper:
    """``run_one`` in a worker thread, paused in ``on_step``: :meth:`step` runs one more step."""

    def __init__(self, spec: dict, root: str, tracking: bool, threads: int) -> None:
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self.status: str | None = None
        self.error: BaseException | None = None

        def on_step(_: float) -> None:
            self._done.release()
            self._go.acquire()

        def run() -> None:
            from harness.engine.runner import run_one

            torch.set_num_threads(threads)  # per thread
            try:
                self.status = run_one(spec, root, wandb=tracking, on_step=on_step)
            except BaseException as exc:
                self.error = exc
            finally:
                self.status = self.status or "failed"
                self._done.release()

        self._thread = threading.Thread(target=run, daemon=True)

    def step(self) -> float:
        """Seconds until ``run_one``'s next ``on_step`` (or its end)."""
        start = time.perf_counter()
        if not self._thread.is_alive() and self.status is None:
            self._thread.start()
        else:
            self._go.release()
        self._done.acquire()
        if self.error is not None:
            raise RuntimeError("run_one raised") from self.error
        return time.perf_counter() - start

    def finish(self) -> float:
        """Seconds of the rest of the run after the last ``on_step`` (log, store, tracker)."""
        start = time.perf_counter()
        self._go.release()
        self._thread.join()
        if self.status != "done":
            raise SystemExit(f"run_one finished as {self.status}")
        return time.perf_counter() - start


def bare_setup(spec: dict, root: str):
    """The setup of ``run_one`` without the runner: task, shared data, context, algorithm."""
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import (
        build_context,
        build_task,
        make_algorithm,
        resolve_device,
        shared_artifacts,
    )
    from harness.engine.store import RunStore

    host = get_plugin_host()
    task = build_task(host, spec, resolve_device(spec["device"]))
    algo_cls = host.algorithm(spec["algorithm"])
    data, reward_model, _ = shared_artifacts(
        task, spec, RunStore(root, spec["suite"]), host,
        need_prefs="preferences" in algo_cls.needs, need_reward="reward" in algo_cls.needs,
    )
    ctx = build_context(task, algo_cls, seed=spec["seed"], preferences=data,
                        reward_model=reward_model)
    return make_algorithm(algo_cls, spec["algorithm_config"], ctx)


def timed_step(algo) -> float:
    start = time.perf_counter()
    algo.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", nargs="+", choices=sorted(ALGORITHMS),
                   default=sorted(ALGORITHMS))
    p.add_argument("--steps", type=int, default=24, help="steps per run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each algorithm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tracking", choices=["off", "offline"], default="off")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.tracking == "offline":
        os.environ["WANDB_MODE"] = "offline"
        os.environ.pop("RLHF_HARNESS_WANDB", None)
    root = tempfile.mkdtemp(prefix="bench-overhead-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    print(f"store: {root}; tracking {args.tracking}; {args.threads} thread(s)", file=sys.stderr)
    results = {}
    for algorithm in args.algorithms:
        spec = spec_for(algorithm, args.steps)
        bare_setup(spec, root).step()  # builds the shared data (cached), warms up
        steps = {"harness": [], "bare": []}
        fixed = {"harness": [], "bare": []}
        for r in range(args.rounds):
            # Fresh and seeded alike: step i of both does the same computation.
            start = time.perf_counter()
            bare = bare_setup(spec, root)
            fixed["bare"].append(time.perf_counter() - start + timed_step(bare))
            harness = HarnessStepper(spec, root, args.tracking == "offline", args.threads)
            first = harness.step()  # setup, the step-0 evaluation, step 1
            for i in range(args.steps - 2):
                if (i + r) % 2:  # alternate which goes first
                    steps["bare"].append(timed_step(bare))
                    steps["harness"].append(harness.step())
                else:
                    steps["harness"].append(harness.step())
                    steps["bare"].append(timed_step(bare))
            last_bare = timed_step(bare)
            last = harness.step()  # step n, with the final evaluation
            fixed["harness"].append(first + last - last_bare + harness.finish())
            n = args.steps - 2
            print(f"  {algorithm} run {r + 1}: harness step "
                  f"{statistics.median(steps['harness'][-n:]) * 1e3:.1f} ms, bare "
                  f"{statistics.median(steps['bare'][-n:]) * 1e3:.1f} ms",
                  file=sys.stderr, flush=True)
        results[algorithm] = (
            statistics.median(steps["harness"]), statistics.median(steps["bare"]),
            statistics.median(fixed["harness"]), statistics.median(fixed["bare"]),
        )
    print(f"\n== harness overhead, tiny-lm, {args.rounds} runs × {args.steps} steps interleaved "
          f"step by step, tracking {args.tracking}, {args.threads} thread(s) (medians) ==")
    print(f"  {'algorithm':9s} {'harness step':>13s} {'bare step':>10s} {'ratio':>7s}"
          f"   fixed cost per run: harness vs bare (setup, first/last step, store)")
    for algorithm, (sh, sb, fh, fb) in results.items():
        print(f"  {algorithm:9s} {sh * 1e3:10.1f} ms {sb * 1e3:7.1f} ms {sh / sb:6.3f}×"
              f"   {fh:6.2f} s vs {fb:5.2f} s (+{fh - fb:.2f} s = {(fh - fb) / sb:.1f} steps)")


if __name__ == "__main__":
    main()
