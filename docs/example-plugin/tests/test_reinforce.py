"""Tests of the REINFORCE plugin: rlhf-harness's conformance kit, and one of its own."""

from __future__ import annotations

import pytest
from rlhf_harness_reinforce import Reinforce

from harness.testing import bandit_algorithm, conformance_tests

# The checks run on the bandit task, a table of logits, which learns at a larger step than an LM:
# the settings the plugin suggests for one.
TABULAR = Reinforce.suggested["tabular"]

# One test per check: config, metrics, vocabulary, accounting, determinism, finite, improves,
# devices, lora. The kit finds the algorithm by its name, through the plugin's entry point:
# install the plugin first.
test_conformance = conformance_tests("reinforce", config=TABULAR)


def test_the_baseline_is_a_moving_average_of_the_shaped_reward():
    algo = bandit_algorithm("reinforce", {**TABULAR, "baseline_decay": 0.5})
    first, second = algo.step(), algo.step()
    assert first["baseline"] == 0.0
    assert second["baseline"] == pytest.approx(0.5 * first["shaped_reward"])
