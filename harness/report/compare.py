"""Comparisons that decide: per-instance values, paired differences, claims and flags.

A task *instance* (its seed fixes the task draw, the preference data and r̂) is the unit of
every comparison: each configuration's runs on an instance (its replicates) are first reduced
to one value per instance, and two configurations are compared on the instances they share, by
the per-instance differences (the paired sign-flip permutation test and the interval that
inverts it, :func:`harness.report.stats.paired_sign_flip`; each row names its test and its n).
The quantities compared (:data:`METRICS`):

- **score** (reward, higher is better): per run, a number fixed by the task instance and the
  run alone, never by the other configurations of the suite (removing one leaves every other
  score, and so every ranking among the rest, as it was). Where the task knows its optimum (the
  regret evaluator ran), the *gap closure*
  (J_β(π) − J_β(π_ref)) / (J_β(π*_β) − J_β(π_ref)) = 1 − regret/regret(π_ref); else the
  *standardised gold gain* (r*(π) − r*(π_ref)) / sd_ref, sd_ref the standard deviation of
  r*(x, y) over the eval prompts and y ~ π_ref, recorded by the ``gold_reward`` evaluator at
  the run's first evaluation (``gold_reward_sd``, π = π_ref; the same for every configuration
  on an instance, as the evaluation's samples are seeded by the instance). Runs recorded before
  ``gold_reward_sd`` existed lack sd_ref: on a task where any run lacks it, the gain is divided
  by the largest mean gain of any configuration on the task (kind ``gold gain``), which does
  depend on who else is in the suite, and the report says so.
- **replicate_std** (stability, lower is better): the standard deviation of the final gold reward
  across an instance's replicates (needs two or more); for an algorithm tuned by several
  searches (``tuning.repeats``), pooled over its chosen configurations, each one's replicates
  apart, so that the spread between choices is not read as instability. An instance's other
  values average all its runs: for such an algorithm, the mean over its chosen configurations.
- **divergence_rate** (stability): the fraction of an instance's finished runs that diverged.
- **drawdown** (stability): the mean worst fall of gold reward below its running best.
- **samples_to_half**, **flops_to_half** (computation, cost to reach; lower is better): the
  samples and FLOPs a run spends before it first reaches half of a fixed target (half the gap
  to π*_β on exact tasks, half a fixed gold gain elsewhere; :mod:`harness.report.cost`), an
  instance's replicates reduced to their median; a never-reached run counts as twice the most
  any run on the task spent (PAR-2), so it is kept and counted as the slowest.
- **cpu_seconds**, **flops** (computation, per step: the cost of a run at its fixed budget;
  lower is better): process CPU seconds of generation, scoring and training; FLOPs of neural
  policies (none for tabular ones).

A claim about computation is judged on the cost to reach by default, on the per-step cost when
it says ``computation: per_step`` (:class:`harness.suite.ClaimSpec`). Bytes of model state are
a property of the design, printed in the report's compute table, not compared.

Every pair of configurations on a task is compared on each quantity. The comparisons fall in
two families (column ``family``), each Holm-adjusted on its own and decided at α = 0.05 within
it (:func:`primary_pairs`, :func:`adjust_families`):

- **primary**: the rows (task, metric, a, b) — a and b in either order — that are
    - for every claim and every task where each name of its ``order`` stands for a
      configuration (:func:`representatives`, as :func:`claim_verdicts` picks them), each
      step (x, y) of the order: (task, m, rep(x), rep(y)) for every metric m of
      :data:`METRICS` whose aspect is the claim's;
    - without a ``compare`` key in the suite: for every task, (task, ``score``, best,
      runner-up), the two configurations with the highest mean instance score on the task
      among those that learned (:func:`best_and_runner_up`; none when fewer than two have a
      score);
    - with ``compare: [[x, y], ...]``: for every task and pair, (task, ``score``, x', y'),
      each name standing for its configuration on the task (:func:`stands_for`);
    - with ``compare: {baseline: z}``: for every task, (task, ``score``, c, z') for every
      configuration c on the task other than z';
- **exploratory**: every other row, Holm-adjusted in a family of its own.

Comparisons whose per-instance differences are all equal (a deterministic count such as FLOPs,
or zero on both sides) are exact rather than tests: they keep their p-value of 0 or 1 and are
counted in neither family's size, though their ``family`` column says which they belong to.
``mde`` and ``seeds_needed`` are computed at α/m (m the size of the row's family), the strictest
step of Holm's procedure, so that at ``seeds_needed`` instances a difference like the observed
one is decided under the family's adjustment with at least 80% power — with 90% confidence:
``seeds_needed`` is the count at a 90% lower confidence bound of the effect size
(:func:`harness.report.stats.seeds_needed_upper`), not at the observed effect, which falls short
about half of the time.

A score comparison of a configuration tuned by several searches (``tuning.repeats``) also
counts the luck of the tuning: its p-value is the larger of the sign-flip test's and that of the
interval with tuning luck (:func:`with_tuning_luck`, :func:`harness.engine.tuning.luck_interval`),
its interval the hull of the two, its ``test`` ``… + tuning luck``.

A comparison the test cannot decide is ``undecidable`` (not ``undecided``): where even the
test's smallest p-value at its n (``p_min``, 2/2^n) would not pass its Holm step in its family,
or where the differences are too skewed for the test to hold its level (``skew_p`` below
:data:`harness.report.stats.SKEW_LEVEL`; such rows print no interval).

**One module, over 600 lines, on purpose.** The quantities, their per-instance reduction,
the pairs and the two families above are one design: the primary family is defined by the
claims and the comparisons, and every row's adjustment depends on all of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from harness.report import cost as cst
from harness.report import stats as st
from harness.report.data import StoreData
from harness.suite import ClaimSpec, CompareSpec, Suite

COMPARISON_COLUMNS = ("task", "metric", "a", "b", "n", "mean_diff", "ci_low", "ci_high",
                      "p_value", "p_adjusted", "decision", "mde", "seeds_needed", "test",
                      "p_min", "p_mc_se", "skew_p", "family")
PRIMARY, EXPLORATORY = "primary", "exploratory"
"""The two families of comparisons (see the module docstring)."""
PRIMARY_COLUMNS = ("task", "metric", "a", "b", "why")


@dataclass(frozen=True)
class Metric:
    name: str
    aspect: str
    description: str
    higher_is_better: bool
    basis: str = ""
    """For computation: ``cost_to_reach`` or ``per_step`` (the claim option that selects it)."""


COST_TO_REACH, PER_STEP = "cost_to_reach", "per_step"
METRICS = {
    m.name: m for m in (
        Metric("score", "reward", "normalised score", True),
        Metric("replicate_std", "stability", "std of final gold across replicates", False),
        Metric("divergence_rate", "stability", "divergence rate", False),
        Metric("drawdown", "stability", "worst drawdown of gold reward", False),
        Metric("samples_to_half", "computation", "samples to reach half the target", False,
               COST_TO_REACH),
        Metric("flops_to_half", "computation", "FLOPs to reach half the target", False,
               COST_TO_REACH),
        Metric("cpu_seconds", "computation", "training CPU seconds", False, PER_STEP),
        Metric("flops", "computation", "FLOPs", False, PER_STEP),
    )
}
NOT_LEARNED_KL = 1e-3
"""Nats: a configuration whose final KL(π‖π_ref) stays below this has not moved from π_ref."""


GAP_CLOSURE, STANDARDISED, RELATIVE = "gap closure", "standardised gold gain", "gold gain"
"""The kinds of ``score`` (the module docstring)."""
SCORE_KINDS = {
    GAP_CLOSURE: "gap closure, the share of the way from π_ref to π*_β in J_β",
    STANDARDISED: "gold gain over π_ref in units of the standard deviation of π_ref's gold "
                  "reward on the instance",
    RELATIVE: "gold gain over π_ref relative to the largest mean gain on the task",
}
"""What each kind of score is, as a report says it."""


def score_kind(runs: pd.DataFrame, task: str) -> str:
    """The kind of ``score`` of ``task``'s runs (:data:`SCORE_KINDS`): ``gap closure`` when
    they know their optimum (regret); else ``standardised gold gain`` when every counted run
    recorded π_ref's ``gold_reward_sd``; else ``gold gain`` (relative to the largest)."""
    sub = runs[runs["task"] == task]
    has = (sub["initial_regret"].notna() & (sub["initial_regret"] > 0)
           & sub.get("final_regret", pd.Series(np.nan, index=sub.index)).notna())
    if len(sub) and bool(has.any()):
        return GAP_CLOSURE
    counted = sub[sub["status"].isin(("done", "diverged"))] if "status" in sub else sub
    sd = counted.get("initial_gold_reward_sd", pd.Series(np.nan, index=counted.index))
    return STANDARDISED if len(counted) and bool(sd.notna().all()) else RELATIVE


