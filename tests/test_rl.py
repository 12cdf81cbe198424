"""Tests of harness.rl against hand computations and exact properties.

Tolerances: in float64 a handful of arithmetic operations on O(1) numbers accumulates rounding of
a few ulp (~1e-16 each), so 1e-12 leaves four orders of magnitude of headroom while still catching
any formula error (which would show up at >= 1e-3 on these examples). Where float32 is used the
ulp is ~1.2e-7, so 1e-6 is the matching bound for a few operations on O(1) numbers.
"""

from __future__ import annotations

import math
import re
import statistics

import pytest
import torch

from harness import rl

F64 = torch.float64


def t64(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# --------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------


def test_k3_is_nonnegative_everywhere() -> None:
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        # Log-probs from near-equal to wildly different, including |log r| up to ~60.
        logp = -torch.rand(100_000, generator=gen, dtype=dtype) * 30
        ref_logp = -torch.rand(100_000, generator=gen, dtype=dtype) * 30
        near = logp + torch.randn(100_000, generator=gen, dtype=dtype) * 1e-6
        for a, b in ((logp, ref_logp), (logp, near), (logp, logp)):
            k3 = rl.kl_k3(a, b)
            # Exact property (e^x - 1 >= x, and expm1 is correctly rounded enough): no tolerance.
            assert torch.isfinite(k3).all()
            assert (k3 >= 0).all()
    # k2 >= 0 too; k1 takes both signs on single samples.
    assert (rl.kl_k2(logp, ref_logp) >= 0).all()
    assert (rl.kl_k1(logp, ref_logp) < 0).any() and (rl.kl_k1(logp, ref_logp) > 0).any()


def test_kl_estimators_match_their_formulas() -> None:
    logp = t64([-1.0, -0.2, -3.0])
    ref = t64([-1.5, -0.1, -0.5])
    for i in range(3):
        log_r = ref[i].item() - logp[i].item()
        # 1e-12: one or two float64 operations on O(1) numbers (see module docstring).
        assert rl.kl_k1(logp, ref)[i].item() == pytest.approx(-log_r, abs=1e-12)
        assert rl.kl_k2(logp, ref)[i].item() == pytest.approx(0.5 * log_r**2, abs=1e-12)
        assert rl.kl_k3(logp, ref)[i].item() == pytest.approx(
            math.exp(log_r) - 1 - log_r, abs=1e-12
        )
    for kind, fn in (("k1", rl.kl_k1), ("k2", rl.kl_k2), ("k3", rl.kl_k3)):
        assert torch.equal(rl.kl_estimate(logp, ref, kind), fn(logp, ref))
    with pytest.raises(ValueError, match="kind"):
        rl.kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes must match"):
        rl.kl_k3(logp, ref[:2])


def test_k1_and_k3_are_unbiased_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(1234)
    p = torch.softmax(torch.randn(10, generator=gen, dtype=F64), 0)
    q = torch.softmax(torch.randn(10, generator=gen, dtype=F64), 0)
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, ref_logp = p.log()[x], q.log()[x]
    for kind in ("k1", "k3"):
        est = rl.kl_estimate(logp, ref_logp, kind)
        mean = est.mean().item()
        se = est.std().item() / math.sqrt(est.numel())
        # The sample mean of 200k iid draws is ~normal around its expectation; for an unbiased
        # estimator |mean - KL| > 4 SE has probability ~6e-5 (and the seed is fixed). A biased one
        # would be off by its bias, here many SE. SE comes from the sample std.
        assert abs(mean - exact) < 4 * se, (kind, mean, exact, se)
    # k2 is biased: E[k2] != KL in general; here the bias is large compared with its SE.
    k2 = rl.kl_k2(logp, ref_logp)
    assert abs(k2.mean().item() - exact) > 4 * k2.std().item() / math.sqrt(k2.numel())


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------


def test_masked_sum_and_mean_by_hand() -> None:
    x = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t64([[1, 0, 1], [0, 0, 0]])
    # 1e-12 below: a sum and a division of small integers in float64 (exact, in fact).
    assert rl.masked_sum(x, mask).item() == pytest.approx(1 + 3, abs=1e-12)
    assert rl.masked_mean(x, mask).item() == pytest.approx((1 + 3) / 2, abs=1e-12)
    assert rl.masked_mean(x, mask, dim=1).tolist() == pytest.approx([(1 + 3) / 2, 0.0], abs=1e-12)
    assert rl.masked_mean(x, mask, dim=0).tolist() == pytest.approx([1.0, 0.0, 3.0], abs=1e-12)
    # Bool masks work the same; padding garbage (NaN, inf) is ignored.
    bad = x.clone()
    bad[0, 1], bad[1, 0] = float("nan"), float("inf")
    assert rl.masked_mean(bad, mask.bool()).item() == pytest.approx(2.0, abs=1e-12)
    # An all-zero mask gives 0, not NaN.
    assert rl.masked_mean(x, torch.zeros_like(x)).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        rl.masked_mean(x, mask[0])


def test_masked_var_by_hand() -> None:
    x = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t64([[1, 0, 1], [1, 0, 0]])
    valid = [1.0, 3.0, 4.0]
    # Exact values: mean 8/3, Σ(x - mean)² = 14/3, so unbiased 7/3 and biased 14/9.
    assert statistics.variance(valid) == pytest.approx(7 / 3)
    # 1e-12: a few float64 operations on O(1) numbers.
    assert rl.masked_var(x, mask).item() == pytest.approx(7 / 3, abs=1e-12)
    assert rl.masked_var(x, mask, unbiased=False).item() == pytest.approx(14 / 9, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        rl.masked_var(x, t64([[1, 0, 0], [0, 0, 0]]))


def test_masked_whiten() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, generator=gen, dtype=F64) * 3 + 5
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    x[~mask] = float("nan")  # garbage in padding must not matter
    valid = x[mask].tolist()
    mu, var = statistics.fmean(valid), statistics.variance(valid)

    w = rl.masked_whiten(x, mask)
    assert (w[~mask] == 0).all()
    # Hand formula elementwise; 1e-12: a few float64 operations on O(1) numbers.
    expected = [(v - mu) / math.sqrt(var + 1e-8) for v in valid]
    assert w[mask].tolist() == pytest.approx(expected, abs=1e-12)
    # Whitened valid elements: mean 0 and unbiased variance var / (var + eps) = 1 - O(eps / var);
    # with var ~ 9 and eps 1e-8 that is within 1e-9 of 1, far above float64 rounding.
    wv = w[mask].tolist()
    assert statistics.fmean(wv) == pytest.approx(0.0, abs=1e-12)
    assert statistics.variance(wv) == pytest.approx(1.0, abs=1e-8)

    # shift_mean=False adds the mean back: same spread, original mean.
    ws = rl.masked_whiten(x, mask, shift_mean=False)
    assert (ws[~mask] == 0).all()
    assert statistics.fmean(ws[mask].tolist()) == pytest.approx(mu, abs=1e-12)
    assert (ws[mask] - mu).tolist() == pytest.approx(wv, abs=1e-12)

    # Gradients stay finite even with NaN in the padding.
    xg = x.clone().requires_grad_(True)
    (rl.masked_whiten(xg, mask) ** 3).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    assert (xg.grad[~mask] == 0).all()


# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------


def test_gae_hand_worked_example() -> None:
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], γ = 1, λ = 0.95, V after the last token = 0:
    #   δ_2 = 1 + 1·0   − 0.7 = 0.3
    #   δ_1 = 0 + 1·0.7 − 0.6 = 0.1
    #   δ_0 = 0 + 1·0.6 − 0.5 = 0.1
    #   A_2 = 0.3
    #   A_1 = 0.1 + 0.95·0.3     = 0.1 + 0.285   = 0.385
    #   A_0 = 0.1 + 0.95·0.385   = 0.1 + 0.36575 = 0.46575
    #   R   = A + V = [0.46575 + 0.5, 0.385 + 0.6, 0.3 + 0.7] = [0.96575, 0.985, 1.0]
    adv, ret = rl.gae(t64([[0.0, 0.0, 1.0]]), t64([[0.5, 0.6, 0.7]]), t64([[1, 1, 1]]), 1.0, 0.95)
    # 1e-12: a handful of float64 operations on O(1) numbers.
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3], abs=1e-12)
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0], abs=1e-12)

    # γ and λ enter separately: rewards [1, 2], values [0.5, 1.0], γ = 0.9, λ = 0.8:
    #   δ_1 = 2 + 0.9·0   − 1.0 = 1.0
    #   δ_0 = 1 + 0.9·1.0 − 0.5 = 1.4
    #   A_1 = 1.0,  A_0 = 1.4 + 0.9·0.8·1.0 = 2.12;  R = [2.12 + 0.5, 1.0 + 1.0] = [2.62, 2.0]
    adv, ret = rl.gae(t64([[1.0, 2.0]]), t64([[0.5, 1.0]]), t64([[1, 1]]), 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([2.12, 1.0], abs=1e-12)
    assert ret[0].tolist() == pytest.approx([2.62, 2.0], abs=1e-12)


def test_gae_variable_length_batch() -> None:
    gen = torch.Generator().manual_seed(5)
    rewards = torch.randn(3, 5, generator=gen, dtype=F64)
    values = torch.randn(3, 5, generator=gen, dtype=F64).requires_grad_(True)
    lengths = [5, 2, 3]
    mask = torch.zeros(3, 5)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    # Padding holds nonzero garbage rewards/values, which must be ignored.
    adv, ret = rl.gae(rewards, values, mask, 0.99, 0.9)
    assert not adv.requires_grad and not ret.requires_grad
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    for i, n in enumerate(lengths):
        a1, r1 = rl.gae(rewards[i : i + 1, :n], values[i : i + 1, :n], torch.ones(1, n), 0.99, 0.9)
        # Same operations in the same order on the same numbers: 1e-12 is generous.
        assert adv[i, :n].tolist() == pytest.approx(a1[0].tolist(), abs=1e-12)
        assert ret[i, :n].tolist() == pytest.approx(r1[0].tolist(), abs=1e-12)
        # returns = advantages + values on valid tokens.
        expected_ret = (a1[0] + values[i, :n].detach()).tolist()
        assert ret[i, :n].tolist() == pytest.approx(expected_ret, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Group advantages
# --------------------------------------------------------------------------------------------


def test_group_advantages_standardised_per_group() -> None:
    gen = torch.Generator().manual_seed(7)
    n_groups, g = 6, 8
    rewards = torch.randn(n_groups * g, generator=gen) * 2 + 1  # float32
    adv = rl.group_advantages(rewards, g).view(n_groups, g)
    grouped = rewards.view(n_groups, g)
    # Zero mean per group: float32 sums of 8 O(1) numbers, rounding ~1e-7 → atol 1e-6.
    assert adv.mean(1).abs().max().item() < 1e-6
    # Unit std up to eps: std(A) = s / (s + eps) exactly in real arithmetic, so 1 − std(A) is
    # below eps / s (s ~ 2 here, eps 1e-4) plus float32 rounding (~1e-6).
    s = grouped.std(1)
    assert adv.std(1).tolist() == pytest.approx((s / (s + 1e-4)).tolist(), abs=1e-6)
    assert (1 - adv.std(1)).abs().max().item() < (1e-4 / s.min().item()) + 1e-6

    # Literal hand check of one group with Python's statistics module (float64 input).
    r = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5]
    a = rl.group_advantages(t64(r), 3).tolist()
    for k in range(2):
        grp = r[3 * k : 3 * k + 3]
        mu, sd = statistics.fmean(grp), statistics.stdev(grp)
        # 1e-12: a few float64 operations on O(1) numbers.
        expected = [(v - mu) / (sd + 1e-4) for v in grp]
        assert a[3 * k : 3 * k + 3] == pytest.approx(expected, abs=1e-12)


def test_group_advantages_variants_and_errors() -> None:
    r = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 2.0, 2.0]
    rt = t64(r)
    groups = [r[0:4], r[4:8]]
    means = [statistics.fmean(grp) for grp in groups]
    # Dr. GRPO: A = r − mean_group. 1e-12: float64 sums of four O(1) numbers.
    drgrpo = rl.group_advantages(rt, 4, scale_std=False).tolist()
    assert drgrpo == pytest.approx([v - means[i // 4] for i, v in enumerate(r)], abs=1e-12)
    # Batch std: A = (r − mean_group) / (std over all 8 rewards + eps).
    sd_all = statistics.stdev(r)
    batch = rl.group_advantages(rt, 4, std_over="batch", eps=1e-3).tolist()
    expected = [(v - means[i // 4]) / (sd_all + 1e-3) for i, v in enumerate(r)]
    assert batch == pytest.approx(expected, abs=1e-12)
    # A group of equal rewards gets zeros, not NaN (eps guards the zero std).
    same = rl.group_advantages(t64([3.0, 3.0, 3.0, 1.0, 2.0, 3.0]), 3)
    assert same[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(same).all()

    with pytest.raises(ValueError, match="multiple of group_size"):
        rl.group_advantages(t64([1.0] * 7), 4)
    with pytest.raises(ValueError, match="group_size"):
        rl.group_advantages(t64([1.0] * 4), 0)
    with pytest.raises(ValueError, match="std_over"):
        rl.group_advantages(t64([1.0] * 4), 2, std_over="global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        rl.group_advantages(t64([[1.0, 2.0]]), 2)
    with pytest.raises(ValueError, match="at least 2"):
        rl.group_advantages(t64([1.0, 2.0]), 1)
    assert rl.group_advantages(t64([1.0, 2.0]), 1, scale_std=False).tolist() == [0.0, 0.0]


# --------------------------------------------------------------------------------------------
# Clipped surrogate
# --------------------------------------------------------------------------------------------


def test_clipped_surrogate_gradient_is_zero_exactly_where_clipped() -> None:
    ratios = [0.5, 0.9, 1.0, 1.1, 1.5]
    advs = [1.0, -1.0]
    eps = 0.2
    logp = t64([[math.log(r) for r in ratios] for _ in advs]).requires_grad_(True)
    old = torch.zeros_like(logp)
    loss, ratio, clipped = rl.clipped_surrogate(logp, old, t64(advs), eps)  # [B] advantages
    loss.sum().backward()
    assert logp.grad is not None
    for i, a in enumerate(advs):
        for j, r in enumerate(ratios):
            should_clip = (a > 0 and r > 1 + eps) or (a < 0 and r < 1 - eps)
            assert bool(clipped[i, j]) == should_clip, (a, r)
            if should_clip:
                # Exact: the active term is a constant, so autograd gives exactly 0.
                assert logp.grad[i, j].item() == 0.0, (a, r)
            else:
                # d/dlogp of −ρA is −ρA; 1e-12: exp/log round trip in float64.
                assert logp.grad[i, j].item() == pytest.approx(-r * a, abs=1e-12), (a, r)
                assert logp.grad[i, j].item() != 0.0
    assert ratio.flatten().tolist() == pytest.approx(ratios * 2, abs=1e-12)


def test_clipped_surrogate_decoupled_clip_higher() -> None:
    logp = t64([math.log(1.25), math.log(1.25), math.log(0.75)]).requires_grad_(True)
    old = torch.zeros(3, dtype=F64)
    adv = t64([1.0, 1.0, -1.0])
    # Symmetric ε = 0.2: ratio 1.25 with A > 0 is clipped.
    _, _, sym = rl.clipped_surrogate(logp, old, adv, 0.2)
    assert sym.tolist() == [True, True, True]
    # Clip-higher ε_high = 0.28: 1.25 < 1.28 is not clipped; ε_low = 0.2 still clips 0.75 for A<0.
    loss, _, dec = rl.clipped_surrogate(logp, old, adv, 0.2, eps_high=0.28)
    assert dec.tolist() == [False, False, True]
    loss.sum().backward()
    assert logp.grad is not None
    # 1e-12: exp/log round trip in float64.
    assert logp.grad.tolist() == pytest.approx([-1.25, -1.25, 0.0], abs=1e-12)
    # Symmetric ε = 0.28 would not clip 0.75 for A < 0 (0.75 > 0.72): ε_low really is ε_low.
    _, _, wide = rl.clipped_surrogate(logp, old, adv, 0.28)
    assert wide.tolist() == [False, False, False]


def test_clipped_surrogate_by_hand_and_broadcast() -> None:
    logp_l = [-1.0, -0.5, -2.0, -0.3]
    old_l = [-1.2, -0.4, -1.0, -0.9]
    adv_l = [1.0, -2.0, 0.5, -1.0]
    eps = 0.2
    loss, ratio, clipped = rl.clipped_surrogate(t64(logp_l), t64(old_l), t64(adv_l), eps)
    for i in range(4):
        r = math.exp(logp_l[i] - old_l[i])
        a = adv_l[i]
        rc = min(max(r, 1 - eps), 1 + eps)
        # 1e-12 (stricter than the required 1e-6): a few float64 operations on O(1) numbers.
        assert ratio[i].item() == pytest.approx(r, abs=1e-12)
        assert loss[i].item() == pytest.approx(-min(r * a, rc * a), abs=1e-12)
        assert bool(clipped[i]) == (rc * a < r * a)
    # Worked values: ρ = e^0.2 ≈ 1.2214 clipped to 1.2 for A = 1 → loss −1.2, clipped;
    # ρ = e^0.6 ≈ 1.8221 for A = −1 → unclipped −1.8221 is smaller → loss 1.8221, not clipped.
    assert loss[0].item() == pytest.approx(-1.2, abs=1e-12)
    assert loss[3].item() == pytest.approx(math.exp(0.6), abs=1e-12)
    assert clipped.tolist() == [True, False, False, False]

    # [B] advantages broadcast over tokens of a [B, T] logp, same as a [B, T] expansion.
    gen = torch.Generator().manual_seed(11)
    lp = torch.randn(3, 4, generator=gen, dtype=F64) * 0.3
    olp = torch.randn(3, 4, generator=gen, dtype=F64) * 0.3
    a = t64([1.0, -0.5, 2.0])
    got = rl.clipped_surrogate(lp, olp, a, 0.2)
    want = rl.clipped_surrogate(lp, olp, a[:, None].expand(3, 4), 0.2)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    with pytest.raises(ValueError, match="advantages"):
        rl.clipped_surrogate(lp, olp, t64([1.0, 2.0]), 0.2)
    with pytest.raises(ValueError, match="eps_low"):
        rl.clipped_surrogate(lp, olp, a, 1.5)


# --------------------------------------------------------------------------------------------
# Value loss and aggregation
# --------------------------------------------------------------------------------------------


def test_clipped_value_loss_by_hand() -> None:
    v = [1.0, 2.0, 1.0, 0.0]
    v_old = [0.5, 2.1, 0.5, 0.3]
    ret = [0.0, 3.0, 2.0, 1.0]
    c = 0.2
    loss, clipped = rl.clipped_value_loss(t64(v), t64(v_old), t64(ret), c)
    for i in range(4):
        vc = min(max(v[i], v_old[i] - c), v_old[i] + c)
        lu, lc = (v[i] - ret[i]) ** 2, (vc - ret[i]) ** 2
        # 1e-12 (stricter than the required 1e-6): float64 squares of O(1) numbers.
        assert loss[i].item() == pytest.approx(0.5 * max(lu, lc), abs=1e-12)
        assert bool(clipped[i]) == (lc > lu)
    # Worked: row 0: V_clip = 0.7, max(1², 0.7²) = 1 → 0.5, not clipped.
    # row 2: V_clip = 0.7, R = 2: max(1², 1.3²) = 1.69 → 0.845, clipped.
    assert loss.tolist() == pytest.approx([0.5, 0.5, 0.845, 0.5], abs=1e-12)
    assert clipped.tolist() == [False, False, True, False]


def test_aggregate_loss_modes_by_hand() -> None:
    loss = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t64([[1, 1, 0], [1, 0, 0]])
    # sequence: mean(mean(1, 2), mean(4)) = (1.5 + 4) / 2 = 2.75
    # token:    (1 + 2 + 4) / 3 = 7/3
    # constant: (1 + 2 + 4) / (B·4) = 7 / 8 = 0.875
    # 1e-12 (stricter than the required 1e-6): sums and divisions of small numbers in float64.
    assert rl.aggregate_loss(loss, mask, "sequence").item() == pytest.approx(2.75, abs=1e-12)
    assert rl.aggregate_loss(loss, mask, "token").item() == pytest.approx(7 / 3, abs=1e-12)
    got = rl.aggregate_loss(loss, mask, "constant", constant=4).item()
    assert got == pytest.approx(0.875, abs=1e-12)
    # An empty sequence contributes 0 to the sequence mean: (1.5 + 0) / 2.
    empty = t64([[1, 1, 0], [0, 0, 0]])
    assert rl.aggregate_loss(loss, empty, "sequence").item() == pytest.approx(0.75, abs=1e-12)

    with pytest.raises(ValueError, match="positive constant"):
        rl.aggregate_loss(loss, mask, "constant")
    with pytest.raises(ValueError, match="positive constant"):
        rl.aggregate_loss(loss, mask, "constant", constant=0)
    with pytest.raises(ValueError, match="only used"):
        rl.aggregate_loss(loss, mask, "token", constant=4)
    with pytest.raises(ValueError, match="mode"):
        rl.aggregate_loss(loss, mask, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        rl.aggregate_loss(loss, mask[:, :2], "token")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        rl.aggregate_loss(loss[0], mask[0], "token")


# --------------------------------------------------------------------------------------------
# From logits
# --------------------------------------------------------------------------------------------


def test_logprobs_from_logits_matches_log_softmax_gather() -> None:
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 5, 11, generator=gen, dtype=F64) * 4
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    got = rl.logprobs_from_logits(logits, labels)
    want = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    # 1e-12: two float64 evaluations of logsumexp on O(10) numbers differ by a few ulp.
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    # Large logits stay finite (logsumexp is shifted internally).
    big = rl.logprobs_from_logits(logits + 1e4, labels)
    assert torch.allclose(big, want, rtol=0, atol=1e-9)  # ulp at 1e4 is ~2e-12; 1e-9 is ample
    with pytest.raises(ValueError, match="labels"):
        rl.logprobs_from_logits(logits, labels[:, :3])


def test_entropy_from_logits() -> None:
    z = [2.0, -1.0, 0.5, 0.0]
    lse = math.log(sum(math.exp(v) for v in z))
    p = [math.exp(v - lse) for v in z]
    h = -sum(pi * math.log(pi) for pi in p)
    # 1e-12: a few float64 operations on O(1) numbers.
    assert rl.entropy_from_logits(t64(z)).item() == pytest.approx(h, abs=1e-12)

    gen = torch.Generator().manual_seed(17)
    logits = torch.randn(3, 4, 9, generator=gen, dtype=F64) * 3
    probs = torch.softmax(logits, -1)
    want = -(probs * probs.log()).sum(-1)
    assert torch.allclose(rl.entropy_from_logits(logits), want, rtol=0, atol=1e-12)
    # Uniform logits: entropy log V, also for huge logits (stability).
    assert rl.entropy_from_logits(torch.full((9,), 1e5, dtype=F64)).item() == pytest.approx(
        math.log(9), abs=1e-12
    )
    # −inf logits are zero-probability outcomes: entropy of two equal survivors is log 2, and the
    # gradient stays finite.
    masked = t64([0.0, 0.0, float("-inf")]).requires_grad_(True)
    ent = rl.entropy_from_logits(masked)
    assert ent.item() == pytest.approx(math.log(2), abs=1e-12)
    ent.backward()
    assert masked.grad is not None and torch.isfinite(masked.grad).all()


# --- optimiser -------------------------------------------------------------------------------


def _adam_run(make) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((7, 5), (5,))]
    opt = make(params)
    for _ in range(10):
        opt.zero_grad()
        loss = sum((p.square() * torch.arange(p.numel()).view(p.shape)).sum() for p in params)
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


def test_adam_is_fused_where_possible_and_matches_the_plain_update() -> None:
    fused = rl.adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-3, betas=(0.8, 0.99), eps=1e-5)
    assert fused.defaults["fused"] is True
    assert (fused.defaults["lr"], fused.defaults["betas"], fused.defaults["eps"]) == (
        1e-3, (0.8, 0.99), 1e-5)
    got = _adam_run(lambda ps: rl.adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6))
    want = _adam_run(
        lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, foreach=False)
    )
    # The same update in one kernel: equal up to float32 rounding over 10 steps (~1e-7 seen).
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_adam_falls_back_where_torch_has_no_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.Adam

    def no_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    opt = rl.adam([{"params": [torch.nn.Parameter(torch.zeros(2))]}], lr=0.1)
    assert not opt.defaults.get("fused") and opt.defaults["lr"] == 0.1
    # The fallback keeps every hyperparameter it was given.
    opt = rl.adam([torch.nn.Parameter(torch.zeros(2))], lr=0.2, betas=(0.8, 0.99), eps=1e-6)
    assert not opt.defaults.get("fused")
    hyper = (opt.defaults["lr"], opt.defaults["betas"], opt.defaults["eps"])
    assert hyper == (0.2, (0.8, 0.99), 1e-6)


# --- cases the formulas above single out (each fails for a specific wrong formula) -----------


def test_masked_mean_of_a_single_valid_token_is_that_token() -> None:
    # One valid element: the count is 1, so the mean is the element itself, exactly (a division
    # by 1). A count clamped to more than 1 (or a mask counted with padding) would shrink it.
    x = t64([[0.5, 7.0, -3.0], [2.0, 4.0, 6.0]])
    one = t64([[0, 1, 0], [0, 0, 0]])
    assert rl.masked_mean(x, one).item() == 7.0
    assert rl.masked_mean(x, one, dim=1).tolist() == [7.0, 0.0]
    assert rl.masked_mean(x, t64([[0, 1, 0], [0, 0, 1]]), dim=0).tolist() == [0.0, 7.0, 6.0]
    # The token-mean of a one-token batch is that token's loss, as GRPO's "token" mode relies on.
    assert rl.aggregate_loss(x, one, "token").item() == 7.0
    assert rl.aggregate_loss(x, one, "sequence").item() == 7.0 / 2  # (7 + empty row's 0) / 2


def test_group_advantages_with_groups_of_two() -> None:
    # G = 2, the smallest group with a std: mean (a + b) / 2, unbiased std |a − b| / √2, so
    # A = ±(|a − b| / 2) / (|a − b| / √2 + eps). Rewards (1, 3): ±1 / (√2 + eps);
    # (0.5, 0): ±0.25 / (0.5/√2 + eps). 1e-12: a few float64 operations on O(1) numbers.
    eps = 1e-4
    a = rl.group_advantages(t64([1.0, 3.0, 0.5, 0.0]), 2).tolist()
    s2 = math.sqrt(2.0)
    want = [-1 / (s2 + eps), 1 / (s2 + eps), 0.25 / (0.5 / s2 + eps), -0.25 / (0.5 / s2 + eps)]
    assert a == pytest.approx(want, abs=1e-12)
    # Dr. GRPO (no std): A = r − mean, ±half the gap.
    drgrpo = rl.group_advantages(t64([1.0, 3.0, 0.5, 0.0]), 2, scale_std=False).tolist()
    assert drgrpo == pytest.approx([-1.0, 1.0, 0.25, -0.25], abs=1e-12)
    # Integer rewards are promoted to the default float dtype (not integer-divided).
    ints = rl.group_advantages(torch.tensor([1, 3]), 2, scale_std=False)
    assert ints.dtype == torch.get_default_dtype() and ints.tolist() == [-1.0, 1.0]


def _params_with_grads(*grads: list[float]) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g), dtype=F64))
        p.grad = t64(g)
        params.append(p)
    return params


@pytest.mark.parametrize("without_get_total_norm", [False, True])
def test_clip_grad_norm_clips_and_returns_the_norm_before(
    monkeypatch: pytest.MonkeyPatch, without_get_total_norm: bool
) -> None:
    if without_get_total_norm:  # torch before 2.6: the clip_grad_norm_ path measures as well
        monkeypatch.delattr(torch.nn.utils, "get_total_norm")
    # Gradients (3) and (4, 0): global norm 5. A parameter without a gradient is skipped.
    params = [*_params_with_grads([3.0], [4.0, 0.0]), torch.nn.Parameter(torch.zeros(2))]
    norm = rl.clip_grad_norm(params, 1.0)
    assert norm.item() == pytest.approx(5.0, abs=1e-12)
    # Clipped to norm 1: scaled by 1 / (5 + 1e-6) (torch's clip coefficient), so (0.6, 0.8);
    # 1e-6 relative is torch's own epsilon in the coefficient.
    assert params[0].grad.tolist() == pytest.approx([0.6], rel=1e-6)
    assert params[1].grad.tolist() == pytest.approx([0.8, 0.0], rel=1e-6)
    assert params[2].grad is None

    # A limit above the norm, None and inf leave the gradients exactly as they were.
    for limit in (10.0, None, math.inf):
        params = [*_params_with_grads([3.0], [4.0, 0.0]), torch.nn.Parameter(torch.zeros(2))]
        norm = rl.clip_grad_norm(params, limit)
        assert norm.item() == pytest.approx(5.0, abs=1e-12)
        assert [p.grad.tolist() for p in params[:2]] == [[3.0], [4.0, 0.0]]
        assert params[2].grad is None
    # Without a finite limit the gradients are only read, not multiplied by 1 in place (one pass
    # over them fewer): their version counters do not move. (Before torch 2.6 they are.)
    if not without_get_total_norm:
        params = _params_with_grads([3.0], [4.0, 0.0])
        versions = [p.grad._version for p in params]
        rl.clip_grad_norm(params, None)
        rl.clip_grad_norm(params, math.inf)
        assert [p.grad._version for p in params] == versions


def test_group_advantages_edges_of_the_argument_checks() -> None:
    # One reward per group is fine with the batch std (n = 2 here), or without any std.
    assert rl.group_advantages(t64([1.0, 3.0]), 1, std_over="batch").tolist() == [0.0, 0.0]
    assert rl.group_advantages(t64([5.0]), 1, scale_std=False).tolist() == [0.0]
    # No rewards at all, or a group size that is not an int (a bool is not a size either).
    with pytest.raises(ValueError, match=r"^the number of rewards \(0\) must be a positive"):
        rl.group_advantages(t64([]), 1, scale_std=False)
    for bad in (True, 2.0):
        with pytest.raises(ValueError, match=r"^group_size must be a positive int, got "):
            rl.group_advantages(t64([1.0, 2.0]), bad)  # type: ignore[arg-type]
    # The message names both ways out.
    with pytest.raises(
        ValueError,
        match=r"^the unbiased std over the group needs at least 2 rewards; "
        r"use group_size >= 2 or scale_std=False$",
    ):
        rl.group_advantages(t64([1.0, 2.0]), 1)


def test_kl_estimators_check_shapes_even_where_they_would_broadcast() -> None:
    logp, ref = t64([-1.0, -0.5, -2.0]), t64([-1.0])
    for fn in (rl.kl_k1, rl.kl_k2, rl.kl_k3):
        for a, b in ((logp, ref), (ref, logp)):
            with pytest.raises(ValueError, match=r"^shapes must match, got logp \(\d,\), ref_logp"):
                fn(a, b)


def test_aggregate_loss_accepts_a_constant_below_one() -> None:
    # Any positive normaliser is valid, 0.5 included: Σ m L / (B · 0.5) = 7 / 1 (1e-12: exact).
    loss = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t64([[1, 1, 0], [1, 0, 0]])
    got = rl.aggregate_loss(loss, mask, "constant", constant=0.5).item()
    assert got == pytest.approx(7.0, abs=1e-12)


def test_logprobs_gradient_and_logsumexp_match_autograd_of_log_softmax() -> None:
    gen = torch.Generator().manual_seed(19)
    logits = (torch.randn(2, 3, 7, generator=gen, dtype=F64) * 3).requires_grad_(True)
    labels = torch.randint(0, 7, (2, 3), generator=gen)
    weights = torch.randn(2, 3, generator=gen, dtype=F64)  # a gradient other than ones
    logp, lse = rl.logprobs_and_logsumexp(logits, labels)
    assert not lse.requires_grad
    # 1e-12: a logsumexp of O(10) numbers in float64, a few ulp apart between implementations.
    assert torch.allclose(lse, torch.logsumexp(logits.detach(), -1), rtol=0, atol=1e-12)
    (logp * weights).sum().backward()
    got = logits.grad.clone()
    logits.grad = None
    want_logp = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    (want_logp * weights).sum().backward()
    assert torch.allclose(got, logits.grad, rtol=0, atol=1e-12)
    # Each row of the gradient sums to 0 (softmax's probabilities sum to 1, the label adds 1).
    assert got.sum(-1).abs().max().item() < 1e-12


def test_argument_checks_and_their_messages() -> None:
    """Each check fails with a message that names the argument, what it got and what it needs;
    values at the edge of what is allowed pass."""

    def raises(message: str):
        return pytest.raises(ValueError, match="^" + re.escape(message) + "$")

    x3, x1 = t64([1.0, 2.0, 3.0]), t64([1.0])
    x23 = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with raises("mask must have the same shape as the values, got (2,) for values of shape (3,)"):
        rl.masked_sum(x3, t64([1, 1]))
    # masked_var: two valid elements (unbiased) or one (biased) are enough.
    assert rl.masked_var(x3, t64([1, 0, 1])).item() == pytest.approx(2.0, abs=1e-12)
    assert rl.masked_var(x3, t64([0, 1, 0]), unbiased=False).item() == 0.0
    with raises("masked_var needs at least 2 valid element(s) (unbiased=True), got 1"):
        rl.masked_var(x3, t64([0, 1, 0]))
    with raises("masked_var needs at least 1 valid element(s) (unbiased=False), got 0"):
        rl.masked_var(x3, t64([0, 0, 0]), unbiased=False)
    with raises("kind must be 'k1', 'k2' or 'k3', got 'k4'"):
        rl.kl_estimate(x3, x3, "k4")  # type: ignore[arg-type]

    # gae: [B, T] inputs of one shape.
    with raises("rewards must be [B, T], got shape (3,)"):
        rl.gae(x3, x3, x3, 1.0, 1.0)
    for args, listed in (
        ((x23[:, :2], x23, x23), "rewards (2, 2), values (2, 3), mask (2, 3)"),
        ((x23, x23[:, :2], x23), "rewards (2, 3), values (2, 2), mask (2, 3)"),
        ((x23, x23, x23[:, :2]), "rewards (2, 3), values (2, 3), mask (2, 2)"),
    ):
        with raises(f"shapes must match, got {listed}"):
            rl.gae(*args, 1.0, 1.0)
    with raises("std_over must be 'group' or 'batch', got 'global'"):
        rl.group_advantages(x3, 3, std_over="global")  # type: ignore[arg-type]

    # clipped_surrogate: 0 ≤ ε_low < 1, ε_high ≥ 0; ε = 0 clips every ratio but 1.
    logp = t64([math.log(1.5), 0.0])
    zero = torch.zeros(2, dtype=F64)
    loss, _, clipped = rl.clipped_surrogate(logp, zero, t64([1.0, 1.0]), 0.0)
    assert loss.tolist() == pytest.approx([-1.0, -1.0], abs=1e-12)
    assert clipped.tolist() == [True, False]
    loss, _, clipped = rl.clipped_surrogate(logp, zero, t64([1.0, 1.0]), 0.2, eps_high=0.0)
    assert loss.tolist() == pytest.approx([-1.0, -1.0], abs=1e-12)
    with raises("eps_low must be in [0, 1), got 1.0"):
        rl.clipped_surrogate(logp, zero, zero, 1.0)
    with raises("eps_low must be in [0, 1), got -0.1"):
        rl.clipped_surrogate(logp, zero, zero, -0.1)
    with raises("eps_high must be >= 0, got -0.1"):
        rl.clipped_surrogate(logp, zero, zero, 0.2, eps_high=-0.1)
    with raises("shapes must match, got logp (2,), old_logp (1,)"):
        rl.clipped_surrogate(logp, x1, zero, 0.2)
    # Advantages: logp's shape, [B] or [B, 1] for a [B, T] logp; nothing else.
    lp23 = torch.zeros(2, 3, dtype=F64)
    by_row = rl.clipped_surrogate(lp23, lp23, t64([[1.0], [-2.0]]), 0.2)[0]
    assert by_row.tolist() == [[-1.0] * 3, [2.0] * 3]
    with raises("advantages must have shape (2, 3) or [B] for a [B, T] logp, got (3,)"):
        rl.clipped_surrogate(lp23, lp23, x3, 0.2)
    with raises("advantages must have shape (3,) or [B] for a [B, T] logp, got (1,)"):
        rl.clipped_surrogate(x3, x3, x1, 0.2)

    # clipped_value_loss: c = 0 keeps V_old; every input of one shape.
    loss, clipped = rl.clipped_value_loss(t64([1.0]), t64([0.0]), t64([2.0]), 0.0)
    assert loss.tolist() == [2.0] and clipped.tolist() == [True]  # ½ max(1², 2²)
    with raises("clip_range must be >= 0, got -0.1"):
        rl.clipped_value_loss(x3, x3, x3, -0.1)
    for args, listed in (
        ((x1, x3, x3), "values (1,), old_values (3,), returns (3,)"),
        ((x3, x1, x3), "values (3,), old_values (1,), returns (3,)"),
        ((x3, x3, x1), "values (3,), old_values (3,), returns (1,)"),
    ):
        with raises(f"shapes must match, got {listed}"):
            rl.clipped_value_loss(*args, 0.2)

    # aggregate_loss
    mask = torch.ones_like(x23)
    with raises("loss_per_token must be [B, T], got shape (3,)"):
        rl.aggregate_loss(x3, x3, "token")
    with raises("mode 'constant' needs a positive constant, got None"):
        rl.aggregate_loss(x23, mask, "constant")
    with raises("mode 'constant' needs a positive constant, got -1.0"):
        rl.aggregate_loss(x23, mask, "constant", constant=-1.0)
    with raises("constant is only used with mode 'constant', not 'sequence'"):
        rl.aggregate_loss(x23, mask, "sequence", constant=4)
    with raises("mode must be 'sequence', 'token' or 'constant', got 'mean'"):
        rl.aggregate_loss(x23, mask, "mean")  # type: ignore[arg-type]

    with raises("labels must have shape (2, 3) for logits of shape (2, 3, 4), got (3,)"):
        rl.logprobs_from_logits(torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))


