"""Primary and exploratory comparisons: which rows are primary (the suite's ``compare``, or by
default the claims' steps and best vs runner-up per task), Holm within each family, the
``compare`` key's validation, and what the report says about the two families."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.report import compare as cmp
from harness.report import write_report
from harness.suite import ClaimSpec, CompareSpec, check_suite, load_suite
from tests.test_report_design import _store

# --- which rows are primary ---------------------------------------------------------------------

# mean score per label on the task (one run per instance, three instances)
MEANS = {"ppo": 0.5, "grpo": 0.8, "dpo-a": 0.7, "dpo-b": 0.6, "rloo": 0.1}
ALGORITHM = {"ppo": "ppo", "grpo": "grpo", "dpo-a": "dpo", "dpo-b": "dpo", "rloo": "rloo"}


def _frames(means: dict[str, float] = MEANS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(run scores, instance table) of one task, ``bandit``: three instances per label, the
    scores spread by ±0.05 around the label's mean."""
    rows = [{"task": "bandit", "label": lab, "algorithm": ALGORITHM.get(lab, lab),
             "instance": i, "seed": i, "score": mean + (i - 1) * 0.05}
            for lab, mean in means.items() for i in range(3)]
    runs = pd.DataFrame(rows)
    return runs, runs.drop(columns="seed")


