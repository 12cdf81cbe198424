"""Tests of the SimPO plugin: rlhf-harness's conformance kit, and two of its own."""

from __future__ import annotations

import pytest
import torch
from rlhf_harness_my_simpo import SimPO, simpo_loss

from harness.testing import bandit_algorithm, conformance_tests

# The checks run on the bandit task, a table of logits: the settings SimPO suggests for one.
TABULAR = SimPO.suggested["tabular"]

# One test per check: config, metrics, vocabulary, accounting, determinism, finite, improves,
# devices, lora.
test_conformance = conformance_tests("my-simpo", config=TABULAR)


def test_the_loss_is_eq_6_on_length_normalised_log_probs():
    logp = torch.tensor([-2.0, -3.0]), torch.tensor([-6.0, -1.0])
    lengths = torch.tensor([2.0, 3.0]), torch.tensor([3.0, 1.0])
    loss, chosen, rejected = simpo_loss(*logp, *lengths, beta=2.0, gamma=0.5)
    assert chosen.tolist() == [-2.0, -2.0] and rejected.tolist() == [-4.0, -2.0]
    expected = -torch.nn.functional.logsigmoid(torch.tensor([2.0 - 0.5, 0.0 - 0.5])).mean()
    assert float(loss) == pytest.approx(float(expected))


def test_it_never_reads_the_reference_policy():
    algo = bandit_algorithm("my-simpo", TABULAR)
    algo.ctx.reference = None  # type: ignore[assignment]  # any use of it would raise
    assert algo.step()["response_length"] == 1.0
