"""The paired t-test's power in scipy's far tail: our quadrature vs the same integral written
with ``scipy.stats`` calls, timed in one process.

Where scipy's noncentral t gives NaN (a tiny α/m at moderate df), :func:`harness.report.stats.
paired_power` integrates ∫_0^∞ [φ(u − nc) + φ(u + nc)] F_χ(u·√df/crit; df) du. A report calls
it in a bisection over n for every comparison row (``seeds_needed``), so the integrand's cost
decides how long a large report takes. The peer here is the same integral and the same
quadrature settings with the integrand as ``stats.norm.pdf`` and ``stats.chi.cdf``; both sides
run on the same points (the (effect, n) pairs a bisection at α = 4e-5 visits, the zoo's α/m),
alternating in rounds so that both see the same load. Printed: the median seconds per side, the
ratio peer / ours, and the largest relative difference of the two powers.

Run:  .venv/bin/python benchmarks/bench_power.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from scipy import stats
from scipy.integrate import quad

from harness.report import stats as st

ALPHA = 4e-5


def peer_power(effect: float, n: int, alpha: float) -> float:
    """The fallback integral with the integrand written in scipy.stats calls."""
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = abs(effect) * math.sqrt(n)
    slope = math.sqrt(df) / crit

    def integrand(u: float) -> float:
        return float((stats.norm.pdf(u - nc) + stats.norm.pdf(u + nc))
                     * stats.chi.cdf(slope * u, df))

    opts = {"epsabs": 0.0, "epsrel": 1e-12}
    total = quad(integrand, 0.0, nc, **opts)[0] + quad(integrand, nc, nc + 40.0, **opts)[0]
    return min(max(float(total), 0.0), 1.0)


def falls_back(effect: float, n: int, alpha: float) -> bool:
    """Whether scipy's noncentral t leaves ``paired_power`` to its quadrature here."""
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = effect * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, nc))
    lower = float(stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(lower) and stats.norm.cdf(-nc) < 1e-12:
        lower = 0.0
    return not (math.isfinite(upper) and math.isfinite(lower))


def points() -> list[tuple[float, int]]:
    """The (effect, n) pairs that fall back, from the bisections of a few effect sizes."""
    out: list[tuple[float, int]] = []
    for effect in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0):
        for n in sorted({2 ** k for k in range(1, 17)} | {int(x) for x in
                        (st.seeds_needed(effect, 1.0, alpha=ALPHA),) if math.isfinite(x)}):
            if falls_back(effect, n, ALPHA):
                out.append((effect, n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pts = points()
    ours = [st.paired_power(e, n, ALPHA) for e, n in pts]  # warm-up and values
    peer = [peer_power(e, n, ALPHA) for e, n in pts]
    worst = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(ours, peer, strict=True))
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for e, n in pts:
            st.paired_power(e, n, ALPHA)
        t1 = time.perf_counter()
        for e, n in pts:
            peer_power(e, n, ALPHA)
        t2 = time.perf_counter()
        times["ours"].append(t1 - t0)
        times["peer"].append(t2 - t1)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(pts)} points where scipy's nct falls back (α = {ALPHA:g}), median of "
          f"{args.rounds} rounds")
    print(f"  ours {med['ours']:.3f} s, peer (scipy.stats integrand) {med['peer']:.3f} s, "
          f"ratio peer/ours {med['peer'] / med['ours']:.0f}")
    print(f"  largest relative difference of the powers: {worst:.1e}")


if __name__ == "__main__":
    main()
