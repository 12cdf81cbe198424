"""Reports rendered from synthetic run stores: files, counts, escaping, and a real browser."""

from __future__ import annotations

import json
import math
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.engine.store import METRIC_COLUMNS, RunStore
from harness.report import write_report

XSS = "<script>alert(1)</script>"
ODD = r"cost | *x* $\notamacro{$"  # a table pipe, Markdown, and mathtext that fails to parse
CHROMIUM = Path("/usr/bin/chromium")

# (algorithm, label, seeds, noise sd of final gold, wall s per step, FLOPs per step, models, MB)
CONFIGS = [
    ("ppo", "ppo", range(5), 0.30, 0.05, 1e6, 4, 900.0),
    ("grpo", "grpo", range(5), 0.15, 0.02, 4e5, 3, 700.0),
    ("dpo", "dpo", range(5), 0.03, 0.005, 1e5, 2, 500.0),
    ("evil", XSS, range(2), 0.10, 0.01, 2e5, 2, 600.0),
    ("evil", ODD, range(2), 0.10, 0.01, 2e5, 2, 600.0),
]
FAILED = {("ppo", 1)}
DIVERGED_FINITE = {("ppo", 2)}  # stops early on a KL limit: its final gold reward is finite
DIVERGED_NAN = {("grpo", 3)}  # a NaN loss, then a NaN evaluation
STEPS, EVERY = 40, 5


def _run(store: RunStore, task: str, alg: str, label: str, seed: int, cfg: tuple[Any, ...],
         *, sweep: dict[str, Any] | None = None, regret: bool = True,
         flops: bool = True, config: dict[str, Any] | None = None) -> None:
    """One synthetic run; ``regret=False`` for a task without an exact optimum, ``flops=False``
    for a tabular policy (no FLOPs counted)."""
    _, _, _, sd, wall_step, flops_step, models, mb = cfg
    flops_counted = flops
    rng = np.random.default_rng(zlib.crc32(f"{task}/{label}/{seed}".encode()))
    run_id = f"{alg}-{task}-s{seed}-{zlib.crc32(f'{label}/{sweep}'.encode()):08x}"
    spec = {"suite": store.suite, "task": task, "algorithm": alg, "label": label, "seed": seed,
            "sweep_point": sweep or {}, "budget": {"steps": float(STEPS)},
            "algorithm_config": config or {}}
    store.start(run_id, spec)
    level = {"ppo": 1.2, "grpo": 1.3, "dpo": 1.0}.get(alg, 0.8) + rng.normal(0, sd)
    status, reason, last = "done", None, STEPS
    if (alg, seed) in FAILED:
        status, reason, last = "failed", "RuntimeError: boom", 10
    elif (alg, seed) in DIVERGED_FINITE:
        status, reason, last = "diverged", "kl_ref 9 > max_kl 5 at step 25", 25
    elif (alg, seed) in DIVERGED_NAN:
        status, reason, last = "diverged", "non-finite loss at step 30", 30
    rows: list[tuple[Any, ...]] = []
    wall = flops = 0.0
    final: dict[str, float] = {}
    for step in range(last + 1):
        wall += wall_step * (1 + 0.1 * rng.random()) if step else 0.0
        flops += flops_step if step else 0.0
        common = (run_id, step, step * 64, step * 128, wall, flops)
        if step:
            loss = math.exp(-step / 20) + rng.normal(0, 0.01)
            if (alg, seed) in DIVERGED_NAN and step == last:
                loss = math.nan
            if alg == "ppo" and seed == 0 and step == 17:
                loss += 3.0  # a spike
            rows += [(*common, "train", "loss", loss),
                     (*common, "train", "grad_norm", 1 + rng.normal(0, 0.05))]
        if step % EVERY == 0 or step == last:
            gold = level * (1 - math.exp(-step / 10)) + rng.normal(0, 0.01)
            if (alg, seed) in DIVERGED_NAN and step == last:
                gold = math.nan
            kl = 0.03 * step * (3 if (alg, seed) in DIVERGED_FINITE else 1)
            evaluation = {"gold_reward": gold, "proxy_reward": 1.1 * gold + 0.1 * step / STEPS,
                          "kl_ref": kl, **({"regret": 1.5 - gold} if regret else {})}
            rows += [(*common, "eval", k, v) for k, v in evaluation.items()]
            final = evaluation
    if status == "failed":
        final = {}
    summary = {
        "run_id": run_id, "status": status, "reason": reason, "steps": last, "final": final,
        "compute": None if status == "failed" else {
            "seconds": {"generate": wall * 0.3, "score": wall * 0.1, "train": wall * 0.5,
                        "eval": wall * 0.1},
            "cpu_seconds": {"generate": wall * 0.29, "score": wall * 0.1, "train": wall * 0.5,
                            "eval": wall * 0.1},
            "samples": last * 64, "tokens_generated": 0, "tokens_trained": last * 128,
            "flops": flops if flops_counted else None,
        },
        "wall_seconds": wall + 1.0,
        "memory": None if status == "failed" else {
            "model_state_bytes": models * 2**20, "peak_above_baseline_mb": mb / 10,
            "baseline_mb": 450.0, "kind": "rss"},
        "peak_host_memory_mb": mb + rng.normal(0, 5),
        "peak_gpu_memory_mb": None,
        "models_resident": models,
        "reward_model": {"train_pairs": 900, "heldout_accuracy": 0.7,
                         "gold_heldout_accuracy": 0.71, "spearman_gold": 0.9},
        "seed": seed, "config_hash": "x", "versions": {"rlhf-harness": "0.1.0"},
    }
    store.finish(run_id, status, metrics=pd.DataFrame(rows, columns=list(METRIC_COLUMNS)),
                 summary=summary, reason=reason,
                 traceback="Traceback ...\nRuntimeError: boom" if status == "failed" else None)


