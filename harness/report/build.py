"""Compute a suite's report from its run store and write it: Markdown, HTML, PNG and CSV.

Every sentence of the report is a template filled from the data; which sentences appear depends
on the data too (a section says what is missing rather than asserting anything fixed). Method
notes describe how numbers are computed, never what they show.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError, HarnessError
from harness.report import compare as cmp
from harness.report import cost as cst
from harness.report import figures as fig
from harness.report import stats as st
from harness.report.colours import RGB
from harness.report.colours import palette as label_palette
from harness.report.data import PHASES, X_AXES, StoreData, eval_series, load_store, on_grid
from harness.report.render import Block, Figure, Heading, Table, Text, to_html, to_markdown
from harness.reproduce import RUNS_FILE, run_line
from harness.store import atomic_write_bytes

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a CSV cell."""


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that starts like a formula (a label
    ``=HYPERLINK(...)``, ``@SUM(...)``) gets a leading ``'``; numbers, and text that reads as a
    number (``-0.5``), are left as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell, and every column name, made :func:`_cell`-safe."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column])
                or pd.api.types.is_datetime64_any_dtype(out[column])):
            out[column] = out[column].astype(object).map(_cell)
    if not isinstance(out.columns, pd.MultiIndex):
        out.columns = [_cell(c) for c in out.columns]
    return out


def _write(path: Path, data: bytes) -> None:
    """Atomically, and readable by all (reports are published; mkstemp makes files 0600)."""
    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)

STATUS_ORDER = ("done", "diverged", "failed", "running")
CURVE_METRICS = ("gold_reward", "proxy_reward", "kl_ref")


@dataclass
class ReportOptions:
    """How a report is computed (see :func:`write_report`)."""

    x: str = "step"
    threshold: float = 0.9
    max_points: int = 100
    spike_k: float = 5.0
    figures: bool = True
    """Draw the figures. False (for tests of tables and text only; the CLI never sets it): no
    figure and no sentence about which figures were drawn; tables and other text unchanged."""

    def __post_init__(self) -> None:
        if self.x not in X_AXES:
            raise ConfigError(f"x-axis {self.x!r}: choose one of {', '.join(X_AXES)}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold {self.threshold}: a fraction in (0, 1]")


def fmt(x: Any, digits: int = 3) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "not reached" if f > 0 else "-∞"
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.{digits}g}"


def _est(prefix: str, e: st.Estimate) -> dict[str, float]:
    return {prefix: e.value, f"{prefix}_low": e.low, f"{prefix}_high": e.high}


def _join(items: Iterable[Any]) -> str:
    items = [str(i) for i in items]
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass
class Report:
    """What is being built: the blocks, the CSV tables written, the figures drawn."""

    data: StoreData
    opts: ReportOptions
    out: Path
    blocks: list[Block] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    per_run: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per run: worst drawdown, loss and grad-norm spikes."""
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Counted runs with their normalised ``score``."""
    inst: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (task, label, instance): the compared quantities (:mod:`compare`)."""
    comp: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The paired comparisons (``tables/comparisons.csv``), each in the primary or the
    exploratory family (column ``family``)."""
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The primary comparisons by rule (:func:`compare.primary_pairs`: task, metric, a, b, why)."""
    compare: Any = None
    """The suite's ``compare`` key (pairs, a baseline, or None)."""
    still: list[tuple[str, str]] = field(default_factory=list)
    """(task, label) of configurations that did not learn."""
    claim_steps: pd.DataFrame = field(default_factory=pd.DataFrame)
    claim_overall: pd.DataFrame = field(default_factory=pd.DataFrame)
    colours: dict[str, RGB] = field(default_factory=dict)
    """Each label's colour in every figure (:mod:`harness.report.colours`)."""

    def prepare(self) -> None:
        """Compute what several sections share: per-run stability, scores, instances,
        comparisons, claims, the configurations that did not learn, and the colours."""
        runs = self.data.runs
        algorithms = ({lab: alg for lab, alg in zip(runs["label"], runs["algorithm"],
                                                       strict=True) if isinstance(alg, str)}
                      if {"label", "algorithm"} <= set(runs.columns) else {})
        self.colours = label_palette(self.data.labels, algorithms)
        self.per_run = _run_stability(self.data, self.opts.spike_k)
        self.scores = cmp.run_scores(self.data)
        self.inst = cmp.instance_table(self.data, self.per_run)
        self.still = cmp.not_learned(self.inst) if len(self.inst) else []
        self.compare = cmp.suite_compare(self.data.path)
        self.primary = cmp.primary_pairs(self.data, self.inst, self.scores, self.compare,
                                         self.still)
        self.comp = cmp.comparisons(self.inst, self.data.labels, self.data.tasks,
                                    primary=self.primary)
        self.claim_steps, self.claim_overall = cmp.claim_verdicts(
            self.data, cmp.primary_rows(self.comp), self.scores, self.data.claims)

    def instance_ci(self, runs: pd.DataFrame, column: str) -> st.Estimate:
        """Mean over instances of ``column`` (an instance's runs averaged first), with the
        Student-t interval over instances."""
        if column not in runs or runs.empty:
            return st.Estimate(math.nan)
        per = runs.groupby("seed")[column].mean()
        return st.t_interval(per.to_numpy(dtype=float)).clipped(*st.quantity_range(column))

    @property
    def multi_task(self) -> bool:
        return len(self.data.tasks) > 1

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def text(self, template: str, **values: Any) -> None:
        self.blocks.append(Text(template, values))

    def csv(self, name: str, frame: pd.DataFrame) -> str:
        rel = f"tables/{name}.csv"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, csv_safe(frame).to_csv(index=False).encode())
        self.tables[name] = frame
        return rel

    def table(self, shown: pd.DataFrame, caption: str, csv_name: str | None = None,
              numbers: pd.DataFrame | None = None) -> None:
        rel = self.csv(csv_name, shown if numbers is None else numbers) if csv_name else None
        if not self.multi_task and "task" in shown.columns:
            shown = shown.drop(columns="task")
        self.blocks.append(Table(shown.reset_index(drop=True), caption, rel))

    def figure(self, name: str, caption: str, draw: Any) -> None:
        path = self.out / "figures" / f"{name}.png"
        if self.opts.figures and draw(path):
            self.blocks.append(Figure(path, caption))



def _groups(rep: Report, frame: pd.DataFrame) -> Iterable[tuple[str, str, pd.DataFrame]]:
    """(task, label, rows) in report order, for every pair with rows."""
    for task in rep.data.tasks:
        for label in rep.data.labels:
            sub = frame[(frame["task"] == task) & (frame["label"] == label)]
            if len(sub):
                yield task, label, sub


