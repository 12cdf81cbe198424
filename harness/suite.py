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
whose ``run_id`` is a hash of the resolved spec.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.config import build_config, config_dict, config_hash
from harness.errors import ConfigError, HarnessError

BUDGET_KINDS = ("steps", "samples", "tokens", "flops", "seconds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PreferenceSpec(_Strict):
    """How the preference data D are made (once per task and seed, shared by all algorithms)."""

    num_pairs: int = Field(1000, ge=1, description="Labelled pairs N.")
    preference_model: str = Field("btl", description="The annotator's preference model.")
    scale: float = Field(1.0, gt=0, description="Its noise scale (τ or σ).")
    flip_rate: float = Field(0.0, ge=0, le=1, description="Fraction of labels flipped.")
    temperature: float = Field(1.0, gt=0, description="π_ref's sampling temperature.")
    file: str | None = Field(None, description="Load D from this file instead of simulating.")


class RewardModelSpec(_Strict):
    """How r̂ is fitted from D (once per task and seed, shared by the online algorithms)."""

    kind: Literal["fitted", "gold"] = Field(
        "fitted", description="'fitted' from D; 'gold' gives the algorithms r* itself (an oracle)."
    )
    preference_model: str = Field("btl", description="The likelihood r̂ is fitted with.")
    scale: float = Field(1.0, gt=0)
    epochs: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    holdout_fraction: float = Field(0.1, gt=0, lt=1)


class AlgorithmSpec(_Strict):
    name: str = Field(description="A registered algorithm.")
    label: str | None = Field(None, description="How reports name it (default: its name).")
    config: dict[str, Any] = Field(default_factory=dict, description="Its Config fields.")
    per_task: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Config fields for one task only, by task name (e.g. learning rates that "
        "suit a table of logits and a language model differently); they override 'config'.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="Config fields to sweep: every combination runs."
    )

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep '{key}' has no values")
        return v


class BudgetSpec(_Strict):
    """One budget for every run: exactly one of these."""

    steps: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    tokens: int | None = Field(None, ge=1)
    flops: float | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)

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
    def value(self) -> float:
        return float(getattr(self, self.kind))


class TaskSpec(_Strict):
    name: str = Field(description="A registered task (rlhf-harness plugins lists them).")
    params: dict[str, Any] = Field(default_factory=dict, description="The task's Params.")
    budget: BudgetSpec | None = Field(
        None, description="This task's budget, if not the suite's (the same for all algorithms)."
    )


class EvaluationSpec(_Strict):
    every: int = Field(10, ge=1, description="Evaluate every k steps (and at the end).")
    evaluators: list[str] = Field(
        default_factory=lambda: [
            "gold_reward", "proxy_reward", "kl_ref", "win_rate_ref", "regret", "entropy",
            "response_length",
        ],
        description="Registered evaluators to run.",
    )
    samples_per_prompt: int = Field(4, ge=1, description="Policy samples per eval prompt.")
    beta: float = Field(0.1, gt=0, description="β of the objective J_β used for regret.")


class SeedsSpec(_Strict):
    """Task instances × training replicates.

    An *instance* seed fixes the task draw, the preference data and r̂ (shared by every
    algorithm); a *replicate* varies only the algorithm's own randomness on that instance.
    """

    instances: list[int] = Field(min_length=1, description="Instance seeds (distinct).")
    replicates: int = Field(1, ge=1, description="Training replicates per instance.")

    @field_validator("instances")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            twice = sorted({s for s in v if v.count(s) > 1})
            raise ValueError(f"instance seeds must be distinct ({', '.join(map(str, twice))} "
                             "repeated)")
        return v


CLAIM_ASPECTS = ("stability", "reward", "computation")
LECTURE_CLAIM = ("ppo", "grpo", "dpo")
LECTURE_SOURCE = "CMU 10-734, RLHF lecture"


class ClaimSpec(_Strict):
    """A claimed ordering: along ``order``, ``aspect`` increases (each next one better).

    More stability means a smaller spread across replicates, fewer divergences and smaller
    drawdowns; less computation means fewer CPU seconds, FLOPs and bytes of model state; more
    reward means a larger per-instance normalised score.
    """

    aspect: Literal["stability", "reward", "computation"]
    order: list[str] = Field(min_length=2, description="Labels (or algorithm names), in order.")
    trend: Literal["increases", "decreases"] = Field(
        "increases", description="Whether the aspect increases or decreases along the order.")
    source: str = Field("", description="Where the claim comes from (shown in the report).")