def test_clipped_surrogate_scales_the_clipped_term_by_the_advantage() -> None:
    # Clip active with |A| ≠ 1, on both sides, with decoupled ε (0.2 low, 0.3 high):
    #   ρ = 1.5, A = 2:     min(3.0, 1.3 · 2 = 2.6)          → loss −2.6, clipped
    #   ρ = 0.5, A = −0.5:  min(−0.25, 0.8 · −0.5 = −0.4)    → loss 0.4, clipped
    #   ρ = 1.1, A = −3:    min(−3.3, 1.1 · −3)              → loss 3.3, not clipped
    # 1e-12: exp/log round trips in float64.
    logp = t64([math.log(1.5), math.log(0.5), math.log(1.1)])
    loss, ratio, clipped = rl.clipped_surrogate(
        logp, torch.zeros(3, dtype=F64), t64([2.0, -0.5, -3.0]), 0.2, eps_high=0.3
    )
    assert loss.tolist() == pytest.approx([-2.6, 0.4, 3.3], abs=1e-12)
    assert ratio.tolist() == pytest.approx([1.5, 0.5, 1.1], abs=1e-12)
    assert clipped.tolist() == [True, True, False]


def test_gae_computes_in_the_dtype_of_the_values() -> None:
    # float64 rewards (a tabular reward) with a float32 critic: advantages and returns are
    # float32, and equal the float64 computation to float32 rounding (~1e-7 on O(1) numbers).
    rewards, values = t64([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = rl.gae(rewards, values, torch.ones(1, 3), 1.0, 0.95)
    assert adv.dtype == ret.dtype == torch.float32
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0], abs=1e-6)
