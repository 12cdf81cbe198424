"""The checks on training runs: ``determinism`` (the same seed gives bit-identical runs),
``finite`` (no NaN or infinite metric or parameter) and ``improves`` (the exact objective J_β
closes part of its gap to the optimum).
"""

from __future__ import annotations

import math

import torch

from harness.algorithm import Algorithm
from harness.testing.common import _GLOBAL_SEEDS, _finite, _raised, _same_bits, _show


class TrainingChecks:
    """The checks of :class:`~harness.testing.kit.Conformance` on a training run: ``determinism``,
    ``finite`` and ``improves``."""

    def _check_determinism(self, cls: type[Algorithm]) -> str | None:
        first = self._trace(self.steps, _GLOBAL_SEEDS[0])
        second = self._trace(self.steps, _GLOBAL_SEEDS[1])
        for trace in (first, second):
            if trace.error:
                return trace.error
        advice = (f"between two runs with seed {self.seed}: randomness must come only from "
                  f"ctx.generator (or generators seeded from ctx.seed), never from the global "
                  f"generators (torch.rand, torch.randn, random, numpy.random)")
        if len(first.records) != len(second.records):
            return (f"one run stopped after {len(first.records)} steps, the other after "
                    f"{len(second.records)}, {advice}")
        for number, (a, b) in enumerate(zip(first.records, second.records, strict=True), 1):
            if not (isinstance(a, dict) and isinstance(b, dict)):
                return f"step {number}: step() returned no dict of metrics"
            if set(a) != set(b):
                return (f"step {number} reported metrics {sorted(map(str, a))} in one run and "
                        f"{sorted(map(str, b))} in the other, {advice}")
            for key in a:
                if not _same_bits(a[key], b[key]):
                    return (f"metric '{key}' at step {number} is {a[key]!r} in one run and "
                            f"{b[key]!r} in the other, {advice}")
        for which, params in first.parameters.items():
            other = second.parameters.get(which, {})
            for pname, tensor in params.items():
                twin = other.get(pname)
                if twin is None or tensor.dtype != twin.dtype or not torch.equal(tensor, twin):
                    return (f"{which} parameter '{pname}' differs after {len(first.records)} "
                            f"steps {advice}")
        return None

    def _check_finite(self, cls: type[Algorithm]) -> str | None:
        trace = self._trace(self.train_steps, _GLOBAL_SEEDS[0])
        for number, metrics in enumerate(trace.records, 1):
            if not isinstance(metrics, dict):
                return f"step {number}: step() returned {type(metrics).__name__}, not a dict"
            bad = [f"{k}={_show(v)}" for k, v in metrics.items() if not _finite(v)]
            if bad:
                return f"step {number} returned non-finite {', '.join(bad)}"
        if trace.error:
            return trace.error
        for which, params in trace.parameters.items():
            for pname, tensor in params.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return (f"{which} parameter '{pname}' holds NaN or inf after "
                            f"{len(trace.records)} steps")
        return None

    def _check_improves(self, cls: type[Algorithm]) -> str | None:
        from harness.exact import ExactProblem

        trace = self._trace(self.train_steps, _GLOBAL_SEEDS[0])
        if trace.error:
            return trace.error
        assert trace.algo is not None
        task = trace.algo.ctx.task
        try:
            exact = ExactProblem.from_task(task)
            logp = exact.policy_logprobs(trace.algo.eval_policy())
        except Exception as exc:
            return f"measuring eval_policy() {_raised(exc)}"
        beta = self.beta
        start = exact.objective(exact.ref_logp, beta)
        best = exact.optimal_objective(beta)
        reached = exact.objective(logp, beta)
        gap = best - start
        closed = (reached - start) / gap if gap > 0 else 0.0
        steps = len(trace.records)
        if not math.isfinite(reached) or not closed >= self.min_improvement:
            return (f"J_β (β = {beta:g}, exact, gold reward) went from {start:.4f} (π_ref) to "
                    f"{reached:.4f} after {steps} steps on the bandit, {closed:.1%} of the gap "
                    f"to the optimum {best:.4f}; at least {self.min_improvement:.0%} is "
                    f"required. Pass a config suited to a table of logits (e.g. a learning "
                    f"rate of 0.05-0.1), or more train_steps")
        return None