def make_store(root: Path) -> Path:
    store = RunStore(root, "synthetic")
    store.path.mkdir(parents=True)
    (store.path / "suite.yaml").write_text(
        "name: synthetic\nalgorithms:\n  - name: ppo\n  - name: grpo\n  - name: dpo\n"
        "  - name: evil\n"
    )
    for cfg in CONFIGS:
        alg, label, seeds = cfg[:3]
        for seed in seeds:
            _run(store, "bandit", alg, label, seed, cfg)
    # a run that never finished: it has a spec and status "running", nothing else
    store.start("dpo-bandit-s9-unfinished", {"suite": "synthetic", "task": "bandit",
                                             "algorithm": "dpo", "label": "dpo", "seed": 9,
                                             "sweep_point": {}, "budget": {"steps": 40.0}})
    return store.path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    return write_report(make_store(root), root / "report")


N_RUNS = 5 + 5 + 5 + 2 + 2 + 1

FIGURES = ("curves_step", "frontier", "overoptimisation", "regret_step", "compute_time",
           "compute_resources", "final_gold", "ranking", "budget_samples")
TABLES = ("status", "runs", "final_metrics", "overoptimisation", "compute", "time_to_threshold",
          "cost_to_reach",
          "stability", "per_run_stability", "ranking_iqm", "probability_of_improvement",
          "comparisons", "claims", "claim_steps", "reward_model")


