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
process, after a kill too; trial ``i`` of every study of one search is drawn with the same seed,
so the algorithms have equal luck in their draws (search r > 0 of repeated tuning hashes r in
too, so that the searches are independent; search 0 draws as a tuning without repeats).
Rounds: every study proposes one trial per round, all the round's runs (one per study and
tuning instance) go to the executor at once, then every trial is told its value.

Objectives (from a run's evaluations; a failed run counts as π_ref, its evaluation at step 0):

- ``final_gold``: the gold reward at the run's last evaluation;
- ``gold_at_kl``: the gold reward at the last evaluation whose KL(π‖π_ref) ≤ ``kl_budget`` (the
  policy one would keep under that KL budget);
- ``j_beta``: gold − β·KL at the last evaluation, β the suite's ``evaluation.beta`` (exact on
  tabular tasks, where gold and KL are).

Repeated searches (``repeats: R``; Bouthillier et al. 2021, "Accounting for variance in machine
learning benchmarks"): a chosen configuration is a random outcome of its search — of the trials
drawn and of the tuning instances they were valued on. With R > 1 each tuned algorithm gets R
independent searches per task, search r on the r-th of R equal groups of the tuning instances
(``instances`` split in order) with its own sampler seeds, and each search's choice runs on every
comparison instance under the algorithm's one label. The model: an algorithm's value on a
comparison instance is the mean over its R chosen configurations' runs there (their replicates
included), so the per-instance paired differences — and every interval and decision taken over
instances — carry the between-repeat variation of the choice, not only the instance-to-instance
one. The stability metric ``replicate_std`` stays the spread across one configuration's
replicates (pooled over the repeats), not the spread between choices. R = 1 (the default) is the
single search described above, with the run ids it always had.

What the per-instance differences carry, precisely: with y_ir = μ + c_r + e_i + g_ir (choice r,
instance i), the mean over the choices shares c̄ = mean_r c_r across all instances, so the paired
differences vary with the instances and the choice × instance part (g), and their interval is
for the difference given the R choices made, whose main effect is averaged (variance σ_c²/R, not
σ_c²) but not counted. :func:`luck_interval` counts it too: standard error √(s_d²/n + s_m²/R),
s_m² the variance of the R choices' mean values, with Welch–Satterthwaite degrees of freedom;
the report prints it beside the paired interval for each comparison with a repeated tuning.

Chosen values are kept at full precision: in each comparison run's spec (``tuning.params``) and
in the report's ``tuning_chosen.csv`` (``params`` as JSON, ``value`` as the float's repr), from
which :func:`read_chosen` gives back the choices that :func:`harness.suite.expand` turns into the
very same runs (same ids, same numbers).

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


# --- tuning luck in a comparison ---------------------------------------------------------------