def run_scores(data: StoreData) -> pd.DataFrame:
    """The counted runs with their per-run ``score`` (see the module docstring)."""
    u = data.usable.copy()
    if "final_regret" not in u:
        u["final_regret"] = np.nan
    u["score"] = np.nan
    for task in data.tasks:
        sel = u["task"] == task
        kind = score_kind(u, task)
        if kind == GAP_CLOSURE:
            r0 = u.loc[sel, "initial_regret"].where(u.loc[sel, "initial_regret"] > 0)
            u.loc[sel, "score"] = 1 - u.loc[sel, "final_regret"] / r0
            continue
        gain = u.loc[sel, "final_gold_reward"] - u.loc[sel, "initial_gold_reward"]
        if kind == STANDARDISED:
            sd = u.loc[sel, "initial_gold_reward_sd"]
            u.loc[sel, "score"] = gain / sd.where(sd > 0)
        else:
            best = gain.groupby(u.loc[sel, "label"]).mean().max()
            scale = float(best) if math.isfinite(best) and best > 0 else 1.0
            u.loc[sel, "score"] = gain / scale
    return u


def instance_table(data: StoreData, per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, label, instance): the quantities of :data:`METRICS` on it, and the
    instance means of final gold reward, final KL and the gold gain over π_ref."""
    runs = data.runs.merge(per_run, on="run_id", how="left")
    scores = run_scores(data)[["run_id", "score"]]
    runs = runs.merge(scores, on="run_id", how="left")
    finished = runs[runs["status"].isin(("done", "diverged", "failed"))]
    half = _costs_to_half(data)
    rows = []
    for (task, label, seed), sub in finished.groupby(["task", "label", "seed"], sort=False):
        counted = sub[sub["status"].isin(("done", "diverged"))]
        done = sub[sub["status"] == "done"]
        gold = counted["final_gold_reward"].dropna()
        gain = (counted["final_gold_reward"] - counted["initial_gold_reward"]).dropna()
        spread, df = replicate_spread(counted)
        rows.append({
            "task": task, "label": label, "algorithm": sub["algorithm"].iloc[0],
            "instance": seed, "runs": len(sub), "counted": len(counted),
            "score": _mean(counted["score"]),
            "final_gold_reward": _mean(gold),
            "final_kl_ref": _mean(counted["final_kl_ref"]),
            "gold_gain": _mean(gain),
            "replicate_std": spread,
            "replicate_df": df,
            "divergence_rate": float((sub["status"] == "diverged").mean()),
            "drawdown": _mean(counted["drawdown"]),
            "cpu_seconds": _mean(done["train_cpu_seconds"]),
            "flops": _mean(done["flops"]),
            "model_state_mb": _mean(done["model_state_bytes"]) / 2**20,
            **half.get((task, label, seed), {"samples_to_half": math.nan,
                                             "flops_to_half": math.nan}),
        })
    return pd.DataFrame(rows)


def _costs_to_half(data: StoreData) -> dict[tuple[Any, Any, Any], dict[str, float]]:
    """Per (task, label, instance): ``samples_to_half`` and ``flops_to_half``, the censored
    (PAR-2) median over replicates of :mod:`harness.report.cost` at its ``CLAIM_FRACTION``."""
    inst = cst.instance_costs(cst.run_costs(cst.progress(data), (cst.CLAIM_FRACTION,)))
    return {(r.task, r.label, r.instance): {"samples_to_half": float(r.samples_censored),
                                            "flops_to_half": float(r.flops_censored)}
            for r in inst.itertuples(index=False)}


def replicate_spread(runs: pd.DataFrame) -> tuple[float, int]:
    """(standard deviation, degrees of freedom) of the final gold reward across the replicates
    of one configuration on one instance: pooled over a tuned algorithm's chosen configurations
    (column ``tuning_repeat``), each one's replicates apart; NaN with 0 df without two."""
    gold = runs["final_gold_reward"]
    keys = runs["tuning_repeat"].fillna(0) if "tuning_repeat" in runs else pd.Series(
        0, index=runs.index)
    groups = [g.dropna() for _, g in gold.groupby(keys)]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) == 1:  # one configuration: its plain standard deviation
        return float(groups[0].std(ddof=1)), len(groups[0]) - 1
    df = sum(len(g) - 1 for g in groups)
    ss = sum(float(g.var(ddof=1)) * (len(g) - 1) for g in groups)
    return (math.sqrt(ss / df) if df else math.nan), df


