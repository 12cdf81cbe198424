"""Comparisons that decide: per-instance values, paired differences, claims and flags.

A task *instance* (its seed fixes the task draw, the preference data and r̂) is the unit of
every comparison: each configuration's runs on an instance (its replicates) are first reduced
to one value per instance, and two configurations are compared on the instances they share, by
the per-instance differences (the paired sign-flip permutation test and the interval that
inverts it, :func:`harness.report.stats.paired_sign_flip`; each row names its test and its n).
The quantities compared (:data:`METRICS`):

- **score** (reward, higher is better): per run, the *gap closure*
  (J_β(π) − J_β(π_ref)) / (J_β(π*_β) − J_β(π_ref)) = 1 − regret/regret(π_ref) where the task
  knows its optimum (the regret evaluator ran); else the gold gain over π_ref,
  r*(π) − r*(π_ref), divided by the largest mean gain of any configuration on the task.
- **replicate_std** (stability, lower is better): the standard deviation of the final gold reward
  across an instance's replicates (needs two or more).
- **divergence_rate** (stability): the fraction of an instance's finished runs that diverged.
- **drawdown** (stability): the mean worst fall of gold reward below its running best.
- **cpu_seconds**, **flops**, **model_state_mb** (computation, lower is better): process CPU
  seconds of generation, scoring and training; FLOPs of neural policies (none for tabular
  ones); megabytes of parameters, gradients and optimiser state resident.

Every pair of configurations on a task is compared on each quantity; the p-values of all the
comparisons of a report form one family, Holm-adjusted — except comparisons whose per-instance
differences are all equal (a deterministic count such as FLOPs, or zero on both sides), which
are exact rather than tests and keep their p-value of 0 or 1. ``mde`` and ``seeds_needed`` are
computed at α/m (m the size of the family), the strictest step of Holm's procedure, so that at
``seeds_needed`` instances a difference like the observed one is decided under the report's
adjustment with at least 80% power — with 90% confidence: ``seeds_needed`` is the count at a 90%
lower confidence bound of the effect size (:func:`harness.report.stats.seeds_needed_upper`), not
at the observed effect, which falls short about half of the time.

A comparison the test cannot decide is ``undecidable`` (not ``undecided``): where even the
test's smallest p-value at its n (``p_min``, 2/2^n) would not pass its Holm step, or where the
differences are too skewed for the test to hold its level (``skew_p`` below
:data:`harness.report.stats.SKEW_LEVEL`; such rows print no interval).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.report import stats as st
from harness.report.data import StoreData
from harness.suite import ClaimSpec

COMPARISON_COLUMNS = ("task", "metric", "a", "b", "n", "mean_diff", "ci_low", "ci_high",
                      "p_value", "p_adjusted", "decision", "mde", "seeds_needed", "test",
                      "p_min", "p_mc_se", "skew_p")


@dataclass(frozen=True)
class Metric:
    name: str
    aspect: str
    description: str
    higher_is_better: bool


METRICS = {
    m.name: m for m in (
        Metric("score", "reward", "normalised score", True),
        Metric("replicate_std", "stability", "std of final gold across replicates", False),
        Metric("divergence_rate", "stability", "divergence rate", False),
        Metric("drawdown", "stability", "worst drawdown of gold reward", False),
        Metric("cpu_seconds", "computation", "training CPU seconds", False),
        Metric("flops", "computation", "FLOPs", False),
        Metric("model_state_mb", "computation", "model state (MB)", False),
    )
}
NOT_LEARNED_KL = 1e-3
"""Nats: a configuration whose final KL(π‖π_ref) stays below this has not moved from π_ref."""


def score_kind(runs: pd.DataFrame, task: str) -> str:
    """``gap closure`` when the task's runs know their optimum (regret), else ``gold gain``."""
    sub = runs[runs["task"] == task]
    has = (sub["initial_regret"].notna() & (sub["initial_regret"] > 0)
           & sub.get("final_regret", pd.Series(np.nan, index=sub.index)).notna())
    return "gap closure" if len(sub) and bool(has.any()) else "gold gain"


