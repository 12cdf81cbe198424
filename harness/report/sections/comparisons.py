"""The paired comparisons section (the primary family, Holm-adjusted, and the exploratory
rest), where the orderings cross over along the budget, and the claims' verdicts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report import compare as cmp
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.document import Report, fmt
from harness.report.sections.summary import decision_text, is_decided


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