class DivergenceSpec(_Strict):
    max_kl: float | None = Field(
        None, gt=0, description="A run whose evaluated KL(π‖π_ref) exceeds this is 'diverged'."
    )


class Suite(_Strict):
    name: str
    description: str = ""
    tasks: list[TaskSpec] = Field(min_length=1)
    preferences: PreferenceSpec = Field(default_factory=PreferenceSpec)
    reward_model: RewardModelSpec = Field(default_factory=RewardModelSpec)
    algorithms: list[AlgorithmSpec] = Field(min_length=1)
    seeds: list[int] | SeedsSpec = Field(
        union_mode="left_to_right",
        description="Instance seeds (one replicate each), or {instances: [...], replicates: n}.")
    claims: list[ClaimSpec] | None = Field(
        None, description="Claimed orderings to test; default: the lecture's "
        "(from PPO to GRPO to DPO, stability increases and computation decreases).")
    budget: BudgetSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    divergence: DivergenceSpec = Field(default_factory=DivergenceSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    gpus_per_run: float = Field(0.0, ge=0, description="GPUs a Ray task requests per run.")

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
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if isinstance(v, list) and not v:
            raise ValueError("give at least one seed")
        return v

    @property
    def instances(self) -> list[int]:
        """The instance seeds."""
        return list(self.seeds) if isinstance(self.seeds, list) else list(self.seeds.instances)

    @property
    def replicates(self) -> int:
        """Training replicates per instance (1 for a plain list of seeds)."""
        return 1 if isinstance(self.seeds, list) else self.seeds.replicates

    def resolved_claims(self) -> list[ClaimSpec]:
        """The suite's claims, or the lecture's two when it lists none."""
        if self.claims is not None:
            return list(self.claims)
        return default_claims()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("a suite name is a non-empty folder name (no '/')")
        return v


def default_claims() -> list[ClaimSpec]:
    """The lecture's claim: from PPO to GRPO to DPO, stability increases and computation
    decreases (algorithm names; each represented by its best configuration on a task)."""
    return [
        ClaimSpec(aspect="stability", order=list(LECTURE_CLAIM), trend="increases",
                  source=LECTURE_SOURCE),
        ClaimSpec(aspect="computation", order=list(LECTURE_CLAIM), trend="decreases",
                  source=LECTURE_SOURCE),
    ]


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_id(self) -> str:
        """``<label>-<task>-s<seed>[-r<replicate>]-<hash>``: readable, and unique to the
        resolved spec (``-r`` only for replicates after the first)."""
        rep = f"-r{self.replicate}" if self.replicate else ""
        return f"{self.label}-{self.task}-s{self.seed}{rep}-{config_hash(self.as_dict(), 10)}"

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
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: suite file not found")
    text = path.read_text()
    try:
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
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines, data)) from None


