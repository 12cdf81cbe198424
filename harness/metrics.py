"""The metric vocabulary: every name the harness gives a meaning to, in one place.

A run's ``metrics.parquet`` mixes three sources: what an algorithm's ``step()`` returns, what the
evaluators measure every k steps, and what the runner adds to every row. Reports compare the
*shared* names across algorithms, so a shared name must mean the same thing in every plugin: a
plugin that reports ``logp_chosen`` as a per-token mean where the vocabulary says a sequence sum
makes the comparison wrong without anything failing. :data:`VOCABULARY` holds each shared name's
meaning, unit and source; the conformance kit (:mod:`harness.testing`, check ``vocabulary``)
fails a plugin whose value for a shared name disagrees with the definition on a small
deterministic case, and ``rlhf-harness show`` prints the table.

Names that are not in the vocabulary belong to the plugin that reports them (``clip_frac``,
``reward_margin``, ...). A plugin documents them in :attr:`harness.algorithm.Algorithm.metrics`;
where two algorithms of one report document such a name with different meanings, the report
namespaces it as ``ALGORITHM:NAME`` (:func:`namespaced`), so that no figure or table puts the two
on one axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALGORITHM_METRICS",
    "RUNNER_METRICS",
    "VOCABULARY",
    "Metric",
    "clashing",
    "namespaced",
]

Source = Literal["algorithm", "evaluator", "runner"]


@dataclass(frozen=True)
class Metric:
    """One shared metric name."""

    name: str
    meaning: str
    """What the value is, precisely enough to compute it."""
    unit: str
    """Its unit and shape: always one float per row; the unit says what it counts."""
    sources: tuple[Source, ...]
    """Who reports it: an algorithm's ``step()``, the evaluators, the runner."""


_METRICS = [
    # --- what algorithms report ------------------------------------------------------------------
    Metric("loss", "the objective the step minimised, as the algorithm defines it (its module "
           "docstring says which)", "nats or the loss's own unit; one scalar per step",
           ("algorithm",)),
    Metric("grad_norm", "global L2 norm of the policy's gradient, before clipping",
           "≥ 0; mean over the step's updates when there are several", ("algorithm",)),
    Metric("reward", "mean r̂(x, y) over the responses the step sampled (online algorithms)",
           "reward units of r̂; mean over responses", ("algorithm",)),
    Metric("kl_ref", "an estimate of the sequence-level KL(π ‖ π_ref): the mean over responses "
           "of Σ_t log π(y_t|x, y_<t) − log π_ref(y_t|x, y_<t) (k1) on the step's samples; "
           "evaluators: exact where the task enumerates its responses",
           "nats per response (summed over tokens, not averaged); 0 while π = π_ref",
           ("algorithm", "evaluator")),
    Metric("entropy", "mean per-token entropy of π over the response tokens the step "
           "processed (its samples; offline: the pairs' responses)",
           "nats per token", ("algorithm", "evaluator")),
    Metric("response_length", "mean number of response tokens (EOS included when generated) "
           "over the responses the step processed", "tokens per response",
           ("algorithm", "evaluator")),
    Metric("logp_chosen", "mean over the step's pairs of log π(y⁺|x) = Σ_t log π(y⁺_t|x, "
           "y⁺_<t), under π as the step found it (before its update); offline algorithms",
           "nats per response (a sequence sum, not a per-token mean)", ("algorithm",)),
    Metric("logp_rejected", "as logp_chosen, for the rejected responses y⁻",
           "nats per response (a sequence sum, not a per-token mean)", ("algorithm",)),
    Metric("reward_accuracy", "fraction of the step's pairs whose chosen response the "
           "algorithm's implicit reward (or margin) ranks above the rejected one",
           "fraction in [0, 1]", ("algorithm",)),
    Metric("learning_rate", "the optimiser's step size used by the step (after any schedule)",
           "the optimiser's unit", ("algorithm",)),
    # --- what the evaluators measure -------------------------------------------------------------
    Metric("gold_reward", "E r*(x, y) under π on the eval prompts: exact on tabular tasks, on "
           "samples otherwise", "reward units of r*", ("evaluator",)),
    Metric("gold_reward_sd", "standard deviation of r*(x, y) over the eval prompts x and "
           "y ~ π: exact on tabular tasks, the sample standard deviation (n − 1) of the "
           "evaluation's samples otherwise; at the first evaluation, π_ref's, the scale of a "
           "task's scores where it knows no optimum", "reward units of r*; ≥ 0", ("evaluator",)),
    Metric("proxy_reward", "E r̂(x, y) under π on the eval prompts, r̂ the suite's reward model",
           "reward units of r̂", ("evaluator",)),
    Metric("win_rate_ref", "P(r*(y) > r*(y')) + ½ P(=), y ~ π, y' ~ π_ref",
           "fraction in [0, 1]", ("evaluator",)),
    Metric("regret", "J_β(π*_β) − J_β(π), where the task knows its optimum",
           "reward units of r*; ≥ 0", ("evaluator",)),
    # --- what the runner adds to every row -------------------------------------------------------
    Metric("step", "algorithm steps taken", "count", ("runner",)),
    Metric("samples", "cumulative prompt-response pairs generated (online) or read (offline)",
           "count", ("runner",)),
    Metric("tokens", "cumulative tokens generated and trained on", "count", ("runner",)),
    Metric("wall_seconds", "cumulative wall time of generate, score and train",
           "seconds", ("runner",)),
    Metric("flops", "cumulative estimated FLOPs (2N per token forward, 6N forward-backward)",
           "FLOPs", ("runner",)),
    Metric("models_resident", "models the algorithm keeps in memory", "count", ("runner",)),
    Metric("diverged", "1 when the run diverged at this row, else 0", "0 or 1", ("runner",)),
]

VOCABULARY: dict[str, Metric] = {m.name: m for m in _METRICS}
"""Every shared name and its definition."""

ALGORITHM_METRICS: frozenset[str] = frozenset(
    m.name for m in _METRICS if "algorithm" in m.sources
)
"""The shared names an algorithm may report (under exactly these names and meanings)."""

RUNNER_METRICS: frozenset[str] = frozenset(m.name for m in _METRICS if "runner" in m.sources)
"""Names the runner writes next to an algorithm's metrics: an algorithm must not use them."""


def clashing(declared: Mapping[str, Mapping[str, str]]) -> set[str]:
    """The plugin-specific names that two algorithms document with different meanings.

    :param declared: ``{algorithm: {metric name: documented meaning}}`` for the algorithms of
        one report (their :attr:`~harness.algorithm.Algorithm.metrics`). Shared names never
        clash (the conformance kit holds them to one meaning); an empty meaning is no evidence
        either way and is ignored; meanings are compared with whitespace collapsed.
    """
    meanings: dict[str, set[str]] = {}
    for metrics in declared.values():
        for name, meaning in metrics.items():
            text = " ".join(str(meaning).split())
            if name not in VOCABULARY and text:
                meanings.setdefault(name, set()).add(text)
    return {name for name, found in meanings.items() if len(found) > 1}


def namespaced(algorithm: str, name: str, clashes: Iterable[str]) -> str:
    """``ALGORITHM:NAME`` when ``name`` clashes between algorithms, else ``name``."""
    return f"{algorithm}:{name}" if name in set(clashes) else name
