"""The report's experimental design on synthetic stores: instances × replicates, paired
comparisons, claims, flags and the summary."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.engine.store import METRIC_COLUMNS, RunStore
from harness.report import write_report

INSTANCES, REPLICATES = 12, 3  # 12: the sign-flip test decides at α/m ≈ 2e-3 from 10 up
# label: (algorithm, gold gain over π_ref, replicate sd, FLOPs, model state bytes, CPU s)
CONFIGS = {
    "steady": ("ppo", 1.0, 0.02, 4e6, 4 * 2**20, 8.0),
    "shaky": ("grpo", 1.0, 0.60, 2e6, 3 * 2**20, 5.0),
    "better": ("dpo", 1.3, 0.02, 1e6, 2 * 2**20, 2.0),
    "still": ("rloo", 0.0, 0.0, 1e6, 2 * 2**20, 2.0),
}
CLAIMS = """\
claims:
  - {aspect: stability, order: [shaky, steady], source: synthetic}
  - {aspect: reward, order: [steady, better]}
  - {aspect: reward, order: [better, steady]}
"""


def _store(root: Path) -> Path:
    store = RunStore(root, "design")
    store.path.mkdir(parents=True)
    (store.path / "suite.yaml").write_text(
        "name: design\nalgorithms:\n" + "".join(f"  - name: {a}\n    label: {lab}\n"
                                                for lab, (a, *_) in CONFIGS.items()) + CLAIMS)
    rng = np.random.default_rng(11)
    for instance in range(INSTANCES):
        base = rng.normal(0.0, 1.0)  # the instance's own level: shared by every configuration
        optimum_gap = 2.0 + rng.random()  # J_β(π*_β) − J_β(π_ref) of this instance
        for label, (alg, gain, sd, flops, state, cpu) in CONFIGS.items():
            for replicate in range(REPLICATES):
                run_id = f"{label}-bandit-s{instance}-r{replicate}"
                spec = {"suite": "design", "task": "bandit", "algorithm": alg, "label": label,
                        "seed": instance, "replicate": replicate, "sweep_point": {},
                        "budget": {"steps": 10.0}}
                store.start(run_id, spec)
                final_gain = gain + rng.normal(0.0, sd) if sd else 0.0
                kl = 1e-11 if label == "still" else 0.5
                evals = {0: {"gold_reward": base, "kl_ref": 0.0, "regret": optimum_gap},
                         10: {"gold_reward": base + final_gain, "kl_ref": kl,
                              "regret": optimum_gap - final_gain}}
                rows = []
                for step, values in evals.items():
                    common = (run_id, step, step * 8, step * 8, step * 0.1, step * flops / 10)
                    rows += [(*common, "eval", k, v) for k, v in values.items()]
                    if step:
                        rows += [(*common, "train", "loss", 1.0)]
                summary = {
                    "run_id": run_id, "status": "done", "reason": None, "steps": 10,
                    "final": evals[10],
                    "compute": {"seconds": dict.fromkeys(("generate", "score", "train", "eval"),
                                                         cpu / 3),
                                "cpu_seconds": dict.fromkeys(
                                    ("generate", "score", "train", "eval"),
                                    cpu / 3 * (1 + 0.01 * rng.random())),
                                "samples": 80, "tokens_generated": 80, "tokens_trained": 80,
                                "flops": flops},
                    "memory": {"model_state_bytes": state, "peak_above_baseline_mb": 1.0,
                               "baseline_mb": 400.0, "kind": "rss"},
                    "wall_seconds": cpu, "models_resident": 2, "seed": instance,
                    "target": ({"kind": "grpo fixed point", "regret": 0.2 * optimum_gap,
                                "kl_ref": 0.4, "regret_ref": optimum_gap}
                               if label == "shaky" else None),
                }
                store.finish(run_id, "done",
                             metrics=pd.DataFrame(rows, columns=list(METRIC_COLUMNS)),
                             summary=summary)
    return store.path


@pytest.fixture(scope="module")
def design(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("design")
    return write_report(_store(root), root / "report", figures=False)


def _comparison(out: Path, metric: str, a: str, b: str) -> pd.Series:
    comp = pd.read_csv(out / "tables" / "comparisons.csv")
    sel = comp[(comp["metric"] == metric) & (comp["a"] == a) & (comp["b"] == b)]
    assert len(sel) == 1, (metric, a, b)
    return sel.iloc[0]


def test_pairing_by_instance_decides_what_pooling_runs_cannot(design: Path):
    row = _comparison(design, "score", "steady", "better")
    assert row["n"] == INSTANCES
    assert row["decision"] == "b better"
    assert row["ci_high"] < 0 and math.isnan(row["seeds_needed"])
    # the score is the gap closure: its difference is the gain difference over each instance's
    # gap, about −0.3/2.5
    assert -0.16 < row["mean_diff"] < -0.09
    # unpaired, the instances' own levels (sd 1) would hide the difference of 0.3 in gold
    runs = pd.read_csv(design / "tables" / "runs.csv")
    gold = {lab: runs[runs["label"] == lab].groupby("seed")["final_gold_reward"].mean()
            for lab in ("steady", "better")}
    assert stats.ttest_ind(gold["steady"], gold["better"]).pvalue > 0.05


def test_stability_is_the_spread_across_replicates(design: Path):
    row = _comparison(design, "replicate_std", "steady", "shaky")
    assert row["decision"] == "a better"
    stability = pd.read_csv(design / "tables" / "stability.csv").set_index("label")
    assert stability.loc["shaky", "replicate_df"] == INSTANCES * (REPLICATES - 1)
    # pooled over 24 df, the estimate of σ = 0.6 lies in [0.56σ, 1.49σ] (χ²₂₄ quantiles) with
    # 99.9% probability
    assert 0.33 < stability.loc["shaky", "replicate_std_pooled"] < 0.9
    assert stability.loc["steady", "replicate_std_pooled"] < 0.05


def test_deterministic_compute_is_decided_and_claims_get_verdicts(design: Path):
    assert _comparison(design, "flops", "steady", "shaky")["decision"] == "b better"
    # bytes of model state are stated (the compute table), not compared
    comp = pd.read_csv(design / "tables" / "comparisons.csv")
    assert "model_state_mb" not in set(comp["metric"])
    compute = pd.read_csv(design / "tables" / "compute.csv").set_index("label")
    assert compute.loc["better", "model_state_mb"] == 2.0
    claims = pd.read_csv(design / "tables" / "claims.csv")
    verdicts = claims.set_index("claim")["verdict"].to_dict()
    assert verdicts == {0: "supported", 1: "supported", 2: "not supported"}
    assert claims.set_index("claim").loc[0, "source"] == "synthetic"


def test_a_configuration_that_did_not_learn_is_named_and_left_out_of_rankings(design: Path):
    md = (design / "index.md").read_text()
    summary = md[md.index("## Summary"):md.index("## Runs and status")]
    assert "Did not learn" in summary and "still" in summary
    assert "best better" in summary and "decided (Holm-adjusted p" in summary
    ranking = pd.read_csv(design / "tables" / "ranking_iqm.csv")
    assert "still" not in set(ranking["label"])
    assert ranking["label"].iloc[0] == "better"
    # every test's adjusted p-value is Holm's over the tests of its family (primary or
    # exploratory); comparisons of equal differences (FLOPs, bytes, zeros) are exact and keep
    # their p-value
    comp = pd.read_csv(design / "tables" / "comparisons.csv")
    exact = (comp["ci_low"] == comp["ci_high"]).to_numpy()
    assert (comp.loc[exact, "p_adjusted"] == comp.loc[exact, "p_value"]).all()
    assert set(comp.loc[exact, "p_value"]) <= {0.0, 1.0}
    assert set(comp["family"]) == {"primary", "exploratory"}
    for family in ("primary", "exploratory"):
        p = comp["p_value"].to_numpy()
        finite = np.isfinite(p) & ~exact & (comp["family"] == family).to_numpy()
        order = np.argsort(p[finite], kind="stable")
        m = finite.sum()
        assert m > 1, family
        expected = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[finite][order]))
        assert np.allclose(comp["p_adjusted"].to_numpy()[finite][order], expected), family


def test_one_replicate_per_instance_says_stability_spread_is_not_measured(tmp_path: Path):
    store = _store(tmp_path)
    for run in store.iterdir():
        if run.is_dir() and run.name.endswith(("-r1", "-r2")):
            shutil.rmtree(run)
    out = write_report(store, tmp_path / "report", figures=False)
    md = (out / "index.md").read_text()
    assert "Every instance has one replicate" in md
    assert "{instances: [...], replicates: 3}" in md.replace("\\", "") and "{{" not in md
    comp = pd.read_csv(out / "tables" / "comparisons.csv")
    assert "replicate_std" not in set(comp["metric"])


def test_regret_splits_into_the_objectives_part_and_the_rest(design: Path):
    split = pd.read_csv(design / "tables" / "regret_split.csv")
    assert split["label"].tolist() == ["shaky"]
    row = split.iloc[0]
    runs = pd.read_csv(design / "tables" / "runs.csv")
    shaky = runs[runs["label"] == "shaky"].groupby("seed")
    final = shaky["final_regret"].mean()
    target = shaky["initial_regret"].mean() * 0.2
    assert row["final_regret"] == pytest.approx(final.mean())
    assert row["objective_regret"] == pytest.approx(target.mean())
    assert row["optimisation_regret"] == pytest.approx((final - target).mean())
    md = (design / "index.md").read_text()
    assert "forward KL(π\\_ref‖π)" in md or "forward KL(π_ref‖π)" in md


def test_a_policy_that_moved_without_gain_is_not_called_still():
    """Not learning means no gold gain *and* no movement: a configuration whose KL is large in
    some instances and near 0 in others (a collapse, say) moved, though the t interval of its
    KL reaches below 0; one with mean KL below NOT_LEARNED_KL did not."""
    from harness.report import compare as cmp

    rows = []
    for i, kl in enumerate([7.0, 37.5, 76.9, 4.7, 0.0]):
        rows.append({"task": "lm", "label": "collapsed", "instance": i,
                     "gold_gain": [0.1, -0.2, 0.05, -0.1, 0.0][i], "final_kl_ref": kl})
        rows.append({"task": "lm", "label": "still", "instance": i,
                     "gold_gain": [0.01, -0.02, 0.0, 0.01, -0.01][i],
                     "final_kl_ref": [1e-5, 0.0, 2e-4, 0.0, 1e-6][i]})
    inst = pd.DataFrame(rows)
    kl = inst[inst["label"] == "collapsed"]["final_kl_ref"]
    assert kl.mean() - 2.776 * kl.std() / 5**0.5 < 0  # its KL interval does hold 0
    assert cmp.not_learned(inst) == [("lm", "still")]
