"""A suite as one validated object, and one of its runs fully resolved.

:class:`Suite` is a suite file's top level (its sections are the models of
:mod:`harness.suite.schema`), with what follows from it: instances and replicates per task, the
claims it tests (the lecture's by default), the budgets per task. :class:`RunSpec` is one run as
the runner receives it, with its ``run_id`` hashed from everything that shapes its result.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.config import config_hash
from harness.engine.store import slug
from harness.suite.schema import (
    LECTURE_CLAIM,
    LECTURE_SOURCE,
    NAME_PATTERN,
    AlgorithmSpec,
    BudgetSpec,
    ClaimSpec,
    ComparePair,
    CompareSpec,
    DivergenceSpec,
    EvaluationSpec,
    Float,
    Int,
    LimitsSpec,
    PolicySpec,
    PreferenceSpec,
    RewardModelSpec,
    SeedsSpec,
    TaskSpec,
    TuningSpec,
    _check_seed_list,
    _instances,
    _replicates,
    _Strict,
)


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
