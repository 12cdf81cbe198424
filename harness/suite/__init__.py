"""Suite files: YAML in, a validated grid of run specs out.

A suite names one task (or several), how preference data are simulated, how the reward model is
fitted, the algorithms with their configs and optional sweeps, the seeds, one budget for all,
and the evaluation. Example::

    name: quickstart
    tasks:
      - name: bandit
        params: {num_prompts: 8, num_arms: 16}
    preferences: {num_pairs: 10000, preference_model: btl, scale: 1.0, flip_rate: 0.0}
    reward_model: {preference_model: btl}
    algorithms:
      - name: dpo
        config: {beta: 0.5, learning_rate: 0.05, optimizer: adam}
      - name: ppo
        label: ppo-kl
        config: {kl_coef: 0.5}
        sweep: {learning_rate: [0.01, 0.05]}
    seeds: [0, 1, 2]
    budget: {samples: 50000}
    evaluation: {every: 10, beta: 0.5}

Validation is pydantic's (types, unknown keys) plus the harness's checks of plugin names,
algorithm configs and task params; every error is one line naming the file, the line and the key.
:func:`expand` turns a suite into :class:`RunSpec` s — task × seed × algorithm × sweep point —
whose ``run_id`` is a hash of everything that shapes the run's result: the resolved spec, the
content of a preference-data file, and the algorithm plugin's version and source.

Validation is bounded: a file is read as UTF-8 text, YAML aliases may expand to at most
:data:`MAX_YAML_NODES` nodes, a key may appear once per mapping, and a suite expands to at most
:data:`MAX_RUNS` runs unless the caller allows more (``--allow-large``).

The package is split by job: :mod:`~harness.suite.schema` (the sections' models),
:mod:`~harness.suite.model` (:class:`Suite`, :class:`RunSpec`), :mod:`~harness.suite.loading`
(YAML to a suite, errors with lines), :mod:`~harness.suite.checks` (against the plugin host),
:mod:`~harness.suite.expansion` (a suite to its runs) and :mod:`~harness.suite.hashing` (what a
run id hashes besides the spec). Everything is re-exported here: ``from harness.suite import X``
is the import path.
"""

from __future__ import annotations

from harness.suite.checks import (
    LOW_PRECISION_WEIGHTS,
    check_placement,
    check_suite,
    compare_names,
    suite_warnings,
    tuning_space,
)
from harness.suite.expansion import (
    _sweep_points,
    count_runs,
    count_trial_runs,
    expand,
    make_spec,
    run_preferences,
    shown_label,
    tuned_labels,
)
from harness.suite.hashing import (
    _SOURCE_HASHES,
    CORE_VERSION_KEYS,
    code_identity,
    core_versions,
    describe_versions,
    file_digest,
    source_hash,
)
from harness.suite.loading import (
    UNION_FORMS,
    load_suite,
    sections,
)
from harness.suite.model import (
    RunSpec,
    Suite,
    algorithm_seed,
    budget_task,
    default_claims,
    missing_lecture_algorithms,
    task_budgets,
    task_units,
)
from harness.suite.schema import (
    BUDGET_KINDS,
    CLAIM_ASPECTS,
    LECTURE_CLAIM,
    LECTURE_SOURCE,
    MAX_LABEL_LENGTH,
    MAX_LIMIT_SECONDS,
    MAX_RUNS,
    MAX_YAML_NODES,
    NAME_PATTERN,
    AlgorithmSpec,
    BudgetFloat,
    BudgetInt,
    BudgetSpec,
    ClaimSpec,
    ComparePair,
    CompareSpec,
    DivergenceSpec,
    EvaluationSpec,
    Float,
    Int,
    LimitsSpec,
    LoRASpec,
    PolicySpec,
    PreferenceSpec,
    RewardModelSpec,
    SeedsSpec,
    TaskSpec,
    TuningSpec,
    displayable,
)

__all__ = [
    "BUDGET_KINDS",
    "CLAIM_ASPECTS",
    "CORE_VERSION_KEYS",
    "LECTURE_CLAIM",
    "LECTURE_SOURCE",
    "LOW_PRECISION_WEIGHTS",
    "MAX_LABEL_LENGTH",
    "MAX_LIMIT_SECONDS",
    "MAX_RUNS",
    "MAX_YAML_NODES",
    "NAME_PATTERN",
    "UNION_FORMS",
    "_SOURCE_HASHES",
    "AlgorithmSpec",
    "BudgetFloat",
    "BudgetInt",
    "BudgetSpec",
    "ClaimSpec",
    "ComparePair",
    "CompareSpec",
    "DivergenceSpec",
    "EvaluationSpec",
    "Float",
    "Int",
    "LimitsSpec",
    "LoRASpec",
    "PolicySpec",
    "PreferenceSpec",
    "RewardModelSpec",
    "RunSpec",
    "SeedsSpec",
    "Suite",
    "TaskSpec",
    "TuningSpec",
    "_sweep_points",
    "algorithm_seed",
    "budget_task",
    "check_placement",
    "check_suite",
    "code_identity",
    "compare_names",
    "core_versions",
    "count_runs",
    "count_trial_runs",
    "default_claims",
    "describe_versions",
    "displayable",
    "expand",
    "file_digest",
    "load_suite",
    "make_spec",
    "missing_lecture_algorithms",
    "run_preferences",
    "sections",
    "shown_label",
    "source_hash",
    "suite_warnings",
    "task_budgets",
    "task_units",
    "tuned_labels",
    "tuning_space",
]
