"""Equal tuning effort: every algorithm of a comparison gets the same number of trials.

A suite's ``tuning:`` section gives, per algorithm, a search space (the plugin's own, from
:meth:`harness.algorithm.Algorithm.tuning_space`, or the suite's), one number of trials for every
algorithm, the objective and the tuning instances. For each task and tuned algorithm an Optuna
study proposes configurations; each trial is a run per tuning instance, executed by the suite's
executor and stored like any run (so a killed tuning resumes: finished trial runs are skipped, and
the study itself lives in the run store, ``tuning/optuna.journal``). The trial's value is the mean
objective over the tuning instances, read from the stored runs. The best configuration of each
algorithm is then run on the suite's own instances — never the tuning ones (Dodge et al. 2019,
"Show Your Work") — and those runs are the comparison the report makes.

Determinism: trial ``i`` of a study is proposed by a sampler seeded with a hash of (``seed``,
``i``), from the trials told before it, so the same suite proposes the same configurations in any
process, after a kill too; trial ``i`` of every study is drawn with the same seed, so the
algorithms have equal luck in their draws. Rounds: every study proposes one trial per round, all
the round's runs (one per study and tuning instance) go to the executor at once, then every trial
is told its value.

Objectives (from a run's evaluations; a failed run counts as π_ref, its evaluation at step 0):

- ``final_gold``: the gold reward at the run's last evaluation;
- ``gold_at_kl``: the gold reward at the last evaluation whose KL(π‖π_ref) ≤ ``kl_budget`` (the
  policy one would keep under that KL budget);
- ``j_beta``: gold − β·KL at the last evaluation, β the suite's ``evaluation.beta`` (exact on
  tabular tasks, where gold and KL are).

Expected maximum performance (Dodge et al. 2019, §3): for N trial values v₍₁₎ ≤ … ≤ v₍N₎, the
expected best of n trials drawn from them is Σᵢ v₍ᵢ₎ [(i/N)ⁿ − ((i−1)/N)ⁿ], with variance
Σᵢ v₍ᵢ₎² [(i/N)ⁿ − ((i−1)/N)ⁿ] − E². It assumes trials drawn independently from the search
space: exact for the random sampler (the default); with TPE the curve is an approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError

OBJECTIVES = ("final_gold", "gold_at_kl", "j_beta")
SAMPLERS = ("random", "tpe")
JOURNAL = "tuning/optuna.journal"


# --- search spaces ------------------------------------------------------------------------------


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions of a space checked by :func:`harness.config.check_space`."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, d in space.items():
        if "choices" in d:
            out[name] = CategoricalDistribution(d["choices"])
        elif d["int"]:
            out[name] = IntDistribution(int(d["low"]), int(d["high"]), log=d["log"])
        else:
            out[name] = FloatDistribution(float(d["low"]), float(d["high"]), log=d["log"])
    return out


# --- objectives ---------------------------------------------------------------------------------


def objective_value(evals: Any, objective: str, *, kl_budget: float | None, beta: float) -> float:
    """A run's objective from its evaluations (a frame with ``step``, ``metric``, ``value``)."""
    wide = evals.pivot_table(index="step", columns="metric", values="value", aggfunc="last")
    wide = wide.sort_index()
    if "gold_reward" not in wide:
        return math.nan
    gold = wide["gold_reward"]
    kl = wide["kl_ref"] if "kl_ref" in wide else None
    if objective == "final_gold":
        return float(gold.dropna().iloc[-1]) if gold.notna().any() else math.nan
    if kl is None:
        return math.nan
    if objective == "gold_at_kl":
        assert kl_budget is not None
        ok = wide[(kl <= kl_budget) & gold.notna()]
        return float(ok["gold_reward"].iloc[-1]) if len(ok) else math.nan
    if objective == "j_beta":
        both = wide[gold.notna() & kl.notna()]
        if not len(both):
            return math.nan
        last = both.iloc[-1]
        return float(last["gold_reward"] - beta * last["kl_ref"])
    raise ConfigError(f"unknown tuning objective '{objective}' ({', '.join(OBJECTIVES)})")


def run_objective(record: Any, objective: str, *, kl_budget: float | None,
                  beta: float) -> float:
    """The objective of a stored run; a failed run (or one without a finite value) counts as
    π_ref — its evaluation at step 0 — so a configuration that crashes is not rewarded."""
    frame = record.metrics()
    evals = frame[frame["source"] == "eval"]
    if record.state in ("done", "diverged"):
        value = objective_value(evals, objective, kl_budget=kl_budget, beta=beta)
        if math.isfinite(value):
            return value
    start = evals[evals["step"] == 0]
    if len(start):
        return objective_value(start, objective, kl_budget=kl_budget, beta=beta)
    return math.nan


