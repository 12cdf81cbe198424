"""The metric vocabulary: one definition per shared name, and plugin metrics kept apart in reports
when two algorithms document one name with different meanings."""

from __future__ import annotations

import pandas as pd

from harness.metrics import ALGORITHM_METRICS, RUNNER_METRICS, VOCABULARY, clashing, namespaced
from harness.report.data import namespace_clashes
from harness.testing import OPTIONAL_METRICS, RESERVED_METRICS


def test_every_shared_name_has_a_meaning_a_unit_and_a_source():
    for name, metric in VOCABULARY.items():
        assert metric.name == name and metric.meaning and metric.unit and metric.sources
    assert {"loss", "grad_norm", "kl_ref", "entropy", "response_length", "reward",
            "logp_chosen", "logp_rejected"} <= ALGORITHM_METRICS
    assert "sequence sum" in VOCABULARY["logp_chosen"].unit
    assert "per response" in VOCABULARY["kl_ref"].unit


def test_the_kit_s_name_lists_come_from_the_vocabulary():
    assert set(OPTIONAL_METRICS) == ALGORITHM_METRICS - {"loss"}
    assert RESERVED_METRICS == RUNNER_METRICS == {"step", "samples", "tokens", "wall_seconds",
                                                  "flops", "models_resident", "diverged"}
    assert not ALGORITHM_METRICS & RUNNER_METRICS


def test_only_documented_different_meanings_clash():
    declared = {
        "dpo": {"reward_chosen": "β log π/π_ref of y⁺", "margin": "mean h", "loss": "DPO's"},
        "simpo": {"reward_chosen": "β/|y| log π of y⁺", "margin": " mean  h ", "loss": "SimPO's"},
        "ipo": {"reward_chosen": ""},  # undocumented: no evidence either way
    }
    assert clashing(declared) == {"reward_chosen"}  # equal up to spaces; shared names never
    assert clashing({"dpo": declared["dpo"], "ipo": declared["ipo"]}) == set()
    assert namespaced("dpo", "reward_chosen", {"reward_chosen"}) == "dpo:reward_chosen"
    assert namespaced("dpo", "margin", {"reward_chosen"}) == "margin"


def test_the_report_frame_namespaces_only_the_clashing_train_metrics():
    frame = pd.DataFrame({
        "algorithm": ["dpo", "simpo", "simpo", "dpo", "simpo"],
        "source": ["train", "train", "train", "eval", "train"],
        "metric": ["reward_chosen", "reward_chosen", "loss", "reward_chosen", "margin"],
        "value": [1.0, 2.0, 3.0, 4.0, 5.0],
    })
    declared = {"dpo": {"reward_chosen": "a"}, "simpo": {"reward_chosen": "b", "margin": "m"}}
    out = namespace_clashes(frame, declared)
    assert out["metric"].tolist() == ["dpo:reward_chosen", "simpo:reward_chosen", "loss",
                                      "reward_chosen", "margin"]
    assert frame["metric"].tolist()[0] == "reward_chosen"  # the input is left alone
    assert namespace_clashes(frame, {"dpo": {"reward_chosen": "a"}}) is frame
