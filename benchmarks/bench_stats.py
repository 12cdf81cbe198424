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
both see the same machine load); printed: the median seconds of each side, the ms per
comparison, and the ratio sign-flip / t-test.

Run:  .venv/bin/python benchmarks/bench_stats.py [--pairs 1000] [--n 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from harness.report import stats as st


def build(values: np.ndarray, robust: bool, alpha: float) -> float:
    """Every comparison's row, Holm and the instances needed; returns the seconds it took."""
    start = time.perf_counter()
    p_values, rows = [], []
    for a, b in values:
        r = st.paired_sign_flip(a, b) if robust else st.paired_difference(a, b)
        p_values.append(r.p_value)
        rows.append(r)
    st.holm(p_values)
    level = alpha / len(rows)
    for r in rows:
        if robust:
            st.seeds_needed_upper(r.mean_diff, r.sd, r.n, alpha=level)
        else:
            st.seeds_needed(r.mean_diff, r.sd, alpha=level)
    return time.perf_counter() - start


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
    times: dict[str, list[float]] = {"sign-flip": [], "t-test": []}
    for _ in range(args.rounds):
        times["sign-flip"].append(build(values, True, st.ALPHA))
        times["t-test"].append(build(values, False, st.ALPHA))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.pairs} comparisons of {args.n} instances, median of {args.rounds} rounds")
    for k, v in med.items():
        print(f"  {k:9s} {v:8.2f} s  ({1000 * v / args.pairs:.2f} ms per comparison)")
    print(f"  ratio sign-flip / t-test: {med['sign-flip'] / med['t-test']:.1f}")


if __name__ == "__main__":
    main()
