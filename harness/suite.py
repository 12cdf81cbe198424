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
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import itertools
import math
import re
import sys
import typing
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    confloat,
    conint,
    field_validator,
    model_validator,
)

from harness.config import build_config, check_space, config_dict, config_hash, rejected_key
from harness.errors import ConfigError, HarnessError
from harness.store import slug

BUDGET_KINDS = ("steps", "samples", "tokens", "flops", "seconds")
MAX_RUNS = 10_000
"""The most runs a suite may expand to without ``--allow-large``."""
MAX_YAML_NODES = 100_000
"""The most YAML nodes a suite file may hold once its aliases are expanded."""
MAX_LABEL_LENGTH = 100
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is not a number: pydantic's lax mode would take it as 1."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
    return value


def _finite(value: float) -> float:
    """``.inf`` and ``.nan`` are no setting a suite can mean (an endless budget, a limit)."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, not {value}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_finite)]
MAX_LIMIT_SECONDS = 30 * 24 * 3600.0
"""The longest a run's time limits may be set to (30 days)."""


def displayable(text: str, what: str, limit: int = MAX_LABEL_LENGTH) -> str:
    """``text`` if a report can show it (printable, non-empty, at most ``limit`` characters)."""
    bad = next((c for c in text if unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        raise ValueError(f"{what} holds the control character {bad!r}")
    if not text.strip():
        raise ValueError(f"{what} is empty")
    if len(text) > limit:
        raise ValueError(f"{what} has {len(text)} characters; at most {limit}")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PreferenceSpec(_Strict):
    """How the preference data D are made (once per task and seed, shared by all algorithms)."""

    num_pairs: Int = Field(1000, ge=1, description="Labelled pairs N.")
    preference_model: str = Field("btl", description="The annotator's preference model.")
    scale: Float = Field(1.0, gt=0, description="Its noise scale (τ or σ).")
    flip_rate: Float = Field(0.0, ge=0, le=1, description="Fraction of labels flipped.")
    temperature: Float = Field(1.0, gt=0, description="π_ref's sampling temperature.")
    file: str | None = Field(None, description="Load D from this file instead of simulating.",
                             examples=["data/pairs.parquet"])
    unpaired: bool = Field(
        False,
        description="Treat D as unpaired feedback: each pair gives one example, its chosen "
        "(desirable) or rejected (undesirable) response; algorithms that need pairs, and a "
        "fitted reward model, are then refused.",
    )


class RewardModelSpec(_Strict):
    """How r̂ is fitted from D (once per task and seed, shared by the online algorithms)."""

    kind: Literal["fitted", "gold"] = Field(
        "fitted", description="'fitted' from D; 'gold' gives the algorithms r* itself (an oracle)."
    )
    preference_model: str = Field("btl", description="The likelihood r̂ is fitted with.")
    scale: Float | None = Field(
        None, gt=0, description="That likelihood's scale (τ or σ): it fixes the units of r̂ "
        "(r̂ ≈ r*·scale/preferences.scale), not its ranking. Default: the annotator's "
        "preferences.scale when D is simulated, so that r̂ is in r*'s units; 1 for a "
        "preference file.", examples=[0.25])
    epochs: Int | None = Field(None, ge=1, description="Passes over D (default: 50 on tabular "
                               "tasks, 2 on language-model tasks).", examples=[3])
    learning_rate: Float | None = Field(None, gt=0, description="AdamW step size (default: 0.1 "
                                        "tabular, 1e-4 language model).", examples=[3e-4])
    batch_size: Int | None = Field(None, ge=1, description="Pairs per step (default: 512 "
                                   "tabular, 32 language model).", examples=[64])
    weight_decay: Float = Field(0.0, ge=0, description="AdamW weight decay.")
    holdout_fraction: Float = Field(0.1, gt=0, lt=1, description="Share of D held out to "
                                    "measure r̂'s accuracy.")


class LoRASpec(_Strict):
    """LoRA adapters through ``peft`` (see :mod:`harness.lora`): only they train, and π_ref is
    the same base model with them switched off."""

    r: Int = Field(8, ge=1, description="Rank of each adapter.")
    alpha: Float = Field(16.0, gt=0, description="Scale numerator: an update is (alpha/r)·BA.")
    dropout: Float = Field(0.0, description="Dropout on the adapters' input: 0 only.")
    target_modules: list[str] | None = Field(
        None, min_length=1, description="Last names of the linear layers to adapt (e.g. "
        "[q_proj, v_proj]); default: every linear layer but the output head.",
        examples=[["q_proj", "v_proj"]],
    )


    @field_validator("dropout")
    @classmethod
    def _no_dropout(cls, value: float) -> float:
        if value != 0:
            raise ValueError(
                f"{value:g} is not supported: dropout makes every training forward stochastic "
                f"while π_old and π_ref (the same model in eval mode) are not, so a ratio or a "
                f"reward margin differs from 1 or 0 by noise alone; use 0"
            )
        return value


class PolicySpec(_Strict):
    """How a neural policy is trained and held in memory (no effect on tabular tasks' runs:
    a suite that sets one of these with a tabular task is refused)."""

    lora: LoRASpec | None = Field(None, description="Train LoRA adapters instead of all weights.",
                                  examples=[{"r": 8, "alpha": 16}])
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping them."
    )
    offload_frozen: bool = Field(
        False, description="Keep the frozen π_ref and r̂ on the CPU, moved to the run's device "
        "for each call (see harness.offload); nothing changes on a CPU run.",
    )

    @property
    def is_default(self) -> bool:
        return self == PolicySpec()


class AlgorithmSpec(_Strict):
    """One algorithm of the comparison, with its settings (an entry of ``algorithms``)."""

    name: str = Field(description="A registered algorithm (rlhf-harness plugins lists them).",
                      examples=["dpo"])
    label: str | None = Field(None, description="How reports name it (default: its name); "
                              "two entries of one algorithm need distinct labels.",
                              examples=["dpo-beta0.4"])
    config: dict[str, Any] = Field(
        default_factory=dict, description="Its Config fields (rlhf-harness show NAME lists "
        "them, with their defaults and checks).", examples=[{"beta": 0.4,
                                                             "learning_rate": 0.05}])
    per_task: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Config fields for one task only, by task name (e.g. learning rates that "
        "suit a table of logits and a language model differently); they override 'config'.",
        examples=[{"tiny-lm": {"learning_rate": 1e-3}}],
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="Config fields to sweep: every combination runs.",
        examples=[{"learning_rate": [0.01, 0.05]}],
    )
    policy: PolicySpec | None = Field(
        None, description="This algorithm's policy section, if not the suite's (e.g. one LoRA "
        "variant beside full fine-tuning).", examples=[{"lora": {"r": 8}}],
    )

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep '{key}' has no values")
            seen: set[str] = set()
            for value in values:
                text = config_hash(value)
                if text in seen:
                    raise ValueError(f"sweep '{key}' lists {value!r} twice")
                seen.add(text)
        return v

    @field_validator("label")
    @classmethod
    def _showable(cls, v: str | None) -> str | None:
        return None if v is None else displayable(v, "the label")


BudgetInt = Annotated[conint(ge=1), BeforeValidator(_not_bool)]
BudgetFloat = Annotated[confloat(gt=0), BeforeValidator(_not_bool),
                        BeforeValidator(lambda v: _finite(v) if isinstance(v, float) else v)]
"""A positive budget: ``.inf`` and ``.nan`` are refused as not finite before the sign check."""


class BudgetSpec(_Strict):
    """One budget for every run: exactly one of these. A list of distinct values
    (``samples: [8192, 32768, 131072]``) makes each value its own set of runs, tuned on its own
    with the same trials (schedules and tuning depend on the budget; each run has one). The
    report then names the task with its budget (``bandit @ 8192 samples``), compares the
    configurations at each budget on its own, and names in a table of crossovers the budget
    from which one configuration is decided ahead of another."""

    steps: list[BudgetInt] | BudgetInt | None = Field(
        None, description="Algorithm steps.", examples=[200])
    samples: list[BudgetInt] | BudgetInt | None = Field(
        None, description="Responses sampled, or pairs trained on (offline).",
        examples=[50000, [8192, 32768, 131072]])
    tokens: list[BudgetInt] | BudgetInt | None = Field(
        None, description="Tokens generated plus tokens trained on.", examples=[2000000])
    flops: list[BudgetFloat] | BudgetFloat | None = Field(
        None, description="Estimated floating-point operations.", examples=[1e12])
    seconds: list[BudgetFloat] | BudgetFloat | None = Field(
        None, description="Wall seconds of training (evaluation excluded).", examples=[600])

    @field_validator(*BUDGET_KINDS)
    @classmethod
    def _distinct_budgets(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one budget (a number, or a list of distinct "
                                 "numbers)")
            twice = sorted({x for x in v if v.count(x) > 1})
            if twice:
                raise ValueError(f"budgets must be distinct ({', '.join(f'{x:g}' for x in twice)}"
                                 f" appears twice)")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        given = [k for k in BUDGET_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one budget among {', '.join(BUDGET_KINDS)} (got "
                f"{', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in BUDGET_KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[float]:
        """The budget's values, smallest first (one for a single budget)."""
        given = getattr(self, self.kind)
        return sorted(float(x) for x in (given if isinstance(given, list) else [given]))

    @property
    def several(self) -> bool:
        """Whether it lists more than one budget (each its own set of runs)."""
        return len(self.values) > 1

    @property
    def value(self) -> float:
        """The one budget (a :class:`ValueError` when it lists several: see :attr:`values`)."""
        values = self.values
        if len(values) != 1:
            raise ValueError(f"{self.kind}: {len(values)} budgets, not one")
        return values[0]


def budget_task(task: str, kind: str, value: float) -> str:
    """How a task at one of several budgets is named in a tuning's choices and in reports:
    ``bandit @ 8192 samples``."""
    return f"{task} @ {value:g} {kind}"


def task_budgets(suite: Suite, task: TaskSpec) -> list[tuple[str, TaskSpec]]:
    """``task`` once per budget (its own, else the suite's): ``(name, task with that one
    budget)``, the name :func:`budget_task`'s where there are several budgets, else the task's
    own name and the task as it is (so a single-budget suite's runs are unchanged)."""
    budget = task.budget or suite.budget
    if not budget.several:
        return [(task.name, task)]
    return [(budget_task(task.name, budget.kind, value),
             task.model_copy(update={"budget": BudgetSpec.model_validate(
                 {budget.kind: int(value) if budget.kind in ("steps", "samples", "tokens")
                  else value})}))
            for value in budget.values]


def task_units(suite: Suite) -> list[tuple[str, TaskSpec]]:
    """Every task of ``suite`` at each of its budgets (:func:`task_budgets`), in suite order."""
    return [unit for task in suite.tasks for unit in task_budgets(suite, task)]


class SeedsSpec(_Strict):
    """Task instances × training replicates.

    An *instance* seed fixes the task draw, the preference data and r̂ (shared by every
    algorithm); a *replicate* varies only the algorithm's own randomness on that instance.
    """

    instances: list[Int] = Field(min_length=1, description="Instance seeds (distinct).",
                                 examples=[[0, 1, 2, 3, 4]])
    replicates: Int = Field(1, ge=1, description="Training replicates per instance.")

    @field_validator("instances")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            twice = sorted({s for s in v if v.count(s) > 1})
            raise ValueError(f"instance seeds must be distinct ({', '.join(map(str, twice))} "
                             "repeated)")
        return v


def _check_seed_list(v: Any) -> Any:
    """A plain list of seeds must be distinct and not empty (a mapping checks itself)."""
    if isinstance(v, list) and len(set(v)) != len(v):
        raise ValueError("seeds must be distinct")
    if isinstance(v, list) and not v:
        raise ValueError("give at least one seed")
    return v


def _instances(seeds: list[int] | SeedsSpec) -> list[int]:
    return list(seeds) if isinstance(seeds, list) else list(seeds.instances)


def _replicates(seeds: list[int] | SeedsSpec) -> int:
    return 1 if isinstance(seeds, list) else seeds.replicates


class TaskSpec(_Strict):
    """One task of the suite (an entry of ``tasks``)."""

    name: str = Field(description="A registered task (rlhf-harness plugins lists them).",
                      examples=["tiny-lm"])
    params: dict[str, Any] = Field(default_factory=dict, description="The task's Params "
                                   "(rlhf-harness show TASK lists them).",
                                   examples=[{"num_prompts": 8, "num_arms": 16}])
    budget: BudgetSpec | None = Field(
        None, description="This task's budget, if not the suite's (the same for all "
        "algorithms).", examples=[{"steps": 100}],
    )
    seeds: list[Int] | SeedsSpec | None = Field(
        None, union_mode="left_to_right",
        description="This task's instance seeds (and replicates), if not the suite's: a cheap "
        "task can afford more instances than an expensive one.",
        examples=[{"instances": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "replicates": 2}])

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int] | SeedsSpec | None) -> list[int] | SeedsSpec | None:
        return _check_seed_list(v)


class EvaluationSpec(_Strict):
    """How every run is evaluated (the same for all algorithms)."""

    every: Int = Field(10, ge=1, description="Evaluate every k steps (and at the end).")
    evaluators: list[str] = Field(
        default_factory=lambda: [
            "gold_reward", "proxy_reward", "kl_ref", "win_rate_ref", "regret", "entropy",
            "response_length",
        ],
        description="Registered evaluators to run.",
    )
    samples_per_prompt: Int = Field(4, ge=1, description="Policy samples per eval prompt.")
    beta: Float = Field(0.1, gt=0, description="β of the objective J_β used for regret "
                        "(and handed to Algorithm.fixed_point as ExactProblem.beta).")


class LimitsSpec(_Strict):
    """Per-run limits: a run beyond one ends ``failed`` with the reason ``limit: ...``.

    They guard a suite against a plugin that hangs or never spends its budget. ``seconds`` and
    ``stall_seconds`` are kept by the suite's process, which runs each run in a child process
    and stops the child when it is past one (a hung step, native code included); the run's
    own code cannot switch them off. ``steps`` and ``stall_steps`` are checked between steps.
    """

    seconds: Float = Field(12 * 3600.0, ge=0.1, le=MAX_LIMIT_SECONDS,
                           description="Wall seconds per run.")
    stall_seconds: Float = Field(
        600.0, ge=0.1, le=MAX_LIMIT_SECONDS,
        description="Wall seconds a run may go without finishing a step (its first step "
        "counts from its start): a hung plugin ends in minutes.",
    )
    steps: Int = Field(1_000_000, ge=1, description="Algorithm steps per run.")
    stall_steps: Int = Field(
        1000, ge=1, description="Steps in a row without progress in the budget's unit."
    )


CLAIM_ASPECTS = ("stability", "reward", "computation")
LECTURE_CLAIM = ("ppo", "grpo", "dpo")
LECTURE_SOURCE = "CMU 10-734, RLHF lecture"


class ClaimSpec(_Strict):
    """A claimed ordering: along ``order``, ``aspect`` increases (each next one better).

    More stability means a smaller spread across replicates, fewer divergences and smaller
    drawdowns; less computation means fewer samples and FLOPs to reach half of a fixed target
    (half the gap to π*_β on exact tasks, half a fixed gold gain elsewhere), or with
    ``computation: per_step`` fewer CPU seconds and FLOPs at the fixed budget; more reward
    means a larger per-instance normalised score. Bytes of model state are a property of the
    design, printed in the report, not judged.
    """

    aspect: Literal["stability", "reward", "computation"] = Field(
        description="What the order claims to increase or decrease.", examples=["stability"])
    order: list[str] = Field(min_length=2, description="Labels (or algorithm names), in order.",
                             examples=[["ppo", "grpo", "dpo"]])
    trend: Literal["increases", "decreases"] = Field(
        "increases", description="Whether the aspect increases or decreases along the order.")
    source: str = Field("", description="Where the claim comes from (shown in the report).",
                        examples=["Ouyang et al. 2022"])
    computation: Literal["cost_to_reach", "per_step"] = Field(
        "cost_to_reach", description="For aspect computation: judge the samples and FLOPs to "
        "reach half the target (cost_to_reach) or the CPU seconds and FLOPs of a run at its "
        "fixed budget (per_step). Only with aspect computation.", examples=["per_step"])

    @model_validator(mode="after")
    def _computation_only(self) -> ClaimSpec:
        if "computation" in self.model_fields_set and self.aspect != "computation":
            raise ValueError(f"'computation' applies to aspect computation only (this claim's "
                             f"aspect is {self.aspect})")
        return self


def _pair(value: list[str]) -> list[str]:
    """A primary comparison: two different configurations."""
    if len(value) != 2:
        raise ValueError(f"a pair [a, b] of two configurations, not {len(value)}")
    if value[0] == value[1]:
        raise ValueError(f"a pair of two different configurations, not {value[0]!r} twice")
    return value


ComparePair = Annotated[list[str], AfterValidator(_pair)]
"""One primary comparison of ``compare``: ``[a, b]``, labels or algorithm names."""


class CompareSpec(_Strict):
    """The primary comparisons as each configuration against one baseline (the other form of
    ``compare`` is a list of pairs, ``compare: [[grpo, dpo], [ppo, dpo]]``).

    A primary comparison is on the normalised score (reward), on every task. The claims' steps
    are primary too, on their aspect's quantities; every other comparison of the report is
    exploratory, Holm-adjusted in a family of its own. Without ``compare``, the primary ones are
    the claims' steps and, per task, the best configuration against the runner-up by mean
    score.

    A name in either form is a label, an algorithm name (its best configuration on a task, as
    in a claim) or a sweep point as reports show it (``dpo[beta=0.1]``); a label with a sweep
    stands for its best sweep point on the task.
    """

    baseline: str = Field(description="The label (or algorithm name: its best configuration "
                          "on a task) every other configuration is compared with.",
                          examples=["dpo"])


class DivergenceSpec(_Strict):
    """When a run counts as diverged (besides NaN or infinite metrics, which always do)."""

    max_kl: Float | None = Field(
        None, gt=0, description="A run whose evaluated KL(π‖π_ref) exceeds this is 'diverged'.",
        examples=[20.0],
    )


class TuningSpec(_Strict):
    """Equal tuning effort (see :mod:`harness.tuning`): the same number of trials for every
    tuned algorithm, on tuning instances distinct from the suite's seeds."""

    trials: Int = Field(ge=1, description="Trials per algorithm and task (the same for all).",
                        examples=[16])
    trials_per_task: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Trials on a task, if not 'trials' (e.g. fewer where a run is costly); "
        "still the same for every algorithm.", examples=[{"tiny-lm": 6}],
    )
    sampler: Literal["random", "tpe"] = Field(
        "random", description="Optuna's sampler; 'random' keeps the expected-maximum curve exact."
    )
    seed: Int = Field(0, description="Seed of the sampler (trial i uses seed + i).")
    objective: Literal["final_gold", "gold_at_kl", "j_beta"] = Field(
        "final_gold", description="What a trial maximises (see harness.tuning)."
    )
    kl_budget: Float | None = Field(None, gt=0, validate_default=True,
                                    description="The KL budget of 'gold_at_kl'.", examples=[2.0])
    instances: list[Int] = Field(min_length=1, description="Tuning instances (seeds), distinct "
                                 "from the suite's seeds; with repeats R, split in order into R "
                                 "groups of equal size, one per search.", examples=[[100, 101]])
    repeats: Int = Field(
        1, ge=1, description="Independent searches per algorithm and task, each on its own "
        "group of the tuning instances (their number must be a multiple of R); every "
        "search's choice runs on the suite's instances, and an algorithm's value on an "
        "instance is the mean over its R choices (see harness.tuning); R ≥ 3 for the report's "
        "intervals with tuning luck to keep their 95%.", examples=[3],
    )
    algorithms: list[str] | None = Field(
        None, description="Labels to tune (default: every algorithm of the suite).",
        examples=[["ppo", "dpo"]],
    )
    space: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Search space per label, {field: {low, high, log, int} | {choices}}; "
        "replaces the plugin's own (Algorithm.tuning_space).",
        examples=[{"dpo": {"beta": {"low": 0.05, "high": 1.0, "log": True}}}],
    )

    def trials_for(self, task: str) -> int:
        """The number of trials of every algorithm on ``task``."""
        return self.trials_per_task.get(task, self.trials)

    def instance_groups(self) -> list[list[int]]:
        """The tuning instances of each repeat: ``instances`` split in order into ``repeats``
        groups of equal size (repeat r gets the r-th)."""
        size = len(self.instances) // self.repeats
        return [list(self.instances[r * size:(r + 1) * size]) for r in range(self.repeats)]

    def identity(self) -> dict[str, Any]:
        """The section as a study's identity hashes it: without ``repeats`` when it is 1, so
        that a suite without repeats keeps its studies, and so its trial runs' ids."""
        out = self.model_dump()
        if self.repeats == 1:
            del out["repeats"]
        return out

    @field_validator("repeats")
    @classmethod
    def _instances_split(cls, v: int, info: ValidationInfo) -> int:
        instances = info.data.get("instances")
        if instances is not None and len(instances) % v:
            raise ValueError(f"{v} repeats need a multiple of {v} tuning instances (one group "
                             f"per repeat), and tuning.instances has {len(instances)}")
        return v

    @field_validator("instances")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("tuning instances must be distinct")
        return v

    @field_validator("kl_budget")
    @classmethod
    def _budget_for_gold_at_kl(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None and info.data.get("objective") == "gold_at_kl":
            raise ValueError("objective gold_at_kl needs kl_budget")
        return v


class Suite(_Strict):
    """A suite file: its top-level keys."""

    name: str = Field(description="Names the run store (runs/NAME) and the report: a copied "
                      "suite needs a name of its own, or it shares the original's store.",
                      examples=["my-comparison"])
    description: str = Field("", description="Free text, shown in the report.",
                             examples=["PPO vs DPO on the bandit"])
    tasks: list[TaskSpec] = Field(min_length=1, description="The tasks (at least one).",
                                  examples=[[{"name": "bandit"}]])
    preferences: PreferenceSpec = Field(default_factory=PreferenceSpec,
                                        description="How the preference data D are made.")
    reward_model: RewardModelSpec = Field(default_factory=RewardModelSpec,
                                          description="How r̂ is fitted from D.")
    algorithms: list[AlgorithmSpec] = Field(min_length=1, description="The algorithms "
                                            "compared (at least one).",
                                            examples=[[{"name": "dpo"}, {"name": "ppo"}]])
    seeds: list[Int] | SeedsSpec = Field(
        union_mode="left_to_right",
        description="Instance seeds (one replicate each), or {instances: [...], replicates: n}; "
        "a task's own seeds go in its entry of tasks.",
        examples=[[0, 1, 2]])
    claims: list[ClaimSpec] | None = Field(
        None, description="Claimed orderings to test; [] for none. Default: the lecture's "
        "(from PPO to GRPO to DPO, stability increases and computation decreases), when the "
        "suite has all three algorithms.",
        examples=[[{"aspect": "reward", "order": ["dpo", "ppo"]}]])
    compare: list[ComparePair] | CompareSpec | None = Field(
        None, union_mode="left_to_right",
        description="The primary comparisons, on the normalised score: pairs of labels (or "
        "algorithm names) [[a, b], ...], or {baseline: LABEL} for every configuration against "
        "it. They and the claims' steps are Holm-adjusted as one family; every other "
        "comparison is exploratory, in a family of its own. Default: the claims' steps and, per "
        "task, the best configuration against the runner-up by mean score.",
        examples=[[["grpo", "dpo"], ["ppo", "dpo"]]])
    budget: BudgetSpec = Field(description="One budget for every run (a task's own budget "
                               "goes in its entry of tasks).", examples=[{"samples": 50000}])
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec,
                                       description="How every run is evaluated.")
    divergence: DivergenceSpec = Field(default_factory=DivergenceSpec,
                                       description="When a run counts as diverged.")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="Per-run limits.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where runs train: auto takes a GPU when there is one.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Arithmetic of the neural policies (bf16 needs a CUDA device).")
    gpus_per_run: Float = Field(0.0, ge=0, description="GPUs a Ray task requests per run.")
    deterministic: bool = Field(
        False,
        description="Deterministic kernels in every run (torch.use_deterministic_algorithms, "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8): on a GPU the same seed then gives the same results, "
        "more slowly; without it, GPU reductions may differ by an ulp from run to run, which "
        "changes sampled tokens.",
    )
    tuning: TuningSpec | None = Field(None, description="Equal tuning effort before comparing.",
                                      examples=[{"trials": 16, "instances": [100, 101]}])
    policy: PolicySpec = Field(default_factory=PolicySpec,
                               description="LoRA, activation checkpointing, offloading.")

    # Field validators (not a model validator), so that an error names the key and its line;
    # ``device`` is declared before both, so ``info.data`` holds it when it is valid.
    @field_validator("precision")
    @classmethod
    def _bf16_needs_cuda(cls, v: str, info: ValidationInfo) -> str:
        if v == "bf16" and info.data.get("device") == "cpu":
            raise ValueError("precision bf16 needs a CUDA device; use fp32 with device cpu")
        return v

    @field_validator("gpus_per_run")
    @classmethod
    def _no_gpus_on_cpu(cls, v: float, info: ValidationInfo) -> float:
        if v > 0 and info.data.get("device") == "cpu":
            raise ValueError("gpus_per_run > 0 with device cpu: a CPU run needs no GPU")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int] | SeedsSpec) -> list[int] | SeedsSpec:
        return _check_seed_list(v)

    @property
    def instances(self) -> list[int]:
        """The suite's instance seeds (a task with its own ``seeds`` uses those instead:
        :meth:`task_instances`)."""
        return _instances(self.seeds)

    @property
    def replicates(self) -> int:
        """The suite's training replicates per instance (1 for a plain list of seeds; a task
        with its own ``seeds`` uses those instead: :meth:`task_replicates`)."""
        return _replicates(self.seeds)

    def task_instances(self, task: TaskSpec) -> list[int]:
        """The instance seeds of ``task``: its own, else the suite's."""
        return _instances(task.seeds if task.seeds is not None else self.seeds)

    def task_replicates(self, task: TaskSpec) -> int:
        """The training replicates per instance of ``task``: its own, else the suite's."""
        return _replicates(task.seeds if task.seeds is not None else self.seeds)

    @property
    def all_instances(self) -> list[int]:
        """Every instance seed some task runs on, in first-seen order."""
        return list(dict.fromkeys(s for t in self.tasks for s in self.task_instances(t)))

    def resolved_claims(self) -> list[ClaimSpec]:
        """The suite's claims, or when it lists none the lecture's two if it has their
        algorithms (:func:`default_claims`)."""
        if self.claims is not None:
            return list(self.claims)
        return default_claims([a.name for a in self.algorithms])

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.fullmatch(v):
            raise ValueError(
                "a suite name names its store folder: 1 to 100 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _reward_model_in_gold_units(self) -> Suite:
        """r̂'s scale defaults to the annotator's (see RewardModelSpec.scale)."""
        if self.reward_model.scale is None:
            scale = 1.0 if self.preferences.file is not None else self.preferences.scale
            # frozen models: the resolved copy replaces the field before anyone reads it
            object.__setattr__(self, "reward_model",
                               self.reward_model.model_copy(update={"scale": scale}))
        return self


def default_claims(algorithms: Iterable[str] | None = None) -> list[ClaimSpec]:
    """The lecture's claim: from PPO to GRPO to DPO, stability increases and computation
    decreases (algorithm names; each represented by its best configuration on a task).

    :param algorithms: the names of a suite's algorithms: the claims apply only to a suite that
        has all three (:func:`missing_lecture_algorithms`), else there are none; None: always.
    """
    if algorithms is not None and missing_lecture_algorithms(algorithms):
        return []
    return [
        ClaimSpec(aspect="stability", order=list(LECTURE_CLAIM), trend="increases",
                  source=LECTURE_SOURCE),
        ClaimSpec(aspect="computation", order=list(LECTURE_CLAIM), trend="decreases",
                  source=LECTURE_SOURCE),
    ]


def missing_lecture_algorithms(algorithms: Iterable[str]) -> list[str]:
    """The algorithms of the lecture's claim (:data:`LECTURE_CLAIM`) that ``algorithms`` lacks."""
    have = set(algorithms)
    return [name for name in LECTURE_CLAIM if name not in have]


def algorithm_seed(seed: int, replicate: int) -> int:
    """The seed of an algorithm's own randomness for replicate ``replicate`` of instance
    ``seed``: the instance seed itself for replicate 0 (a plain list of seeds behaves as it
    always has), else a hash of both (so replicates of different instances never share one)."""
    if replicate == 0:
        return int(seed)
    import hashlib

    digest = hashlib.sha256(f"rlhf-harness/replicate/{seed}/{replicate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a suite, fully resolved: what the runner needs, and what its id hashes."""

    suite: str
    task: str
    task_params: dict[str, Any]
    algorithm: str
    label: str
    algorithm_config: dict[str, Any]
    sweep_point: dict[str, Any]
    seed: int
    preferences: dict[str, Any]
    reward_model: dict[str, Any]
    budget: dict[str, float]
    evaluation: dict[str, Any]
    divergence: dict[str, Any]
    device: str
    precision: str
    gpus: float
    replicate: int = 0
    """0-based; ``seed`` is the instance seed (task draw, preference data, r̂), and the
    algorithm's own randomness is seeded with :func:`algorithm_seed` (seed, replicate)."""
    code: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The plugins whose code runs: distribution, version and a hash of the module source."""
    tuning: dict[str, Any] | None = None
    """For a tuning trial's run ``{"phase": "trial", "label", "trial", "params", "study"}``; for a
    comparison run of a tuned algorithm ``{"phase": "chosen", "label", "trial", "params",
    "value", "trials", "objective"}``; None otherwise. With ``tuning.repeats`` > 1 both also
    hold the search's ``"repeat"``."""
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Per-run limits (:class:`LimitsSpec`); they guard the suite and are not in the run id."""
    policy: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The suite's ``policy`` section (:class:`PolicySpec`) when it is not the default, else
    empty (and then not in the run id, so runs without one keep their ids)."""
    deterministic: bool = False
    """Deterministic kernels (the suite's ``deterministic``): they change the numbers, so they
    are in the run id."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def identity(self) -> dict[str, Any]:
        """What the run id hashes: everything that shapes the result (not the limits)."""
        out = self.as_dict()
        del out["limits"]
        if not out["policy"]:
            del out["policy"]
        return out

    @property
    def run_id(self) -> str:
        """``<label>-<task>-s<seed>[-r<replicate>]-<hash>``: a folder name made of slugs of the
        label and task (never a path: ``/`` and ``..`` are replaced), the instance seed, the
        replicate after the first, and a hash unique to :attr:`identity`."""
        rep = f"-r{self.replicate}" if self.replicate else ""
        return (f"{slug(self.label)}-{slug(self.task, 24)}-s{self.seed}{rep}-"
                f"{config_hash(self.identity, 10)}")

    @property
    def shared_key(self) -> dict[str, Any]:
        """What the preference data and the reward model depend on (shared across algorithms)."""
        return {
            "task": self.task,
            "task_params": self.task_params,
            "seed": self.seed,
            "preferences": self.preferences,
            "reward_model": self.reward_model,
            "device": self.device,
        }


# --- loading and validating ----------------------------------------------------------------------


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file (structure only; see :func:`check_suite` for plugins)."""
    try:
        return _load_suite(Path(path))
    except RecursionError:  # the YAML reader and the checks recurse once per level
        raise ConfigError(f"{path}: nested too deeply to read (a suite is a few levels "
                          f"deep)") from None


def _load_suite(path: Path) -> Suite:
    if not path.exists():
        raise ConfigError(f"{path}: suite file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a suite is YAML text"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_nodes(root, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark and mark and context_mark.line != mark.line:
            source = (text.splitlines()[context_mark.line:] or [""])[0].strip()[:60]
            problem += f" ({context} started at line {context_mark.line + 1}: {source!r})"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    lines = _line_index(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:{lines.get((), 1)}: (top level): a suite file is a mapping (name, tasks, "
            f"algorithms, ...), not {'empty' if data is None else type(data).__name__}"
        )
    _check_strings(data, (), path, lines)
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines, data)) from None


def _check_nodes(root: yaml.Node | None, path: Path) -> None:
    """Refuse a document whose aliases expand beyond :data:`MAX_YAML_NODES` nodes (an alias
    bomb), and a mapping that repeats a key (YAML would keep the last one silently)."""
    if root is None:
        return
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:  # nodes once aliases are expanded; each node sized once
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a node met again while being sized counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[id(node)] = total
        return total

    def duplicates(node: yaml.Node, visited: set[int]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise ConfigError(
                            f"{path}:{line}: duplicate key '{key.value[:60]}' (first at line "
                            f"{first[key.value]}); a key may appear once in a mapping"
                        )
                    first[key.value] = line
                duplicates(value, visited)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                duplicates(item, visited)

    total = size(root)
    if total > MAX_YAML_NODES:
        raise ConfigError(
            f"{path}: the YAML expands to {total:,} nodes once its aliases are expanded; at most "
            f"{MAX_YAML_NODES:,} (is an alias repeated inside another?)"
        )
    duplicates(root, set())


def _check_strings(value: Any, keys: tuple[Any, ...], path: Path, lines: dict) -> None:
    """No NUL (or other control character but tab and newline) in any key or string."""

    def bad(text: str) -> str | None:
        return next((c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"),
                    None)

    def fail(char: str, at: tuple[Any, ...]) -> None:
        line = _nearest_line(lines, at)
        where = f"{path}:{line}" if line else str(path)
        key = ".".join(str(k)[:40] for k in at) or "(top level)"
        raise ConfigError(f"{where}: {key}: holds the control character {char!r}")

    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (c := bad(k)):
                fail(c, (*keys, k.replace(c, "?")))
            _check_strings(v, (*keys, k), path, lines)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, (*keys, i), path, lines)
    elif isinstance(value, str) and (c := bad(value)):
        fail(c, keys)


def _check_data_needs(suite: Suite, i: int, alg: AlgorithmSpec, cls: Any, where: Any) -> None:
    """Refuse, in one line, an algorithm whose ``needs`` the suite's data cannot feed
    (:data:`harness.algorithm.NEEDS`): pairs from data marked unpaired, or a label-noise rate
    the suite does not know (data from a file) or that is not below 1/2."""
    prefs = suite.preferences
    if "preferences" in cls.needs and prefs.unpaired:
        raise ConfigError(
            f"{where('preferences', 'unpaired')}: preferences.unpaired: algorithms.{i} "
            f"('{alg.name}') needs preference pairs, and the suite marks its data unpaired "
            f"(only algorithms that need 'unpaired' examples, e.g. kto, can learn from them)"
        )
    if "label_noise" not in cls.needs:
        return
    key = getattr(cls, "label_noise_key", None)
    points = [{**alg.config, **alg.per_task.get(t.name, {}), **p}
              for t in suite.tasks for p in _sweep_points(alg.sweep)]
    for values in points:
        own = values.get(key) if key else None
        if own is not None:
            epsilon, at = own, ("algorithms", i, "config", key)
            if key in alg.sweep:
                at = ("algorithms", i, "sweep", key)
        elif prefs.file is not None:
            hint = f"; set config.{key}" if key else ""
            raise ConfigError(
                f"{where('algorithms', i, 'name')}: algorithms.{i}.name: '{alg.name}' needs the "
                f"rate ε at which the labels were flipped, and preferences.file's is unknown "
                f"(only simulated data have a known preferences.flip_rate){hint}"
            )
        else:
            epsilon, at = prefs.flip_rate, ("preferences", "flip_rate")
        if not epsilon < 0.5:
            raise ConfigError(
                f"{where(*at)}: {'.'.join(map(str, at))}: '{alg.name}' needs a label-noise rate "
                f"ε below 0.5, got {epsilon} (at 0.5 the labels carry no information)"
            )


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


def check_suite(
    suite: Suite, path: str | Path, host: Any, *, allow_large: bool = False
) -> list[RunSpec]:
    """Check plugin names and configs against the plugin host; return the expanded runs.

    A suite of more than :data:`MAX_RUNS` runs is refused unless ``allow_large``.
    """
    try:
        lines = _line_index(Path(path).read_text())
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        lines = {}

    def where(*keys: Any) -> str:
        line = _nearest_line(lines, keys)
        return f"{path}:{line}" if line else str(path)

    runs = count_runs(suite)  # before checking every sweep point: a huge grid is refused at once
    if runs > MAX_RUNS and not allow_large:
        raise ConfigError(
            f"{path}: the suite expands to {runs:,} runs (tasks × instances × replicates × "
            "algorithm configs); "
            f"more than {MAX_RUNS:,} needs --allow-large"
        )

    def known(kind: str, name: str, *keys: Any) -> Any:
        try:
            return host.get(kind, name)
        except HarnessError as exc:
            raise ConfigError(f"{where(*keys)}: {'.'.join(map(str, keys))}: {exc}") from None

    known("preference_model", suite.preferences.preference_model, "preferences", "preference_model")
    known("preference_model", suite.reward_model.preference_model, "reward_model",
          "preference_model")
    for j, name in enumerate(suite.evaluation.evaluators):
        known("evaluator", name, "evaluation", "evaluators", j)
    # Tasks before algorithms: a misspelt task is named where it is misspelt, not where an
    # algorithm's per_task names it correctly.
    for i, task in enumerate(suite.tasks):
        cls = known("task", task.name, "tasks", i, "name")
        key = rejected_key(cls.Params, task.params)
        build_config(cls.Params, task.params,
                     where=f"{where('tasks', i, 'params', key)}: tasks.{i}.params ({task.name})")
    task_names = [t.name for t in suite.tasks]
    labels: set[str] = set()
    classes = []
    for i, alg in enumerate(suite.algorithms):
        cls = known("algorithm", alg.name, "algorithms", i, "name")
        classes.append(cls)
        label = alg.label or alg.name
        if label in labels:
            raise ConfigError(
                f"{where('algorithms', i)}: algorithms.{i}: two algorithms are labelled "
                f"'{label}'; give each a distinct 'label'"
            )
        labels.add(label)
        for key in alg.sweep:
            if key in alg.config:
                raise ConfigError(
                    f"{where('algorithms', i, 'sweep', key)}: algorithms.{i}.sweep.{key}: also "
                    f"set in config; a field is either fixed or swept"
                )
        for point in _sweep_points(alg.sweep):
            values = {**alg.config, **point}
            key = rejected_key(cls.Config, values)
            part = "sweep" if key in point else "config"
            at = f"algorithms.{i}.{part}" + (f".{key}" if key else "")
            build_config(cls.Config, values,
                         where=f"{where('algorithms', i, part, key)}: {at} ({alg.name})")
        for task_name, overrides in alg.per_task.items():
            if task_name not in task_names:
                hint = difflib.get_close_matches(str(task_name), task_names, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    f"{where('algorithms', i, 'per_task', task_name)}: algorithms.{i}.per_task."
                    f"{task_name}: no task '{task_name}' in this suite{suggestion}; tasks: "
                    f"{', '.join(task_names)}"
                )
            for point in _sweep_points(alg.sweep):
                values = {**alg.config, **overrides, **point}
                key = rejected_key(cls.Config, values)
                if key in point:
                    keys: tuple[Any, ...] = ("sweep", key)
                elif key in overrides:
                    keys = ("per_task", task_name, key)
                else:
                    keys = ("config", key)
                at = f"algorithms.{i}." + ".".join(str(k) for k in keys if k is not None)
                build_config(cls.Config, values,
                             where=f"{where('algorithms', i, *keys)}: {at} ({alg.name}, task "
                             f"{task_name})")
        _check_data_needs(suite, i, alg, cls, where)
    needs_reward = any("reward" in c.needs for c in classes) or (
        "proxy_reward" in suite.evaluation.evaluators)
    if suite.preferences.unpaired and suite.reward_model.kind == "fitted" and needs_reward:
        raise ConfigError(
            f"{where('reward_model', 'kind')}: reward_model.kind: a fitted reward model needs "
            f"preference pairs, but preferences.unpaired is true (line "
            f"{_nearest_line(lines, ('preferences', 'unpaired')) or '?'}); use kind: gold or "
            f"paired data"
        )
    _check_shown_labels(suite, where)
    _check_policy(suite, host, where)
    if suite.tuning is not None:
        _check_tuning(suite, host, where)
    names = {alg.name for alg in suite.algorithms}
    labels_known = {alg.label or alg.name for alg in suite.algorithms}
    for i, claim in enumerate(suite.claims or []):
        for j, label in enumerate(claim.order):
            if label not in labels_known and label not in names:
                raise ConfigError(
                    f"{where('claims', i, 'order', j)}: claims.{i}.order.{j}: no algorithm "
                    f"labelled or named '{label}' in this suite (labels: "
                    f"{', '.join(sorted(labels_known))})"
                )
        if len(set(claim.order)) != len(claim.order):
            raise ConfigError(f"{where('claims', i, 'order')}: claims.{i}.order: a "
                              "configuration appears twice")
    _check_compare(suite, where)
    if suite.preferences.file is not None:
        try:
            file_digest(suite.preferences.file)
        except OSError as exc:
            raise ConfigError(f"{where('preferences', 'file')}: preferences.file: cannot read "
                              f"{suite.preferences.file!r} ({exc.strerror or exc})") from None
    return expand(suite, host, allow_large=allow_large)


def compare_names(suite: Suite) -> list[str]:
    """What an entry of ``compare`` may name: a label, an algorithm name, or a sweep point's
    configuration as reports show it (``dpo[beta=0.1]``)."""
    names: dict[str, None] = {}
    for alg in suite.algorithms:
        names[alg.label or alg.name] = None
        names[alg.name] = None
        for point in _sweep_points(alg.sweep):
            names[shown_label(alg.label or alg.name, point)] = None
    return list(names)


def _check_compare(suite: Suite, where: Callable[..., str]) -> None:
    """Every configuration ``compare`` names is one of the suite's (:func:`compare_names`)."""
    if suite.compare is None:
        return
    known = compare_names(suite)
    labels = ", ".join(sorted({a.label or a.name for a in suite.algorithms}))
    if isinstance(suite.compare, CompareSpec):
        named = [(("compare", "baseline"), suite.compare.baseline)]
    else:
        named = [(("compare", i, j), name) for i, pair in enumerate(suite.compare)
                 for j, name in enumerate(pair)]
    for keys, name in named:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"{where(*keys)}: {'.'.join(map(str, keys))}: no algorithm labelled or named "
                f"'{name}' in this suite{suggestion} (labels: {labels})"
            )


LOW_PRECISION_WEIGHTS = ("bfloat16", "float16")
"""``hf`` weight dtypes without float32 master weights: an optimizer updates them in place."""


def check_placement(
    suite: Suite, path: str | Path, host: Any, *, executor: str = "local"
) -> list[str]:
    """Check what the suite asks of the devices, for ``executor``; return warnings (one line
    each: ``file:line: warning: key: ...``).

    Errors (:class:`ConfigError`, one line: file, line, key) for what cannot be honoured:

    - ``device: cuda`` under the ``ray`` executor with ``gpus_per_run: 0``: Ray hides the GPUs
      from a task that requests none, so every run would fail;
    - ``precision: bf16`` where this host would run it without native bf16: ``device: auto`` on
      a host without CUDA (the runs would be on the CPU), or a CUDA device older than compute
      capability 8.0. (Under Ray, and for ``device: cuda`` on a host without a GPU, the device
      is the run's machine's: the run checks it.)

    Warnings for what works but is likely not meant:

    - ``device: auto`` under Ray with ``gpus_per_run: 0``: every run on the CPU;
    - an ``hf`` task with ``bfloat16``/``float16`` weights trained with Adam at a learning rate
      below 1e-4: an update smaller than half a bf16 ulp of a weight (2⁻⁹·|w|) rounds away, so
      every weight larger than lr·2⁹ in magnitude never changes.
    """
    import torch

    path = Path(path)
    lines = _line_index(path.read_text()) if path.exists() else {}

    def where(*keys: Any) -> str:
        line = _nearest_line(lines, keys)
        return f"{path}:{line}" if line else str(path)

    def at(key: str) -> tuple[str, str]:  # the key's own line if the file sets it
        return (where(key), key) if (key,) in lines else (where("device"), key)

    warnings: list[str] = []
    if executor == "ray" and suite.gpus_per_run == 0 and suite.device != "cpu":
        place, key = at("gpus_per_run")
        if suite.device == "cuda":
            raise ConfigError(
                f"{place}: {key}: device cuda under the ray executor needs gpus_per_run > 0 "
                f"(Ray hides the GPUs from a run that requests none)"
            )
        warnings.append(
            f"{place}: warning: {key}: 0 with device auto under the ray executor: Ray hides the "
            f"GPUs from a run that requests none, so every run is on the CPU"
        )
    if executor == "ray" and suite.gpus_per_run % 1:
        place, key = at("gpus_per_run")
        warnings.append(
            f"{place}: warning: {key}: {suite.gpus_per_run:g} is a fraction of a GPU: Ray "
            f"packs runs onto one GPU, where they share its memory (each run's memory plan is "
            f"its own) and its time, so their timings are not comparable"
        )
    if suite.precision == "bf16" and executor != "ray":
        cuda = torch.cuda.is_available()
        if suite.device == "auto" and not cuda:
            raise ConfigError(
                f"{where('precision')}: precision: bf16 with device auto, on a host without a "
                f"CUDA device: the runs would be on the CPU; use precision fp32, or a GPU host"
            )
        if cuda and suite.device != "cpu" and not torch.cuda.is_bf16_supported(
                including_emulation=False):
            raise ConfigError(
                f"{where('precision')}: precision: bf16, but this host's CUDA device "
                f"({torch.cuda.get_device_name()}) has no native bf16 arithmetic (compute "
                f"capability 8.0 or later); use precision fp32"
            )
    for i, task in enumerate(suite.tasks):
        dtype = task.params.get("dtype")
        if task.name != "hf" or dtype not in LOW_PRECISION_WEIGHTS:
            continue
        for j, alg in enumerate(suite.algorithms):
            cls = host.algorithm(alg.name)
            # With LoRA the policy trains float32 adapters (peft keeps them in float32 over a
            # low-precision base): only a full-weight critic trains weights of the base's dtype.
            critic = bool(getattr(cls, "trains_critic", False))
            policy = alg.policy if alg.policy is not None else suite.policy
            lora = policy is not None and policy.lora is not None
            if lora and not critic:
                continue
            trained = "a critic of" if lora else "weights trained by"
            rates = []
            for point in _sweep_points(alg.sweep):
                values = {**alg.config, **alg.per_task.get(task.name, {}), **point}
                config = config_dict(build_config(cls.Config, values))
                optimizer = str(config.get("optimizer", "adam"))
                rate = config.get("learning_rate")
                if isinstance(rate, int | float) and 0 < rate < 1e-4 and optimizer.startswith(
                        "adam"):
                    rates.append(float(rate))
            if rates:
                warnings.append(
                    f"{where('tasks', i, 'params', 'dtype')}: warning: tasks.{i}.params.dtype: "
                    f"{dtype} "
                    f"{trained} algorithms.{j} ({alg.name}) with Adam at learning_rate "
                    f"{min(rates):g}: an update below half an ulp (2^-9·|w|) rounds away, so no "
                    f"weight larger than {min(rates) * 2**9:.2g} in magnitude ever changes; "
                    f"load float32 weights and set precision: bf16 instead"
                )
    return warnings


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
    if count_runs(suite) > MAX_RUNS and not allow_large:
        raise ConfigError(f"suite '{suite.name}': more than {MAX_RUNS:,} runs need allow_large")
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


def _check_shown_labels(suite: Suite, where: Callable[..., str]) -> None:
    """Refuse two configurations that reports would show, and so count, as one: a label that
    reads like another algorithm's sweep point (``x[beta=0.1]``), or two sweep values that
    print alike (``0.1`` and ``"0.1"``)."""
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, alg in enumerate(suite.algorithms):
        for point in _sweep_points(alg.sweep):
            name = shown_label(alg.label or alg.name, point)
            if name in seen:
                j = seen[name][0]
                other = f"algorithms.{j}" if j != i else "another of its sweep points"
                raise ConfigError(
                    f"{where('algorithms', i)}: algorithms.{i}: a configuration shown as "
                    f"{name!r} is also {other}'s; reports would merge the two; give each a "
                    f"distinct 'label' (or distinct sweep values)"
                )
            seen[name] = (i, point)


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


def suite_warnings(suite: Suite, host: Any) -> list[str]:
    """What may be a slip though valid: a learning rate outside the range its plugin declares
    for the task's policy kind (:meth:`~harness.algorithm.Algorithm.tuning_space`), with which
    a policy may not move at all (or diverge)."""
    from harness.algorithm import policy_kind

    out = []
    tuned = set(tuned_labels(suite))
    for alg in suite.algorithms:
        label = alg.label or alg.name
        if label in tuned:
            continue
        cls = host.algorithm(alg.name)
        for task in suite.tasks:
            kind = policy_kind(host.task(task.name).kind)
            rates = cls.tuning_space(kind).get("learning_rate") or {}
            if "low" not in rates:
                continue
            if "learning_rate" in alg.sweep:  # the swept values are the ones that run
                values = list(alg.sweep["learning_rate"])
            else:
                values = [getattr(build_config(cls.Config, {
                    **alg.config, **alg.per_task.get(task.name, {})}), "learning_rate", None)]
            for lr in values:
                if isinstance(lr, int | float) and not rates["low"] <= lr <= rates["high"]:
                    out.append(
                        f"algorithms '{label}' on {task.name}: learning_rate {lr:g} is outside "
                        f"{rates['low']:g}–{rates['high']:g}, the range plugin '{alg.name}' "
                        f"declares for {kind} policies; the policy may not move (or may diverge)"
                    )
    return out


def tuning_space(suite: Suite, host: Any, label: str, task: str) -> dict[str, dict[str, Any]]:
    """The checked search space of a tuned label on a task: the suite's, else the plugin's."""
    assert suite.tuning is not None
    alg = next(a for a in suite.algorithms if (a.label or a.name) == label)
    space = suite.tuning.space.get(label)
    if space is None:
        from harness.algorithm import policy_kind

        cls = host.algorithm(alg.name)
        space = cls.tuning_space(policy_kind(host.task(task).kind))
    return check_space(space, f"tuning.space.{label}")


def _check_policy(suite: Suite, host: Any, where: Callable[..., str]) -> None:
    """Each algorithm's policy section (its own, else the suite's) against the tasks and the
    algorithm: its switches need neural policies, and LoRA an algorithm that does not declare
    it cannot train adapters."""
    from harness.algorithm import policy_kind

    for i, alg in enumerate(suite.algorithms):
        policy, at = (alg.policy, ("algorithms", i, "policy")) if alg.policy is not None else \
            (suite.policy, ("policy",))
        if policy.is_default:
            continue
        key = next(k for k in ("lora", "activation_checkpointing", "offload_frozen")
                   if getattr(policy, k) != PolicySpec.model_fields[k].default)
        name = ".".join(map(str, (*at, key)))
        for task in suite.tasks:
            if policy_kind(host.task(task.name).kind) != "neural":
                raise ConfigError(
                    f"{where(*at, key)}: {name}: applies to neural policies (a language "
                    f"model); task '{task.name}' has a tabular policy"
                )
        if policy.lora is not None:
            _check_lora_targets(suite, host, where, at, policy.lora.target_modules,
                                policy.lora.r)
        if policy.lora is not None and not getattr(host.algorithm(alg.name), "supports_lora",
                                                   True):
            raise ConfigError(
                f"{where(*at, 'lora')}: {'.'.join(map(str, at))}.lora: algorithm '{alg.name}' "
                f"(algorithms.{i}) declares that it cannot train LoRA adapters "
                f"(supports_lora = False)"
            )


def _check_lora_targets(suite: Suite, host: Any, where: Callable[..., str], at: tuple[Any, ...],
                        targets: list[str] | None, rank: int) -> None:
    """LoRA targets and rank against each task's model, where it can be read without a
    download: a ``tiny-lm`` model, an ``hf`` model in a local folder (built from its config on
    the meta device). A hub model's are checked when its run starts."""
    from harness.lora import adapted_width, linear_module_names
    from harness.memory import model_skeleton

    for task in suite.tasks:
        cls = host.task(task.name)
        params = build_config(cls.Params, task.params)
        model = model_skeleton(cls, params, local_only=True)
        if model is None:
            continue
        names = linear_module_names(model)
        width = adapted_width(model, [t for t in targets if t in names] if targets else None)
        if width is not None and rank > width:
            key = ".".join(map(str, (*at, "lora", "r")))
            raise ConfigError(
                f"{where(*at, 'lora', 'r')}: {key}: {rank} is above {width}, the narrowest "
                f"adapted layer of {type(model).__name__} (task '{task.name}'); an adapter's "
                f"rank is at most its layer's width"
            )
        missing = [t for t in (targets or []) if t not in names]
        if missing:
            key = ".".join(map(str, (*at, "lora", "target_modules")))
            raise ConfigError(
                f"{where(*at, 'lora', 'target_modules')}: {key}: "
                f"{', '.join(repr(t) for t in missing)} matches no module of "
                f"{type(model).__name__} (task '{task.name}'); its linear layers: "
                f"{', '.join(names)}"
            )


def _check_tuning(suite: Suite, host: Any, where: Callable[..., str]) -> None:
    """The tuning section against the suite: labels, spaces, objective, instances."""
    tuning = suite.tuning
    assert tuning is not None
    labels = {a.label or a.name: a for a in suite.algorithms}
    for key in ("algorithms", "space"):
        for j, label in enumerate(getattr(tuning, key) or []):
            if label not in labels:
                at = ("tuning", key, j) if key == "algorithms" else ("tuning", key, label)
                hint = difflib.get_close_matches(label, list(labels), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"{where(*at)}: tuning.{key}: no algorithm labelled "
                                  f"'{label}'{suggestion}; labels: {', '.join(labels)}")
    tasks = [t.name for t in suite.tasks]
    for name in tuning.trials_per_task:
        if name not in tasks:
            raise ConfigError(f"{where('tuning', 'trials_per_task', name)}: tuning."
                              f"trials_per_task.{name}: no such task in this suite (tasks: "
                              f"{', '.join(tasks)})")
    overlap = sorted(set(tuning.instances) & set(suite.all_instances))
    if overlap:
        raise ConfigError(
            f"{where('tuning', 'instances')}: tuning.instances: {overlap[0]} is also one of the "
            f"suite's seeds; the comparison must run on instances the tuning never saw"
        )
    needed = {"final_gold": ["gold_reward"], "gold_at_kl": ["gold_reward", "kl_ref"],
              "j_beta": ["gold_reward", "kl_ref"]}[tuning.objective]
    missing = [e for e in needed if e not in suite.evaluation.evaluators]
    if missing:
        raise ConfigError(
            f"{where('tuning', 'objective')}: tuning.objective: {tuning.objective} needs the "
            f"evaluator{'s' if len(missing) > 1 else ''} {', '.join(missing)} in "
            f"evaluation.evaluators"
        )
    for label in tuned_labels(suite):
        alg = labels[label]
        if alg.sweep:
            raise ConfigError(
                f"{where('algorithms', suite.algorithms.index(alg), 'sweep')}: "
                f"algorithms.{suite.algorithms.index(alg)}.sweep: '{label}' is tuned; its "
                f"search space replaces a sweep (give one or the other)"
            )
        cls = host.algorithm(alg.name)
        for task in suite.tasks:
            at = ("tuning", "space", label) if label in tuning.space else ("tuning",)
            try:
                space = tuning_space(suite, host, label, task.name)
            except ConfigError as exc:
                detail = str(exc)
                if label not in tuning.space:
                    from harness.algorithm import policy_kind

                    kind = policy_kind(host.task(task.name).kind)
                    detail += (f" (plugin '{alg.name}' declares no search space for {kind} "
                               f"policies: give tuning.space.{label})")
                raise ConfigError(f"{where(*at)}: {detail}") from None
            names = {f.name for f in dataclasses.fields(cls.Config)}
            for name in space:
                if name not in names:
                    raise ConfigError(f"{where(*at)}: tuning.space.{label}.{name}: not a field "
                                      f"of {alg.name}'s Config")
                dist = space[name]
                values = dist["choices"] if "choices" in dist else [dist["low"], dist["high"]]
                base = {**alg.config, **alg.per_task.get(task.name, {})}
                for value in values:  # each value the search may give must make a Config
                    build_config(cls.Config, {**base, name: value},
                                 where=f"{where(*at)}: tuning.space.{label}.{name} "
                                 f"({alg.name}, value {value!r})")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content; an OSError for what is not a regular file (a FIFO would
    block the read, a device such as ``/dev/zero`` never end it)."""
    import errno
    import os
    import stat

    digest = hashlib.sha256()
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device or a folder)",
                          str(path))
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SOURCE_HASHES: dict[str, str | None] = {}


def source_hash(obj: Any) -> str | None:
    """A hash of the source of the module (or top-level package) defining ``obj``: an edited
    plugin under an editable install gets new run ids. None when there is no source file."""
    module = inspect.getmodule(obj)
    if module is None:
        return None
    top = sys.modules.get(module.__name__.split(".")[0], module)
    name = top.__name__
    if name not in _SOURCE_HASHES:
        folders = [Path(d) for d in getattr(top, "__path__", None) or []]
        files = ([(f.relative_to(d).as_posix(), f) for d in folders
                  for f in sorted(d.rglob("*.py"))] if folders
                 else [(Path(top.__file__).name, Path(top.__file__))]
                 if getattr(top, "__file__", None) else [])
        digest = hashlib.sha256()
        try:
            for rel, f in files:
                digest.update(rel.encode() + b"\0" + f.read_bytes())
        except OSError:
            files = []
        _SOURCE_HASHES[name] = digest.hexdigest()[:16] if files else None
    return _SOURCE_HASHES[name]


CORE_VERSION_KEYS = ("rlhf-harness", "rlhf-harness-source", "torch")
"""What a run's summary records of the code under every plugin (``versions``): the harness's
version and a hash of its source, and torch's version. A report refuses to mix runs whose
records differ (:func:`harness.report.data.load_store`)."""


def core_versions() -> dict[str, str]:
    """This process's :data:`CORE_VERSION_KEYS`: the harness's version and source hash
    (the ``harness`` package's ``.py`` files), and torch's version."""
    import torch

    from harness import __version__

    return {"rlhf-harness": __version__,
            "rlhf-harness-source": source_hash(core_versions) or "?",
            "torch": str(torch.__version__)}


def describe_versions(versions: dict[str, Any]) -> str:
    """``rlhf-harness 0.4.0 (source 1a2b…), torch 2.5.1``; ``?`` for what a run did not
    record (runs made before the source was recorded)."""
    core = {k: versions.get(k) or "?" for k in CORE_VERSION_KEYS}
    return (f"rlhf-harness {core['rlhf-harness']} (source {core['rlhf-harness-source']}), "
            f"torch {core['torch']}")


def code_identity(host: Any, algorithm: str, task: str) -> dict[str, Any]:
    """The distribution, version and source hash of the algorithm's plugin (and of the task's,
    when a plugin rather than the core registered it)."""
    out: dict[str, Any] = {}
    for kind, name in (("algorithm", algorithm), ("task", task)):
        try:
            reg = host.registration(kind, name)
        except HarnessError:
            continue
        if reg.plugin.core:
            continue
        out[kind] = {
            "plugin": reg.plugin.distribution or reg.plugin.name,
            "version": reg.plugin.version,
            "source": source_hash(reg.obj),
        }
    return out


def _sweep_points(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(
        *(sweep[k] for k in keys)
    )] or [{}]


# --- error messages with lines -------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path in the YAML document to its 1-based line (from the node marks)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, key.value)
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
                index[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return index


def _nearest_line(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _union_tag(part: Any) -> bool:
    """A part of an error location that names a member of a union (``seeds`` is a list or a
    mapping; ``compare`` a list or a mapping), not a key: ``list[...]``, ``SeedsSpec``,
    ``CompareSpec``."""
    return isinstance(part, str) and (part.startswith("list[")
                                      or part in ("SeedsSpec", "CompareSpec", "none"))


UNION_FORMS = {
    "seeds": "a list of seeds, or a mapping {instances: [...], replicates: n}",
    "compare": "a list of pairs [[a, b], ...], or a mapping {baseline: LABEL}",
}
"""What a key that takes either of two forms expects, when a value is neither."""


def _describe(exc: ValidationError, path: Path, lines: dict, data: dict) -> str:
    """One line: ``file:line: key.path: what is wrong`` (with a suggestion for unknown keys)."""
    errors = []
    for e in exc.errors():
        tagged = any(_union_tag(p) for p in e["loc"])
        if tagged and e["type"] in ("list_type", "model_type", "dict_type"):
            continue  # the other form of a union field is what was meant
        errors.append({**e, "loc": tuple(p for p in e["loc"] if not _union_tag(p))})
    if not errors:
        first = exc.errors()[0]
        errors = [{**first, "loc": tuple(p for p in first["loc"] if not _union_tag(p)),
                   "msg": UNION_FORMS.get(str(first["loc"][0]), UNION_FORMS["seeds"])}]
    # An unknown key first: a misspelt required key (``seedz``) also makes ``seeds`` missing,
    # and the misspelling, with its suggestion, is what the user has to fix.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = _nearest_line(lines, loc)
    where = f"{path}:{line}" if line else str(path)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        fields = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        allowed = f"; allowed here: {', '.join(fields)}" if fields else ""
        belongs = "" if hint else _belongs(loc, parent, data)
        return f"{where}: unknown key '{key}'{suggestion}{allowed}{belongs}"
    if err["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{where}: {key}: {message}{shown}"


def sections() -> dict[type[BaseModel], list[str]]:
    """Every pydantic model of the suite schema, in the order a suite file meets them, with the
    key paths where it appears (``tasks[].budget``: the ``budget`` of an entry of ``tasks``)."""
    found: dict[type[BaseModel], list[str]] = {Suite: [""]}

    def walk(model: type, path: str) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            for inner in _models(info.annotation, BaseModel):
                here = f"{path}.{name}" if path else name
                if _is_list_of(info.annotation, inner):
                    here += "[]"
                places = found.setdefault(inner, [])
                if here not in places:
                    places.append(here)
                    walk(inner, here)

    walk(Suite, "")
    return {model: sorted(paths, key=lambda p: (p.count("."), p)) for model, paths in
            found.items()}


def _models(annotation: Any, base: type) -> list[type]:
    """The subclasses of ``base`` inside a type annotation (``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg, base)]


def _is_list_of(annotation: Any, model: type) -> bool:
    if typing.get_origin(annotation) is list:
        return model in typing.get_args(annotation)
    return any(_is_list_of(a, model) for a in typing.get_args(annotation))


def _key_places() -> dict[str, list[str]]:
    """Every key of the suite schema, with the paths of the sections that have it
    (``tasks[].budget``: the budget of an entry of ``tasks``)."""
    places: dict[str, list[str]] = {}
    for model, paths in sections().items():
        for name in model.model_fields:  # type: ignore[attr-defined]
            for path in paths:
                places.setdefault(name, []).append(f"{path}.{name}" if path else name)
    return places


def _belongs(loc: tuple[Any, ...], parent: type[BaseModel] | None, data: dict) -> str:
    """``; KEY belongs in ...`` for an unknown key that is a key of another section (or a
    task's name, or ``per_task``, under ``budget``: a task's own budget goes in its entry)."""
    name = str(loc[-1])
    tasks = [t.get("name") for t in data.get("tasks") or [] if isinstance(t, dict)]
    if parent is BudgetSpec and (name == "per_task" or name in tasks):
        task = tasks[0] if tasks else "bandit"
        example = "tasks: [{name: " + str(task) + ", budget: {samples: 1000}}]"
        return (f"; a task's own budget goes in its entry of tasks, e.g. {example} (see "
                "docs/suite-reference.md)")
    places = _key_places().get(name)
    if not places:
        return ""
    return (f"; '{name}' belongs in {' or '.join(places)} (see docs/suite-reference.md)")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` in a suite."""
    model: Any = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        annotation = field.annotation
        inner = list(getattr(annotation, "__args__", None) or [])
        inner += [a for i in inner for a in getattr(i, "__args__", None) or []]
        candidates = [annotation, *inner]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model