def test_report_files_exist_and_tables_parse(report: Path):
    assert (report / "index.md").stat().st_size > 1000
    assert (report / "index.html").stat().st_size > 10000
    for name in FIGURES:
        png = report / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in TABLES:
        frame = pd.read_csv(report / "tables" / f"{name}.csv")
        assert len(frame) > 0, name
    md = (report / "index.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md


def test_a_report_without_figures_has_the_same_tables_and_text(report: Path, tmp_path: Path):
    """``figures=False`` (what tests of tables and text use to save the drawing) leaves out the
    figures and nothing else: every CSV the same bytes, the Markdown the same but for the
    figures' lines and the build time."""
    store = report.parent / "synthetic"
    bare = write_report(store, tmp_path / "bare", figures=False)
    assert not (bare / "figures").exists() or not list((bare / "figures").iterdir())
    csvs = sorted(p.name for p in (report / "tables").glob("*.csv"))
    assert csvs == sorted(p.name for p in (bare / "tables").glob("*.csv"))
    for name in csvs:
        assert (report / "tables" / name).read_bytes() == (bare / "tables" / name).read_bytes()

    def text(md: str) -> list[str]:
        figure_lines = set()
        for line in md.splitlines():
            if m := re.fullmatch(r"!\[(.*)\]\(figures/[^)]+\.png\)", line):
                figure_lines |= {line, f"*{m[1]}*"}
        return [line for line in md.splitlines() if line not in figure_lines
                and not line.startswith("Report written in ")]

    drawn, plain = (report / "index.md").read_text(), (bare / "index.md").read_text()
    assert all(f"](figures/{name}.png)" in drawn for name in FIGURES)
    assert "](figures/" not in plain
    assert [line for line in text(drawn) if line] == [line for line in text(plain) if line]


def test_failed_and_diverged_runs_are_counted_not_dropped(report: Path):
    md = (report / "index.md").read_text()
    assert f"1 of {N_RUNS} runs failed" in md
    assert f"2 of {N_RUNS} runs diverged" in md
    assert "1 of 2 have a finite final gold reward" in md
    status = pd.read_csv(report / "tables" / "status.csv").set_index("label")
    assert status.loc["ppo", ["done", "diverged", "failed", "total"]].tolist() == [3, 1, 1, 5]
    assert status.loc["grpo", ["done", "diverged", "failed"]].tolist() == [4, 1, 0]
    assert status.loc["dpo", ["done", "running", "total"]].tolist() == [5, 1, 6]
    runs = pd.read_csv(report / "tables" / "runs.csv")
    assert len(runs) == N_RUNS
    failed = runs[runs["status"] == "failed"]
    assert failed["reason"].tolist() == ["RuntimeError: boom"]
    assert failed["run_id"].iloc[0] in md  # listed in the report
    # reward statistics: failed excluded; the diverged run with a finite final value included
    final = pd.read_csv(report / "tables" / "final_metrics.csv").set_index("label")
    assert final.loc["ppo", "runs"] == 4
    stability = pd.read_csv(report / "tables" / "stability.csv").set_index("label")
    assert stability.loc["ppo", "divergence_rate"] == pytest.approx(1 / 5)
    assert stability.loc["ppo", "failure_rate"] == pytest.approx(1 / 5)
    assert stability.loc["grpo", "divergence_rate"] == pytest.approx(1 / 5)
    assert stability.loc["ppo", "loss_spikes_total"] >= 1


def test_ranking_comparisons_and_claims_tables(report: Path):
    iqm = pd.read_csv(report / "tables" / "ranking_iqm.csv")
    assert set(iqm["label"]) == {"ppo", "grpo", "dpo", XSS, ODD}
    assert (iqm["low"] <= iqm["mean"]).all() and (iqm["mean"] <= iqm["high"]).all()
    poi = pd.read_csv(report / "tables" / "probability_of_improvement.csv")
    assert len(poi) == 5 * 4
    assert poi["p"].between(0, 1).all()
    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    assert list(comp.columns) == ["task", "metric", "a", "b", "n", "mean_diff", "ci_low",
                                  "ci_high", "p_value", "p_adjusted", "decision", "mde",
                                  "seeds_needed", "test", "p_min", "p_mc_se", "skew_p",
                                  "family"]
    assert set(comp["decision"]) <= {"a better", "b better", "undecided", "undecidable"}
    # each row names its test, and its p-value is never below what the test can give at its n
    tests = comp["test"].str.startswith("sign-flip")
    assert (comp.loc[tests, "p_value"] >= comp.loc[tests, "p_min"] - 1e-15).all()
    assert (comp.loc[tests & (comp["n"] <= 20), "p_mc_se"] == 0).all()
    tested = comp["p_value"].notna()
    assert (comp.loc[tested, "p_adjusted"] >= comp.loc[tested, "p_value"] - 1e-12).all()
    assert comp.loc[~tested, "n"].max() < 2  # no p-value only below two shared instances
    decided = comp["decision"].isin(("a better", "b better"))
    assert comp.loc[decided, "seeds_needed"].isna().all()
    # FLOPs per run fall from ppo to grpo to dpo by construction, with no spread: decided
    flops = comp[comp["metric"] == "flops"].set_index(["a", "b"])
    assert flops.loc[("ppo", "grpo"), "decision"] == "b better"
    assert flops.loc[("grpo", "dpo"), "decision"] == "b better"
    assert flops.loc[("ppo", "grpo"), "n"] == 2  # done runs of both: instances 0 and 4
    # ... but the computation claim is judged on the cost to reach half the gap to π*_β: grpo
    # (level 1.3) reaches it at step 10, 640 samples, dpo (level 1.0) at step 15, 960 samples,
    # spending 1e5 FLOPs a step to grpo's 4e5 (1.5e6 against 4e6): grpo → dpo is mixed
    steps = pd.read_csv(report / "tables" / "claim_steps.csv").set_index(["aspect", "step"])
    assert steps.loc[("computation", "grpo → dpo"), "decided"] == (
        "samples_to_half: grpo; flops_to_half: dpo")
    claims = pd.read_csv(report / "tables" / "claims.csv").set_index("aspect")
    assert claims.loc["computation", "verdict"] == "mixed"
    assert claims.loc["computation", "basis"].startswith("cost to reach half the target")
    assert claims.loc["computation", "source"] == "CMU 10-734, RLHF lecture"
    md = (report / "index.md").read_text()
    assert "## Claims" in md and "## Paired comparisons" in md
    assert md.index("## Summary") < md.index("## Runs and status")
    assert 'from ppo to grpo to dpo, computation decreases" (CMU 10-734, RLHF lecture): ' \
           "bandit: mixed" in md


def test_plugin_names_are_escaped(report: Path):
    page = (report / "index.html").read_text()
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    md = (report / "index.md").read_text()
    assert "<script" not in md.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert r"cost \| \*x\* $\\notamacro\{$" in md  # a pipe cannot break a table row
    tables: list[list[str]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    assert tables
    for rows in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, rows
    # self-contained: every src and href is inline data, an in-page anchor or one of the
    # report's own CSV files (a relative link that exists)
    for ref in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert ref.startswith(("data:", "#")) or (
            re.fullmatch(r"tables/[a-z0-9_]+\.csv", ref) and (report / ref).is_file()), ref


def _chromium(page: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    shot = tmp_path / f"{name}.png"
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / ('profile-' + name)}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,2000",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return shot, result.stderr


def _console_lines(stderr: str) -> list[str]:
    # Chromium 156 logs every console message (any level) and uncaught errors to stderr as
    # "[...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)" — with --enable-logging
    # the level is not distinguished, so any CONSOLE line counts: the page has no script at all.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium)")
def test_html_opens_in_headless_chromium_without_console_errors(report: Path, tmp_path: Path):
    from matplotlib import image

    # the check itself works: a page with a console error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('boom')</script>"
                   "</body></html>")
    _, stderr = _chromium(bad, tmp_path, "control")
    assert any("boom" in line for line in _console_lines(stderr)), stderr[-2000:]

    shot, stderr = _chromium(report / "index.html", tmp_path, "report")
    assert _console_lines(stderr) == []
    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels.std() > 0.01  # not blank
    assert (pixels < 0.9).any(axis=-1).mean() > 0.01  # not all white: text, tables, figures


def test_cli_report_two_tasks_without_dpo(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    store = RunStore(tmp_path / "runs", "two-tasks")
    for task in ("bandit", "lm"):
        for cfg in CONFIGS[:2]:
            alg, label = cfg[:2]
            for lr in (0.1, 0.2):
                for seed in (0, 4):
                    _run(store, task, alg, f"{label}[lr={lr}]", seed, cfg, sweep={"lr": lr})
    out = tmp_path / "out"
    main(["report", str(store.path), "--out", str(out), "--x", "flops"])
    assert "index.html" in capsys.readouterr().out
    md = (out / "index.md").read_text()
    assert (out / "figures" / "curves_flops.png").exists()
    assert (out / "figures" / "sensitivity.png").exists()
    assert "an instance's scores averaged over tasks" in md
    # The lecture's claims need ppo, grpo and dpo: said once, plainly, and none is tested.
    assert "no counted runs of dpo" not in md
    assert md.count("do not apply: it has no dpo") == 1
    assert "claims:" in md and not (out / "tables" / "claims.csv").exists()
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "Claim " not in summary
    sens = pd.read_csv(out / "tables" / "sensitivity.csv")
    assert set(sens["algorithm"]) == {"ppo", "grpo"}
    assert set(sens["task"]) == {"bandit", "lm"}
    iqm = pd.read_csv(out / "tables" / "ranking_iqm.csv")
    assert (iqm["tasks"] == 2).all()
    # per task: every label ranked, ranks follow the means (and the IQMs), and, as every
    # instance has both tasks, the overall mean is the mean of the two tasks' means
    per_task = pd.read_csv(out / "tables" / "ranking_per_task.csv")
    assert set(per_task["task"]) == {"bandit", "lm"}
    for _, sub in per_task.groupby("task"):
        assert set(sub["label"]) == set(iqm["label"])
        assert list(sub["rank"]) == list(sub["mean"].rank(ascending=False, method="min"))
        assert list(sub["rank_iqm"]) == list(sub["iqm"].rank(ascending=False, method="min"))
        assert sub["mean"].is_monotonic_decreasing
    overall = iqm.set_index("label")["mean"]
    by_task = per_task.groupby("label")["mean"].mean()
    assert np.allclose(overall.sort_index(), by_task.sort_index(), rtol=0, atol=1e-12)
    assert "The same ranking on each task alone" in md


def test_cli_report_errors_on_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nothing")])
    assert exc.value.code == 2
    assert "no run store" in capsys.readouterr().err


def test_unknown_x_axis_is_refused(tmp_path: Path):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="x-axis"):
        write_report(tmp_path, tmp_path / "out", x="tokens")


def test_cli_report_on_a_folder_of_stores_lists_its_suites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from harness.engine.store import RunStore

    root = tmp_path / "runs"
    for suite in ("quickstart", "azar_noisy"):
        RunStore(root, suite).write_manifest([])
    (root / "not-a-store").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(root)])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        f"rlhf-harness: error: {root}: a folder of run stores, not one; it holds 2 suites: "
        f"azar_noisy, quickstart. Report one, e.g. rlhf-harness report {root / 'azar_noisy'}\n"
    )
    assert not (tmp_path / "reports").exists()