def _data(claims: list[ClaimSpec], labels: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(claims=claims, tasks=["bandit"], labels=labels or list(MEANS))


def _keys(primary: pd.DataFrame) -> set[tuple[str, str, frozenset[str], str]]:
    return {(t, m, frozenset((a, b)), why) for t, m, a, b, why in primary.itertuples(index=False)}


def test_without_compare_or_claims_the_primary_pair_is_best_against_runner_up():
    scores, inst = _frames()
    primary = cmp.primary_pairs(_data([]), inst, scores)
    assert list(primary.columns) == ["task", "metric", "a", "b", "why"]
    assert _keys(primary) == {("bandit", "score", frozenset(("grpo", "dpo-a")),
                               "best vs runner-up")}
    # a configuration that did not learn is left out, as the summary leaves it out
    primary = cmp.primary_pairs(_data([]), inst, scores, still=[("bandit", "grpo")])
    assert _keys(primary) == {("bandit", "score", frozenset(("dpo-a", "dpo-b")),
                               "best vs runner-up")}


def test_by_default_a_claim_s_steps_are_primary_on_its_aspect_s_quantities():
    scores, inst = _frames()
    claims = [ClaimSpec(aspect="stability", order=["ppo", "grpo", "dpo"]),
              ClaimSpec(aspect="reward", order=["rloo", "ppo"])]
    primary = cmp.primary_pairs(_data(claims), inst, scores)
    stability = ("replicate_std", "divergence_rate", "drawdown")
    # the algorithm name dpo stands for its configuration with the highest mean score, dpo-a
    expected = {("bandit", m, frozenset(pair), "claim 0") for m in stability
                for pair in (("ppo", "grpo"), ("grpo", "dpo-a"))}
    expected |= {("bandit", "score", frozenset(("rloo", "ppo")), "claim 1"),
                 ("bandit", "score", frozenset(("grpo", "dpo-a")), "best vs runner-up")}
    assert _keys(primary) == expected
    # a claim whose configurations are not all on the task adds nothing there
    missing = [ClaimSpec(aspect="computation", order=["ppo", "kto"])]
    assert set(cmp.primary_pairs(_data(missing), inst, scores)["why"]) == {"best vs runner-up"}


def test_compare_pairs_replace_best_against_runner_up_and_keep_the_claims():
    scores, inst = _frames()
    claims = [ClaimSpec(aspect="computation", order=["ppo", "grpo"])]
    primary = cmp.primary_pairs(_data(claims), inst, scores, [["dpo", "ppo"], ["rloo", "grpo"]])
    computation = ("samples_to_half", "flops_to_half")  # the claim's default: cost to reach
    assert _keys(primary) == {
        *(("bandit", m, frozenset(("ppo", "grpo")), "claim 0") for m in computation),
        ("bandit", "score", frozenset(("dpo-a", "ppo")), "compare"),
        ("bandit", "score", frozenset(("rloo", "grpo")), "compare"),
    }


def test_a_baseline_makes_every_other_configuration_primary_against_it():
    scores, inst = _frames()
    primary = cmp.primary_pairs(_data([]), inst, scores, CompareSpec(baseline="ppo"))
    assert _keys(primary) == {("bandit", "score", frozenset((lab, "ppo")), "baseline")
                              for lab in MEANS if lab != "ppo"}
    # a swept label stands for its best sweep point
    swept = {"dpo[beta=0.1]": 0.3, "dpo[beta=0.5]": 0.9, "ppo": 0.4}
    scores, inst = _frames(swept)
    primary = cmp.primary_pairs(_data([], list(swept)), inst, scores, CompareSpec(baseline="dpo"))
    assert _keys(primary) == {("bandit", "score", frozenset((lab, "dpo[beta=0.5]")), "baseline")
                              for lab in ("dpo[beta=0.1]", "ppo")}


def test_the_report_reads_compare_from_the_suite_file_in_the_store(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    assert cmp.suite_compare(store) is None  # no suite file: the default rule
    suite = store / "suite.yaml"
    suite.write_text(SUITE + "compare: {baseline: dpo}\n")
    assert cmp.suite_compare(store) == CompareSpec(baseline="dpo")
    suite.write_text(SUITE + "compare: [[dpo, ppo-kl]]\n")
    assert cmp.suite_compare(store) == [["dpo", "ppo-kl"]]
    suite.write_text(SUITE)
    assert cmp.suite_compare(store) is None
    suite.write_text(SUITE + "compare: [[dpo]]\n")  # validate reports it; the report falls back
    assert cmp.suite_compare(store) is None


# --- Holm within each family ------------------------------------------------------------------


def test_holm_runs_within_each_family_and_exact_rows_stay_out():
    frame = pd.DataFrame({
        "p_value": [0.01, 0.04, 0.03, 0.01, 0.02, 0.0, math.nan],
        "family": ["primary"] * 3 + ["exploratory"] * 2 + ["primary", "exploratory"],
    })
    exact = np.array([False] * 5 + [True, False])
    adjusted = cmp.adjust_families(frame, exact)
    # by hand: primary (m = 3) 0.01·3 = 0.03, then max(0.03, 0.03·2) = 0.06, max(0.06, 0.04·1);
    # exploratory (m = 2) 0.01·2 = 0.02, max(0.02, 0.02·1); the exact row keeps its 0
    assert adjusted[:6] == pytest.approx([0.03, 0.06, 0.06, 0.02, 0.02, 0.0], abs=1e-15)
    assert math.isnan(adjusted[6])
    # one family of five would give 0.05, 0.06, 0.06, 0.05, 0.06: the split is what decides
    # the exploratory rows at 0.05 here
    levels = cmp.family_levels(frame, exact)
    assert levels == {"primary": pytest.approx(0.05 / 3), "exploratory": pytest.approx(0.05 / 2)}


def _instances() -> pd.DataFrame:
    """Three configurations on six instances: x beats y and z by a clear margin, y and z are
    close; the spread makes each comparison a test."""
    rng = np.random.default_rng(5)
    level = rng.normal(0, 1, 6)
    shift = {"x": 0.5, "y": 0.0, "z": 0.02}
    return pd.DataFrame([{"task": "bandit", "label": lab, "instance": i,
                          "score": level[i] + s + rng.normal(0, 0.1)}
                         for lab, s in shift.items() for i in range(6)])


def test_comparisons_adjust_each_family_on_its_own():
    inst = _instances()
    primary = pd.DataFrame([("bandit", "score", "y", "x", "compare")],
                           columns=list(cmp.PRIMARY_COLUMNS))
    comp = cmp.comparisons(inst, ["x", "y", "z"], ["bandit"], primary=primary)
    assert comp["family"].tolist() == ["primary", "exploratory", "exploratory"]
    assert list(comp[["a", "b"]].itertuples(index=False, name=None)) == [
        ("x", "y"), ("x", "z"), ("y", "z")]
    # a family of one: its p-value stands; the exploratory two are Holm-adjusted together
    assert comp["p_adjusted"].iloc[0] == comp["p_value"].iloc[0]
    p = comp["p_value"].to_numpy()[1:]
    low, high = sorted(p)
    assert sorted(comp["p_adjusted"].to_numpy()[1:]) == pytest.approx(
        [2 * low, max(2 * low, high)])
    assert comp["decision"].iloc[0] == "a better" and comp["decision"].iloc[2] == "undecided"
    # without a primary frame every row is in one family, as before families
    single = cmp.comparisons(inst, ["x", "y", "z"], ["bandit"])
    assert set(single["family"]) == {"primary"}
    order = np.argsort(single["p_value"].to_numpy())
    ranked = single["p_value"].to_numpy()[order]
    expected = np.maximum.accumulate(np.minimum(1, (3 - np.arange(3)) * ranked))
    assert single["p_adjusted"].to_numpy()[order] == pytest.approx(expected)
    assert cmp.family_size(comp, "primary") == 1 and cmp.family_size(comp, "exploratory") == 2
    assert cmp.family_size(comp) == 3


# --- the compare key ----------------------------------------------------------------------------

SUITE = """\
name: fam
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
algorithms:
  - name: dpo
  - name: ppo
    label: ppo-kl
    sweep:
      learning_rate: [0.01, 0.05]
seeds: [0, 1]
budget: {steps: 3}
"""


@pytest.mark.parametrize("extra, key, at, says", [
    ("compare:\n  - [dpo, ppo-kl]\n  - [dpo, pop]\n", "compare.1.1:", "[dpo, pop]",
     ("no algorithm labelled or named 'pop'", "did you mean 'ppo'?", "labels: dpo, ppo-kl")),
    ("compare: {baseline: dop}\n", "compare.baseline:", "compare:",
     ("no algorithm labelled or named 'dop'", "did you mean 'dpo'?")),
    ("compare:\n  - [dpo]\n", "compare.0:", "[dpo]",
     ("a pair [a, b] of two configurations, not 1",)),
    ("compare:\n  - [dpo, dpo]\n", "compare.0:", "[dpo, dpo]",
     ("two different configurations",)),
    ("compare: dpo\n", "compare:", "compare:",
     ("a list of pairs [[a, b], ...], or a mapping {baseline: LABEL}", "'dpo'")),
    ("compare: {base: dpo}\n", "'compare.base'", "compare:",
     ("unknown key", "did you mean 'baseline'?")),
])
def test_compare_errors_are_one_line_naming_the_key(tmp_path: Path, extra: str, key: str,
                                                     at: str, says: tuple[str, ...]):
    path = tmp_path / "suite.yaml"
    text = SUITE + extra
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if at in row)
    with pytest.raises(ConfigError) as info:
        check_suite(load_suite(path), path, get_plugin_host())
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:{line}: "), message
    assert key in message, message
    for needle in says:
        assert needle in message, (needle, message)


def test_compare_names_labels_algorithm_names_and_sweep_points(tmp_path: Path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE + "compare:\n  - [dpo, ppo]\n  - ['ppo-kl[learning_rate=0.01]', "
                    "ppo-kl]\n")
    suite = load_suite(path)
    assert suite.compare == [["dpo", "ppo"], ["ppo-kl[learning_rate=0.01]", "ppo-kl"]]
    assert len(check_suite(suite, path, get_plugin_host())) == 3 * 2
    path.write_text(SUITE + "compare: {baseline: ppo-kl}\n")
    assert load_suite(path).compare == CompareSpec(baseline="ppo-kl")


# --- the report -------------------------------------------------------------------------------


def section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The design store of tests/test_report_design.py with ``compare: [[shaky, better]]``."""
    root = tmp_path_factory.mktemp("families")
    store = _store(root)
    suite = store / "suite.yaml"
    suite.write_text(suite.read_text() + "compare:\n  - [shaky, better]\n")
    return write_report(store, root / "report", figures=False)


def test_the_report_keeps_every_row_with_its_family_primary_first(paired: Path):
    comp = pd.read_csv(paired / "tables" / "comparisons.csv")
    assert comp.columns[-1] == "family"
    families = comp["family"].tolist()
    assert families == sorted(families, key=["primary", "exploratory"].index)
    primary = comp[comp["family"] == "primary"]
    keys = {(m, frozenset((a, b))) for m, a, b in primary[["metric", "a", "b"]].itertuples(
        index=False)}
    # the claims' steps (stability: shaky → steady; reward: steady ↔ better) and the pair named
    assert keys == {("replicate_std", frozenset(("shaky", "steady"))),
                    ("divergence_rate", frozenset(("shaky", "steady"))),
                    ("drawdown", frozenset(("shaky", "steady"))),
                    ("score", frozenset(("steady", "better"))),
                    ("score", frozenset(("shaky", "better")))}
    # every other row is exploratory: 6 pairs × 8 quantities in all
    assert len(comp) == 6 * 8 and (comp["family"] == "exploratory").sum() == 6 * 8 - 5
    claims = pd.read_csv(paired / "tables" / "claims.csv")
    assert claims.set_index("claim")["verdict"].to_dict() == {
        0: "supported", 1: "supported", 2: "not supported"}


def test_the_report_says_which_family_each_decision_is_in_and_how_big_each_is(paired: Path):
    from harness.report.build import decided_comparisons
    from harness.report.render import md_escape

    comp = pd.read_csv(paired / "tables" / "comparisons.csv")
    md = (paired / "index.md").read_text()
    m_primary = cmp.family_size(comp, "primary")
    m_explore = cmp.family_size(comp, "exploratory")
    assert 0 < m_primary < m_explore
    sizes = (f"primary: {m_primary} tests, α/m = {0.05 / m_primary:.2g}; exploratory: "
             f"{m_explore} tests, α/m = {0.05 / m_explore:.2g}")
    pairs = section(md, "Paired comparisons")
    assert ("Primary comparisons: the claims' steps, on their aspect's quantities, and the "
            "pairs the suite's compare: names (shaky − better), on the score; every other "
            "comparison is exploratory") in pairs
    assert sizes in pairs.replace("\\", "")
    assert "Holm-adjusted within the row's family" in pairs
    primary, explore = comp[comp["family"] == "primary"], comp[comp["family"] == "exploratory"]
    for rows, family in ((primary, "primary"), (explore, "exploratory")):
        decided = rows["decision"].isin(("a better", "b better")).sum()
        beyond = (rows["decision"] == "undecidable").sum()
        assert (f"{decided} of {len(rows)} {family} comparisons decided; {beyond} undecidable "
                "at their n.") in pairs
    summary = section(md, "Summary")
    on = decided_comparisons(primary)
    off = decided_comparisons(explore)
    assert on and off
    assert f"Decided comparisons ({len(on)} of {len(primary)}, primary, the most certain first" \
        in summary
    assert (f"Decided exploratory comparisons ({len(off)} of {len(explore)}, exploratory: not "
            "named in advance") in summary
    head, tail = summary.split("Decided exploratory comparisons", 1)
    assert all(md_escape(p) in head for p in on[:12])
    assert all(md_escape(p) in tail for p in off[:12])
    assert "decided (Holm-adjusted p = " in summary and ", primary family)" in summary
    method = section(md, "Method")
    assert "Families: the primary comparisons are the claims' steps" in method