# --- expected maximum performance --------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedMax:
    """Expected best value of n trials, for n = 1..N, with its standard deviation."""

    n: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def expected_max_performance(values: Sequence[float]) -> ExpectedMax:
    """Dodge et al. (2019)'s estimator (see the module docstring); NaN values are dropped."""
    v = np.sort(np.asarray([x for x in values if math.isfinite(x)], dtype=float))
    total = len(v)
    if total == 0:
        empty = np.array([], dtype=float)
        return ExpectedMax(empty, empty, empty)
    i = np.arange(1, total + 1, dtype=float)
    ns = np.arange(1, total + 1)
    means, stds = [], []
    for n in ns:
        weights = (i / total) ** n - ((i - 1) / total) ** n
        mean = float(np.sum(weights * v))
        var = max(float(np.sum(weights * v * v)) - mean * mean, 0.0)
        means.append(mean)
        stds.append(math.sqrt(var))
    return ExpectedMax(ns, np.asarray(means), np.asarray(stds))


# --- the studies --------------------------------------------------------------------------------


@dataclass
class Study:
    """One Optuna study: a task and a tuned algorithm label."""

    task: str
    label: str
    name: str
    space: dict[str, dict[str, Any]]
    make_specs: Callable[[int, dict[str, Any]], list[Any]]
    """``(trial number, params) → the trial's run specs`` (one per tuning instance)."""
    trials: int = 0
    """How many trials this study runs (0: the ``trials`` given to :func:`tune`)."""
    values: dict[int, float] = field(default_factory=dict)
    params: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def best(self) -> tuple[int, dict[str, Any], float]:
        """(trial, params, value) of the best trial; ties go to the earliest."""
        finite = {t: v for t, v in self.values.items() if math.isfinite(v)}
        if not finite:
            raise ConfigError(f"tuning of '{self.label}' on {self.task}: no trial has a finite "
                              f"objective value (do its runs fail?)")
        trial = max(sorted(finite), key=lambda t: finite[t])
        return trial, self.params[trial], finite[trial]


def open_storage(store_path: Path) -> Any:
    """The Optuna journal storage of a run store (created on first use)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = store_path / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    check_journal(path)
    return JournalStorage(JournalFileBackend(str(path)))


def check_journal(path: Path) -> None:
    """Make the journal at ``path`` readable, or refuse it in one line naming it.

    A last line without its newline is the write of a process killed mid-line: the operation
    never took effect, and is cut off (the tuning proposes that trial again, with the same
    seed). Any other line that is not a JSON record means the file is damaged.
    """
    import json

    from harness.errors import StoreError

    if not path.is_file():
        if path.exists():
            raise StoreError(f"{path}: not a file (the tuning journal is one)")
        return
    data = path.read_bytes()
    complete = data.rsplit(b"\n", 1)[0] + b"\n" if b"\n" in data else b""
    if complete != data:
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    for number, line in enumerate(complete.splitlines(), start=1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise StoreError(
                f"{path}: line {number} is not a tuning record: the journal is damaged; delete "
                f"it to tune again (the same trials are proposed, and their finished runs are "
                f"reused)"
            )


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: hashed, because the first draws of nearby integer
    seeds are alike (numpy's first uniforms for seeds 0–3 all lie in [0.41, 0.56])."""
    import hashlib

    return int(hashlib.sha256(f"{seed}:{number}".encode()).hexdigest()[:8], 16)


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True)
    raise ConfigError(f"unknown sampler '{kind}' ({', '.join(SAMPLERS)})")


