"""The cost of the report's paired comparisons: sign-flip test vs paired t-test, timed.

A zoo-sized family: ``--pairs`` (1,000) comparisons of ``--n`` (30) instances each, the
per-instance values drawn once (seeded) and shared by both sides. Each side builds every
comparison's row the way ``harness.report.compare.comparisons`` does, then the Holm adjustment
and the instances needed for each:

- **sign-flip** — :func:`harness.report.stats.paired_sign_flip` (exact up to 20 instances,
  50,000 Monte Carlo patterns beyond, the interval that inverts it, the skewness test) and
  :func:`harness.report.stats.seeds_needed_upper`;
- **t-test** — :func:`harness.report.stats.paired_difference` (scipy's paired t-test and
  Student-t interval) and the plug-in :func:`harness.report.stats.seeds_needed`.

Both sides alternate in this one process (``--rounds`` rounds, each side once per round, so
both see the same machine load); printed: the median seconds of each side's two phases (the
tests with their intervals and Holm; the instances needed, at α/m), and the ratios sign-flip /
t-test. The instances needed dominate both sides (the noncentral t's far tail at α/m = 5e-5);
a round of 1,000 pairs takes minutes.

Run:  .venv/bin/python benchmarks/bench_stats.py [--pairs 1000] [--n 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from harness.report import stats as st


def build(values: np.ndarray, robust: bool, alpha: float) -> tuple[float, float]:
    """Every comparison's row and Holm, then the instances needed for each; returns the
    seconds of each of the two phases."""
    start = time.perf_counter()
    p_values, rows = [], []
    for a, b in values:
        r = st.paired_sign_flip(a, b) if robust else st.paired_difference(a, b)
        p_values.append(r.p_value)
        rows.append(r)
    st.holm(p_values)
    tested = time.perf_counter()
    level = alpha / len(rows)
    for r in rows:
        if robust:
            st.seeds_needed_upper(r.mean_diff, r.sd, r.n, alpha=level)
        else:
            st.seeds_needed(r.mean_diff, r.sd, alpha=level)
    return tested - start, time.perf_counter() - tested


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, (args.pairs, 1, args.n))
    values = base + rng.normal(0.0, 0.5, (args.pairs, 2, args.n))
    values[:, 0] += rng.normal(0.0, 0.3, (args.pairs, 1))  # true differences vary by pair
    build(values[:5], True, st.ALPHA)  # warm-up: imports, first calls
    build(values[:5], False, st.ALPHA)
    times: dict[str, list[tuple[float, float]]] = {"sign-flip": [], "t-test": []}
    for _ in range(args.rounds):
        times["sign-flip"].append(build(values, True, st.ALPHA))
        times["t-test"].append(build(values, False, st.ALPHA))
    med = {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in times.items()}
    print(f"{args.pairs} comparisons of {args.n} instances, median of {args.rounds} rounds "
          "(seconds: test, interval and Holm | instances needed | both)")
    for k, (test, need) in med.items():
        print(f"  {k:9s} {test:8.2f} | {need:8.2f} | {test + need:8.2f}  "
              f"({1000 * test / args.pairs:.2f} ms per test)")
    sf, tt = med["sign-flip"], med["t-test"]
    print(f"  ratio sign-flip / t-test: test {sf[0] / tt[0]:.1f}, instances needed "
          f"{sf[1] / tt[1]:.2f}, both {sum(sf) / sum(tt):.2f}")

if __name__ == "__main__":
    main()