def run_scores(data: StoreData) -> pd.DataFrame:
    """The counted runs with their per-run ``score`` (see the module docstring)."""
    u = data.usable.copy()
    if "final_regret" not in u:
        u["final_regret"] = np.nan
    u["score"] = np.nan
    for task in data.tasks:
        sel = u["task"] == task
        if score_kind(u, task) == "gap closure":
            r0 = u.loc[sel, "initial_regret"].where(u.loc[sel, "initial_regret"] > 0)
            u.loc[sel, "score"] = 1 - u.loc[sel, "final_regret"] / r0
        else:
            gain = u.loc[sel, "final_gold_reward"] - u.loc[sel, "initial_gold_reward"]
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
    rows = []
    for (task, label, seed), sub in finished.groupby(["task", "label", "seed"], sort=False):
        counted = sub[sub["status"].isin(("done", "diverged"))]
        done = sub[sub["status"] == "done"]
        gold = counted["final_gold_reward"].dropna()
        gain = (counted["final_gold_reward"] - counted["initial_gold_reward"]).dropna()
        rows.append({
            "task": task, "label": label, "algorithm": sub["algorithm"].iloc[0],
            "instance": seed, "runs": len(sub), "counted": len(counted),
            "score": _mean(counted["score"]),
            "final_gold_reward": _mean(gold),
            "final_kl_ref": _mean(counted["final_kl_ref"]),
            "gold_gain": _mean(gain),
            "replicate_std": float(gold.std(ddof=1)) if len(gold) >= 2 else math.nan,
            "replicate_df": max(len(gold) - 1, 0),
            "divergence_rate": float((sub["status"] == "diverged").mean()),
            "drawdown": _mean(counted["drawdown"]),
            "cpu_seconds": _mean(done["train_cpu_seconds"]),
            "flops": _mean(done["flops"]),
            "model_state_mb": _mean(done["model_state_bytes"]) / 2**20,
        })
    return pd.DataFrame(rows)


def _mean(values: pd.Series) -> float:
    a = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else math.nan


def comparisons(inst: pd.DataFrame, labels: list[str], tasks: list[str],
                alpha: float = st.ALPHA) -> pd.DataFrame:
    """Every pair of configurations on every task, on every metric with data, paired by
    instance; Holm-adjusted over all of them (see the module docstring)."""
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
    # Differences that are all equal (deterministic counts such as FLOPs, or zero on both
    # sides) are exact, not tests: their p-value (0 or 1) stands, outside the Holm family.
    exact = np.array([sd == 0 for sd in sds])
    tests = frame["p_value"].where(~exact)
    frame["p_adjusted"] = np.where(exact, frame["p_value"], st.holm(tests.tolist()))
    beyond = st.undecidable(tests.tolist(), frame["p_min"].tolist(), alpha)
    m = int(tests.notna().sum())
    family_alpha = alpha / max(m, 1)
    decisions, mdes, needed = [], [], []
    for row, sd, out_of_reach in zip(frame.itertuples(index=False), sds, beyond, strict=True):
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


def family_size(comp: pd.DataFrame) -> int:
    """m: the comparisons that are tests (a p-value strictly between the exact 0 and 1 of
    equal differences, or a spread in the differences)."""
    if comp.empty:
        return 0
    exact = (comp["ci_low"] == comp["ci_high"]) & comp["p_value"].isin((0.0, 1.0))
    return int((comp["p_value"].notna() & ~exact).sum())


def family_alpha(comp: pd.DataFrame, alpha: float = st.ALPHA) -> float:
    """α/m: the level ``mde`` and ``seeds_needed`` are computed at."""
    return alpha / max(family_size(comp), 1)


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
                 worse: str) -> tuple[str, list[str], float]:
    """Whether ``better`` beats ``worse`` on ``aspect``: its verdict, the metrics decided
    (``metric: label``) and, when undecided, the fewest instances that would decide one."""
    favour, against, decided = False, False, []
    needed = math.inf
    for metric, spec in METRICS.items():
        if spec.aspect != aspect:
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
                    "aspect": claim.aspect, "task": task}
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
                verdict, decided, needed = step_verdict(comp, task, claim.aspect, better, worse)
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