def tune(
    studies: list[Study],
    *,
    trials: int,
    sampler: str,
    seed: int,
    store_path: Path,
    run: Callable[[list[Any]], None],
    value_of: Callable[[Any], float],
    finished: Callable[[Any], bool],
    on_round: Callable[[int, int], None] | None = None,
) -> None:
    """Run ``trials`` trials of every study (see the module docstring); fills each study's
    ``values`` and ``params``.

    ``run(specs)`` executes run specs into the store (skipping finished ones), ``finished(spec)``
    says whether a spec's run is finished there, ``value_of(spec)`` reads its objective. The
    store's runs, not the study's record, are the source of truth: a trial whose runs are
    missing (removed, or made under other code) is run again before a new one is proposed.
    """
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(store_path)
    handles = {
        s.name: optuna.create_study(study_name=s.name, storage=storage, direction="maximize",
                                    load_if_exists=True)
        for s in studies
    }
    dists = {s.name: distributions(s.space) for s in studies}
    rounds = 0
    while True:
        work: list[tuple[Study, int, dict[str, Any], list[Any], bool]] = []
        for s in studies:
            handle = handles[s.name]
            wanted = s.trials or trials
            known = {t.number: t for t in handle.get_trials(deepcopy=False)
                     if t.number < wanted}
            redo = []
            for number, t in sorted(known.items()):
                specs = s.make_specs(number, dict(t.params))
                s.params[number] = dict(t.params)
                told = t.state in (TrialState.COMPLETE, TrialState.FAIL)
                if not told or not all(finished(spec) for spec in specs):
                    redo.append((s, number, dict(t.params), specs, not told))
            if redo:
                work.extend(redo)
                continue
            if len(known) < wanted:  # every earlier trial is told: propose the next one
                number = len(known)
                handle.sampler = make_sampler(sampler, trial_seed(seed, number))
                asked = handle.ask(dists[s.name])
                if asked.number != number:  # another writer's trials: the lock forbids it
                    raise ConfigError(f"tuning study '{s.name}' is out of step "
                                      f"(trial {asked.number}, expected {number})")
                params = dict(asked.params)
                s.params[number] = params
                work.append((s, number, params, s.make_specs(number, params), True))
        if not work:
            break
        run([spec for *_, specs, _ in work for spec in specs])
        for s, number, _, specs, tell in work:
            values = [value_of(spec) for spec in specs]
            value = float(np.mean(values)) if values and all(map(math.isfinite, values)) \
                else math.nan
            s.values[number] = value
            if tell:
                if math.isfinite(value):
                    handles[s.name].tell(number, value)
                else:
                    handles[s.name].tell(number, state=TrialState.FAIL)
        rounds += 1
        if on_round is not None:
            on_round(rounds, trials)
    for s in studies:  # values of trials told in an earlier process, from the store's runs
        for number, params in s.params.items():
            if number not in s.values:
                values = [value_of(spec) for spec in s.make_specs(number, params)]
                s.values[number] = float(np.mean(values)) if values and all(
                    map(math.isfinite, values)) else math.nan


# --- a suite's tuning ---------------------------------------------------------------------------


def suite_studies(suite: Any, host: Any) -> list[Study]:
    """One study per task and tuned label of ``suite`` (a :class:`harness.suite.Suite`); a task
    with several budgets has one study per budget, with the same trials (its ``task`` is then
    :func:`harness.suite.budget_task`'s name, ``bandit @ 8192 samples``)."""
    from harness.config import config_hash
    from harness.suite import make_spec, run_preferences, task_units, tuned_labels, tuning_space

    tuning = suite.tuning
    assert tuning is not None
    algorithms = {a.label or a.name: a for a in suite.algorithms}
    preferences = run_preferences(suite)  # a data file hashed once, not per trial run
    studies = []
    for unit, task in task_units(suite):
        for label in tuned_labels(suite):
            alg = algorithms[label]
            space = tuning_space(suite, host, label, task.name)
            template = make_spec(suite, host, task, alg, tuning.instances[0], {}, label, {},
                                 preferences=preferences)
            identity = {**template.identity, "seed": None,
                        "tuning": {**tuning.model_dump(), "space": space}}
            name = f"{task.name}/{label}/{config_hash(identity, 12)}"

            def specs(number: int, params: dict[str, Any], task: Any = task, alg: Any = alg,
                      label: str = label, name: str = name) -> list[Any]:
                info = {"phase": "trial", "label": label, "trial": number,
                        "params": dict(params), "study": name,
                        "objective": tuning.objective, "kl_budget": tuning.kl_budget}
                return [make_spec(suite, host, task, alg, seed, dict(params),
                                  f"{label}#t{number}", {}, info, preferences=preferences)
                        for seed in tuning.instances]

            studies.append(Study(task=unit, label=label, name=name, space=space,
                                 make_specs=specs, trials=tuning.trials_for(task.name)))
    return studies


def run_tuning(
    suite: Any,
    host: Any,
    root: str,
    run: Callable[[list[Any]], None],
) -> tuple[list[Any], dict[tuple[str, str], dict[str, Any]]]:
    """Tune every tuned algorithm of ``suite`` into the store at ``root``; returns the trial
    runs' specs and, per (task, label), the choice ``{"trial", "params", "value"}``."""
    from harness.store import RunStore

    tuning = suite.tuning
    assert tuning is not None
    store = RunStore(root, suite.name)
    beta = suite.evaluation.beta

    def value_of(spec: Any) -> float:
        record = store.record(spec.run_id)
        if record is None or record.problem is not None:
            return math.nan
        return run_objective(record, tuning.objective, kl_budget=tuning.kl_budget, beta=beta)

    studies = suite_studies(suite, host)
    tune(studies, trials=tuning.trials, sampler=tuning.sampler, seed=tuning.seed,
         store_path=store.path, run=run, value_of=value_of,
         finished=lambda spec: store.is_finished(spec.run_id))
    trial_specs = [spec for s in studies for number in sorted(s.params)
                   for spec in s.make_specs(number, s.params[number])]
    chosen = {}
    for s in studies:
        trial, params, value = s.best
        chosen[(s.task, s.label)] = {"trial": trial, "params": params, "value": value}
    return trial_specs, chosen