# --- sections ---------------------------------------------------------------------------------


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
        else:
            sure = ("not decided (Holm-adjusted p = {p}, {family} family); with 90% "
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


def family_rule(rep: Report) -> str:
    """Which comparisons are primary, in words (:func:`compare.primary_pairs`)."""
    parts = []
    if rep.data.claims:
        parts.append("the claims' steps, on their aspect's quantities,")
    compare = rep.compare
    if compare is None:
        parts.append("best against runner-up by mean score on each task, on the score")
    elif isinstance(compare, cmp.CompareSpec):
        parts.append(f"every configuration against the baseline {compare.baseline} (the "
                     "suite's compare:), on the score")
    else:
        parts.append("the pairs the suite's compare: names ("
                     + ", ".join(f"{x} − {y}" for x, y in compare) + "), on the score")
    return " and ".join(parts)


def family_sizes(rep: Report) -> str:
    """``primary: m₁ tests (α/m₁ = …), exploratory: m₂ tests (α/m₂ = …)``."""
    return "; ".join(
        f"{family}: {cmp.family_size(rep.comp, family)} tests, α/m = "
        f"{fmt(cmp.family_alpha(rep.comp, family=family), 2)}"
        for family in (cmp.PRIMARY, cmp.EXPLORATORY))


def comparisons_section(rep: Report) -> None:
    comp = rep.comp
    rep.add(Heading("Paired comparisons"))
    if comp.empty:
        rep.text("No two configurations share an instance with counted runs, so nothing is "
                 "compared.")
        return
    rank = {cmp.PRIMARY: 0, cmp.EXPLORATORY: 1}
    comp = comp.iloc[np.argsort(comp["family"].map(rank).to_numpy(), kind="stable")]
    rep.text("Primary comparisons: {rule}; every other comparison is exploratory, Holm-adjusted "
             "in a family of its own ({sizes}). The primary ones are listed first.",
             rule=family_rule(rep), sizes=family_sizes(rep))
    shown = pd.DataFrame({
        "family": comp["family"],
        "task": comp["task"], "quantity": comp["metric"].map(
            lambda m: cmp.METRICS[m].description), "a": comp["a"], "b": comp["b"],
        "n": comp["n"],
        "a − b [95% CI]": [st.Estimate(r.mean_diff, r.ci_low, r.ci_high).format()
                           for r in comp.itertuples()],
        "p": comp["p_value"].map(fmt), "p (Holm)": comp["p_adjusted"].map(fmt),
        "decision": [decision_text(r.decision, r.n, r.skew_p) for r in comp.itertuples()],
        "test": comp["test"], "MDE": comp["mde"].map(fmt),
        "instances needed": comp["seeds_needed"].map(_needed),
    })
    rep.table(shown, "Every pair of configurations on a task, paired by instance, the primary "
              "family first: the mean per-instance difference a − b with the 95% interval that "
              "inverts the sign-flip test, and the sign-flip permutation test's p-value (exact "
              "over all 2^n sign patterns up to 20 instances, else 50,000 random ones, Monte "
              "Carlo standard error p_mc_se in the CSV), Holm-adjusted within the row's family "
              f"({family_sizes(rep)}; equal differences are exact: p stays 0 or 1, in no "
              "family's count); a decision when the adjusted p-value is below 0.05 (lower is "
              "better for stability and computation). Undecidable at n: the smallest p-value "
              "the test can give at n (p_min: 2/2^n) would not pass the comparison's Holm step "
              "in its family, or the differences are skewed (skewness test p below "
              f"{fmt(st.SKEW_LEVEL)}), where no test of a mean holds its level at these n; "
              "skewed rows print no interval. MDE: the smallest difference the paired t-test "
              "detects with 80% power at the α/m of the row's family (∞ where p_min does not "
              "reach it); instances needed: a 90% upper confidence bound on the instances that "
              "detect a difference like the observed one with 80% power at that level (from a "
              "90% lower bound on the effect size; undecided rows only).",
              "comparisons", comp[list(cmp.COMPARISON_COLUMNS)])
    for family in (cmp.PRIMARY, cmp.EXPLORATORY):
        rows = comp[comp["family"] == family]
        if len(rows):
            rep.text("{k} of {m} {family} comparisons decided; {u} undecidable at their n.",
                     family=family, k=int(is_decided(rows["decision"]).sum()), m=len(rows),
                     u=int((rows["decision"] == st.UNDECIDABLE).sum()))


def crossovers_section(rep: Report) -> None:
    """Where tasks ran at several budgets: per pair of configurations and task, the budget from
    which one is decided ahead of the other (:func:`compare.crossovers`), and a sentence per
    task. Nothing for a suite of one budget per task."""
    budgets = rep.data.budgets
    if not budgets:
        return
    rep.add(Heading("Crossovers"))
    table = cmp.crossovers(rep.comp, budgets)
    if table.empty:
        rep.text("No two configurations are compared at any budget, so there is no crossover.")
        return
    shown = pd.DataFrame({
        "task": table["task"], "a": table["a"], "b": table["b"],
        "decision at each budget": table["decisions"], "ahead": table["ahead"],
        "from budget": [("" if math.isnan(v) else f"{fmt(v)} {k}")
                        for v, k in zip(table["from_budget"], table["budget_kind"],
                                        strict=True)],
    })
    caption = ("Each task ran at several budgets, each budget its own runs (and tuning), "
               "compared on its own: the normalised score's paired comparisons above, never "
               "across budgets. Per pair of configurations: the decision at each budget, "
               "smallest first, and the smallest budget from which one is decided ahead of the "
               "other at that budget and at every larger one (none: no such budget, e.g. "
               "undecided at the largest, or a decision that flips back).")
    rep.table(shown, caption, "crossovers", numbers=table)
    for task in dict.fromkeys(table["task"]):
        rep.text("{sentence}", sentence=cmp.crossover_sentence(table, str(task)))


def _needed(v: float) -> str:
    """Instances needed: empty when decided, ∞ when the observed difference is 0 or would need
    more than :data:`stats.MAX_SEEDS`."""
    if math.isnan(v):
        return ""
    return "∞" if math.isinf(v) else fmt(v)


def claims_section(rep: Report) -> None:
    d = rep.data
    rep.add(Heading("Claims"))
    if not d.claims:
        rep.text(d.claims_note or "The suite lists no claims.")
        return
    for claim in d.claims:
        basis = cmp.claim_basis(claim)
        rep.text("Claim: {text}{source}{basis}.", text=cmp.claim_text(claim),
                 source=f" ({claim.source})" if claim.source else "",
                 basis=f"; judged on the {basis}" if basis else "")
    steps, overall = rep.claim_steps, rep.claim_overall
    if len(steps):
        shown = pd.DataFrame({
            "task": steps["task"], "claim": steps["text"], "step": steps["step"],
            "expected better": steps["expected_better"],
            "judged on": steps["basis"].replace("", "—"),
            "decided comparisons": steps["decided"].replace("", "none"),
            "verdict": steps["verdict"],
            "instances needed": steps["seeds_needed"].map(
                lambda v: "" if math.isnan(v) else fmt(v)),
        })
        rep.table(shown, "Each step of each claim, from the paired comparisons of its aspect "
                  "(stability: replicate_std, divergence_rate, drawdown; computation: by "
                  "default the cost to reach half the target, samples_to_half and "
                  "flops_to_half, or with computation: per_step the cost at the fixed budget, "
                  "cpu_seconds and flops; reward: score). Bytes of model state are a property "
                  "of the design (the compute table), not judged. A step is supported when "
                  "at least one of them is decided in the claimed direction and none against it, "
                  "not supported when the reverse holds, mixed when both; undecided otherwise, "
                  "with the fewest instances that would decide one of them (a 90% upper "
                  "confidence bound for 80% power).", "claim_steps",
                  steps)
    if len(overall):
        shown = pd.DataFrame({
            "task": overall["task"], "claim": overall["text"],
            "configurations": overall["configurations"], "verdict": overall["verdict"],
            "instances needed": overall["seeds_needed"].map(
                lambda v: "" if math.isnan(v) else fmt(v)),
            "note": overall["note"]})
        rep.table(shown, "Claims per task: supported when every step is, not supported when "
                  "any step is, mixed or undecided otherwise (instances needed: for the step "
                  "that needs the most). An algorithm name stands for its configuration with "
                  "the highest mean score on the task.", "claims", overall)


def label_settings(data: StoreData) -> pd.DataFrame:
    """Per task and label, the algorithm's settings in its runs (``task, label, algorithm,
    settings, config``): ``settings`` shows those the suite file sets, a tuning chose, or that
    differ between two configurations of one algorithm (``k=v, ...``; all of them when the
    suite file cannot be read); ``config`` every setting, as JSON."""
    from harness.report.data import given_settings

    runs = data.runs
    if runs.empty or "config" not in runs:
        return pd.DataFrame(columns=["task", "label", "algorithm", "settings", "config"])
    given = given_settings(data.path)
    rows = []
    for task in data.tasks:
        for label in data.labels:
            sub = runs[(runs["task"] == task) & (runs["label"] == label)]
            if sub.empty:
                continue
            configs = list(dict.fromkeys(sub["config"]))
            tuned = set()
            if "tuned_params" in sub:
                for text in sub["tuned_params"].dropna():
                    tuned |= {part.split("=", 1)[0] for part in str(text).split(", ") if part}
            rows.append({"task": task, "label": label, "algorithm": sub["algorithm"].iloc[0],
                         "config": configs[0], "_all": [json.loads(c) for c in configs],
                         "_tuned": tuned})
    varying: dict[str, set[str]] = {}
    for algorithm in {r["algorithm"] for r in rows}:
        values: dict[str, set[str]] = {}
        for r in rows:
            if r["algorithm"] == algorithm:
                for c in r["_all"]:
                    for k, v in c.items():
                        values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
        varying[algorithm] = {k for k, vs in values.items() if len(vs) > 1}
    for r in rows:
        base = r["label"].split("[", 1)[0].split("#", 1)[0]
        config = r["_all"][0]
        keys = (given.get(base, set(config) if not given else set()) | varying[r["algorithm"]]
                | r["_tuned"])
        shown = [k for k in config if k in keys]
        r["settings"] = ", ".join(f"{k}={_setting(config[k])}" for k in shown) or "defaults"
        if len(r["_all"]) > 1:
            r["settings"] += f" (and {len(r['_all']) - 1} other version(s) in its runs)"
    frame = pd.DataFrame(rows)
    return frame[["task", "label", "algorithm", "settings", "config"]]


def _setting(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def configurations_section(rep: Report) -> None:
    """Each label's settings, so that two versions of one algorithm are told apart."""
    table = label_settings(rep.data)
    if table.empty:
        return
    rep.add(Heading("Configurations"))
    rep.table(table.drop(columns="config"), "Each configuration's settings: those the suite "
              "file sets, a tuning chose or that differ between configurations of one "
              "algorithm; the others are the plugin's defaults (rlhf-harness show ALGORITHM). "
              "The CSV has every setting.", "configurations", table)


def status_section(rep: Report) -> None:
    runs = rep.data.runs
    rep.add(Heading("Runs and status"))
    present = [s for s in STATUS_ORDER if s in set(runs["status"])]
    present += sorted(set(runs["status"]) - set(STATUS_ORDER))
    rows = []
    for task in rep.data.tasks:
        for label in rep.data.labels:
            sub = runs[(runs["task"] == task) & (runs["label"] == label)]
            if sub.empty:
                continue
            row = {"task": task, "label": label, "algorithm": sub["algorithm"].iloc[0]}
            for s in ("done", "diverged", "failed", "running", *present):
                row[s] = int((sub["status"] == s).sum())
            row["total"] = len(sub)
            rows.append(row)
    table = pd.DataFrame(rows)
    table = table[["task", "label", "algorithm",
                   *dict.fromkeys(["done", "diverged", "failed", "running", *present]),
                   "total"]]
    rep.table(table, "Runs per configuration and status.", "status")

    n_failed = int((runs["status"] == "failed").sum())
    n_div = int((runs["status"] == "diverged").sum())
    n_running = int((runs["status"] == "running").sum())
    div = runs[runs["status"] == "diverged"]
    finite_div = int(np.isfinite(div.get("final_gold_reward", pd.Series(dtype=float))).sum())
    if n_failed:
        rep.text("{failed} of {n} runs failed: they are excluded from reward statistics, "
                 "counted in the failure rate and listed below.", failed=n_failed, n=len(runs))
    else:
        rep.text("{failed} of {n} runs failed.", failed=n_failed, n=len(runs))
    if n_div:
        rep.text("{div} of {n} runs diverged: they count in the divergence rate, and their final "
                 "values enter the statistics where finite ({finite} of {div} have a finite "
                 "final gold reward).", div=n_div, n=len(runs), finite=finite_div)
    else:
        rep.text("{div} of {n} runs diverged.", div=n_div, n=len(runs))
    if n_running:
        rep.text("Runs not finished (status running), left out of every statistic: {k}.",
                 k=n_running)
    listed = runs[runs["status"] != "done"][["run_id", "label", "task", "seed", "status",
                                             "reason"]]
    if len(listed):
        rep.table(listed, "Runs that did not finish as done, with their reason.")
    keep = [c for c in runs.columns if c != "reason"] + ["reason"]
    rep.csv("runs", runs[keep])


def excluded_section(rep: Report) -> None:
    """Runs left out: stale ones (an older version of the suite) and corrupt folders."""
    d = rep.data
    stale = d.stale if d.stale is not None else pd.DataFrame()
    corrupt = d.corrupt if d.corrupt is not None else pd.DataFrame()
    if stale.empty and corrupt.empty:
        return
    rep.add(Heading("Runs left out"))
    if not stale.empty:
        counted = "counted (--include-stale)" if d.runs.get("stale", pd.Series()).any() \
            else "left out of every statistic"
        rep.text("{k} runs are stale: they belong to an older version of the suite (another "
                 "configuration, data file or plugin version) and are {counted}; "
                 "'rlhf-harness gc' removes them.", k=len(stale), counted=counted)
        rep.table(stale.sort_values(["task", "label", "seed"], key=lambda c: c.astype(str)),
                  "Stale runs", "stale_runs")
    if not corrupt.empty:
        rep.text("{k} run folders are corrupt (a file does not read back) and are skipped; "
                 "running the suite again redoes them.", k=len(corrupt))
        rep.table(corrupt, "Corrupt run folders", "corrupt_runs")


def frontier_section(rep: Report) -> None:
    """Reward–KL frontiers of swept algorithms, compared at matched KL (harness.report.frontier)."""
    from harness.report import frontier as fr

    u = rep.data.usable
    if u.empty or not {"final_kl_ref", "final_gold_reward"} <= set(u.columns):
        return
    finals = pd.DataFrame({
        "task": u["task"], "label": u["label"], "seed": u["seed"],
        "family": [fr.family(lab, sw) for lab, sw in zip(u["label"], u["sweep"], strict=True)],
        "kl": u["final_kl_ref"], "gold": u["final_gold_reward"],
    }).dropna(subset=["kl", "gold"])
    swept = finals.groupby(["task", "family"])["label"].transform("nunique") > 1
    finals = finals[swept]
    if finals.empty:
        return
    points, curves, matched, comparisons = fr.frontier_tables(finals)
    families = list(dict.fromkeys(finals["family"]))
    family_algorithm = {fam: alg for fam, alg in zip(
        finals["family"], u.loc[finals.index, "algorithm"], strict=True) if isinstance(alg, str)}
    colours = label_palette(families, family_algorithm)
    rep.add(Heading("Reward–KL frontiers"))
    rep.text("Each swept algorithm is a curve, not a point: its sweep points' final (KL, gold), "
             "their upper envelope per instance, and gold compared at KL values both compared "
             "frontiers reach, paired by instance (see the method section).")
    rep.figure("frontiers", "Final gold reward against final KL(π‖π_ref): each sweep point's "
               "mean over instances with 95% t intervals; lines and bands: the frontier's gold "
               "(mean and 95% t interval over instances) over the KL range all its instances "
               "reach (dotted where they share none).",
               lambda p: fig.frontiers(points, curves, rep.data.tasks, families, p, colours))
    rep.table(points.round(6), "Sweep points: mean final KL and gold over instances (95% t "
              "intervals).", "frontier_points")
    if len(matched):
        rep.table(matched.round(6), "Gold at matched KL, where every frontier of the task "
                  "reaches, and mean gold over that range (area / width); per instance, then "
                  "averaged (95% t intervals).", "frontier_matched")
    if comparisons.empty:
        rep.text("No two swept algorithms share a KL range in every instance, so none is "
                 "compared at matched KL.")
        return
    rep.table(comparisons, "Frontiers compared in pairs, over the KL range both reach in "
              "every instance: paired difference a − b, 95% t interval, p-value, "
              "Holm-adjusted over this table.", "frontier_comparisons")
    decided = comparisons[comparisons["decision"] != "undecided"]
    rep.text("{k} of {n} frontier comparisons are decided at the 5% level after Holm's "
             "adjustment.", k=len(decided), n=len(comparisons))


def tuning_dimensions(per_trial: pd.DataFrame, param_cols: list[str]) -> pd.DataFrame:
    """Per task and tuned label: the dimensions of its search space (the parameters its trials
    set), the trials, and trials^(1/d), about how many values per dimension the same number of
    trials covers a d-dimensional space with (``task, label, dimensions, parameters, trials,
    per_dimension``)."""
    rows = []
    for (task, label), g in per_trial.groupby(["task", "label"], sort=False):
        names = [c.removeprefix("param_") for c in param_cols if g[c].notna().any()]
        n, d = int(g["trial"].nunique()), len(names)
        rows.append({"task": task, "label": label, "dimensions": d,
                     "parameters": ", ".join(names), "trials": n,
                     "per_dimension": n ** (1 / d) if d else math.nan})
    return pd.DataFrame(rows, columns=["task", "label", "dimensions", "parameters", "trials",
                                       "per_dimension"])


def _tuning_dimensions(rep: Report, per_trial: pd.DataFrame, param_cols: list[str]) -> None:
    """State the tuning effort per dimension, and flag search spaces of unequal size."""
    dims = tuning_dimensions(per_trial, param_cols)
    if dims.empty:
        return
    shown = dims.assign(per_dimension=dims["per_dimension"].map(lambda v: fmt(v, 2)))
    rep.table(shown, "Search spaces: the hyperparameters each tuned configuration's trials set "
              "(its dimensions d) and trials^(1/d), about how many values per dimension its "
              "trials cover: the tuning effort per dimension.", "tuning_dimensions", dims)
    for task, g in dims.groupby("task", sort=False):
        if g["dimensions"].nunique() > 1:
            rep.text("{task}: the search spaces differ in size ({sizes}): equal trials are not "
                     "equal search effort, since the same trials cover a space of more "
                     "dimensions less densely; compare the tuned configurations with that in "
                     "mind, or give the smaller spaces fewer trials or the larger ones more "
                     "(tuning.space).", task=task, sizes=", ".join(
                         f"{r.label} {r.dimensions}, ≈{fmt(r.per_dimension, 2)} values per "
                         f"dimension" for r in g.itertuples()))


def tuning_section(rep: Report) -> None:
    """Equal tuning effort: expected best of n trials, sensitivity, chosen configurations, and
    with repeated searches the spread of their choices and scores."""
    from harness.tuning import expected_max_performance

    trials = rep.data.trials
    if trials is None or trials.empty:
        return
    repeated = "repeat" in trials and trials["repeat"].notna().any()
    keys = ["task", "label", "repeat", "trial"] if repeated else ["task", "label", "trial"]
    param_cols = [c for c in trials.columns if c.startswith("param_")]
    per_trial = (trials.groupby(keys, as_index=False)["value"].mean()
                 .rename(columns={"value": "trial_value"}))
    trials = trials.merge(per_trial, on=keys)
    if param_cols:  # each trial's parameters, the same on all its tuning instances
        per_trial = per_trial.merge(trials.groupby(keys, as_index=False)[param_cols].first(),
                                    on=keys)
    curves = []
    for (task, label), g in per_trial.groupby(["task", "label"], sort=False):
        # the searches' trials pooled: draws from one space, each valued on tuning instances;
        # the curve goes as far as one search's trials
        emp = expected_max_performance(g["trial_value"].tolist())
        n = int(g["trial"].nunique())
        curves.append(pd.DataFrame({"task": task, "label": label, "n": emp.n[:n],
                                    "mean": emp.mean[:n], "std": emp.std[:n]}))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    params = sorted(c.removeprefix("param_") for c in trials.columns if c.startswith("param_"))
    families = list(dict.fromkeys(trials["label"]))
    objective = str(trials["objective"].dropna().iloc[0]) if trials["objective"].notna().any() \
        else "the objective"
    rep.add(Heading("Tuning"))
    counts = per_trial.groupby("task")["trial"].nunique()
    effort = ", ".join(f"{n} trials on {task}" for task, n in counts.items())
    k = (int(trials.groupby("repeat")["seed"].nunique().max()) if repeated
         else int(trials["seed"].nunique()))
    rep.text("Every tuned algorithm had the same tuning effort ({effort}), each trial run on "
             "{k} tuning instances and valued by the mean {objective} over them; the "
             "comparison uses the best trial's configuration on the suite's own instances, "
             "which the tuning never saw.", effort=effort, k=k, objective=objective)
    if repeated:
        rep.text("Each tuned algorithm was searched {r} times per task, independently (sampler "
                 "seeds of their own), each search on its own tuning instances; each search's "
                 "choice ran on every comparison instance. {model}",
                 r=int(trials["repeat"].nunique()), model=REPEATS_MODEL)
    _tuning_dimensions(rep, per_trial, param_cols)
    rep.figure("tuning", "Top: expected best objective of n trials (Dodge et al. 2019), ± one "
               "standard deviation. Below: each trial's objective against each tuned "
               "hyperparameter.",
               lambda p: fig.tuning(trials, curves_df, params, families, p, rep.colours))
    chosen = tuning_choices(rep.data.runs, rep.scores)
    if len(chosen):
        shown = chosen[["task", "label", *(["repeat"] if repeated else []), "trial"]].assign(
            params=chosen["params_short"], value=chosen["value"].map(fmt))
        numbers = chosen[["task", "label", *(["repeat"] if repeated else []), "trial",
                          "params", "params_json", "value"]]
        rep.table(shown, f"Chosen configurations (best trial by {objective}).",
                  "tuning_chosen", numbers)
    if repeated and len(chosen):
        _tuning_repeats(rep, chosen, trials, objective)
        _tuning_luck(rep, set(zip(chosen["task"], chosen["label"], strict=True)))
    rep.csv("tuning_trials", per_trial)
    if len(curves_df):
        rep.csv("tuning_expected_max", curves_df)


REPEATS_MODEL = (
    "The model: an algorithm's value on a comparison instance is the mean over its chosen "
    "configurations' runs there (one per search, each with its replicates); the spread across "
    "replicates stays within one chosen configuration. Every choice runs on every instance, so "
    "the paired differences over instances carry how the choices' results vary from instance "
    "to instance, and average the choice's own effect over the searches, but a t interval over "
    "instances does not count that effect's variance: the comparisons with tuning luck add it, "
    "with standard error √(s_d²/n + s_m²/R) (s_d the sd of the n per-instance differences, "
    "s_m that of the R choices' mean values, per tuned side; Welch–Satterthwaite degrees of "
    "freedom; Bouthillier et al. 2021).")
"""How repeated tuning searches enter the comparisons (see :mod:`harness.tuning`)."""


def tuning_choices(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, label, repeat) of a tuned algorithm's comparison runs: ``trial``,
    ``params`` (every value at full precision, ``k=repr(v)``), ``params_json``,
    ``params_short`` (4 significant digits), ``value`` (the objective on its tuning
    instances), ``score`` and ``instances`` (its mean score over the comparison instances, an
    instance's replicates averaged first, and how many)."""
    columns = ["task", "label", "repeat", "trial", "params", "params_json", "params_short",
               "value", "score", "instances"]
    if "tuned_params_json" not in runs:
        return pd.DataFrame(columns=columns)
    tuned = runs.dropna(subset=["tuned_params_json"])
    score = scores.set_index("run_id")["score"] if "score" in scores else pd.Series(dtype=float)
    rows = []
    for (task, label, repeat), g in tuned.groupby(["task", "label", "tuning_repeat"],
                                                   sort=True):
        params = json.loads(g["tuned_params_json"].iloc[0])
        per_instance = score.reindex(g["run_id"]).groupby(g["seed"].to_numpy()).mean().dropna()
        rows.append({
            "task": task, "label": label, "repeat": int(repeat),
            "trial": int(g["tuned_trial"].iloc[0]),
            "params": ", ".join(f"{k}={v!r}" for k, v in params.items()),
            "params_json": json.dumps(params), "params_short": g["tuned_params"].iloc[0],
            "value": float(g["tuned_value"].iloc[0]),
            "score": float(per_instance.mean()) if len(per_instance) else math.nan,
            "instances": len(per_instance)})
    return pd.DataFrame(rows, columns=columns)


def tuning_luck(scores: pd.DataFrame, labels: list[str], tasks: list[str],
                repeated: set[tuple[str, str]]) -> pd.DataFrame:
    """Per task, every pair of configurations of which one or both had repeated tuning
    searches (``repeated``: their (task, label)): the mean score difference a − b over the
    instances both have, with the interval and p-value of
    :func:`harness.tuning.luck_interval`, which count the luck of the searches' choices."""
    import itertools

    from harness.tuning import luck_interval

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


def _tuning_luck(rep: Report, repeated: set[tuple[str, str]]) -> None:
    """The score comparisons of algorithms tuned by several searches, with tuning luck."""
    luck = tuning_luck(rep.scores, rep.data.labels, rep.data.tasks, repeated)
    if luck.empty:
        return
    comp = rep.comp
    plain = []
    for r in luck.itertuples():
        sel = comp[(comp["task"] == r.task) & (comp["metric"] == "score") & (comp["a"] == r.a)
                   & (comp["b"] == r.b)] if len(comp) else comp
        plain.append(f"[{fmt(sel['ci_low'].iloc[0])}, {fmt(sel['ci_high'].iloc[0])}]"
                     if len(sel) else "n/a")
    shown = pd.DataFrame({
        "task": luck["task"], "a − b": luck["a"] + " − " + luck["b"], "n": luck["n"],
        "searches": luck["searches_a"].astype(str) + " / " + luck["searches_b"].astype(str),
        "mean difference": luck["mean_diff"].map(fmt), "paired interval": plain,
        "with tuning luck": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in
                             zip(luck["ci_low"], luck["ci_high"], strict=True)],
        "p": luck["p_value"].map(lambda v: fmt(v, 2)),
        "se: instances / searches": [f"{fmt(x)} / {fmt(y)}" for x, y in
                                     zip(luck["se_instances"], luck["se_searches"],
                                         strict=True)]})
    rep.table(shown, "Score comparisons with tuning luck: the paired interval over instances "
              "(as in the comparisons), and the interval that also counts the variance of the "
              "searches' choices (standard errors of each part; unadjusted p-value, not in the "
              "Holm family).", "tuning_luck", luck)


def _tuning_repeats(rep: Report, chosen: pd.DataFrame, trials: pd.DataFrame,
                    objective: str) -> None:
    """Each search's choice with its tuning instances and comparison score, and per tuned
    algorithm the spread of the choices and of their scores across the searches."""
    seeds = trials.groupby(["task", "label", "repeat"])["seed"].apply(
        lambda s: ", ".join(str(int(x)) for x in sorted(s.unique())))
    per = chosen.assign(tuning_instances=[seeds.get((t, lab, r), "")
                                          for t, lab, r in zip(chosen["task"], chosen["label"],
                                                               chosen["repeat"], strict=True)])
    shown = per[["task", "label", "repeat", "tuning_instances", "trial"]].assign(
        params=per["params_short"], value=per["value"].map(fmt), score=per["score"].map(fmt),
        instances=per["instances"])
    rep.table(shown, f"Each search's choice: its tuning instances, its best trial, that "
              f"trial's {objective} on them (value), and the choice's mean score over the "
              f"comparison instances.", "tuning_repeats",
              per[["task", "label", "repeat", "tuning_instances", "trial", "params",
                   "params_json", "value", "score", "instances"]])
    rows, shown_rows = [], []
    for (task, label), g in per.groupby(["task", "label"], sort=False):
        values = [json.loads(text) for text in g["params_json"]]
        row: dict[str, Any] = {
            "task": task, "label": label, "searches": len(g),
            "score_mean": float(g["score"].mean()), "score_sd": float(g["score"].std(ddof=1)),
            "score_min": float(g["score"].min()), "score_max": float(g["score"].max()),
            "value_sd": float(g["value"].std(ddof=1))}
        ranges = []
        for name in dict.fromkeys(k for v in values for k in v):
            got = [v[name] for v in values if name in v]
            if all(isinstance(x, int | float) and not isinstance(x, bool) for x in got):
                row[f"param_{name}_min"], row[f"param_{name}_max"] = min(got), max(got)
                ranges.append(f"{name} {fmt(min(got), 3)}–{fmt(max(got), 3)}")
            else:
                ranges.append(f"{name} {', '.join(sorted({str(x) for x in got}))}")
        rows.append(row)
        shown_rows.append({"task": task, "label": label, "searches": len(g),
                           "score (sd across searches)": f"{fmt(row['score_mean'])} "
                           f"({fmt(row['score_sd'])})",
                           "score range": f"{fmt(row['score_min'])} to {fmt(row['score_max'])}",
                           f"{objective} sd": fmt(row["value_sd"]),
                           "chosen values": "; ".join(ranges)})
    rep.table(pd.DataFrame(shown_rows), "Spread across the searches: the mean score of their "
              "choices on the comparison instances and its standard deviation across searches, "
              "the standard deviation of the chosen trials' tuning objective, and the range of "
              "each chosen value.", "tuning_repeat_spread", pd.DataFrame(rows))


def reward_section(rep: Report) -> None:
    d, opts = rep.data, rep.opts
    rep.add(Heading("Reward"))
    curves = {}
    for metric in CURVE_METRICS:
        series = eval_series(d, metric)
        if len(series):
            curves[metric] = on_grid(series, opts.x, max_points=opts.max_points)
    rep.figure(
        f"curves_{opts.x}",
        f"Gold reward, proxy reward and KL(π‖π_ref) against {fig.X_NAMES[opts.x]}: mean over "
        f"task instances (an instance's replicates averaged first) with a Student-t 95% band; "
        f"runs interpolated onto a common grid of at most {opts.max_points} points.",
        lambda p: fig.learning_curves(curves, opts.x, d.tasks, d.labels, p, rep.colours),
    )

    u = d.usable
    metrics = [m for m in ("gold_reward", "proxy_reward", "kl_ref", "win_rate_ref", "regret")
               if f"final_{m}" in u.columns and u[f"final_{m}"].notna().any()]
    numbers, shown = [], []
    scored = rep.scores
    for task, label, sub in _groups(rep, scored):
        n_inst = int(sub["seed"].nunique())
        num: dict[str, Any] = {"task": task, "label": label, "runs": len(sub),
                               "instances": n_inst}
        row: dict[str, Any] = {"task": task, "label": label, "runs": len(sub),
                               "instances": n_inst}
        e = rep.instance_ci(sub, "score")
        num.update(_est("score", e))
        row["score"] = e.format()
        for m in metrics:
            e = rep.instance_ci(sub, f"final_{m}")
            num.update(_est(m, e))
            row[m] = e.format()
        numbers.append(num)
        shown.append(row)
    numbers_df = pd.DataFrame(numbers)
    if len(numbers_df) and {"gold_reward", "kl_ref"} <= set(numbers_df.columns):
        numbers_df["on_frontier"] = False
        for task in d.tasks:
            sel = numbers_df[numbers_df["task"] == task]
            for i, r in sel.iterrows():
                dominated = (
                    (sel["gold_reward"] >= r["gold_reward"]) & (sel["kl_ref"] <= r["kl_ref"])
                    & ((sel["gold_reward"] > r["gold_reward"]) | (sel["kl_ref"] < r["kl_ref"]))
                ).any()
                numbers_df.loc[i, "on_frontier"] = bool(
                    not dominated and math.isfinite(r["gold_reward"])
                    and math.isfinite(r["kl_ref"]))
        shown_df = pd.DataFrame(shown)
        shown_df["reward/KL frontier"] = np.where(numbers_df["on_frontier"], "yes", "no")
    else:
        shown_df = pd.DataFrame(shown)
    if len(shown_df):
        rep.table(shown_df, "Final evaluation: mean over task instances (an instance's counted "
                  "runs averaged first) with a Student-t 95% interval over instances. Score: "
                  "gap closure where the task knows π*_β, else the gold gain over π_ref in units "
                  "of the standard deviation of π_ref's gold reward on the instance (relative to "
                  "the largest mean gain on the task where runs lack that record). A "
                  "configuration is on the reward/KL frontier when no other has both a higher "
                  "or equal mean gold reward and a lower or equal mean KL.",
                  "final_metrics", numbers_df)
        if "on_frontier" in numbers_df:
            for task in d.tasks:
                front = numbers_df[(numbers_df["task"] == task) & numbers_df["on_frontier"]]
                if len(front):
                    rep.text("On {task}, the reward/KL frontier is formed by {labels}.",
                             task=task, labels=_join(front["label"]))

    evals = _eval_wide(d, ["gold_reward", "proxy_reward", "kl_ref"])
    if {"kl_ref", "gold_reward"} <= set(evals.columns):
        rep.figure("frontier", "Gold reward against KL(π‖π_ref) along training: seed-mean "
                   "trajectory per configuration (○ start, ● end), small dots: each run's final "
                   "evaluation.",
                   lambda p: fig.trajectories(evals, "kl_ref", "gold_reward", d.tasks,
                                              d.labels, p, rep.colours))
    if {"proxy_reward", "gold_reward"} <= set(evals.columns):
        rep.figure("overoptimisation", "Proxy reward r̂ against gold reward r* along training "
                   "(seed means; ○ start, ● end). Proxy rising while gold falls is "
                   "over-optimisation of r̂.",
                   lambda p: fig.trajectories(evals, "gold_reward", "proxy_reward", d.tasks,
                                              d.labels, p, rep.colours))
        _overoptimisation_table(rep, evals)

    if "regret" in set(d.metrics["metric"]):
        series = eval_series(d, "regret")
        regret = {"regret": on_grid(series, opts.x, max_points=opts.max_points)}
        without = [t for t in d.tasks if not (series["task"] == t).any()]
        rep.figure(f"regret_{opts.x}",
                   f"Regret J_β(π*_β) − J_β(π) against {fig.X_NAMES[opts.x]} (mean over "
                   "instances, Student-t 95% band)." + (
                       f" Not drawn for {_join(without)}: no exact optimum for "
                       f"{'this task' if len(without) == 1 else 'these tasks'}, so no regret."
                       if without else ""),
                   lambda p: fig.learning_curves(regret, opts.x, d.tasks, d.labels, p,
                                                 rep.colours))
    _regret_split(rep)
    _reward_model_table(rep)


def _regret_split(rep: Report) -> None:
    """Where a configuration's own fixed point is not π*_β (GRPO's forward-KL target), split its
    final regret into the regret of that fixed point and the rest."""
    u = rep.data.usable
    if "final_regret" not in u or not u["target_regret"].notna().any():
        return
    rows, shown = [], []
    for task, label, sub in _groups(rep, u[u["target_regret"].notna()]):
        per = sub.groupby("seed")[["final_regret", "target_regret"]].mean()
        per["optimisation"] = per["final_regret"] - per["target_regret"]
        total = st.t_interval(per["final_regret"]).clipped(0.0)
        objective = st.t_interval(per["target_regret"]).clipped(0.0)
        rest = st.t_interval(per["optimisation"])
        rows.append({"task": task, "label": label, "instances": len(per),
                     **_est("final_regret", total), **_est("objective_regret", objective),
                     **_est("optimisation_regret", rest)})
        shown.append({"task": task, "label": label, "instances": len(per),
                      "final regret": total.format(), "its objective's part": objective.format(),
                      "left by optimisation and r̂": rest.format()})
    rep.table(pd.DataFrame(shown), "Regret split for configurations whose own fixed point is "
              "not π*_β (GRPO with unscaled group advantages: its k3 penalty in the loss "
              "optimises the forward KL(π_ref‖π), and its group-mean baseline scales the policy "
              "gradient by 1 − 1/G, so it converges to argmax (1 − 1/G)·E_π r − β·KL(π_ref‖π), "
              "computed exactly with r*). Its objective's part is the regret J_β(π*_β) − "
              "J_β(π°) of that fixed point π°: what the algorithm loses even with r* and perfect "
              "optimisation; the rest is what r̂'s error and the finite budget leave. Means over "
              "instances, Student-t 95% intervals.", "regret_split", pd.DataFrame(rows))


def _eval_wide(d: StoreData, metrics: list[str]) -> pd.DataFrame:
    m = d.metrics
    sel = m[(m["source"] == "eval") & m["metric"].isin(metrics)
            & m["status"].isin(("done", "diverged"))]
    if sel.empty:
        return pd.DataFrame()
    wide = sel.pivot_table(index=["run_id", "label", "task", "step"], columns="metric",
                           values="value", aggfunc="last").reset_index()
    wide.columns.name = None
    return wide


def _overoptimisation_table(rep: Report, evals: pd.DataFrame) -> None:
    rows, shown = [], []
    for task, label, sub in _groups(rep, evals):
        mean = sub.groupby("step")[["gold_reward", "proxy_reward"]].mean().dropna()
        if mean.empty:
            continue
        counted = rep.data.usable
        finals = counted[(counted["task"] == task) & (counted["label"] == label)]
        final_gold = rep.instance_ci(finals, "final_gold_reward")
        peak_step = float(mean["gold_reward"].idxmax())
        peak = float(mean["gold_reward"].max())
        after = mean.loc[peak_step:]
        proxy_after = float(after["proxy_reward"].iloc[-1] - after["proxy_reward"].iloc[0])
        over = (final_gold.has_interval and peak > final_gold.high and proxy_after > 0)
        row = {
            "task": task, "label": label,
            "gold_start": float(mean["gold_reward"].iloc[0]),
            "gold_peak": peak, "peak_step": peak_step,
            "gold_final": final_gold.value, "gold_final_low": final_gold.low,
            "gold_final_high": final_gold.high,
            "proxy_start": float(mean["proxy_reward"].iloc[0]),
            "proxy_final": float(mean["proxy_reward"].iloc[-1]),
            "proxy_change_after_gold_peak": proxy_after,
            "over_optimised": bool(over),
        }
        rows.append(row)
        shown.append({
            "task": task, "label": label,
            "gold start → peak (step)": f"{fmt(row['gold_start'])} → {fmt(peak)} "
                                        f"({fmt(peak_step)})",
            "gold final": final_gold.format(),
            "proxy start → final": f"{fmt(row['proxy_start'])} → {fmt(row['proxy_final'])}",
            "proxy change after gold peak": fmt(proxy_after),
            "over-optimised": "yes" if over else "no",
        })
    if not rows:
        return
    numbers = pd.DataFrame(rows)
    rep.table(pd.DataFrame(shown), "Over-optimisation: a configuration is marked when the peak "
              "of its run-mean gold curve lies above the 95% Student-t interval (over "
              "instances) of its final gold reward while "
              "its proxy reward rose after that peak.", "overoptimisation", numbers)
    marked = numbers[numbers["over_optimised"]]
    rep.text("Marked as over-optimised: {labels} ({k} of {n} configurations).",
             labels=_join(f"{r.label} on {r.task}" if rep.multi_task else r.label
                          for r in marked.itertuples()),
             k=len(marked), n=len(numbers))


def _reward_model_table(rep: Report) -> None:
    rows = []
    for rec_id, s in _summaries(rep):
        fit = s.get("reward_model") or {}
        if fit.get("kind") == "gold" or "heldout_accuracy" not in fit:
            continue
        run = rep.data.runs.set_index("run_id").loc[rec_id]
        rows.append({"task": run["task"], "seed": run["seed"],
                     **{k: fit.get(k) for k in ("train_pairs", "heldout_accuracy",
                                                "gold_heldout_accuracy", "spearman_gold")}})
    if not rows:
        return
    frame = pd.DataFrame(rows).drop_duplicates(subset=["task", "seed"]).sort_values(
        ["task", "seed"])
    shown = frame.copy()
    for c in ("heldout_accuracy", "gold_heldout_accuracy", "spearman_gold"):
        shown[c] = shown[c].map(fmt)
    rep.table(shown, "Fitted reward model r̂ per task and seed: held-out accuracy on the "
              "preference labels, the gold reward's accuracy on the same pairs, and the Spearman "
              "correlation of r̂ with r*.", "reward_model", frame)


def _summaries(rep: Report) -> Iterable[tuple[str, dict[str, Any]]]:
    import json

    for run_id in rep.data.runs["run_id"]:
        path = rep.data.path / run_id / "summary.json"
        if path.exists():
            try:
                yield run_id, json.loads(path.read_text())
            except (OSError, ValueError):
                continue


def compute_section(rep: Report) -> None:
    d = rep.data
    rep.add(Heading("Compute"))
    u = d.usable
    done = d.runs[d.runs["status"] == "done"].copy()
    done["model_state_mb"] = done["model_state_bytes"] / 2**20
    cols = ["train_cpu_seconds", "flops", "model_state_mb", "peak_above_baseline_mb",
            "models_resident", *(f"seconds_{p}" for p in PHASES)]
    per_instance = done.groupby(["task", "label", "seed"], as_index=False)[cols].mean()
    rep.figure("compute_time", "Wall seconds per run by phase, a panel per task on its own "
               "scale (mean over instances, Student-t 95% interval). Wall time is reported, not "
               "judged: it grows with machine load.",
               lambda p: fig.time_split(per_instance, d.tasks, d.labels, p, rep.colours))
    rep.figure("compute_resources", "Training CPU seconds, FLOPs (neural policies only), "
               "model state, peak memory above the run's baseline and models resident: "
               + ("a row per task, " if rep.multi_task else "") + "each panel on its own scale "
               "(mean over instances, Student-t 95% interval).",
               lambda p: fig.resources(per_instance, d.labels, p, d.tasks, rep.colours))
    rows, shown = [], []
    for task, label, sub in _groups(rep, done):
        cpu = rep.instance_ci(sub, "train_cpu_seconds")
        secs = rep.instance_ci(sub, "train_seconds")
        flops = rep.instance_ci(sub, "flops")
        state = rep.instance_ci(sub, "model_state_mb")
        peak = rep.instance_ci(sub, "peak_above_baseline_mb")
        num = {"task": task, "label": label, "runs": len(sub)}
        row = dict(num)
        for ph in PHASES:
            num[f"seconds_{ph}"] = float(sub[f"seconds_{ph}"].mean())
            num[f"cpu_seconds_{ph}"] = float(sub[f"cpu_seconds_{ph}"].mean())
        num.update(_est("train_cpu_seconds", cpu))
        num.update(_est("train_seconds", secs))
        num.update(_est("flops", flops))
        num.update(_est("model_state_mb", state))
        num.update(_est("peak_above_baseline_mb", peak))
        num["run_state_mb"] = float(sub["run_state_bytes"].mean()) / 2**20
        row["training CPU s"] = cpu.format()
        row["training wall s"] = secs.format()
        row["FLOPs"] = flops.format() if math.isfinite(flops.value) else "n/a (tabular)"
        row["samples"] = fmt(float(sub["samples"].mean()))
        row["model state MB"] = state.format()
        row["peak above baseline MB"] = peak.format()
        kinds = sorted(set(sub["memory_kind"].dropna()) - {""})
        num["memory_kind"] = ",".join(kinds)
        for col in ("samples", "peak_host_memory_mb", "peak_gpu_memory_mb"):
            num[col] = float(sub[col].mean()) if sub[col].notna().any() else math.nan
        resident = sorted({int(v) for v in sub["models_resident"].dropna()})
        num["models_resident"] = ",".join(map(str, resident))
        row["models resident"] = num["models_resident"] or "n/a"
        rows.append(num)
        shown.append(row)
    if rows:
        rep.table(pd.DataFrame(shown), "Compute per run (runs that finished as done; mean over "
                  "instances with a Student-t 95% interval). Training = generation + scoring + "
                  "training, evaluation excluded. CPU seconds are the process's user + system "
                  "time over all threads; like wall seconds they grow when other processes "
                  "compete for the machine (the counted work table gives the load average "
                  "during the runs). FLOPs only for neural policies (a tabular "
                  "policy is a lookup table). Model state: parameters, buffers, gradients and "
                  "optimiser state of the models the algorithm keeps (policy, π_ref, the r̂ it "
                  "uses, a critic), counted from the tensors: a property of the design, stated "
                  "here and not compared; the CSV's run_state_mb adds what "
                  "the run holds besides (r̂ kept for evaluation only, a task's own model). "
                  "Peak above "
                  "baseline: CUDA max_memory_allocated, or on the CPU the process's peak RSS "
                  "(the kernel's high-water mark, reset with the heap trimmed when the run's "
                  "models were built; RSS sampled after each step where there is none), minus "
                  "the RSS at that point. Runs made before the mark was reset may read about 0 "
                  "when an earlier, larger run of the same process left memory to reuse.",
                  "compute", pd.DataFrame(rows))
    if len(u) and u["memory_kind"].eq("").all():
        rep.text("These runs predate CPU-second and model-state accounting: their compute rows "
                 "show n/a there.")
    counted_work_table(rep)
    _time_to_threshold(rep)


ROLE_NAMES = {"policy": "π", "reference": "π_ref", "reward": "r̂", "critic": "critic",
              "other": "other models"}
"""How the counted work table names each model role."""


def _count_text(e: st.Estimate) -> str:
    """A count's mean over instances: the number alone where every instance counted the same."""
    if e.has_interval and e.low == e.high:
        return fmt(e.value, 4)
    return e.format(4)


def counted_work_table(rep: Report) -> None:
    """The counted work per task and configuration (runs that finished as done): samples
    generated and read from data, forward and backward tokens per model role (table rows for
    tabular policies), FLOPs (neural policies); the training CPU seconds and the load average
    during the runs beside them. Means over instances with Student-t 95% intervals; every number
    in the CSV ``counted_work``."""
    from harness.report.data import ROLES

    runs = rep.data.runs
    finished = runs[runs["status"] == "done"]
    done = finished[finished["work_unit"] != ""]
    if done.empty:
        if len(finished):
            rep.text("These runs predate the counted work (samples, tokens and table rows per "
                     "model role): no counted work table.")
        return
    roles = {kind: [r for r in ROLES if done[f"{kind}_{r}"].fillna(0).gt(0).any()]
             for kind in ("forward", "backward")}
    rows, shown = [], []
    for task, label, sub in _groups(rep, done):
        unit = str(sub["work_unit"].iloc[0])
        num: dict[str, Any] = {"task": task, "label": label, "runs": len(sub), "unit": unit}
        row: dict[str, Any] = {"task": task, "label": label, "unit": unit}
        counted = ["samples_generated", "samples_from_data",
                   *(f"{k}_{r}" for k in ("forward", "backward") for r in ROLES), "flops"]
        estimates = {c: rep.instance_ci(sub, c) for c in counted}
        for column, e in estimates.items():
            num.update(_est(column, e))
        row["samples generated"] = _count_text(estimates["samples_generated"])
        row["samples from data"] = _count_text(estimates["samples_from_data"])
        for kind in ("forward", "backward"):
            for role in roles[kind]:
                row[f"{kind} {ROLE_NAMES[role]}"] = _count_text(estimates[f"{kind}_{role}"])
        flops = estimates["flops"]
        row["FLOPs"] = _count_text(flops) if math.isfinite(flops.value) else "n/a (tabular)"
        cpu = rep.instance_ci(sub, "train_cpu_seconds")
        load = rep.instance_ci(sub, "load_mean")
        num.update(_est("train_cpu_seconds", cpu))
        num.update(_est("load_mean", load))
        load_max = float(sub["load_max"].max()) if sub["load_max"].notna().any() else math.nan
        num["load_max"] = load_max
        row["training CPU s"] = cpu.format()
        row["load average (max)"] = f"{load.format()} ({fmt(load_max)})"
        rows.append(num)
        shown.append(row)
    rep.table(pd.DataFrame(shown).fillna("n/a"), (
        "Counted work per run (runs that finished as done; mean over instances with a "
        "Student-t 95% interval, a single number where every instance counted the same). "
        "Samples generated by a model, and samples read from data (an offline method's pairs); "
        "forward: tokens through forward-only passes (sampling included) of each model — π, "
        "π_ref, r̂, a critic — backward: tokens through a forward-backward pass, each pass "
        "counted; for tabular policies (unit: table rows) a token is one row of the table, read "
        "in forward, updated in backward. FLOPs = Σ over models of 2·N·forward + 6·N·backward "
        "(N its non-embedding parameters), neural policies only. These counts follow from the "
        "spec and the seed alone, not from the machine. Training CPU seconds (generation + "
        "scoring + training) and the 1-minute load average during the runs (sampled at the "
        "start, at each evaluation and at the end: mean over instances of each run's mean, and "
        "the highest sample) are the timed part, beside them: they grow with the machine's "
        "load."), "counted_work", pd.DataFrame(rows))


BUDGET_CURVES = ("gold_reward", "j_beta_gain", "gap_closure")
"""What the score-against-budget figures draw (the last two on exact tasks only)."""


def _cost(v: float, bound: bool = False) -> str:
    """A cost: ``not reached`` for a median of +∞, ``∞`` for an interval's bound."""
    if bound and math.isinf(v) and v > 0:
        return "∞"
    return fmt(v)


def _median_cost(v: float, low: float, high: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return _cost(v)
    return f"{_cost(v)} [{_cost(low, True)}, {_cost(high, True)}]"


def cost_section(rep: Report) -> None:
    """Score against budget (samples, FLOPs) and the cost to reach fixed fractions of a fixed
    target (:mod:`harness.report.cost`)."""
    d, opts = rep.data, rep.opts
    prog = cst.progress(d)
    if prog.empty:
        return
    rep.add(Heading("Cost to reach a result"))
    drawn = []
    for x in cst.AXES:
        curves = {}
        for metric in BUDGET_CURVES:
            frame = prog[[*cst.IDENT, x]].assign(value=prog[metric])
            if np.isfinite(frame["value"]).any() and np.isfinite(frame[x]).any():
                curves[metric] = on_grid(frame, x, max_points=opts.max_points)
        exact = [t for t in d.tasks if cst.target_kind(prog, t) == cst.EXACT]
        rep.figure(
            f"budget_{x}",
            "Score against budget: gold reward" + (", J_β(π) − J_β(π_ref) and the gap closure "
                                                    "to π*_β (exact tasks)" if exact else "")
            + f" against {fig.X_NAMES[x]}, one curve per configuration: mean over task "
            "instances (an instance's replicates averaged first) with a Student-t 95% band; "
            f"runs interpolated onto a common grid of at most {opts.max_points} points, none "
            "past its own last evaluation.",
            lambda p, c=curves, x=x: fig.learning_curves(c, x, d.tasks, d.labels, p,
                                                         rep.colours))
        if (rep.out / "figures" / f"budget_{x}.png").exists():
            drawn.append(x)
    if opts.figures and "flops" not in drawn:
        rep.text("No run counts FLOPs, so score is drawn against samples only.")
    summary = cst.cost_summary(cst.instance_costs(cst.run_costs(prog)))
    if summary.empty:
        return
    order = {(t, lab): i for i, (t, lab) in enumerate(
        (t, lab) for t in d.tasks for lab in d.labels)}
    summary = summary.assign(_order=[order.get((t, lab), len(order)) for t, lab in
                                     zip(summary["task"], summary["label"], strict=True)])
    summary = summary.sort_values(["_order", "fraction"], kind="stable").drop(
        columns="_order").reset_index(drop=True)
    for task in d.tasks:
        kind = cst.target_kind(prog, task)
        rep.text(
            "Targets on {task}: " + (
                "the gap closure 1 − regret/regret(π_ref) reaching {fractions}, i.e. that share "
                "of the way from π_ref to π*_β in J_β." if kind == cst.EXACT else
                "the gold gain over π_ref reaching {fractions} of a fixed gain of {gain} (r* "
                "units), the same for every configuration (no exact optimum on this task)."),
            task=task, fractions=_join(fmt(f) for f in cst.FRACTIONS),
            gain=fmt(cst.REFERENCE_GAIN))
    shown = pd.DataFrame({
        "task": summary["task"], "label": summary["label"],
        "target": [f"{k} ≥ {fmt(t)}" for k, t in zip(summary["kind"], summary["threshold"],
                                                       strict=True)],
        "instances reached": [
            f"{r.reached}/{r.instances} (share "
            f"{st.Estimate(r.reached_share, r.reached_share_low, r.reached_share_high).format()})"
            for r in summary.itertuples(index=False)],
        "samples": [_median_cost(r.median_samples, r.median_samples_low,
                                 r.median_samples_high) for r in summary.itertuples(index=False)],
        "FLOPs": [_median_cost(r.median_flops, r.median_flops_low, r.median_flops_high)
                  for r in summary.itertuples(index=False)],
    })
    rep.table(shown, "Cost to reach a result: the cumulative samples and FLOPs at a run's first "
              "evaluation at or above the target (resolution: the evaluation interval); an "
              "instance's replicates reduced to their median, where a run that never reaches "
              "the target counts as +∞ ('not reached' when half or more of them never do). Over "
              "instances: the median with the distribution-free order-statistic 95% interval "
              "(scipy.stats.quantile_test), which uses ranks only, so never-reached instances "
              "sort last (an upper bound ∞: too many never reach it to bound the median; no "
              "interval below 6 instances); instances reached: the count, the share and its "
              "Clopper-Pearson 95% interval. FLOPs n/a where the task counts none. In the "
              "paired comparisons (samples_to_half, flops_to_half) a never-reached run counts "
              "as twice the most any run on the task spent (PAR-2).", "cost_to_reach", summary)


def _time_to_threshold(rep: Report) -> None:
    d, f = rep.data, rep.opts.threshold
    gold = eval_series(d, "gold_reward")
    u = d.usable
    if gold.empty or "final_gold_reward" not in u:
        return
    rows, shown = [], []
    for task in d.tasks:
        g = gold[gold["task"] == task]
        start = g[g["step"] == g.groupby("run_id")["step"].transform("min")]["value"]
        g0 = float(np.nanmedian(start)) if len(start) else math.nan
        medians = (u[u["task"] == task].groupby("label")["final_gold_reward"].median().dropna())
        if medians.empty or not math.isfinite(g0):
            continue
        best_label = str(medians.idxmax())
        best = float(medians.max())
        threshold = g0 + f * (best - g0)
        rep.text(
            "Target on {task}: {pct}% of the way from π_ref's gold reward {g0} to the best "
            "median final gold reward {best} ({label}), i.e. gold reward ≥ {thr}.",
            task=task, pct=fmt(100 * f), g0=fmt(g0), best=fmt(best), label=best_label,
            thr=fmt(threshold),
        )
        for label in d.labels:
            runs = g[g["label"] == label]
            if runs.empty:
                continue
            hits = {"wall_seconds": [], "flops": [], "samples": [], "step": []}
            for _, run in runs.groupby("run_id"):
                run = run.sort_values("step")
                for col, out in hits.items():
                    out.append(st.first_reaching(run[col].tolist(), run["value"].tolist(),
                                                 threshold))
            n = len(hits["step"])
            reached = sum(math.isfinite(v) for v in hits["step"])
            num = {"task": task, "label": label, "threshold": threshold, "runs": n,
                   "reached": reached}
            for col, vals in hits.items():
                num[f"median_{col}"] = st.median_with_inf(vals)
            rows.append(num)
            shown.append({"task": task, "label": label, "reached": f"{reached}/{n}",
                          "median wall s": fmt(num["median_wall_seconds"]),
                          "median FLOPs": fmt(num["median_flops"]),
                          "median samples": fmt(num["median_samples"]),
                          "median step": fmt(num["median_step"])})
    if rows:
        rep.table(pd.DataFrame(shown), "Time and compute to reach the target (median over "
                  "counted runs; a run that never reaches it counts as infinite, so the median "
                  "is 'not reached' when half or more never do). Wall seconds are cumulative, "
                  "evaluation included.", "time_to_threshold", pd.DataFrame(rows))


def _run_stability(d: StoreData, k: float) -> pd.DataFrame:
    """Per run: worst drawdown of gold reward, loss and grad-norm spikes."""
    m = d.metrics[d.metrics["status"].isin(("done", "diverged"))]
    rows = []
    for run_id, run in m.groupby("run_id", sort=False):
        run = run.sort_values("step")
        gold = run[(run["source"] == "eval") & (run["metric"] == "gold_reward")]["value"]
        row = {"run_id": run_id, "drawdown": st.max_drawdown(gold) if len(gold) else math.nan}
        for metric in ("loss", "grad_norm"):
            vals = run[(run["source"] == "train") & (run["metric"] == metric)]["value"]
            row[f"{metric}_spikes"] = st.count_spikes(vals, k=k) if len(vals) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "drawdown", "loss_spikes", "grad_norm_spikes"])


def stability_section(rep: Report) -> pd.DataFrame:
    d = rep.data
    rep.add(Heading("Stability"))
    per_run = rep.per_run
    runs = d.runs.merge(per_run, on="run_id", how="left")
    finished = runs[runs["status"].isin(("done", "diverged", "failed"))]
    inst = rep.inst
    rows, shown = [], []
    for task, label, sub in _groups(rep, finished):
        counted = sub[sub["status"].isin(("done", "diverged"))]
        n = len(sub)
        k_div = int((sub["status"] == "diverged").sum())
        k_fail = int((sub["status"] == "failed").sum())
        div = st.rate_interval(k_div, n)
        fail = st.rate_interval(k_fail, n)
        mine = inst[(inst["task"] == task) & (inst["label"] == label)]
        df = int(mine["replicate_df"].sum())
        ss = float((mine["replicate_std"].fillna(0) ** 2 * mine["replicate_df"]).sum())
        pooled = math.sqrt(ss / df) if df > 0 else math.nan
        across = st.std_interval(mine["final_gold_reward"].dropna().to_numpy())
        dd = counted["drawdown"].dropna()
        num = {"task": task, "label": label, "runs": n, "counted": len(counted),
               "instances": int(sub["seed"].nunique()),
               "replicate_std_pooled": pooled, "replicate_df": df,
               **_est("instance_std", across),
               "diverged": k_div, **_est("divergence_rate", div),
               "failed": k_fail, **_est("failure_rate", fail),
               "drawdown_worst": float(dd.max()) if len(dd) else math.nan,
               "drawdown_median": float(dd.median()) if len(dd) else math.nan}
        row = {"task": task, "label": label, "runs": n,
               "spread across replicates (df)": (f"{fmt(pooled)} ({df})" if df > 0
                                                 else "n/a (one replicate)"),
               "spread across instances [95% CI]": across.format(3),
               "divergence rate [95% CI]": f"{k_div}/{n}: {div.format(2)}",
               "failure rate": f"{k_fail}/{n}",
               "worst / median drawdown": f"{fmt(num['drawdown_worst'])} / "
                                          f"{fmt(num['drawdown_median'])}"}
        for metric in ("loss", "grad_norm"):
            spikes = counted[f"{metric}_spikes"].dropna()
            num[f"{metric}_spikes_total"] = float(spikes.sum()) if len(spikes) else math.nan
            num[f"{metric}_spike_runs"] = int((spikes > 0).sum())
            row[f"{metric} spikes (runs with any; per algorithm)"] = (
                f"{fmt(num[f'{metric}_spikes_total'])} ({num[f'{metric}_spike_runs']}/"
                f"{len(spikes)})" if len(spikes) else "n/a")
        rows.append(num)
        shown.append(row)
    numbers = pd.DataFrame(rows)
    if rows:
        rep.table(pd.DataFrame(shown), (
            "Stability. Spread across replicates: the standard deviation of the final gold "
            "reward among the runs of one instance, pooled over instances (square root of the "
            "df-weighted mean variance; df = runs − 1 per instance): it measures the "
            "algorithm's own randomness, not the differences between task instances. "
            "Spread across instances: the standard deviation of the instances' mean final "
            "gold reward (the instance is the independent unit), with Bonett's (2006) "
            "interval from 5 instances on; it holds the tasks' variation too, and is the "
            "scale the replicate spread is small or large against. "
            "Divergence and failure rates over all finished runs, with Clopper-Pearson "
            "intervals; drawdown: the largest fall of gold reward below its running best "
            f"within a run; spikes: train steps above the run's rolling median (9 steps) by "
            f"more than {fmt(rep.opts.spike_k)} robust sds (1.4826×MAD of the residuals); "
            f"non-finite values count as spikes. The spike columns are per algorithm, not "
            f"comparable across algorithms: each counts spikes of its own loss (a squared "
            f"regression loss spikes where a log-likelihood does not) and of its own gradient "
            f"norm, so they enter no comparison and no claim, which rest on the spread across "
            f"replicates, divergence and drawdown of the gold reward, one quantity for all."),
            "stability", numbers)
        if (numbers["replicate_df"] == 0).all():
            rep.text("Every instance has one replicate, so the spread of an algorithm's own "
                     "randomness is not measured (the spread across instances is that of the "
                     "tasks); stability comparisons rest on divergence and drawdown. A suite "
                     "measures it with seeds: {instances: [...], replicates: 3}.")
    rep.figure("final_gold", "Final gold reward of every counted run (violin per "
               "configuration; dots coloured by status).",
               lambda p: fig.final_distribution(d.usable, d.tasks, d.labels, p,
                                                colours=rep.colours))
    _sensitivity(rep)
    rep.csv("per_run_stability", per_run)
    return numbers


def _sensitivity(rep: Report) -> None:
    d = rep.data
    u = d.usable
    if "final_gold_reward" not in u:
        return
    rows, shown, points = [], [], []
    for task in d.tasks:
        for alg in dict.fromkeys(u["algorithm"]):
            sub = u[(u["task"] == task) & (u["algorithm"] == alg)]
            if sub["sweep"].nunique() < 2:
                continue
            med = sub.groupby("sweep")["final_gold_reward"].median().dropna()
            if med.empty:
                continue
            for point, value in med.items():
                points.append({"task": task, "algorithm": alg, "sweep_point": point,
                               "median_final_gold": float(value),
                               "runs": int((sub["sweep"] == point).sum())})
            num = {"task": task, "algorithm": alg, "sweep_points": len(med),
                   "best_point": str(med.idxmax()), "best_median": float(med.max()),
                   "worst_point": str(med.idxmin()), "worst_median": float(med.min()),
                   "range": float(med.max() - med.min()),
                   "std_across_points": float(med.std(ddof=1)) if len(med) > 1 else math.nan}
            rows.append(num)
            shown.append({"task": task, "algorithm": alg, "sweep points": len(med),
                          "best (median final gold)": f"{num['best_point']} "
                                                      f"({fmt(num['best_median'])})",
                          "worst": f"{num['worst_point']} ({fmt(num['worst_median'])})",
                          "range": fmt(num["range"]),
                          "std across points": fmt(num["std_across_points"])})
    if not rows:
        rep.text("Hyperparameter sensitivity: no algorithm of this suite has more than one "
                 "sweep point with counted runs ({n} configurations).", n=len(d.labels))
        return
    rep.table(pd.DataFrame(shown), "Hyperparameter sensitivity: spread of the median final "
              "gold reward across the sweep points of each algorithm.", "sensitivity",
              pd.DataFrame(rows))
    rep.csv("sensitivity_points", pd.DataFrame(points))
    rep.figure("sensitivity", "Final gold reward per sweep point (mean over runs, Student-t 95% "
               "interval).", lambda p: fig.sensitivity(u, p))


RANK_RESAMPLES = 2000
"""Bootstrap resamples of instances behind each rank interval."""
RANK_TOP = 5
"""Places shown where the aggregations are set side by side."""
AGGREGATIONS = ("mean", "median", "iqm")
"""The aggregations of instance scores a ranking is shown under (columns of the ranking)."""
AGGREGATION_NAMES = {"mean": "mean", "median": "median", "iqm": "IQM"}


def bootstrap_ranks(wide: pd.DataFrame, seed: int,
                    resamples: int = RANK_RESAMPLES) -> pd.DataFrame:
    """Rank intervals of the configurations (columns of ``wide``) from a bootstrap over
    instances (rows of ``wide``, one score per instance and configuration, NaN where there is
    none).

    Each resample draws as many instances as ``wide`` has, with replacement, the same draw for
    every configuration (instances are shared, so they are resampled jointly); a configuration's
    value is the mean of its scores over the drawn instances, and the configurations are ranked
    within the resample (1 = best, ties share the better rank). Returns one row per
    configuration: ``label``, ``rank_low`` and ``rank_high``, the 2.5% and 97.5% quantiles of its
    rank over the resamples (as ranks that occurred). ``seed`` fixes the draws, so a report built
    twice is the same; a configuration that ranks the same in every resample has an interval of
    width 0.
    """
    from scipy import stats

    values = wide.to_numpy(dtype=float)
    n, k = values.shape
    if n == 0 or k == 0:
        return pd.DataFrame({"label": list(wide.columns), "rank_low": math.nan,
                             "rank_high": math.nan})
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    taken = values[draws]  # [resamples, n, k]
    counts = np.isfinite(taken).sum(axis=1)
    sums = np.where(np.isfinite(taken), taken, 0.0).sum(axis=1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    ranks = stats.rankdata(-means, method="min", axis=1, nan_policy="omit")
    low, high = [], []
    for j in range(k):
        r = ranks[:, j][np.isfinite(ranks[:, j])]
        q = (np.quantile(r, [0.025, 0.975], method="inverted_cdf") if len(r)
             else [math.nan, math.nan])
        low.append(float(q[0]))
        high.append(float(q[1]))
    return pd.DataFrame({"label": list(wide.columns), "rank_low": low, "rank_high": high})


def _rank_seed(name: str) -> int:
    """The bootstrap's seed for the ranking called ``name`` (a task, or ``overall``)."""
    return zlib.crc32(f"ranking/{name}".encode())


def _ranked(table: pd.DataFrame, wide: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows sorted by mean score, with their rank by mean and by IQM (1 = best; ties share the
    better rank), and the interval of the rank by mean from :func:`bootstrap_ranks` over
    ``wide`` (instance × label scores whose column means are the rows' means)."""
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = table["mean"].rank(ascending=False, method="min").astype("Int64")
    intervals = bootstrap_ranks(wide[list(table["label"])], seed).set_index("label")
    table["rank_low"] = table["label"].map(intervals["rank_low"])
    table["rank_high"] = table["label"].map(intervals["rank_high"])
    table["rank_iqm"] = table["iqm"].rank(ascending=False, method="min").astype("Int64")
    table["rank_median"] = table["median"].rank(ascending=False, method="min").astype("Int64")
    return table


def _rank_row(label: str, scores: pd.Series, e: st.Estimate,
              **extra: Any) -> dict[str, Any]:
    """A ranking row: the label's instance scores summarised (``extra`` columns after the
    count), ``e`` the interval of its mean."""
    return {"label": label, "instances": len(scores), **extra, "iqm": st.iqm(scores),
            "mean": e.value, "low": e.low, "high": e.high, "median": float(scores.median())}


def _rank_interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def _ranking_shown(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": table["rank"],
        "rank [95%]": [_rank_interval(r.rank_low, r.rank_high) for r in table.itertuples()],
        "label": table["label"], "instances": table["instances"],
        "mean score [95% CI]": [st.Estimate(r.mean, r.low, r.high).format()
                                for r in table.itertuples()],
        "IQM": table["iqm"].map(fmt), "IQM rank": table["rank_iqm"],
        "median": table["median"].map(fmt),
    })


def aggregation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration of a ranking (:func:`_ranked`): its score under each of
    :data:`AGGREGATIONS` and its rank by each (1 = best, ties share the better rank)."""
    out = table[["label", *AGGREGATIONS]].copy()
    for agg in AGGREGATIONS:
        out[f"rank_{agg}"] = out[agg].rank(ascending=False, method="min").astype("Int64")
    return out.reset_index(drop=True)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def aggregation_sentences(agg: pd.DataFrame,
                          top: int = RANK_TOP) -> list[tuple[str, dict[str, Any]]]:
    """What :func:`aggregation_table`'s ``agg`` says about the top of the ranking, as
    (template, values) for :meth:`Report.text`: who is first under each aggregation, and where
    the aggregations order the first ``top`` places differently (or that they agree). Every
    number is a cell of ``agg``."""
    names = AGGREGATION_NAMES
    k = min(top, len(agg))
    firsts = {a: tuple(agg.loc[agg[f"rank_{a}"] == 1, "label"]) for a in AGGREGATIONS}
    out: list[tuple[str, dict[str, Any]]] = []
    if len(set(firsts.values())) == 1 and len(firsts["mean"]) == 1:
        row = agg[agg["label"] == firsts["mean"][0]].iloc[0]
        out.append(("All three aggregations put {label} first ({values}).",
                    {"label": row["label"], "values": ", ".join(
                        f"{names[a]} {fmt(row[a])}" for a in AGGREGATIONS)}))
    else:
        parts = []
        for a in AGGREGATIONS:
            rows = agg[agg[f"rank_{a}"] == 1]
            parts.append(f"by {names[a]}, {_join(rows['label'])} ({fmt(rows[a].iloc[0])})")
        out.append(("Which configuration comes first depends on the aggregation: {parts}.",
                    {"parts": "; ".join(parts)}))
    shown = agg[(agg[[f"rank_{a}" for a in AGGREGATIONS]] <= k).any(axis=1)]
    moved = [r for r in shown.itertuples()
             if len({int(getattr(r, f"rank_{a}")) for a in AGGREGATIONS}) > 1]
    if moved:
        out.append(("Where they order the first {k} differently: {moved}.", {
            "k": k, "moved": "; ".join(
                f"{r.label} is " + ", ".join(f"{_ordinal(int(getattr(r, f'rank_{a}')))} by "
                                             f"{names[a]}" for a in AGGREGATIONS)
                for r in moved)}))
    elif k > 1:
        out.append(("The three aggregations agree on the order of the first {k}.", {"k": k}))
    return out


def _aggregation_shown(agg: pd.DataFrame, top: int = RANK_TOP) -> pd.DataFrame:
    """The first ``top`` places under each aggregation, side by side (``label (value)``)."""
    k = min(top, len(agg))
    columns: dict[str, list[str]] = {"place": [str(i) for i in range(1, k + 1)]}
    for a in AGGREGATIONS:
        order = agg.sort_values([a, "label"], ascending=[False, True], kind="stable").head(k)
        columns[f"by {AGGREGATION_NAMES[a]}"] = [
            f"{r.label} ({fmt(getattr(r, a))})" + ("" if int(getattr(r, f"rank_{a}")) == i + 1
                                                   else f", tied {int(getattr(r, f'rank_{a}'))}")
            for i, r in enumerate(order.itertuples())]
    return pd.DataFrame(columns)


SCORE_SHORT = {cmp.GAP_CLOSURE: "gap closure in J_β, which charges KL(π‖π_ref),",
               cmp.STANDARDISED: "gold gain in units of π_ref's spread",
               cmp.RELATIVE: "gold gain relative to the largest"}


def _score_kinds_note(rep: Report, kinds: dict[str, str]) -> None:
    """Say what kinds of score the ranking averages, and where a score depends on the other
    configurations of the suite."""
    present = [k for k in SCORE_SHORT if k in kinds.values()]
    if len(present) > 1:
        parts = [f"{SCORE_SHORT[k]} on {_join(t for t, v in kinds.items() if v == k)}"
                 for k in present]
        rep.text("The overall ranking averages scores of {n} kinds: {parts}. A configuration "
                 "that buys gold with KL ranks higher on a gold gain than on gap closure; the "
                 "per-task ranking keeps them apart.", n="two" if len(parts) == 2 else "three",
                 parts=", ".join(parts[:-1]) + ", and " + parts[-1])
    relative = [t for t, k in kinds.items() if k == cmp.RELATIVE]
    if relative:
        rep.text("On {tasks}, not every run recorded the spread of π_ref's gold reward "
                 "(gold_reward_sd, recorded since it existed), so their scores are gold gains "
                 "relative to the largest mean gain on the task: these scores, and the rankings, "
                 "change when a configuration is added to the suite or removed.",
                 tasks=_join(relative))


def ranking_section(rep: Report) -> None:
    d = rep.data
    rep.add(Heading("Ranking"))
    inst = rep.inst
    still = set(rep.still)
    if inst.empty or not inst["score"].notna().any():
        rep.text("No counted run has a score ({n} runs in the store), so there is no ranking.",
                 n=len(d.runs))
        return
    kept = inst[[(t, lab) not in still for t, lab in zip(inst["task"], inst["label"],
                                                           strict=True)]]
    kept = kept.dropna(subset=["score"])
    if rep.still:
        rep.text("Left out, as they did not learn: {labels}.", labels=_join(
            f"{lab} on {t}" if rep.multi_task else lab for t, lab in rep.still))
    if kept.empty:
        return
    rows = []
    by_label: dict[str, dict[str, np.ndarray]] = {}
    overall: dict[str, pd.Series] = {}
    all_tasks = kept["task"].nunique()
    partial = []
    for label in d.labels:
        sub = kept[kept["label"] == label]
        if sub.empty:
            continue
        by_label[label] = {t: g["score"].to_numpy() for t, g in sub.groupby("task")}
        if sub["task"].nunique() < all_tasks:
            # an average over fewer tasks is not comparable with the others'
            partial.append(f"{label} ({sub['task'].nunique()} of {all_tasks})")
            continue
        # one value per instance: the mean over tasks of the instance's scores
        overall[label] = sub.groupby("instance")["score"].mean()
        rows.append(_rank_row(label, sub["score"], st.t_interval(overall[label]),
                              tasks=sub["task"].nunique()))
    if partial:
        rep.text("Not ranked over all tasks, as they have a score on only some of them (ranked "
                 "per task below): {labels}.", labels=_join(partial))
    table = (_ranked(pd.DataFrame(rows), pd.DataFrame(overall), _rank_seed("overall"))
             if rows else pd.DataFrame())
    _score_kinds_note(rep, {t: cmp.score_kind(d.runs, t) for t in kept["task"].unique()})
    if rows:
        rep.table(_ranking_shown(table), "Configurations by mean score over instances (an "
                  "instance's replicates averaged first; across tasks, an instance's scores "
                  "averaged over tasks), with a Student-t 95% interval. Scores are fixed by the "
                  "task (gap closure, or gold gain in units of π_ref's spread), not by the other "
                  "configurations, so this ranking does not depend on which others are in the "
                  "suite. Rank [95%]: the 2.5% to 97.5% range of the rank by mean over "
                  f"{RANK_RESAMPLES} bootstrap resamples of instances (drawn jointly for all "
                  "configurations, fixed seed). Rank by IQM (the mean of the middle half of the "
                  "(task, instance) scores, Agarwal et al. 2021) and median of the same scores, "
                  "without intervals. Decisions between configurations are the paired "
                  "comparisons'.", "ranking_iqm", table)
    if rep.multi_task:
        per_task = []
        for task, sub in kept.groupby("task", sort=False):
            task_rows = [{"task": task,
                          **_rank_row(label, g["score"], st.t_interval(g["score"]))}
                         for label in d.labels
                         if not (g := sub[sub["label"] == label]).empty]
            wide = sub.pivot_table(index="instance", columns="label", values="score",
                                   aggfunc="mean")
            per_task.append(_ranked(pd.DataFrame(task_rows), wide, _rank_seed(str(task))))
        by_task = pd.concat(per_task, ignore_index=True)
        rep.table(pd.concat([by_task[["task"]], _ranking_shown(by_task)], axis=1),
                  "The same ranking on each task alone (the score of each instance, its "
                  "replicates averaged; rank intervals from a bootstrap over the task's "
                  "instances).", "ranking_per_task", by_task)
    if rows:
        agg = aggregation_table(table)
        rep.table(_aggregation_shown(agg), "The first places of the overall ranking under "
                  "three aggregations of the instance scores, side by side: the mean (over "
                  "instances of an instance's mean over tasks), the median and the IQM (of the "
                  "(task, instance) scores); a place shared by a tie says so.",
                  "ranking_aggregations", agg)
        for template, values in aggregation_sentences(agg):
            rep.text(template, **values)
    labels = list(by_label)
    pairs = []
    for x in labels:
        for y in labels:
            if x == y:
                continue
            common = sorted(set(by_label[x]) & set(by_label[y]))
            if common:
                pairs.append({"x": x, "y": y, "tasks": len(common),
                              "p": st.probability_of_improvement(
                                  [by_label[x][t] for t in common],
                                  [by_label[y][t] for t in common])})
    poi = pd.DataFrame(pairs, columns=["x", "y", "p", "tasks"])
    if len(poi):
        rep.csv("probability_of_improvement", poi)
    if not rows:
        return
    fig_frame = table.assign(iqm=table["mean"])
    rep.figure("ranking", "Mean score over instances (Student-t 95% interval) and "
               "the probability of improvement P(X > Y) of each row over each column "
               "(Mann-Whitney U / nm over instance scores, averaged over tasks; a description, "
               "not a test).",
               lambda p: fig.ranking(fig_frame, poi.assign(low=math.nan, high=math.nan), d.labels,
                                     p, "score", rep.colours))
    top = table.iloc[0]
    rep.text("Highest mean score: {label} ({value}; rank {ranks} over 95% of the bootstrap "
             "resamples of instances); whether it is better than the others is the paired "
             "comparisons' decision (summary above).", label=top["label"],
             value=st.Estimate(top["mean"], top["low"], top["high"]).format(),
             ranks=_rank_interval(top["rank_low"], top["rank_high"]))


def reward_units(runs: pd.DataFrame) -> list[str]:
    """What the runs' annotator and reward-model scales make of r̂'s units and the KL weights
    (docs/reward-units.md): one sentence per distinct pair of scales."""
    if "reward_model_scale" not in runs:
        return []
    out: list[str] = []
    pairs = runs[["annotator_scale", "reward_model_scale", "reward_model_kind"]].drop_duplicates()
    for a, s, kind in pairs.itertuples(index=False):
        if kind == "gold":
            out.append("Online algorithms were given r* itself as their reward (an oracle r̂).")
        elif not math.isfinite(a) and math.isfinite(s):
            out.append(f"r̂ was fitted at scale {fmt(s)} to preference pairs read from a file, "
                       f"whose annotator's scale is unknown: r̂'s units relative to r* are too.")
        elif math.isfinite(a) and math.isfinite(s) and math.isclose(a, s):
            out.append(f"r̂ is in r*'s units: fitted at the annotator's scale {fmt(a)}, so a KL "
                       f"weight β on r̂ aims at π*_β of r*; offline methods whose likelihood is "
                       f"BTL at scale 1 (DPO's β) aim at π*_(β·{fmt(a)}) "
                       f"(docs/reward-units.md).")
        elif math.isfinite(a) and math.isfinite(s):
            out.append(f"r̂ ≈ r*·{fmt(s / a)}: fitted at scale {fmt(s)} to labels made at scale "
                       f"{fmt(a)}, so a KL weight γ on r̂ aims at π* of r* at β = "
                       f"γ·{fmt(a / s)} (docs/reward-units.md).")
    return out


def method_section(rep: Report) -> None:
    rep.add(Heading("Method"))
    comp = rep.comp
    rep.text("Counted runs are those with status done or diverged; a diverged run's final "
             "evaluation is its last one, used where finite. Failed runs are listed and enter "
             "only the status table and the failure and divergence rates (as their "
             "denominator).")
    rep.text("Design: a task instance (its seed) fixes the task draw, the preference data and "
             "r̂, shared by every configuration; replicates vary only the algorithm's own "
             "randomness. The instance is the unit of every interval and comparison: an "
             "instance's runs are averaged first.")
    rep.text("Intervals (all 95%): Student t for means and mean differences (final metrics, "
             "compute, curve bands and bars); the inverted sign-flip test for paired "
             "differences (below); Bonett's (2006) interval for standard deviations (the "
             "stability table's spread across instances; none below 5 instances); "
             "Clopper-Pearson for rates (divergence, failure). No bootstrap interval of a mean "
             "is printed: at 5 to 10 instances the percentile bootstrap of a mean covers about "
             "84% to 90%, not 95%; the rankings' rank ranges are bootstrap percentiles over "
             "instances, with a fixed seed. IQM "
             "(scipy.stats.trim_mean(x, 0.25)) and probability of improvement (Mann-Whitney "
             "U/(n·m) per task, averaged over tasks; Agarwal et al. 2021) are point estimates.")
    rep.text("Comparisons: the paired sign-flip permutation test on per-instance differences "
             "a − b, with the t statistic (which, given Σd², is monotone in |Σd|, so the "
             "studentized and the plain test agree): exact over all 2^n sign patterns up to 20 "
             "instances, over 50,000 random patterns (seed from the data) beyond, with the "
             "Monte Carlo standard error in the table. Its level is exact whatever the "
             "distribution when a and b are exchangeable within an instance; the paired t-test "
             "it replaces leans on normality far in its tail, where decisions at α/m are "
             "taken. The 95% interval inverts the same test (Hartigan 1969): it covers at "
             "least 95% for symmetric differences, heavy-tailed ones included, where a "
             "bootstrap-t interval covers about 92% at 30 instances of t₃ data. Differences "
             "skewed beyond scipy.stats.skewtest p < {skew} are undecidable and print no "
             "interval: with skewed differences of mean 0 (log-normal, σ = 1) the sign-flip and "
             "t tests decide 8 to 15 times too often at α = 0.005 (a bootstrap-t test 2.5 to 5 "
             "times); refusing skewed samples brings 30 instances back within the level, not "
             "10. Comparisons the test cannot decide at their n (its smallest p-value, 2/2^n, "
             "would not pass their Holm step) are undecidable at n, not undecided. P-values "
             "Holm-adjusted (step-down) within the comparison's family (below); decided when "
             "the adjusted p-value is below 0.05. MDE from the noncentral t distribution "
             "(scipy.stats.nct), 80% power, two-sided, at α/m of the family (Bonferroni, the "
             "strictest step of Holm), using the observed sd of the differences. Instances "
             "needed: the instances that give 80% power at that level at a 90% lower confidence "
             "bound of the effect size (noncentral t), so that the number stated suffices with "
             "90% confidence (the plug-in figure from the observed effect gives about 65% "
             "power). Comparisons whose per-instance differences are all equal (FLOPs, or zero "
             "on both sides) are exact, not tests: they keep their p-value of 0 or 1 and stay "
             "out of both families' counts.", skew=fmt(st.SKEW_LEVEL))
    if len(comp):
        rep.text("Families: the primary comparisons are {rule}, one Holm family; the claims' "
                 "verdicts and the summary's decided comparisons rest on them. Every other "
                 "comparison is exploratory, Holm-adjusted in a family of its own and labelled "
                 "so ({sizes}).", rule=family_rule(rep), sizes=family_sizes(rep))
    for sentence in reward_units(rep.data.runs):
        rep.text(sentence)
    rep.text("Did not learn: the t interval of the per-instance gold gain over π_ref holds 0 "
             "and the mean final KL(π‖π_ref) is below {kl} nats.",
             kl=fmt(cmp.NOT_LEARNED_KL))
    trials = rep.data.trials
    if trials is not None and "repeat" in trials and trials["repeat"].notna().any():
        rep.text("Tuning repeated in independent searches. {model}", model=REPEATS_MODEL)
    counted_work_method(rep)


def counted_work_method(rep: Report) -> None:
    """The method's note on compute: what is counted, what is timed, what load does to the
    timed part."""
    rep.text("Compute is counted, then timed. Counted (the counted work table): samples "
             "generated and samples read from data; per model — π, π_ref, r̂, a critic — the "
             "tokens of forward-only passes (sampling included) and of forward-backward passes, "
             "as the algorithm's code reports them to the compute meter; for tabular policies "
             "the same counts as table rows read and updated; FLOPs from those counts (2·N per "
             "token forward, 6·N forward-backward; Kaplan et al. 2020), neural policies only. "
             "The counts depend on the spec and the seed, not on the machine. Timed: wall and "
             "CPU seconds per phase (generation, scoring, training, evaluation), with the "
             "1-minute load average sampled at the start, at each evaluation and at the end of "
             "each run. Load inflates the timed part, CPU seconds included: the same bandit "
             "runs, re-run at load average 10–18, gave identical results and 3.5–4.5× the CPU "
             "seconds, so CPU seconds are not a machine-independent measure; the counts are.")


def _run_lines(store: Path, data: StoreData) -> bytes:
    """``runs.jsonl``: each counted run's spec, versions, environment and final metrics, one
    JSON line each, in run-id order (what ``rlhf-harness reproduce`` re-runs)."""
    from harness.store import RunStore

    runs = RunStore(store.parent, store.name)
    lines = []
    for run_id in sorted(data.runs["run_id"]):
        record = runs.record(run_id)
        if record is not None:
            lines.append(json.dumps(run_line(record), sort_keys=True, default=str))
    return ("\n".join(lines) + "\n").encode()


def write_report(
    store_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    x: str = "step",
    threshold: float = 0.9,
    include_stale: bool = False,
    allow_mixed_versions: bool = False,
    figures: bool = True,
) -> Path:
    """Write the report of the run store ``store_path`` (``runs/<suite>``) into ``out_dir``.

    ``out_dir`` defaults to ``reports/<suite folder name>``. Writes ``index.md`` (GitHub
    Markdown), ``index.html`` (self-contained), ``figures/*.png`` and ``tables/*.csv``; returns
    ``out_dir``. ``x`` picks the learning curves' x-axis (step, samples, wall_seconds, flops);
    ``threshold`` the fraction of the way from π_ref's gold reward to the best final one that
    time-to-target measures; ``include_stale`` counts the runs of older versions of the suite
    too; ``allow_mixed_versions`` accepts runs made by different versions of the harness or
    torch (refused otherwise, naming them); ``figures=False`` draws no figure (see
    :class:`ReportOptions`). Every interval of a value is computed in closed
    form (Student t, Bonett, Clopper-Pearson); the rankings' rank ranges come from a bootstrap
    with a fixed seed per ranking: a report built twice from one store is the same.
    """
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    opts = ReportOptions(x=x, threshold=threshold, figures=figures)
    store = Path(store_path)
    if not store.is_dir():
        raise ConfigError(f"{store}: no run store there (expected runs/<suite>)")
    data = load_store(store, include_stale=include_stale,
                      allow_mixed_versions=allow_mixed_versions)
    if data.runs.empty:
        stale = 0 if data.stale is None else len(data.stale)
        hint = (f" of the suite as last run ({stale} stale; --include-stale counts them)"
                if stale else "")
        raise HarnessError(f"{store}: the run store holds no runs{hint}")
    if (data.runs["status"] == "running").all():  # a suite killed in its first run, say
        raise HarnessError(f"{store}: no run has finished yet ({len(data.runs)} running)")
    out = Path(out_dir) if out_dir is not None else Path("reports") / store.name
    out.mkdir(parents=True, exist_ok=True)
    for sub, pattern in (("figures", "*.png"), ("tables", "*.csv")):
        for stale in (out / sub).glob(pattern):
            stale.unlink()
    rep = Report(data, opts, out)
    rep.prepare()
    overview(rep)
    summary_section(rep)
    status_section(rep)
    configurations_section(rep)
    excluded_section(rep)
    reward_section(rep)
    frontier_section(rep)
    tuning_section(rep)
    compute_section(rep)
    cost_section(rep)
    stability_section(rep)
    comparisons_section(rep)
    crossovers_section(rep)
    claims_section(rep)
    ranking_section(rep)
    method_section(rep)
    plt.close("all")
    rep.text("Report written in {s} s.", s=f"{time.perf_counter() - started:.1f}")
    _write(out / RUNS_FILE, _run_lines(store, data))
    _write(out / "index.md", to_markdown(rep.blocks, out).encode())
    _write(out / "index.html",
                       to_html(rep.blocks, f"Report: {data.suite}").encode())
    return out
