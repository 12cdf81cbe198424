"""The tuning section: each search's trials and choice, the dimensions that mattered, and with
repeated searches the luck of the choice (how much the chosen configuration's score varies
from search to search).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from harness.report import figures as fig
from harness.report import stats as st
from harness.report.render import Heading
from harness.report.sections.document import Report, fmt


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
    from harness.engine.tuning import expected_max_performance

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
        _tuning_luck(rep)
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
    "freedom; Bouthillier et al. 2021). A score comparison of such an algorithm is decided on "
    "the larger of that test's p-value and the sign-flip test's over instances, so it holds "
    "its level under either model, and is Holm-adjusted in its family like any other row.")
"""How repeated tuning searches enter the comparisons (see :mod:`harness.engine.tuning`)."""


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


def _tuning_luck(rep: Report) -> None:
    """The score comparisons of algorithms tuned by several searches: the sign-flip test over
    instances, the interval with tuning luck, and what the comparisons table decides on."""
    luck = rep.luck
    if luck.empty:
        return
    plain, p_plain = [], []
    for r in luck.itertuples():
        t = rep.inst[rep.inst["task"] == r.task]
        wide = t.pivot_table(index="instance", columns="label", values="score",
                             aggfunc="first")[[r.a, r.b]].dropna()
        sf = st.paired_sign_flip(wide[r.a].to_numpy(), wide[r.b].to_numpy())
        plain.append(f"[{fmt(sf.low)}, {fmt(sf.high)}]")
        p_plain.append(sf.p_value)
    shown = pd.DataFrame({
        "task": luck["task"], "a − b": luck["a"] + " − " + luck["b"], "n": luck["n"],
        "searches": luck["searches_a"].astype(str) + " / " + luck["searches_b"].astype(str),
        "mean difference": luck["mean_diff"].map(fmt), "sign-flip interval": plain,
        "with tuning luck": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in
                             zip(luck["ci_low"], luck["ci_high"], strict=True)],
        "p: sign-flip / luck": [f"{fmt(a, 2)} / {fmt(b, 2)}" for a, b in
                                zip(p_plain, luck["p_value"], strict=True)],
        "se: instances / searches": [f"{fmt(x)} / {fmt(y)}" for x, y in
                                     zip(luck["se_instances"], luck["se_searches"],
                                         strict=True)]})
    rep.table(shown, "Score comparisons with tuning luck: the sign-flip interval over "
              "instances, which holds given the chosen configurations, and the interval that "
              "also counts the variance of the searches' choices (standard errors of each "
              "part). The comparisons table decides these rows on the larger of the two "
              "unadjusted p-values, Holm-adjusted in its family, with the hull of the two "
              "intervals (test \"… + tuning luck\").", "tuning_luck",
              luck.assign(p_sign_flip=p_plain))


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
