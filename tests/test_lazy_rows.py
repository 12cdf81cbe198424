"""harness.algorithm.LazyRows: an offline method's per-row reference values, computed on first use.

The values must be those of computing every row up front (what the offline plugins did before:
one pass over the data when the algorithm is built), and each row must be computed once.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.algorithm import LazyRows


def _counting(values: torch.Tensor, calls: list[torch.Tensor]):
    def compute(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(rows.clone())
        return values[rows], -2 * values[rows]

    return compute


def test_each_row_is_computed_once_and_values_match_the_full_pass():
    values = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    calls: list[torch.Tensor] = []
    lazy = LazyRows(10, _counting(values, calls))
    assert lazy.computed == 0
    a, b = lazy(torch.tensor([3, 1, 3, 7]))
    assert torch.equal(a, values[[3, 1, 3, 7]]) and torch.equal(b, -2 * values[[3, 1, 3, 7]])
    assert [c.tolist() for c in calls] == [[1, 3, 7]]  # unique, ascending
    assert lazy.computed == 3
    a, _ = lazy(torch.tensor([7, 0, 1]))
    assert torch.equal(a, values[[7, 0, 1]])
    assert [c.tolist() for c in calls] == [[1, 3, 7], [0]]  # only the row not yet known
    lazy(torch.tensor([0, 1, 3, 7]))
    assert len(calls) == 2  # nothing new: no call at all
    a, _ = lazy(torch.arange(10))
    assert torch.equal(a, values) and lazy.computed == 10
    assert [c.tolist() for c in calls][-1] == [2, 4, 5, 6, 8, 9]


def test_dtype_and_no_gradients():
    w = torch.ones(4, dtype=torch.float32, requires_grad=True)

    def compute(rows: torch.Tensor) -> tuple[torch.Tensor]:
        out = w[rows] * 3
        assert not out.requires_grad  # called under no_grad
        return (out,)

    (a,) = LazyRows(4, compute)(torch.tensor([2]))
    assert a.dtype == torch.float32 and a.tolist() == [3.0]


@pytest.mark.parametrize("name", ["dpo", "ipo", "rdpo", "cdpo", "kto"])
def test_offline_plugins_compute_the_reference_of_the_pairs_they_use(name):
    """Two steps compute π_ref on the rows of those steps only (a 2000-pair set: not all of it),
    and the values are those of one pass over the data."""
    from harness.testing import bandit_algorithm

    config = {"batch_size": 16, "learning_rate": 0.05}
    if name in ("rdpo", "cdpo"):
        config["epsilon"] = 0.1
    alg = bandit_algorithm(name, config)
    for _ in range(2):
        alg.step()
    assert alg.ref.computed == 32
    ref = alg.ctx.reference
    full = alg.data.sequence_logprobs(ref)
    full = full if isinstance(full, tuple) else (full,)
    got = alg.ref(torch.arange(len(alg.data)))
    assert alg.ref.computed == len(alg.data)
    for g, want in zip(got, full, strict=True):
        assert torch.equal(g, want) and not math.isnan(float(g.sum()))
