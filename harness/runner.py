"""One run: build an algorithm's context, then step it and record what happens.

:func:`build_context` gives every algorithm the same starting point: a trainable copy of π_ref,
a frozen π_ref, the run's random stream, a compute meter, and — as the algorithm declares it
needs them — the frozen reward model r̂ or the preference pairs. Algorithms of one comparison get
the *same* r̂ and the *same* pairs: the comparison is of algorithms, not of luck in data.

:func:`train` steps an algorithm a fixed number of times and calls ``evaluate`` every
``eval_every`` steps; each record carries the step, the cumulative samples, tokens, wall time and
FLOPs, so any of them can serve as the x-axis of a comparison.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from harness.algorithm import NEEDS, Algorithm, RunContext
from harness.compute import ComputeMeter
from harness.config import build_config
from harness.data import PreferenceDataset
from harness.errors import ConfigError
from harness.policy import Policy
from harness.reward import RewardModel
from harness.tasks.base import Task


def build_context(
    task: Task,
    algorithm: type[Algorithm],
    *,
    seed: int,
    preferences: PreferenceDataset | None = None,
    reward_model: RewardModel | None = None,
) -> RunContext:
    """The context for one run of ``algorithm`` on ``task`` (see the module docstring)."""
    unknown = set(algorithm.needs) - NEEDS
    if unknown:
        raise ConfigError(
            f"algorithm '{algorithm.name}' declares unknown needs {sorted(unknown)}; "
            f"known: {sorted(NEEDS)}"
        )
    device = torch.device(task.device)
    policy = task.reference_policy().to(device)
    policy.train()
    reference = policy.frozen_copy()
    generator = torch.Generator(device=device).manual_seed(seed)
    context = RunContext(
        task=task,
        policy=policy,
        reference=reference,
        generator=generator,
        meter=ComputeMeter(device=device),
        seed=seed,
    )
    if "preferences" in algorithm.needs:
        if preferences is None:
            raise ConfigError(f"algorithm '{algorithm.name}' needs preference data")
        context.preferences = preferences.to_batches(task).to(device)
    if "reward" in algorithm.needs:
        if reward_model is None:
            raise ConfigError(f"algorithm '{algorithm.name}' needs a reward model")
        frozen = copy.deepcopy(reward_model).to(device)
        frozen.requires_grad_(False)
        frozen.eval()
        context.reward_model = frozen
    return context


def make_algorithm(
    algorithm: type[Algorithm],
    config: dict[str, Any] | None,
    context: RunContext,
    *,
    where: str = "",
) -> Algorithm:
    """Validate ``config`` against ``algorithm.Config`` and build the algorithm."""
    cfg = build_config(algorithm.Config, config, where=where or f"algorithm '{algorithm.name}'")
    return algorithm(cfg, context)


def train(
    algo: Algorithm,
    steps: int,
    *,
    evaluate: Callable[[Policy], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> list[dict[str, float]]:
    """Step ``algo`` ``steps`` times; returns one record per step (with evaluations merged in).

    Stops early, marking the last record ``diverged = 1``, when a metric is NaN or infinite.
    """
    meter = algo.ctx.meter
    records: list[dict[str, float]] = []
    for step in range(1, steps + 1):
        metrics = algo.step()
        record = {"step": float(step), **metrics}
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps):
            with meter.phase("eval"), torch.no_grad():
                record.update(evaluate(algo.ctx.policy))
        record.update(
            samples=float(meter.samples),
            tokens=float(meter.tokens_generated + meter.tokens_trained),
            wall_seconds=meter.wall_seconds,
            flops=meter.flops,
        )
        records.append(record)
        if any(isinstance(v, float) and not math.isfinite(v) for v in record.values()):
            record["diverged"] = 1.0
            break
    return records
