"""The report's opening: the overview of the suite, and the summary that answers which
configuration is best on each task, by how much and how sure, naming what did not learn or
diverged, with the decided comparisons.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report import compare as cmp
from harness.report import figures as fig
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.document import STATUS_ORDER, Report, _join, fmt


def overview(rep: Report) -> None:
    d = rep.data
    runs = d.runs
    rep.add(Heading(f"Report: {d.suite}", 1))
    counts = runs["status"].value_counts()
    status_text = _join(f"{int(counts[s])} {s}" for s in
                        [*STATUS_ORDER, *sorted(set(counts.index) - set(STATUS_ORDER))]
                        if s in counts)
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    replicates = runs.groupby(["task", "label", "seed"])["replicate"].nunique()
    reps = sorted({int(r) for r in replicates}) if len(replicates) else [1]
    budgets = runs[["budget_kind", "budget"]].drop_duplicates()
    budget_text = _join(f"{k} = {fmt(v)}" for k, v in budgets.itertuples(index=False))
    rep.text(
        "Suite {suite}: {n} runs of {k} algorithm configurations ({labels}) on {t} "
        "({tasks}): task instances (seeds) {seeds}, with {reps} training replicate{plural} "
        "per instance; budget {budget}. Statuses: {statuses}.",
        suite=d.suite, n=len(runs), k=len(d.labels), labels=_join(d.labels),
        t=f"{len(d.tasks)} task" + ("s" if len(d.tasks) != 1 else ""),
        tasks=_join(d.tasks), seeds=_join(seeds), reps=_join(reps),
        plural="" if reps == [1] else "s", budget=budget_text,
        statuses=status_text,
    )
    rep.text("Computed from the run store {path} alone; learning curves are drawn against "
             "{x}.", path=str(d.path), x=fig.X_NAMES[rep.opts.x])


def summary_section(rep: Report) -> None:
    """Which configuration is best on each task, by how much, how sure; the claims; flags."""
    d, comp = rep.data, rep.comp
    rep.add(Heading("Summary"))
    still = set(rep.still)
    lines = []
    for task in d.tasks:
        kind = cmp.score_kind(d.runs, task)
        t = rep.inst[(rep.inst["task"] == task)] if len(rep.inst) else rep.inst
        means = {}
        for label in d.labels:
            sub = t[t["label"] == label] if len(t) else t
            if len(sub) and (task, label) not in still and sub["score"].notna().any():
                means[label] = st.t_interval(sub["score"])
        if not means:
            rep.text("{task}: no configuration that learned has a score.", task=task)
            continue
        ranked = sorted(means, key=lambda lab: -means[lab].value)
        best = ranked[0]
        what = cmp.SCORE_KINDS[kind]
        if len(ranked) == 1:
            rep.text("{task}: {best} is the only configuration that learned; score {score} "
                     "({what}).", task=task, best=best, score=means[best].format(), what=what)
            continue
        second = ranked[1]
        row = comp[(comp["task"] == task) & (comp["metric"] == "score")
                   & comp["a"].isin((best, second)) & comp["b"].isin((best, second))]
        if row.empty:
            rep.text("{task}: highest mean score {best} ({score}; {what}); no instance is "
                     "shared with {second}, so the two are not compared.", task=task, best=best,
                     score=means[best].format(), what=what, second=second)
            continue
        r = row.iloc[0]
        sign = 1.0 if r["a"] == best else -1.0
        diff = st.Estimate(sign * r["mean_diff"], *sorted((sign * r["ci_low"],
                                                           sign * r["ci_high"])))
        winner = cmp.lookup(comp, task, "score", best, second)
        if winner == best:
            sure = "decided (Holm-adjusted p = {p}, {family} family)"
        else:  # undecided, or undecidable at this n (said so, whatever its p-value)
            verdict = ("not decided" if r["decision"] != st.UNDECIDABLE
                       else decision_text(r["decision"], r["n"], r.get("skew_p", math.nan)))
            sure = (verdict + " (Holm-adjusted p = {p}, {family} family); with 90% "
                    "confidence {need} instances would decide a difference this large with 80% "
                    "power")
        rep.text("{task}: best {best}, score {score} ({what}); ahead of {second} by {diff} "
                 "(paired over {n} instances, 95% sign-flip interval): " + sure + ".",
                 task=task, best=best, score=means[best].format(), what=what, second=second,
                 diff=diff.format(), n=int(r["n"]), p=fmt(r["p_adjusted"]),
                 need=fmt(r["seeds_needed"]), family=r["family"])
        lines.append(task)
    _decided_summary(rep)
    overall = rep.claim_overall
    for i, claim in enumerate(d.claims):
        sub = overall[overall["claim"] == i] if len(overall) else overall
        if sub.empty:
            continue
        parts = []
        for r in sub.itertuples(index=False):
            need = (f", {fmt(r.seeds_needed)} instances to decide (90% upper bound)"
                    if r.verdict == cmp.UNDECIDED and math.isfinite(r.seeds_needed) else "")
            parts.append(f"{r.task}: {r.verdict}{need}" if r.verdict != "not tested"
                         else f"{r.task}: not tested ({r.note})")
        rep.text("Claim \"{text}\"{source}: {verdicts}.", text=cmp.claim_text(claim),
                 source=f" ({claim.source})" if claim.source else "", verdicts="; ".join(parts))
    if still:
        rep.text("Did not learn (final gold reward and KL not different from π_ref's beyond "
                 "noise), left out of rankings: {labels}.",
                 labels=_join(f"{lab} on {task}" if rep.multi_task else lab
                              for task, lab in rep.still))
    div = d.runs[d.runs["status"] == "diverged"]
    if len(div):
        counts = div.groupby(["task", "label"]).size()
        total = d.runs.groupby(["task", "label"]).size()
        rep.text("Diverged: {labels}.", labels=_join(
            f"{lab}{' on ' + task if rep.multi_task else ''} ({n} of {total[(task, lab)]} runs)"
            for (task, lab), n in counts.items()))
    for task in d.tasks:
        t = comp[comp["task"] == task]
        if len(t) and not is_decided(t["decision"]).any():
            score = t[t["metric"] == "score"]["seeds_needed"]
            score = score[np.isfinite(score)]
            rep.text("{task}: no comparison is decided{need}.", task=task,
                     need=(f"; the reward comparisons would need {fmt(score.min())} to "
                           f"{fmt(score.max())} instances (90% upper bounds)"
                           if len(score) else ""))


def is_decided(decision: pd.Series) -> pd.Series:
    """Rows decided either way (not undecided, not undecidable at their n)."""
    return decision.isin((st.A_BETTER, st.B_BETTER))


def decision_text(decision: str, n: float, skew_p: float) -> str:
    """A comparison's decision as the report prints it: ``undecidable at n = 10`` (with why
    when the differences are too skewed), else the decision itself."""
    if decision != st.UNDECIDABLE:
        return decision
    why = (": skewed differences" if math.isfinite(skew_p) and skew_p < st.SKEW_LEVEL else "")
    return f"undecidable at n = {int(n)}{why}"


SUMMARY_DECIDED = 12
"""The most decided comparisons the summary lists (the most certain first); the section
"Paired comparisons" lists them all."""


def decided_comparisons(comp: pd.DataFrame) -> list[str]:
    """Each decided comparison in one phrase, the most certain first (smallest Holm-adjusted
    p, then task and quantity): ``bandit, normalised score: grpo > dpo by 0.12 [0.05, 0.19]
    (Holm-adjusted p = 0.003)``; for a quantity where lower is better, ``<``."""
    if comp.empty:
        return []
    decided = comp[is_decided(comp["decision"])].copy()
    order = {name: i for i, name in enumerate(cmp.METRICS)}
    decided["_metric"] = decided["metric"].map(order)
    decided = decided.sort_values(["p_adjusted", "task", "_metric", "a", "b"], kind="stable")
    out = []
    for r in decided.itertuples(index=False):
        metric = cmp.METRICS[r.metric]
        a_better = r.decision == st.A_BETTER
        better, worse = (r.a, r.b) if a_better else (r.b, r.a)
        sign = 1.0 if a_better else -1.0
        diff = st.Estimate(sign * r.mean_diff, *sorted((sign * r.ci_low, sign * r.ci_high)))
        if not metric.higher_is_better:
            diff = st.Estimate(-diff.value, -diff.high, -diff.low)
        relation = ">" if metric.higher_is_better else "<"
        out.append(f"{r.task}, {metric.description}: {better} {relation} {worse} by "
                   f"{diff.format()} (Holm-adjusted p = {fmt(r.p_adjusted)})")
    return out


def _decided_summary(rep: Report) -> None:
    """Every decided primary comparison, then every decided exploratory one, labelled so (the
    :data:`SUMMARY_DECIDED` most certain of each, when more)."""
    comp = rep.comp
    for family, title in ((cmp.PRIMARY, "Decided comparisons"),
                          (cmp.EXPLORATORY, "Decided exploratory comparisons")):
        rows = comp[comp["family"] == family] if len(comp) else comp
        phrases = decided_comparisons(rows)
        if not phrases:
            continue
        shown = phrases[:SUMMARY_DECIDED]
        more = (f"; {len(phrases) - len(shown)} more in the section Paired comparisons"
                if len(phrases) > len(shown) else "")
        what = ("primary, " if family == cmp.PRIMARY else
                "exploratory: not named in advance, Holm-adjusted in a family of their own, ")
        rep.text(title + " ({k} of {m}, {what}the most certain first{more}): {items}.",
                 k=len(phrases), m=len(rows), what=what, more=more, items="; ".join(shown))