def test_a_label_scored_on_some_tasks_only_is_ranked_per_task_not_overall(tmp_path: Path):
    """An average over fewer tasks is not comparable with an average over all of them: dpo,
    run on the bandit only, is named and left out of the overall ranking, kept in the bandit's."""
    store = RunStore(tmp_path / "runs", "partial")
    for task in ("bandit", "lm"):
        for cfg in CONFIGS[:3]:
            alg, label = cfg[:2]
            if alg == "dpo" and task == "lm":
                continue
            for seed in (0, 1, 2):
                _run(store, task, alg, label, seed, cfg)
    out = write_report(store.path, tmp_path / "out", figures=False)
    overall = pd.read_csv(out / "tables" / "ranking_iqm.csv")
    assert set(overall["label"]) == {"ppo", "grpo"} and (overall["tasks"] == 2).all()
    per_task = pd.read_csv(out / "tables" / "ranking_per_task.csv")
    assert set(per_task.loc[per_task["task"] == "bandit", "label"]) == {"ppo", "grpo", "dpo"}
    assert set(per_task.loc[per_task["task"] == "lm", "label"]) == {"ppo", "grpo"}
    md = (out / "index.md").read_text()
    assert "Not ranked over all tasks, as they have a score on only some of them" in md
    assert "dpo (1 of 2)" in md


