"""The compute section: wall seconds by phase, training CPU seconds, FLOPs, model state, peak
memory and models resident per configuration, and the table of counted work (samples, forward
and backward tokens and FLOPs per model role).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.report import figures as fig
from harness.report import stats as st
from harness.report.data import PHASES
from harness.report.render import Heading
from harness.report.sections.cost import _time_to_threshold
from harness.report.sections.document import Report, _est, _groups, fmt


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