def check_suite(suite: Suite, path: str | Path, host: Any) -> list[RunSpec]:
    """Check plugin names and configs against the plugin host; return the expanded runs."""
    lines = _line_index(Path(path).read_text()) if Path(path).exists() else {}

    def where(*keys: Any) -> str:
        line = _nearest_line(lines, keys)
        return f"{path}:{line}" if line else str(path)

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
    labels: set[str] = set()
    for i, alg in enumerate(suite.algorithms):
        cls = known("algorithm", alg.name, "algorithms", i, "name")
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
        task_names = [t.name for t in suite.tasks]
        for task_name, overrides in alg.per_task.items():
            if task_name not in task_names:
                raise ConfigError(
                    f"{where('algorithms', i, 'per_task', task_name)}: algorithms.{i}.per_task."
                    f"{task_name}: no such task in this suite (tasks: {', '.join(task_names)})"
                )
            build_config(cls.Config, {**alg.config, **overrides},
                         where=f"{where('algorithms', i, 'per_task', task_name)}: algorithms."
                         f"{i}.per_task.{task_name} ({alg.name})")
        for point in _sweep_points(alg.sweep):
            values = {**alg.config, **point}
            key = _rejected_key(cls.Config, values)
            at = ("sweep", key) if key in point else ("config", key)
            build_config(cls.Config, values,
                         where=f"{where('algorithms', i, *at)}: algorithms.{i} ({alg.name})")
    names = {alg.name for alg in suite.algorithms}
    for i, claim in enumerate(suite.claims or []):
        for j, label in enumerate(claim.order):
            if label not in labels and label not in names:
                raise ConfigError(
                    f"{where('claims', i, 'order', j)}: claims.{i}.order.{j}: no algorithm "
                    f"labelled or named '{label}' in this suite (labels: "
                    f"{', '.join(sorted(labels))})"
                )
        if len(set(claim.order)) != len(claim.order):
            raise ConfigError(f"{where('claims', i, 'order')}: claims.{i}.order: a "
                              "configuration appears twice")
    for i, task in enumerate(suite.tasks):
        cls = known("task", task.name, "tasks", i, "name")
        key = _rejected_key(cls.Params, task.params)
        build_config(cls.Params, task.params,
                     where=f"{where('tasks', i, 'params', key)}: tasks.{i}.params ({task.name})")
    return expand(suite, host)


def expand(suite: Suite, host: Any) -> list[RunSpec]:
    """Every run of the suite: task × instance × replicate × algorithm × sweep point."""
    runs = []
    for task, seed, replicate, alg in itertools.product(
            suite.tasks, suite.instances, range(suite.replicates), suite.algorithms):
        task_cls = host.task(task.name)
        params = config_dict(build_config(task_cls.Params, task.params))
        budget = task.budget or suite.budget
        cls = host.algorithm(alg.name)
        for point in _sweep_points(alg.sweep):
            values = {**alg.config, **alg.per_task.get(task.name, {}), **point}
            config = config_dict(build_config(cls.Config, values))
            label = alg.label or alg.name
            if point:
                label += "[" + ",".join(f"{k}={v}" for k, v in point.items()) + "]"
            runs.append(
                RunSpec(
                    suite=suite.name,
                    task=task.name,
                    task_params=params,
                    algorithm=alg.name,
                    label=label,
                    algorithm_config=config,
                    sweep_point=dict(point),
                    seed=seed,
                    preferences=suite.preferences.model_dump(),
                    reward_model=suite.reward_model.model_dump(),
                    budget={budget.kind: budget.value},
                    evaluation=suite.evaluation.model_dump(),
                    divergence=suite.divergence.model_dump(),
                    device=suite.device,
                    precision=suite.precision,
                    gpus=suite.gpus_per_run,
                    replicate=replicate,
                )
            )
    return runs


def _rejected_key(cls: type, values: dict[str, Any]) -> str | None:
    """The key of ``values`` that :func:`build_config` rejects first (for its line), if any."""
    import pydantic

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        return str(unknown[0])
    try:
        pydantic.TypeAdapter(cls).validate_python(dict(values), strict=False)
    except pydantic.ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        return str(loc[0]) if loc else None
    return None


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


_UNION_TAGS = ("list[int]", "SeedsSpec", "list[ClaimSpec]", "none")


def _describe(exc: ValidationError, path: Path, lines: dict, data: dict) -> str:
    """One line: ``file:line: key.path: what is wrong`` (with a suggestion for unknown keys)."""
    errors = []
    for e in exc.errors():
        tagged = any(p in _UNION_TAGS for p in e["loc"])
        if tagged and e["type"] in ("list_type", "model_type", "dict_type"):
            continue  # the other form of a union field is what was meant
        errors.append({**e, "loc": tuple(p for p in e["loc"] if p not in _UNION_TAGS)})
    if not errors:
        first = exc.errors()[0]
        errors = [{**first, "loc": tuple(p for p in first["loc"] if p not in _UNION_TAGS),
                   "msg": "a list of seeds, or a mapping {instances: [...], replicates: n}"}]
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
        return f"{where}: unknown key '{key}'{suggestion}{allowed}"
    if err["type"] == "missing":
        return f"{where}: missing required key '{key}'"
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    return f"{where}: {key}: {message}{shown}"


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
