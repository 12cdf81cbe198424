"""r̂ in r*'s units by default (docs/reward-units.md): ``reward_model.scale`` defaults to the
annotator's ``preferences.scale`` for simulated labels and to 1 for a preference file; the report's
Method section and ``show`` say what the scales imply."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.report.build import reward_units
from harness.suite import load_suite

BASE = ("name: s\ntasks: [{name: bandit}]\nalgorithms: [{name: dpo}, {name: ppo}]\n"
        "budget: {samples: 64}\nseeds: [0]\n")


@pytest.mark.parametrize(("extra", "scale"), [
    ("preferences: {scale: 0.25}\n", 0.25),  # the case: no reward_model scale given
    ("preferences: {scale: 0.25}\nreward_model: {scale: 1.0}\n", 1.0),  # explicit: kept
    ("", 1.0),
    ("preferences: {file: pairs.parquet, scale: 0.3}\n", 1.0),  # a file's scale is unknown
])
def test_reward_model_scale_defaults_to_the_annotator_s(tmp_path: Path, extra: str, scale: float):
    path = tmp_path / "s.yaml"
    path.write_text(BASE + extra)
    suite = load_suite(path)
    assert suite.reward_model.scale == scale
    assert suite.reward_model.model_dump()["scale"] == scale  # what a run's spec records


def test_the_method_section_states_what_the_scales_imply():
    runs = pd.DataFrame({
        "annotator_scale": [0.25, 0.25, 0.5, math.nan, 0.25],
        "reward_model_scale": [0.25, 0.25, 1.0, 1.0, math.nan],
        "reward_model_kind": ["fitted", "fitted", "fitted", "fitted", "gold"],
    })
    same, other, file, gold = reward_units(runs)
    assert same.startswith("r̂ is in r*'s units: fitted at the annotator's scale 0.25")
    assert "π*_(β·0.25)" in same
    assert other.startswith("r̂ ≈ r*·2: fitted at scale 1 to labels made at scale 0.5")
    assert "β = γ·0.5" in other
    assert "read from a file" in file
    assert "r* itself" in gold
    assert reward_units(pd.DataFrame({"label": ["a"]})) == []


def test_show_prints_the_units_rule(capsys):
    main(["show", "btl"])
    out = " ".join(capsys.readouterr().out.split())
    assert "r̂ ≈ r*·s/a" in out and "defaults to its preferences.scale" in out
