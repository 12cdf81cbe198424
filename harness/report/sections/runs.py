"""The sections about the runs themselves: each configuration's settings, the runs' status
(done, diverged, failed, running), and the runs left out of the comparisons and why.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from harness.report.data import StoreData
from harness.report.render import Heading
from harness.report.sections.document import STATUS_ORDER, Report


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