@pytest.mark.parametrize("lm_regret", [False, True])
def test_an_overall_ranking_over_two_kinds_of_score_says_so(tmp_path: Path, lm_regret: bool):
    store = RunStore(tmp_path / "runs", "kinds")
    for task in ("bandit", "lm"):
        for cfg in CONFIGS[:2]:
            for seed in (0, 1, 2):
                _run(store, task, cfg[0], cfg[1], seed, cfg,
                     regret=lm_regret or task == "bandit")
    md = (write_report(store.path, tmp_path / "out", figures=False) / "index.md").read_text()
    said = "The overall ranking averages scores of two kinds" in md
    assert said == (not lm_regret)
    if said:
        assert "charges KL(π‖π\\_ref), on bandit, and gold gain relative to the largest" in md


# --- the first screen, settings, ranges ----------------------------------------------------------


def section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_summary_lists_every_decided_comparison(report: Path):
    from harness.report.build import SUMMARY_DECIDED, decided_comparisons
    from harness.report.render import md_escape

    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    decided = comp[comp["decision"].isin(("a better", "b better"))]
    # At 5 instances the sign-flip test cannot go below p = 1/16: only the exact comparisons
    # (equal differences: FLOPs) are decided, the tests are undecidable at n = 5.
    assert len(decided) and (decided["test"] == "exact (no spread)").all()
    tests = comp[comp["test"].str.startswith("sign-flip") & (comp["n"] == 5)]
    assert len(tests) and (tests["decision"] == "undecidable").all()
    summary = section((report / "index.md").read_text(), "Summary")
    listed = []
    for family in ("primary", "exploratory"):
        rows = comp[comp["family"] == family]
        chosen = rows[rows["decision"].isin(("a better", "b better"))]
        phrases = decided_comparisons(rows)
        assert len(phrases) == len(chosen)
        for i, phrase in enumerate(phrases):  # as rendered, the most certain first
            assert (md_escape(phrase) in summary) == (i < SUMMARY_DECIDED), phrase
        p = [float(x.rsplit("p = ", 1)[1].rstrip(")")) for x in phrases]
        assert p == sorted(p)
        listed += phrases
    assert len(listed) == len(decided)
    flops = [x for x in listed if "FLOPs" in x]
    assert flops and all(" < " in x for x in flops)
    comparisons = section((report / "index.md").read_text(), "Paired comparisons")
    assert "undecidable at n = 5" in comparisons


