"""The suite file's sections as pydantic models: every key, its type, default and meaning.

One model per section of a suite file (preferences, reward model, policy, algorithms, budget,
seeds, tasks, evaluation, limits, claims, compare, divergence, tuning) and the shared field types
and bounds they use. The top-level :class:`~harness.suite.model.Suite` that holds them is in
:mod:`harness.suite.model`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    confloat,
    conint,
    field_validator,
    model_validator,
)

from harness.config import config_hash

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
    """LoRA adapters through ``peft`` (see :mod:`harness.models.lora`): only they train, and π_ref
    is the same base model with them switched off."""

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
        "for each call (see harness.models.offload); nothing changes on a CPU run.",
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
    """Equal tuning effort (see :mod:`harness.engine.tuning`): the same number of trials for every
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
        "final_gold", description="What a trial maximises (see harness.engine.tuning)."
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
        "instance is the mean over its R choices (see harness.engine.tuning); R ≥ 3 for the "
        "report's intervals with tuning luck to keep their 95%.", examples=[3],
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