def _mean(values: pd.Series) -> float:
    a = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else math.nan


def comparisons(inst: pd.DataFrame, labels: list[str], tasks: list[str],
                alpha: float = st.ALPHA, primary: pd.DataFrame | None = None,
                luck: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pair of configurations on every task, on every metric with data, paired by
    instance; Holm-adjusted within the primary family (the rows ``primary`` names, from
    :func:`primary_pairs`) and within the exploratory one (every other row); ``primary``
    None puts every row in the primary family (see the module docstring). The score rows
    that ``luck`` (:func:`tuning_luck`) covers count the tuning's luck too
    (:func:`with_tuning_luck`)."""
    rows: list[dict[str, Any]] = []
    sds: list[float] = []
    for task in tasks:
        t = inst[inst["task"] == task]
        present = [lab for lab in labels if lab in set(t["label"])]
        for metric in METRICS:
            if metric not in t or not t[metric].notna().any():
                continue
            wide = t.pivot_table(index="instance", columns="label", values=metric,
                                 aggfunc="first")
            for a, b in itertools.combinations(present, 2):
                if a not in wide or b not in wide:
                    continue
                pair = wide[[a, b]].dropna()
                if len(pair) == 0:
                    continue
                rows.append(_paired_row(task, metric, a, b, pair[a], pair[b]))
                sds.append(rows[-1].pop("_sd"))
    frame = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    if frame.empty:
        return frame
    if luck is not None and len(luck):
        frame = with_tuning_luck(frame, luck)
    # Differences that are all equal (deterministic counts such as FLOPs, or zero on both
    # sides) are exact, not tests: their p-value (0 or 1) stands, outside the Holm family.
    exact = np.array([sd == 0 for sd in sds])
    frame["family"] = families(frame, primary)
    frame["p_adjusted"] = adjust_families(frame, exact)
    levels = family_levels(frame, exact, alpha)
    beyond = [False] * len(frame)
    for family in (PRIMARY, EXPLORATORY):  # each family's Holm steps on their own
        idx = np.flatnonzero(frame["family"].eq(family).to_numpy() & ~exact)
        flags = st.undecidable(frame["p_value"].iloc[idx].tolist(),
                               frame["p_min"].iloc[idx].tolist(), alpha)
        for i, flag in zip(idx, flags, strict=True):
            beyond[i] = flag
    decisions, mdes, needed = [], [], []
    for row, sd, out_of_reach in zip(frame.itertuples(index=False), sds, beyond, strict=True):
        family_alpha = levels[row.family]
        decision = st.decide(row.mean_diff, row.p_adjusted,
                             higher_is_better=METRICS[row.metric].higher_is_better, alpha=alpha)
        decision = _refuse(decision, row, out_of_reach)
        decisions.append(decision)
        mdes.append(_mde(sd, int(row.n), family_alpha))
        needed.append(st.seeds_needed_upper(row.mean_diff, sd, int(row.n), alpha=family_alpha)
                      if decision in (st.UNDECIDED, st.UNDECIDABLE) else math.nan)
    frame["decision"] = decisions
    frame["mde"] = mdes
    frame["seeds_needed"] = needed
    skewed = frame["decision"].eq(st.UNDECIDABLE) & (frame["skew_p"] < st.SKEW_LEVEL)
    frame.loc[skewed, ["ci_low", "ci_high"]] = math.nan  # no interval holds its level there
    return frame


def tuning_luck(scores: pd.DataFrame, labels: list[str], tasks: list[str],
                repeated: set[tuple[str, str]]) -> pd.DataFrame:
    """Per task, every pair of configurations of which one or both had repeated tuning
    searches (``repeated``: their (task, label)): the mean score difference a − b over the
    instances both have, with the interval and p-value of
    :func:`harness.engine.tuning.luck_interval`, which count the luck of the searches' choices."""
    import itertools

    from harness.engine.tuning import luck_interval

    columns = ["task", "a", "b", "n", "searches_a", "searches_b", "mean_diff", "ci_low",
               "ci_high", "p_value", "df", "se_instances", "se_searches"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    s = scores.assign(search=(scores["tuning_repeat"].fillna(0) if "tuning_repeat" in scores
                              else 0))
    cells = s.groupby(["task", "label", "seed", "search"])["score"].mean()
    rows = []
    for task in tasks:
        if task not in cells.index.get_level_values(0):
            continue
        here = cells.loc[task]
        present = [lab for lab in labels if lab in here.index.get_level_values(0)]
        for a, b in itertools.combinations(present, 2):
            if (task, a) not in repeated and (task, b) not in repeated:
                continue
            wide = {lab: here.loc[lab].unstack("search") for lab in (a, b)}
            both = wide[a].mean(axis=1).dropna().index.intersection(
                wide[b].mean(axis=1).dropna().index)
            diffs = (wide[a].loc[both].mean(axis=1) - wide[b].loc[both].mean(axis=1))
            means = [wide[lab].loc[both].mean(axis=0).tolist() for lab in (a, b)]
            e = luck_interval(diffs.tolist(), means)
            rows.append({"task": task, "a": a, "b": b, "n": e.n,
                         "searches_a": wide[a].shape[1], "searches_b": wide[b].shape[1],
                         "mean_diff": e.mean, "ci_low": e.low, "ci_high": e.high,
                         "p_value": e.p_value, "df": e.df, "se_instances": e.se_instances,
                         "se_searches": e.se_searches})
    return pd.DataFrame(rows, columns=columns)


def repeated_searches(scores: pd.DataFrame) -> set[tuple[str, str]]:
    """The (task, label) pairs whose runs come from more than one tuning search
    (``tuning.repeats``; column ``tuning_repeat`` of :func:`run_scores`)."""
    if scores.empty or "tuning_repeat" not in scores:
        return set()
    counts = scores.groupby(["task", "label"])["tuning_repeat"].nunique()
    return {(str(t), str(lab)) for (t, lab), k in counts.items() if k > 1}


LUCK_TEST = "tuning luck"
"""What a score row's ``test`` column adds when the row also counts the tuning's luck."""


def with_tuning_luck(frame: pd.DataFrame, luck: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s score rows of pairs with repeated tuning searches (the rows of ``luck``,
    from :func:`tuning_luck`), made to count the luck of the searches' choices.

    Two tests of the same null hypothesis (no difference in the mean score over both the
    instances and the searches' choices) are combined as an intersection: the row's p-value is
    the larger of the sign-flip test's over instances and the tuning-luck t test's
    (:func:`harness.engine.tuning.luck_interval`), and its interval the hull of the two. The larger
    of two valid p-values is valid (P(max ≤ α) ≤ P(either ≤ α) ≤ α), so the row keeps its level
    whichever of the two models holds: the sign-flip test's, which is exact given the chosen
    configurations but blind to the choice, and the luck interval's, which counts the choice
    under a normal model of the choices' effects. Holm and the decision then use this p-value
    like any other row's. ``test`` says ``… + tuning luck``.
    """
    out = frame.copy()
    keyed = {(r.task, r.a, r.b): r for r in luck.itertuples(index=False)}
    for i, row in enumerate(out.itertuples(index=False)):
        if row.metric != "score":
            continue
        hit = keyed.get((row.task, row.a, row.b))
        if hit is None or not math.isfinite(hit.p_value):
            continue
        j = out.index[i]
        out.at[j, "p_value"] = max(float(row.p_value), float(hit.p_value))
        out.at[j, "ci_low"] = min(float(row.ci_low), float(hit.ci_low))
        out.at[j, "ci_high"] = max(float(row.ci_high), float(hit.ci_high))
        out.at[j, "test"] = f"{row.test} + {LUCK_TEST}"
    return out


def _paired_row(task: str, metric: str, a: str, b: str, x: pd.Series,
                y: pd.Series) -> dict[str, Any]:
    """One comparison's row before Holm: the sign-flip test and its interval
    (:func:`harness.report.stats.paired_sign_flip`), and the differences' sd as ``_sd``."""
    p = st.paired_sign_flip(x.to_numpy(), y.to_numpy())
    return {"task": task, "metric": metric, "a": a, "b": b, "n": p.n,
            "mean_diff": p.mean_diff, "ci_low": p.low, "ci_high": p.high,
            "p_value": p.p_value, "test": p.test, "p_min": p.p_min, "p_mc_se": p.mc_se,
            "skew_p": p.skew_p, "_sd": p.sd}


def _refuse(decision: str, row: Any, out_of_reach: bool) -> str:
    """``undecidable`` in place of a decision the test cannot make at this n: differences too
    skewed for the sign-flip test to hold its level (scipy.stats.skewtest p below
    :data:`harness.report.stats.SKEW_LEVEL`), or an undecided comparison that even the test's
    smallest p-value would not decide at its Holm step (:func:`stats.undecidable`)."""
    if math.isfinite(row.skew_p) and row.skew_p < st.SKEW_LEVEL:
        return st.UNDECIDABLE
    if decision == st.UNDECIDED and out_of_reach:
        return st.UNDECIDABLE
    return decision


def _mde(sd: float, n: int, family_alpha: float) -> float:
    """The t-test's minimum detectable difference at ``family_alpha``; ∞ where the sign-flip
    test's smallest p-value at ``n`` does not go below it (0 for equal differences, which are
    exact, not tests)."""
    if sd != 0 and n >= 2 and st.sign_flip_min_p(n) >= family_alpha:
        return math.inf
    return st.minimum_detectable(sd, n, alpha=family_alpha)


def family_size(comp: pd.DataFrame, family: str | None = None) -> int:
    """m: the comparisons that are tests (a p-value strictly between the exact 0 and 1 of
    equal differences, or a spread in the differences), in ``family`` when given."""
    if comp.empty:
        return 0
    if family is not None:
        comp = comp[comp["family"] == family]
    exact = (comp["ci_low"] == comp["ci_high"]) & comp["p_value"].isin((0.0, 1.0))
    return int((comp["p_value"].notna() & ~exact).sum())


def family_alpha(comp: pd.DataFrame, alpha: float = st.ALPHA,
                 family: str | None = None) -> float:
    """α/m: the level ``mde`` and ``seeds_needed`` of ``family`` are computed at."""
    return alpha / max(family_size(comp, family), 1)


# --- families: primary and exploratory ---------------------------------------------------------


def suite_compare(store_path: Path) -> list[list[str]] | CompareSpec | None:
    """The ``compare`` key of the suite file kept in the store (None without one, or when the
    file does not read: ``validate`` is where a suite file's errors are reported)."""
    try:
        data = yaml.safe_load((Path(store_path) / "suite.yaml").read_text())
        value = data.get("compare") if isinstance(data, dict) else None
        if value is None:
            return None
        adapter: TypeAdapter[Any] = TypeAdapter(Suite.model_fields["compare"].annotation)
        return adapter.validate_python(value)
    except (OSError, yaml.YAMLError, ValidationError, TypeError, AttributeError):
        return None


def stands_for(data: StoreData, scores: pd.DataFrame, task: str, name: str) -> str | None:
    """The configuration a name of ``compare`` stands for on ``task``: as in a claim
    (:func:`representatives`: the label itself, or an algorithm's best configuration), else a
    swept label's best sweep point (``ppo-kl`` for ``ppo-kl[kl_coef=0.1]``, ...); None when
    it has no counted run there."""
    found = representatives(data, scores, task, [name])
    if name in found:
        return found[name]
    sub = scores[(scores["task"] == task)
                 & scores["label"].astype(str).str.startswith(name + "[")]
    if sub.empty:
        return None
    means = sub.groupby("label")["score"].mean()
    return str(means.idxmax()) if means.notna().any() else str(sub["label"].iloc[0])


def best_and_runner_up(inst: pd.DataFrame, task: str, labels: list[str],
                       still: Iterable[tuple[str, str]] = ()) -> tuple[str, str] | None:
    """The two configurations with the highest mean instance score on ``task`` (ties in the
    order of ``labels``), leaving out those in ``still`` (did not learn); None below two."""
    left_out = set(still)
    t = inst[inst["task"] == task] if len(inst) else inst
    means: dict[str, float] = {}
    for label in labels:
        if (task, label) in left_out or t.empty:
            continue
        score = _mean(t.loc[t["label"] == label, "score"])
        if math.isfinite(score):
            means[label] = score
    ranked = sorted(means, key=lambda lab: -means[lab])
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def primary_pairs(data: StoreData, inst: pd.DataFrame, scores: pd.DataFrame,
                  compare: list[list[str]] | CompareSpec | None = None,
                  still: Iterable[tuple[str, str]] = ()) -> pd.DataFrame:
    """The primary comparisons (``task, metric, a, b, why``), by the rule of the module
    docstring: the claims' steps (``why``: ``claim i``) and either best vs runner-up per task
    (without ``compare``), the suite's pairs (``compare``) or every configuration against the
    baseline (``baseline``). A row names a pair once, in either order, the first reason kept."""
    rows: list[tuple[str, str, str, str, str]] = []
    for i, claim in enumerate(data.claims):
        for task in data.tasks:
            reps = representatives(data, scores, task, claim.order)
            if any(n not in reps for n in claim.order):
                continue
            for x, y in itertools.pairwise(claim.order):
                rows += [(task, metric, reps[x], reps[y], f"claim {i}")
                         for metric in claim_metrics(claim)]
    for task in data.tasks:
        present = [lab for lab in data.labels
                   if len(inst) and ((inst["task"] == task) & (inst["label"] == lab)).any()]
        if compare is None:
            pair = best_and_runner_up(inst, task, data.labels, still)
            if pair is not None:
                rows.append((task, "score", *pair, "best vs runner-up"))
        elif isinstance(compare, CompareSpec):
            base = stands_for(data, scores, task, compare.baseline)
            if base is not None:
                rows += [(task, "score", lab, base, "baseline") for lab in present
                         if lab != base]
        else:
            for x, y in compare:
                lx, ly = stands_for(data, scores, task, x), stands_for(data, scores, task, y)
                if lx is not None and ly is not None and lx != ly:
                    rows.append((task, "score", lx, ly, "compare"))
    seen: set[tuple[str, str, frozenset[str]]] = set()
    kept = []
    for row in rows:
        key = (row[0], row[1], frozenset(row[2:4]))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return pd.DataFrame(kept, columns=list(PRIMARY_COLUMNS))


def families(frame: pd.DataFrame, primary: pd.DataFrame | None) -> list[str]:
    """Per comparison row, :data:`PRIMARY` when ``primary`` names its (task, metric, pair) in
    either order, else :data:`EXPLORATORY`; every row primary when ``primary`` is None."""
    if primary is None:
        return [PRIMARY] * len(frame)
    keys = {(t, m, frozenset((a, b))) for t, m, a, b in
            primary[["task", "metric", "a", "b"]].itertuples(index=False)}
    return [PRIMARY if (t, m, frozenset((a, b))) in keys else EXPLORATORY
            for t, m, a, b in frame[["task", "metric", "a", "b"]].itertuples(index=False)]


def adjust_families(frame: pd.DataFrame, exact: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, within each family of ``frame["family"]`` on its own; rows
    marked ``exact`` (equal differences) keep their p-value and enter no family."""
    p = frame["p_value"].to_numpy(dtype=float)
    out = p.copy()
    for family in (PRIMARY, EXPLORATORY):
        sel = (frame["family"] == family).to_numpy() & ~exact
        if sel.any():
            out[sel] = st.holm(p[sel].tolist())
    return out


def family_levels(frame: pd.DataFrame, exact: np.ndarray,
                  alpha: float = st.ALPHA) -> dict[str, float]:
    """α/m of each family, m its tests (finite p-values of rows not ``exact``)."""
    tests = frame["p_value"].notna().to_numpy() & ~exact
    return {family: alpha / max(int((tests & (frame["family"] == family).to_numpy()).sum()), 1)
            for family in (PRIMARY, EXPLORATORY)}


def primary_rows(comp: pd.DataFrame) -> pd.DataFrame:
    """The comparisons of the primary family (all of them for a frame without ``family``)."""
    if "family" not in comp:
        return comp
    return comp[comp["family"] == PRIMARY]


def lookup(comp: pd.DataFrame, task: str, metric: str, x: str, y: str) -> str | None:
    """The decision of the comparison of ``x`` and ``y`` on ``metric``, as the better label
    (``x`` or ``y``), ``""`` when undecided, None when there is no such comparison."""
    sel = comp[(comp["task"] == task) & (comp["metric"] == metric)
               & (((comp["a"] == x) & (comp["b"] == y)) | ((comp["a"] == y) & (comp["b"] == x)))]
    if sel.empty:
        return None
    row = sel.iloc[0]
    if row["decision"] == st.A_BETTER:
        return str(row["a"])
    if row["decision"] == st.B_BETTER:
        return str(row["b"])
    return ""


# --- claims ------------------------------------------------------------------------------------

SUPPORTED, NOT_SUPPORTED, MIXED, UNDECIDED = "supported", "not supported", "mixed", "undecided"


def claim_text(claim: ClaimSpec) -> str:
    return f"from {' to '.join(claim.order)}, {claim.aspect} {claim.trend}"


def claim_metrics(claim: ClaimSpec) -> list[str]:
    """The quantities of :data:`METRICS` a claim's steps are judged on: those of its aspect
    (for computation, only those of its basis: cost to reach, or per-step cost)."""
    return [m for m, spec in METRICS.items() if spec.aspect == claim.aspect
            and (not spec.basis or spec.basis == claim.computation)]


def claim_basis(claim: ClaimSpec) -> str:
    """What a claim is judged on, in words: for computation, the cost to reach half the target
    or the per-step cost at the fixed budget; for the other aspects, empty."""
    if claim.aspect != "computation":
        return ""
    names = [m for m, spec in METRICS.items() if spec.basis == claim.computation]
    what = ("cost to reach half the target" if claim.computation == COST_TO_REACH
            else "per-step cost at the fixed budget")
    return f"{what} ({', '.join(names)})"


def representatives(data: StoreData, scores: pd.DataFrame, task: str,
                    names: list[str]) -> dict[str, str]:
    """Per name of a claim, the label it stands for on ``task``: the label itself, or for an
    algorithm name the configuration of that algorithm with the highest mean score."""
    out = {}
    sub = scores[scores["task"] == task]
    for name in names:
        if name in set(sub["label"]):
            out[name] = name
            continue
        alg = sub[sub["algorithm"] == name]
        if alg.empty:
            continue
        means = alg.groupby("label")["score"].mean()
        out[name] = str(means.idxmax()) if means.notna().any() else str(alg["label"].iloc[0])
    return out


def step_verdict(comp: pd.DataFrame, task: str, aspect: str, better: str,
                 worse: str, basis: str = COST_TO_REACH) -> tuple[str, list[str], float]:
    """Whether ``better`` beats ``worse`` on ``aspect``: its verdict, the metrics decided
    (``metric: label``) and, when undecided, the fewest instances that would decide one. For
    computation, only the quantities of ``basis`` (``cost_to_reach`` or ``per_step``) count."""
    favour, against, decided = False, False, []
    needed = math.inf
    for metric, spec in METRICS.items():
        if spec.aspect != aspect or (spec.basis and spec.basis != basis):
            continue
        winner = lookup(comp, task, metric, better, worse)
        if winner is None:
            continue
        if winner:
            decided.append(f"{metric}: {winner}")
            favour |= winner == better
            against |= winner == worse
        else:
            sel = comp[(comp["task"] == task) & (comp["metric"] == metric)
                       & comp["a"].isin((better, worse)) & comp["b"].isin((better, worse))]
            value = float(sel["seeds_needed"].iloc[0])
            if math.isfinite(value):
                needed = min(needed, value)
    if favour and against:
        return MIXED, decided, math.nan
    if favour:
        return SUPPORTED, decided, math.nan
    if against:
        return NOT_SUPPORTED, decided, math.nan
    return UNDECIDED, decided, needed


def claim_verdicts(data: StoreData, comp: pd.DataFrame, scores: pd.DataFrame,
                   claims: list[ClaimSpec]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per claim and task: one row per step of its ordering, and one overall row."""
    steps, overall = [], []
    for i, claim in enumerate(claims):
        for task in data.tasks:
            reps = representatives(data, scores, task, claim.order)
            missing = [n for n in claim.order if n not in reps]
            base = {"claim": i, "text": claim_text(claim), "source": claim.source,
                    "aspect": claim.aspect, "basis": claim_basis(claim), "task": task}
            if missing:
                overall.append({**base, "configurations": "", "verdict": "not tested",
                                "seeds_needed": math.nan,
                                "note": f"no counted runs of {', '.join(missing)}"})
                continue
            verdicts, needs = [], []
            for x, y in itertools.pairwise(claim.order):
                lx, ly = reps[x], reps[y]
                y_better = (claim.trend == "increases") != (claim.aspect == "computation")
                better, worse = (ly, lx) if y_better else (lx, ly)
                verdict, decided, needed = step_verdict(comp, task, claim.aspect, better, worse,
                                                        claim.computation)
                verdicts.append(verdict)
                if verdict == UNDECIDED:
                    needs.append(needed)
                steps.append({**base, "step": f"{lx} → {ly}", "expected_better": better,
                              "decided": "; ".join(decided), "verdict": verdict,
                              "seeds_needed": needed if verdict == UNDECIDED else math.nan})
            if NOT_SUPPORTED in verdicts:
                verdict = NOT_SUPPORTED
            elif all(v == SUPPORTED for v in verdicts):
                verdict = SUPPORTED
            elif MIXED in verdicts:
                verdict = MIXED
            else:
                verdict = UNDECIDED
            need = max(needs) if verdict == UNDECIDED and needs else math.nan
            overall.append({**base, "configurations": " → ".join(reps[n] for n in claim.order),
                            "verdict": verdict, "seeds_needed": need, "note": ""})
    return pd.DataFrame(steps), pd.DataFrame(overall)


# --- flags -------------------------------------------------------------------------------------


def not_learned(inst: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, label) of configurations that did not move from π_ref beyond noise: the t
    interval of their per-instance gold gain holds 0 and their mean final KL is below
    :data:`NOT_LEARNED_KL` nats. (Not "or its t interval holds 0": KL is ≥ 0, so a policy that
    moved far in some instances has an interval reaching below 0: it moved, without gain.)"""
    out = []
    for (task, label), sub in inst.groupby(["task", "label"], sort=False):
        gain = st.t_interval(sub["gold_gain"])
        kl = st.t_interval(sub["final_kl_ref"])
        if not math.isfinite(gain.value) or not math.isfinite(kl.value):
            continue
        gold_still = (gain.has_interval and gain.low <= 0 <= gain.high) or gain.value == 0
        kl_still = kl.value < NOT_LEARNED_KL
        if gold_still and kl_still:
            out.append((str(task), str(label)))
    return out


# --- several budgets ---------------------------------------------------------------------------

CROSSOVER_COLUMNS = ("task", "budget_kind", "a", "b", "decisions", "ahead", "behind",
                     "from_budget", "at_every_budget")


def crossovers(comp: pd.DataFrame, budgets: dict[str, tuple[str, str, float]],
               metric: str = "score") -> pd.DataFrame:
    """Who wins from which budget: for each task run at several budgets and each pair of
    configurations compared on it, the smallest budget B from which one of the two is decided
    ahead of the other on ``metric`` at B and at every larger budget (``from_budget``; NaN and
    ``ahead`` "none" when there is none).

    ``comp`` is :func:`comparisons`' table, whose tasks are the report's (``bandit @ 8192
    samples``: each budget compared on its own, never across budgets); ``budgets`` maps each to
    (task, budget kind, budget) (:attr:`harness.report.data.StoreData.budgets`). A pair not
    compared at some budget (no shared instance with counted runs) is decided at none from
    there down: a decision must hold at every larger budget, so one that flips back, or is
    undecided, at a larger budget starts no crossover. ``decisions`` lists the decision at each
    budget, smallest first (``8192: grpo; 32768: undecided``; ``not compared`` where there is
    no comparison); ``at_every_budget`` is True when ``from_budget`` is the smallest.
    """
    rows: list[dict[str, Any]] = []
    by_task: dict[str, list[tuple[float, str, str]]] = {}
    for name, (task, kind, value) in budgets.items():
        by_task.setdefault(task, []).append((value, kind, name))
    sel = comp[comp["metric"] == metric] if len(comp) else comp
    for task in sorted(by_task):
        levels = sorted(by_task[task])
        names = [name for _, _, name in levels]
        pairs: dict[frozenset[str], tuple[str, str]] = {}
        for r in sel[sel["task"].isin(names)].itertuples(index=False) if len(sel) else []:
            pairs.setdefault(frozenset((str(r.a), str(r.b))), (str(r.a), str(r.b)))
        for a, b in pairs.values():
            winners = [lookup(sel, name, metric, a, b) for name in names]
            start = len(winners)
            while (start > 0 and winners[start - 1]
                   and winners[start - 1] == winners[-1]):
                start -= 1
            found = start < len(winners)
            ahead = str(winners[-1]) if found else "none"
            shown = "; ".join(f"{value:g}: " + ("not compared" if w is None else w or UNDECIDED)
                              for (value, _, _), w in zip(levels, winners, strict=True))
            rows.append({
                "task": task, "budget_kind": levels[0][1], "a": a, "b": b,
                "decisions": shown, "ahead": ahead,
                "behind": (b if ahead == a else a) if found else "none",
                "from_budget": levels[start][0] if found else math.nan,
                "at_every_budget": found and start == 0,
            })
    return pd.DataFrame(rows, columns=list(CROSSOVER_COLUMNS))


def crossover_sentence(table: pd.DataFrame, task: str) -> str:
    """One sentence on ``task`` from its rows of :func:`crossovers`: which configuration is
    ahead of which, and from which budget."""
    sub = table[table["task"] == task]
    if sub.empty:
        return f"On {task}, no two configurations are compared."
    kind = str(sub["budget_kind"].iloc[0])
    found = sub[sub["ahead"] != "none"]
    if found.empty:
        return (f"On {task}, no configuration is decided ahead of another at the largest "
                f"budget, so there is no crossover ({len(sub)} pair"
                f"{'s' if len(sub) != 1 else ''} compared).")
    items = [f"{r.ahead} ahead of {r.behind} "
             + ("at every budget" if r.at_every_budget else f"from {r.from_budget:g} {kind}")
             for r in found.sort_values(["from_budget", "ahead", "behind"],
                                        kind="stable").itertuples(index=False)]
    return (f"On {task}, {len(found)} of {len(sub)} pairs are decided from some budget on: "
            + "; ".join(items) + ".")