def test_a_summary_with_more_decided_comparisons_than_fit_points_to_the_rest():
    from harness.report.build import SUMMARY_DECIDED, decided_comparisons

    rows = [{"task": "bandit", "metric": "score", "a": f"x{i}", "b": f"y{i}", "n": 5,
             "mean_diff": 0.1 + i, "ci_low": 0.05 + i, "ci_high": 0.15 + i, "p_value": 0.001,
             "p_adjusted": 0.001 * (i + 1), "decision": "a better", "mde": 0.1,
             "seeds_needed": math.nan} for i in range(SUMMARY_DECIDED + 3)]
    rows.append({**rows[0], "a": "u", "b": "v", "decision": "b better", "mean_diff": -0.2,
                 "ci_low": -0.3, "ci_high": -0.1, "p_adjusted": 0.0001})
    phrases = decided_comparisons(pd.DataFrame(rows))
    assert len(phrases) == SUMMARY_DECIDED + 4
    assert phrases[0] == ("bandit, normalised score: v > u by 0.2 [0.1, 0.3] "
                          "(Holm-adjusted p = 0.0001)")


def test_each_label_s_settings_are_in_the_report(tmp_path: Path):
    """Two versions of dpo differ in β: the report says so, beside the settings the suite sets."""
    store = RunStore(tmp_path / "runs", "two-dpos")
    store.path.mkdir(parents=True)
    (store.path / "suite.yaml").write_text(
        "name: two-dpos\nalgorithms:\n  - name: dpo\n    config: {learning_rate: 0.05}\n"
        "  - name: dpo\n    label: dpo-b\n    config: {beta: 0.4, learning_rate: 0.05}\n")
    base = {"beta": 0.1, "learning_rate": 0.05, "batch_size": 64, "optimizer": "adam"}
    for label, beta in (("dpo", 0.1), ("dpo-b", 0.4)):
        for seed in range(3):
            _run(store, "bandit", "dpo", label, seed, CONFIGS[2], config={**base, "beta": beta})
    out = write_report(store.path, tmp_path / "report", figures=False)
    table = pd.read_csv(out / "tables" / "configurations.csv").set_index("label")
    assert table.loc["dpo", "settings"] == "beta=0.1, learning_rate=0.05"
    assert table.loc["dpo-b", "settings"] == "beta=0.4, learning_rate=0.05"
    assert json.loads(table.loc["dpo-b", "config"]) == {**base, "beta": 0.4}
    md = section((out / "index.md").read_text(), "Configurations")
    assert "beta=0.4, learning\\_rate=0.05" in md