@dataclass(frozen=True)
class LuckInterval:
    """A mean paired difference with an interval that counts the luck of the tuning."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float
    df: float
    se_instances: float
    """Standard error from the instances alone (the paired t interval's)."""
    se_searches: float
    """Standard error the searches' choices add (see :func:`luck_interval`)."""


def luck_interval(diffs: Sequence[float], search_means: Sequence[Sequence[float]],
                  confidence: float = 0.95) -> LuckInterval:
    """Mean of the per-instance differences ``diffs`` with a 95% interval that also counts the
    choice of each side's tuning searches.

    Each search's choice runs on every instance, so its main effect c_r is shared by all the
    instances: the per-instance differences (each side's value the mean over its choices) do
    not vary with it, and their t interval covers the difference *given* the R choices made.
    Over the luck of the tuning, their mean has the extra variance σ_c²/R per tuned side. Each
    side's ``search_means`` (its choices' mean values over the paired instances, one per
    search) estimate σ_c² + σ_{c×i}²/n by their variance s_m², so the standard error is taken
    as √(s_d²/n + Σ s_m²/R) — conservative by the interaction term counted twice — with
    Welch–Satterthwaite degrees of freedom. A side with one search adds nothing.

    Coverage, by seeded simulation of that design at n = 10 (tests/test_tuning_repeats.py;
    2,000 draws, σ_c = σ_e = 1, σ_{c×i} = 0.5): 0.94 at R = 3 and 0.95 at R = 5, where the
    paired t interval covers 0.80 and 0.86; at R = 2 (one degree of freedom for σ_c) 0.92.
    """
    from scipy import stats

    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=float)
    n = len(d)
    if n < 2:
        mean = float(d.mean()) if n else math.nan
        return LuckInterval(n, mean, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    parts = [(float(d.var(ddof=1)) / n, n - 1)]
    for side in search_means:
        m = np.asarray([x for x in side if math.isfinite(x)], dtype=float)
        if len(m) >= 2:
            parts.append((float(m.var(ddof=1)) / len(m), len(m) - 1))
    var = sum(v for v, _ in parts)
    mean = float(d.mean())
    se_inst, se_search = math.sqrt(parts[0][0]), math.sqrt(sum(v for v, _ in parts[1:]))
    if var <= 0:
        return LuckInterval(n, mean, mean, mean, 1.0 if mean == 0 else 0.0, math.inf,
                            se_inst, se_search)
    df = var ** 2 / sum(v ** 2 / k for v, k in parts if v > 0)
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return LuckInterval(n, mean, mean - half, mean + half, p, float(df), se_inst, se_search)


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
    repeat: int = 0
    """Which of the tuning's independent searches this is (its sampler seeds depend on it)."""
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


def trial_seed(seed: int, number: int, repeat: int = 0) -> int:
    """The sampler seed of trial ``number`` of search ``repeat``: hashed, because the first
    draws of nearby integer seeds are alike (numpy's first uniforms for seeds 0–3 all lie in
    [0.41, 0.56]); repeat 0 keeps the seeds of a tuning without repeats."""
    import hashlib

    key = f"{seed}:{number}" if repeat == 0 else f"{seed}:{repeat}:{number}"
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


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
                handle.sampler = make_sampler(sampler, trial_seed(seed, number, s.repeat))
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
    """One study per task, tuned label and repeat of ``suite`` (a
    :class:`harness.suite.Suite`); repeat r's trials run on the r-th group of the tuning
    instances (:meth:`harness.suite.TuningSpec.instance_groups`). A task with several budgets
    has its studies at each budget, with the same trials (its ``task`` is then
    :func:`harness.suite.budget_task`'s name, ``bandit @ 8192 samples``)."""
    from harness.config import config_hash
    from harness.suite import make_spec, run_preferences, task_units, tuned_labels, tuning_space

    tuning = suite.tuning
    assert tuning is not None
    algorithms = {a.label or a.name: a for a in suite.algorithms}
    preferences = run_preferences(suite)  # a data file hashed once, not per trial run
    several = tuning.repeats > 1
    studies = []
    for unit, task in task_units(suite):
        for label in tuned_labels(suite):
            alg = algorithms[label]
            space = tuning_space(suite, host, label, task.name)
            template = make_spec(suite, host, task, alg, tuning.instances[0], {}, label, {},
                                 preferences=preferences)
            for repeat, seeds in enumerate(tuning.instance_groups()):
                identity = {**template.identity, "seed": None,
                            "tuning": {**tuning.identity(), "space": space}}
                if several:
                    identity["repeat"] = repeat
                name = (f"{task.name}/{label}/" + (f"r{repeat}/" if several else "")
                        + config_hash(identity, 12))

                def specs(number: int, params: dict[str, Any], task: Any = task,
                          alg: Any = alg, label: str = label, name: str = name,
                          repeat: int = repeat, seeds: list[int] = seeds) -> list[Any]:
                    info: dict[str, Any] = {
                        "phase": "trial", "label": label, "trial": number,
                        "params": dict(params), "study": name, "objective": tuning.objective,
                        "kl_budget": tuning.kl_budget}
                    if several:
                        info["repeat"] = repeat
                    shown = f"{label}#r{repeat}t{number}" if several else f"{label}#t{number}"
                    return [make_spec(suite, host, task, alg, seed, dict(params), shown, {},
                                      info, preferences=preferences) for seed in seeds]

                studies.append(Study(task=unit, label=label, name=name, space=space,
                                     make_specs=specs, trials=tuning.trials_for(task.name),
                                     repeat=repeat))
    return studies


def run_tuning(
    suite: Any,
    host: Any,
    root: str,
    run: Callable[[list[Any]], None],
) -> tuple[list[Any], dict[tuple[str, str], dict[str, Any]]]:
    """Tune every tuned algorithm of ``suite`` into the store at ``root``; returns the trial
    runs' specs and, per (task, label), the choice ``{"trial", "params", "value"}`` (with R > 1
    repeats: the first search's, and under ``"repeats"`` all R, each with its ``"repeat"``),
    what :func:`harness.suite.expand` takes as ``tuned``."""
    from harness.engine.store import RunStore

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
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in studies:
        trial, params, value = s.best
        by_label.setdefault((s.task, s.label), []).append(
            {"repeat": s.repeat, "trial": trial, "params": params, "value": value})
    return trial_specs, {key: _choice(choices) for key, choices in by_label.items()}


def _choice(choices: list[dict[str, Any]]) -> dict[str, Any]:
    """The choice of a (task, label) from its searches' (see :func:`run_tuning`)."""
    choices = sorted(choices, key=lambda c: int(c["repeat"]))
    first = {k: v for k, v in choices[0].items() if k != "repeat"}
    return {**first, "repeats": choices} if len(choices) > 1 else first


def read_chosen(path: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The choices a report recorded in ``tables/tuning_chosen.csv``, at full precision, as
    :func:`run_tuning` returns them: :func:`harness.suite.expand` (``tuned=``) makes of them the
    comparison runs the tuning made (the same run ids; the same numbers, run again)."""
    import json

    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "params_json" not in table:
        raise ConfigError(f"{path}: no full-precision choices (column params_json): a report "
                          f"written before they were recorded; rebuild it")
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in table.to_dict("records"):
        by_label.setdefault((row["task"], row["label"]), []).append({
            "repeat": int(row.get("repeat") or 0), "trial": int(row["trial"]),
            "params": json.loads(row["params_json"]), "value": float(row["value"])})
    return {key: _choice(choices) for key, choices in by_label.items()}
