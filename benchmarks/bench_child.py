"""The cost of running each run in a supervised child process, against running it in this one.

The quickstart suite's bandit runs (PPO, GRPO, DPO × ``--seeds`` instances, one replicate) are
run two ways in one invocation, alternating round by round so that both see the same load:

- **child** — :func:`harness.engine.executors.run_specs` (``local``, one worker): the runs execute
  in one child process that the suite's process supervises (time limits kept outside the run).
  Its time includes starting the child (``spawn``, importing torch and the plugins), the
  child's building of the shared data, and the pipe traffic of every step.
- **in-process** — the same specs through :func:`harness.engine.runner.run_one` in this process, one
  after another, after building the same shared data (what a suite did before runs had
  children of their own).

Each round uses fresh stores. Printed: the median wall seconds of each way for a one-run suite
and for the whole suite, their ratio child / in-process, and from the two sizes the fixed cost
of the child (start-up) and its cost per further run.

Run:  .venv/bin/python benchmarks/bench_child.py [--seeds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def suite_specs(seeds: int) -> list:
    """The quickstart suite's bandit runs (its task, data, algorithms and budget), ``seeds``
    instances × one replicate."""
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    suite["name"] = "bench-child"
    suite["tasks"] = [t for t in suite["tasks"] if t["name"] == "bandit"]
    for algorithm in suite["algorithms"]:
        algorithm["per_task"] = {"bandit": algorithm["per_task"]["bandit"]}
    suite["seeds"] = list(range(seeds))
    suite["device"] = "cpu"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(suite, f)
    try:
        return check_suite(load_suite(f.name), f.name, get_plugin_host())
    finally:
        os.unlink(f.name)


def in_process(specs: list, root: str) -> float:
    from harness.engine.executors import _prepare_shared
    from harness.engine.runner import run_one

    start = time.perf_counter()
    _prepare_shared(specs, root)
    for spec in specs:
        status = run_one(spec.as_dict(), root)
        assert status == "done", status
    return time.perf_counter() - start


def in_child(specs: list, root: str) -> float:
    from harness.engine.executors import run_specs

    start = time.perf_counter()
    outcome = run_specs(specs, root, wandb=False, progress=False)
    assert outcome.statuses == {"done": len(specs)}, outcome.statuses
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="instances (3 runs each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["RLHF_HARNESS_WANDB"] = "0"
    specs = suite_specs(args.seeds)
    sizes = {"one run": specs[:1], f"{len(specs)} runs": specs}
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        in_process(specs[:1], f"{tmp}/warm")  # imports and first-call costs, for both ways
        for r in range(args.rounds):
            for size, batch in sizes.items():
                ways = [("in-process", in_process), ("child", in_child)]
                if r % 2:
                    ways.reverse()
                for way, fn in ways:
                    root = f"{tmp}/{way}-{size.replace(' ', '')}-{r}"
                    times.setdefault((size, way), []).append(fn(batch, root))
    print(f"bandit suite (PPO, DPO, GRPO × {args.seeds} seeds), {args.rounds} rounds, "
          f"median wall seconds")
    med = {k: statistics.median(v) for k, v in times.items()}
    for size in sizes:
        a, b = med[(size, "in-process")], med[(size, "child")]
        print(f"  {size:>8}: in-process {a:6.2f} s   child {b:6.2f} s   ratio child/in-process "
              f"{b / a:.2f}")
    n = len(specs)
    extra_one = med[("one run", "child")] - med[("one run", "in-process")]
    extra_all = med[(f"{n} runs", "child")] - med[(f"{n} runs", "in-process")]
    per_run = (extra_all - extra_one) / (n - 1) if n > 1 else float("nan")
    run_seconds = med[(f"{n} runs", "in-process")] / n
    print(f"  child start-up (fixed, per suite): {extra_one:.2f} s; per further run: "
          f"{per_run * 1000:+.0f} ms ({per_run / run_seconds:+.1%} of an in-process run of "
          f"{run_seconds:.2f} s)")


if __name__ == "__main__":
    main()
