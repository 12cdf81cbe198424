"""Expanding a validated suite into its runs: task × instance × replicate × algorithm × sweep
point, each a :class:`~harness.suite.model.RunSpec`.

With a ``tuning`` section the chosen configurations are merged in (:func:`expand`'s ``chosen``);
the run counts here are what :data:`~harness.suite.schema.MAX_RUNS` bounds.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from harness.config import build_config, config_dict
from harness.errors import ConfigError
from harness.suite import schema
from harness.suite.hashing import code_identity, file_digest
from harness.suite.model import RunSpec, Suite, task_units
from harness.suite.schema import AlgorithmSpec, TaskSpec


def count_runs(suite: Suite) -> int:
    """How many runs a suite makes (tuning trials included), computed without expanding it."""
    points = sum(math.prod(len(v) for v in alg.sweep.values()) for alg in suite.algorithms)
    units = task_units(suite)
    cells = sum(len(suite.task_instances(task)) * suite.task_replicates(task)
                for _, task in units)
    runs = cells * points
    if suite.tuning is not None:
        tuned = len(tuned_labels(suite))
        # each tuned label runs one chosen configuration per repeat (tuned labels do not sweep)
        runs += cells * tuned * (suite.tuning.repeats - 1)
        runs += count_trial_runs(suite)
    return runs


def count_trial_runs(suite: Suite) -> int:
    """How many tuning trial runs a suite makes: per task (at each of its budgets) and tuned
    label, trials × tuning instances (R searches of that many trials, each on its own 1/R of
    the instances)."""
    if suite.tuning is None:
        return 0
    tuned = len(tuned_labels(suite))
    return sum(tuned * suite.tuning.trials_for(task.name) * len(suite.tuning.instances)
               for _, task in task_units(suite))  # tuned at each budget


def tuned_labels(suite: Suite) -> list[str]:
    """The labels a suite tunes (none without a ``tuning`` section)."""
    if suite.tuning is None:
        return []
    labels = [a.label or a.name for a in suite.algorithms]
    return list(suite.tuning.algorithms) if suite.tuning.algorithms is not None else labels


def expand(
    suite: Suite,
    host: Any,
    *,
    allow_large: bool = False,
    tuned: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> list[RunSpec]:
    """Every comparison run of the suite: task × budget × instance × replicate × algorithm ×
    sweep point (one budget per task, unless it lists several: :func:`task_budgets`).

    ``tuned`` maps (task, label) to the tuning's choice (``{"trial", "params", "value"}``), which
    is merged into that algorithm's config; without it a tuned algorithm runs its base config
    (what ``validate`` counts). With ``tuning.repeats`` R > 1 the choice holds ``"repeats"``,
    the R searches' choices (each with its ``"repeat"``), and each runs on every instance under
    the algorithm's one label: its spec's ``tuning`` record names the repeat, so the R runs of
    an instance have ids of their own. At several budgets the task is named with its budget
    (:func:`budget_task`), each budget having its own choice.
    """
    if count_runs(suite) > schema.MAX_RUNS and not allow_large:
        raise ConfigError(f"suite '{suite.name}': more than {schema.MAX_RUNS:,} runs need "
                          "allow_large")
    tuned_set = set(tuned_labels(suite))
    preferences = run_preferences(suite)
    runs = []
    cells = [(unit, task, seed, rep) for unit, task in task_units(suite)
             for seed in suite.task_instances(task) for rep in range(suite.task_replicates(task))]
    for (unit, task, seed, replicate), alg in itertools.product(cells, suite.algorithms):
        label = alg.label or alg.name
        choice = (tuned or {}).get((unit, label)) if label in tuned_set else None
        for point in _sweep_points(alg.sweep):
            shown = shown_label(label, point)
            for extra, info in _chosen_configs(suite, label, point, choice):
                runs.append(make_spec(suite, host, task, alg, seed, extra, shown, dict(point),
                                      info, replicate=replicate, preferences=preferences))
    return runs


def _chosen_configs(
    suite: Suite, label: str, point: dict[str, Any], choice: dict[str, Any] | None
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(config overrides, ``tuning`` record) of each configuration a label runs at a sweep
    point: the point itself untuned; each repeat's choice when tuned (the record of a repeat
    names it only when there are several, so one search keeps its runs' ids)."""
    if choice is None:
        return [(dict(point), None)]
    assert suite.tuning is not None
    out = []
    for one in choice.get("repeats") or [choice]:
        info = {"phase": "chosen", "label": label, "trial": one["trial"],
                "params": dict(one["params"]), "value": one["value"],
                "trials": suite.tuning.trials, "objective": suite.tuning.objective}
        if suite.tuning.repeats > 1:
            info["repeat"] = int(one["repeat"])
        out.append(({**point, **one["params"]}, info))
    return out


def shown_label(label: str, point: dict[str, Any]) -> str:
    """How reports name a configuration: its label, with its sweep point as ``[k=v,...]``."""
    if not point:
        return label
    return label + "[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]"


def run_preferences(suite: Suite) -> dict[str, Any]:
    """The preference spec a run records: the suite's, with a data file's content hash."""
    preferences = suite.preferences.model_dump()
    if not preferences["unpaired"]:  # the default leaves run ids as they were before the key
        del preferences["unpaired"]
    if suite.preferences.file is not None:  # the data, not its path, shape the results
        preferences["file_sha256"] = file_digest(suite.preferences.file)
    return preferences


def make_spec(
    suite: Suite,
    host: Any,
    task: TaskSpec,
    alg: AlgorithmSpec,
    seed: int,
    extra: dict[str, Any],
    label: str,
    sweep_point: dict[str, Any],
    tuning: dict[str, Any] | None = None,
    *,
    replicate: int = 0,
    preferences: dict[str, Any] | None = None,
) -> RunSpec:
    """One run of ``alg`` on ``task``, instance ``seed`` and replicate ``replicate``, its config
    updated with ``extra``; ``preferences`` is :func:`run_preferences` of the suite, given by
    callers that make many specs so that a data file is hashed once."""
    if preferences is None:
        preferences = run_preferences(suite)
    task_cls = host.task(task.name)
    params = config_dict(build_config(task_cls.Params, task.params))
    budget = task.budget or suite.budget
    cls = host.algorithm(alg.name)
    values = {**alg.config, **alg.per_task.get(task.name, {}), **extra}
    policy = alg.policy if alg.policy is not None else suite.policy
    return RunSpec(
        suite=suite.name,
        task=task.name,
        task_params=params,
        algorithm=alg.name,
        label=label,
        algorithm_config=config_dict(build_config(cls.Config, values)),
        sweep_point=sweep_point,
        seed=seed,
        preferences=preferences,
        reward_model=suite.reward_model.model_dump(),
        budget={budget.kind: budget.value},
        evaluation=suite.evaluation.model_dump(),
        divergence=suite.divergence.model_dump(),
        device=suite.device,
        precision=suite.precision,
        gpus=suite.gpus_per_run,
        code=code_identity(host, alg.name, task.name),
        limits=suite.limits.model_dump(),
        tuning=tuning,
        policy={} if policy.is_default else policy.model_dump(),
        replicate=replicate,
        deterministic=suite.deterministic,
    )


def _sweep_points(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(
        *(sweep[k] for k in keys)
    )] or [{}]