def test_intervals_of_quantities_that_cannot_be_negative_stay_at_or_above_zero(report: Path):
    from harness.report.stats import Estimate, quantity_range, t_interval

    wide = t_interval([0.0, 0.0, 0.01, 3.0, 0.0])  # a KL that one instance moved far
    assert wide.low < 0
    clipped = wide.clipped(*quantity_range("final_kl_ref"))
    assert (clipped.value, clipped.low, clipped.high) == (wide.value, 0.0, wide.high)
    assert quantity_range("final_win_rate_ref") == (0.0, 1.0)
    assert quantity_range("final_gold_reward") == (-math.inf, math.inf)
    assert Estimate(0.5, -0.2, 1.3).clipped(0.0, 1.0) == Estimate(0.5, 0.0, 1.0)
    assert math.isnan(Estimate(1.0).clipped(0.0).low)
    compute = pd.read_csv(report / "tables" / "compute.csv")
    for column in ("peak_above_baseline_mb_low", "train_cpu_seconds_low", "flops_low"):
        assert (compute[column].dropna() >= 0).all(), column
    final = pd.read_csv(report / "tables" / "final_metrics.csv")
    lows = [c for c in final.columns if c.startswith("kl_ref") and c.endswith("low")]
    assert lows and all((final[c].dropna() >= 0).all() for c in lows)


def test_curve_bands_are_clipped_to_the_quantity_s_range():
    from harness.report.figures import curve_bands

    frame = pd.DataFrame({"task": "t", "label": "a", "step": [1.0] * 4, "seed": [0, 1, 2, 3],
                          "value": [0.0, 0.0, 0.0, 4.0]})
    free = curve_bands(frame, "step")
    assert float(free["low"].iloc[0]) < 0
    kept = curve_bands(frame, "step", (0.0, math.inf))
    assert float(kept["low"].iloc[0]) == 0.0
    assert float(kept["high"].iloc[0]) == float(free["high"].iloc[0])


def test_the_ranking_heatmap_orders_labels_as_the_ranking_does(tmp_path: Path, monkeypatch):
    from harness.report import figures

    seen = {}
    real = figures.sns.heatmap

    def spy(data, **kwargs):
        seen["rows"], seen["columns"] = list(data.index), list(data.columns)
        return real(data, **kwargs)

    monkeypatch.setattr(figures.sns, "heatmap", spy)
    iqm = pd.DataFrame({"label": ["dpo", "ppo", "grpo"], "iqm": [0.9, 0.5, 0.2],
                        "low": [0.8, 0.4, 0.1], "high": [1.0, 0.6, 0.3]})
    poi = pd.DataFrame([{"x": x, "y": y, "p": 0.5} for x in ("ppo", "grpo", "dpo")
                        for y in ("ppo", "grpo", "dpo") if x != y])
    assert figures.ranking(iqm, poi, ["ppo", "grpo", "dpo"], tmp_path / "r.png", "score")
    assert seen["rows"] == seen["columns"] == ["dpo", "ppo", "grpo"]


def test_spike_columns_are_marked_per_algorithm_and_enter_no_comparison(report: Path):
    from harness.report import compare as cmp

    md = section((report / "index.md").read_text(), "Stability")
    assert "loss spikes (runs with any; per algorithm)" in md
    assert "not comparable across algorithms" in md
    assert not {m for m in cmp.METRICS if "spike" in m}
    comp = pd.read_csv(report / "tables" / "comparisons.csv")
    assert not comp["metric"].str.contains("spike").any()


def test_the_summary_says_undecidable_where_the_best_against_runner_up_is(tmp_path, monkeypatch):
    # A best-against-runner-up comparison the report cannot decide at its n is said to be
    # undecidable (with why), not "not decided" beside a small p-value.
    import re

    from harness.report import compare as cmp
    from harness.report import stats as st

    original = cmp.comparisons

    def skewed(*args, **kwargs):
        comp = original(*args, **kwargs)
        score = comp["metric"] == "score"
        comp.loc[score, "decision"] = st.UNDECIDABLE
        comp.loc[score, "skew_p"] = 1e-6
        return comp

    monkeypatch.setattr(cmp, "comparisons", skewed)
    report = write_report(make_store(tmp_path), tmp_path / "report", figures=False)
    summary = (report / "index.md").read_text().split("## Summary", 1)[1].split("\n## ", 1)[0]
    line = next(t for t in summary.splitlines() if t.startswith("bandit: best "))
    assert re.search(r": undecidable at n = \d+: skewed differences \(Holm-adjusted p = ", line), \
        line
    assert "not decided" not in line
