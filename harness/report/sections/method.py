"""The method section: how the numbers are computed (never what they show): the scores and
their units, the statistics, and how counted work is counted.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import compare as cmp
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.comparisons import family_rule, family_sizes
from harness.report.sections.document import Report, fmt
from harness.report.sections.tuning import REPEATS_MODEL


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
             "times); refusing skewed samples brings 30 instances back within the level "
             "for α/m down to about 0.002 (1.3 to 1.4 times at 0.002, 2.2 times at 0.001, so "
             "not for the first Holm steps of a family of hundreds), and 10 instances at no "
             "level (1.9 times at 0.05). Comparisons the test cannot decide at their n (its "
             "smallest p-value, 2/2^n, would not pass their Holm step) are undecidable at n, "
             "not undecided. P-values "
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
             "response tokens as the algorithm's code reports them to the compute meter and the "
             "prompt tokens each pass runs (sampling's prefill, the prompt of every pass over "
             "prompt and response); for tabular policies "
             "the same counts as table rows read and updated; FLOPs from those counts (2·N per "
             "token forward, 6·N forward-backward; Kaplan et al. 2020), neural policies only. "
             "The counts depend on the spec and the seed, not on the machine. Timed: wall and "
             "CPU seconds per phase (generation, scoring, training, evaluation), with the "
             "1-minute load average sampled at the start, at each evaluation and at the end of "
             "each run. Load inflates the timed part, CPU seconds included: the same bandit "
             "runs, re-run at load average 10–18, gave identical results and 3.5–4.5× the CPU "
             "seconds, so CPU seconds are not a machine-independent measure; the counts are.")
