"""Shared RL toolkit for algorithm plugins (PPO, GRPO, DAPO, Dr. GRPO, ...): torch only, vectorised.

Conventions: per-token tensors are ``[B, T]`` (batch of sequences × response tokens) with a response
``mask`` of the same shape, 1 (or True) on valid tokens and 0 on padding. Any nonzero mask value
counts as valid. Masked statistics select with ``torch.where``, so NaN or inf in padded positions
never leaks into their values (nor, for the masked statistics, their gradients). Per-token losses
computed from a non-finite padded input can still have NaN gradients there: keep padding finite.

- **Masked statistics**: :func:`masked_sum`, :func:`masked_mean`, :func:`masked_var`,
  :func:`masked_whiten` (zero-mean, unit-variance over valid tokens; ``shift_mean=False`` keeps
  the mean, as lm-human-preferences/TRL do for rewards).
- **KL estimators** of KL(π‖π_ref) from samples of π, with log r = log π_ref − log π
  (Schulman, "Approximating KL Divergence"): :func:`kl_k1` (−log r), :func:`kl_k2`
  (½ (log r)²), :func:`kl_k3` ((r − 1) − log r), and :func:`kl_estimate` to pick one by name.
- **Advantages**: :func:`gae` (PPO, per-token rewards and values) and :func:`group_advantages`
  (GRPO: group-normalised outcome rewards; Dr. GRPO without the std; batch std as an option).
- **Losses**: :func:`clipped_surrogate` (PPO clip, decoupled ε_low/ε_high for DAPO clip-higher),
  :func:`clipped_value_loss` (PPO2 value clipping), :func:`aggregate_loss` (sequence-mean for
  GRPO, token-mean for DAPO, constant normaliser for Dr. GRPO).
- **Optimisation**: :func:`clip_grad_norm` (the global gradient norm, clipping optional),
  :func:`adam` (Adam with torch's fused kernel where it has one).
- **From logits**: :func:`logprobs_from_logits` (and :func:`logprobs_and_logsumexp`), with a
  fused gradient that needs one ``[..., V]`` buffer; :func:`entropy_from_logits`.

Advantages and returns are targets: :func:`gae` and :func:`group_advantages` return tensors
without gradient history. Every other function is differentiable where its formula is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

__all__ = [
    "adam",
    "aggregate_loss",
    "clip_grad_norm",
    "clipped_surrogate",
    "clipped_value_loss",
    "entropy_from_logits",
    "gae",
    "group_advantages",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "logprobs_and_logsumexp",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
]

KLKind = Literal["k1", "k2", "k3"]
AggregateMode = Literal["sequence", "token", "constant"]


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------


def _bool_mask(x: torch.Tensor, mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(
            f"{name} must have the same shape as the values, got {tuple(mask.shape)} "
            f"for values of shape {tuple(x.shape)}"
        )
    return mask if mask.dtype == torch.bool else mask != 0


def _zero_where_masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of the valid elements: Σ_i m_i x_i, over all elements (``dim=None``) or along ``dim``.

    ``mask`` has the shape of ``x``; padded elements are excluded even if they hold NaN or inf.
    """
    m = _bool_mask(x, mask)
    xm = _zero_where_masked(x, m)
    return xm.sum() if dim is None else xm.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of the valid elements: Σ_i m_i x_i / max(Σ_i m_i, 1).

    Over all elements when ``dim`` is None, else along ``dim``. Where there is no valid element
    (an all-zero mask, or an empty row along ``dim``) the result is 0, not NaN: the count is
    clamped to at least 1, so an empty sequence contributes nothing to a loss.
    """
    m = _bool_mask(x, mask)
    total = _zero_where_masked(x, m)
    if dim is None:
        return total.sum() / m.sum().clamp_min(1).to(x.dtype)
    return total.sum(dim=dim) / m.sum(dim=dim).clamp_min(1).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of all valid elements: Σ_i m_i (x_i − μ)² / (n − 1) (``unbiased``) or / n.

    μ = :func:`masked_mean` and n = Σ_i m_i. Raises ValueError when n < 2 (``unbiased``) or
    n < 1, where the variance is undefined. The check reads n, which synchronises with the device.
    """
    m = _bool_mask(x, mask)
    n = int(m.sum())
    if n < (2 if unbiased else 1):
        raise ValueError(
            f"masked_var needs at least {2 if unbiased else 1} valid element(s) "
            f"(unbiased={unbiased}), got {n}"
        )
    x = _zero_where_masked(x, m)  # padded NaN/inf must not reach the gradient either
    mean = masked_mean(x, m)
    sq_dev = _zero_where_masked((x - mean) ** 2, m)
    return sq_dev.sum() / (n - 1 if unbiased else n)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Whiten over the valid elements: (x − μ) / √(σ² + eps), plus μ again if not ``shift_mean``.

    μ = :func:`masked_mean`, σ² = :func:`masked_var` (unbiased), both over all valid elements.
    With ``shift_mean=False`` the result is (x − μ) / √(σ² + eps) + μ: rescaled but with the
    original mean, as ``whiten(values, shift_mean=False)`` in lm-human-preferences and TRL does for
    rewards. The output is 0 where ``mask`` is 0.
    """
    m = _bool_mask(x, mask)
    x = _zero_where_masked(x, m)  # padded NaN/inf must not reach the gradient either
    mean = masked_mean(x, m)
    var = masked_var(x, m, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_where_masked(whitened, m)


# --------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must match, got {listed}")


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = −log r = log π(x) − log π_ref(x), per token, for x ~ π.

    With log r = log π_ref − log π, E_π[k1] = KL(π‖π_ref): unbiased, but high variance and
    negative for individual samples.
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log r)², log r = log π_ref(x) − log π(x), per token, for x ~ π.

    Always ≥ 0 and low variance, but a biased estimate of KL(π‖π_ref) (the bias is small when
    π and π_ref are close: E_π[k2] is then KL up to third order).
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    log_r = ref_logp - logp
    return 0.5 * log_r**2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r − 1) − log r, r = π_ref(x) / π(x), per token, for x ~ π.

    Unbiased for KL(π‖π_ref) (E_π[r − 1] = 0) and ≥ 0 for every sample (eˣ − 1 ≥ x), with lower
    variance than k1. Computed as expm1(log r) − log r, which is accurate near r = 1.
    """
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π, log r = ``ref_logp`` − ``logp``.

    ``kind``: "k1" = −log r (unbiased), "k2" = ½ (log r)² (biased, low variance),
    "k3" = (r − 1) − log r (unbiased and ≥ 0). See :func:`kl_k1`, :func:`kl_k2`, :func:`kl_k3`.
    """
    if kind == "k1":
        return kl_k1(logp, ref_logp)
    if kind == "k2":
        return kl_k2(logp, ref_logp)
    if kind == "k3":
        return kl_k3(logp, ref_logp)
    raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded ``[B, T]`` responses.

    δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_t,

    where V_{t+1} = 0 and A_{t+1} = 0 after the last valid token (the episode terminates there).
    ``mask`` is 1 on the first len_i tokens of row i and 0 after; padded positions of ``rewards``
    and ``values`` are ignored. Returns ``(advantages, returns)``, both 0 where ``mask`` is 0 and
    without gradient history (the inputs are detached). The recursion runs backward over T and is
    vectorised over the batch.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, T], got shape {tuple(rewards.shape)}")
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    m = mask if mask.dtype == torch.bool else mask != 0
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    r = torch.where(m, rewards.detach().to(values.dtype), zero)
    v = torch.where(m, values.detach(), zero)
    seq_len = r.shape[1]
    next_value = torch.zeros_like(v[:, 0])
    next_adv = torch.zeros_like(v[:, 0])
    advs: list[torch.Tensor] = []
    for t in reversed(range(seq_len)):
        # V and A after a padded position are 0, so the last valid token sees V_{t+1} = A_{t+1} = 0.
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv = torch.where(m[:, t], delta + gamma * lam * next_adv, zero)
        advs.append(adv)
        next_value, next_adv = v[:, t], adv
    advantages = torch.stack(advs[::-1], dim=1)
    returns = torch.where(m, advantages + v, zero)
    return advantages, returns


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale_std: bool = True,
    eps: float = 1e-4,
    std_over: Literal["group", "batch"] = "group",
) -> torch.Tensor:
    """Group-relative advantages (GRPO) for rewards ``[N·G]`` in contiguous groups of G.

    Group i is ``rewards[i·G:(i+1)·G]``. With ``scale_std``:  A = (r − mean_group) / (std + eps),
    std the unbiased sample std within the group (``std_over="group"``, as GRPO/TRL) or over the
    whole batch (``std_over="batch"``). Without (Dr. GRPO):  A = r − mean_group.
    A group of equal rewards gets A = 0. Returns a ``[N·G]`` tensor without gradient history.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N*G], got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n = rewards.numel()
    if n == 0 or n % group_size != 0:
        raise ValueError(
            f"the number of rewards ({n}) must be a positive multiple of group_size ({group_size})"
        )
    if std_over not in ("group", "batch"):
        raise ValueError(f"std_over must be 'group' or 'batch', got {std_over!r}")
    if scale_std and (group_size if std_over == "group" else n) < 2:
        raise ValueError(
            f"the unbiased std over the {std_over} needs at least 2 rewards; use group_size >= 2 "
            "or scale_std=False"
        )
    r = rewards.detach()
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    grouped = r.view(n // group_size, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std:
        std = grouped.std(dim=1, keepdim=True) if std_over == "group" else r.std()
        centred = centred / (std + eps)
    return centred.reshape(n)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate, per token, as a loss to minimise.

    ρ = exp(logp − old_logp),   L = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A).

    ``eps_high`` defaults to ``eps_low`` (symmetric PPO); a larger one is DAPO's clip-higher.
    ``advantages`` has the shape of ``logp``, or is ``[B]`` for a ``[B, T]`` ``logp`` (one
    advantage per sequence, broadcast over tokens). Returns ``(loss_per_token, ratio,
    clipped_mask)``; ``clipped_mask`` is True where the clipped term is strictly the smaller one,
    i.e. where clipping zeroes the gradient (A > 0 and ρ > 1 + ε_high, or A < 0 and ρ < 1 − ε_low).
    """
    if eps_high is None:
        eps_high = eps_low
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}")
    if not eps_high >= 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high!r}")
    _check_same_shape(logp=logp, old_logp=old_logp)
    given = tuple(advantages.shape)
    if logp.dim() == 2 and advantages.dim() == 1:
        advantages = advantages[:, None]
    if advantages.shape != logp.shape and not (
        logp.dim() == 2 and advantages.shape == (logp.shape[0], 1)
    ):
        raise ValueError(
            f"advantages must have shape {tuple(logp.shape)} or [B] for a [B, T] logp, "
            f"got {given}"
        )
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    clipped_mask = clipped < unclipped
    return loss, ratio, clipped_mask


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO2/TRL clipped value loss, per token.

    V_clip = clip(V, V_old − c, V_old + c),   L = ½ max((V − R)², (V_clip − R)²).

    Returns ``(loss_per_token, clipped_mask)``; ``clipped_mask`` is True where the clipped term is
    strictly the larger one (its gradient in V is then 0).
    """
    if not clip_range >= 0.0:
        raise ValueError(f"clip_range must be >= 0, got {clip_range!r}")
    _check_same_shape(values=values, old_values=old_values, returns=returns)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * torch.maximum(loss_unclipped, loss_clipped)
    return loss, loss_clipped > loss_unclipped


def aggregate_loss(
    loss_per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: AggregateMode,
    constant: float | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss over valid tokens to a scalar.

    With m the mask and n_i = Σ_t m_it:

    - "sequence" (GRPO):  (1/B) Σ_i [Σ_t m_it L_it / max(n_i, 1)]  (an empty row contributes 0);
    - "token" (DAPO):     Σ_it m_it L_it / max(Σ_i n_i, 1);
    - "constant" (Dr. GRPO):  Σ_it m_it L_it / (B · constant), e.g. constant = max completion
      length, so every token has the same weight whatever the lengths in the batch.

    ``constant`` is required for, and only accepted with, mode "constant".
    """
    if loss_per_token.dim() != 2:
        raise ValueError(f"loss_per_token must be [B, T], got shape {tuple(loss_per_token.shape)}")
    m = _bool_mask(loss_per_token, mask)
    if mode == "constant":
        if constant is None or not constant > 0:
            raise ValueError(f"mode 'constant' needs a positive constant, got {constant!r}")
    elif mode in ("sequence", "token"):
        if constant is not None:
            raise ValueError(f"constant is only used with mode 'constant', not {mode!r}")
    else:
        raise ValueError(f"mode must be 'sequence', 'token' or 'constant', got {mode!r}")
    if mode == "sequence":
        return masked_mean(loss_per_token, m, dim=1).mean()
    if mode == "token":
        return masked_mean(loss_per_token, m)
    assert constant is not None
    return masked_sum(loss_per_token, m) / (loss_per_token.shape[0] * constant)


# --------------------------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------------------------


def adam(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel: one pass over each parameter per step.

    The update is Adam's (Kingma & Ba, 2015; no weight decay); ``fused=True`` computes it in one
    kernel per parameter instead of a dozen tensor operations, as ``transformers``' default
    optimiser (``adamw_torch_fused``) does, so results agree with the unfused update up to float
    rounding. Where torch has no fused kernel for the parameters (their device or dtype, or a
    torch before 2.4 on the CPU) it falls back to the default implementation. ``params`` is an
    iterable of parameters or of parameter groups, as for any torch optimiser.
    """
    groups = list(params)
    try:
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The global L2 norm of the parameters' gradients, after clipping it to ``max_norm``.

    ``torch.nn.utils.clip_grad_norm_``, except that ``max_norm=None`` (or inf) only measures the
    norm: the gradients are left alone rather than multiplied by 1.0, one pass over them fewer.
    The norm returned is the one before clipping, as ``clip_grad_norm_`` returns it.
    """
    params = list(params)
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if (max_norm is not None and math.isfinite(max_norm)) or get_total_norm is None:
        limit = math.inf if max_norm is None else max_norm
        return torch.nn.utils.clip_grad_norm_(params, limit)
    return get_total_norm([p.grad for p in params if p.grad is not None])


# --------------------------------------------------------------------------------------------
# From logits
# --------------------------------------------------------------------------------------------


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension, per position.

    H = −Σ_v p_v log p_v = logsumexp(z) − Σ_v p_v z_v,   p = softmax(z).

    Stable for large logits. −inf logits (masked vocabulary) count as p = 0, with finite
    gradients. Computed in the dtype of ``logits``; upcast low-precision logits for accuracy.
    """
    # -inf -> the most negative finite value: p is still exactly 0, but 0 · z stays 0, not NaN.
    z = logits.clamp_min(torch.finfo(logits.dtype).min)
    probs = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (probs * z).sum(dim=-1)


class _TokenLogProbs(torch.autograd.Function):
    """``z_y − logsumexp(z)`` over the last dimension, and ``logsumexp(z)`` (no gradient).

    The forward is the plain ``gather − logsumexp``; so is the gradient, g · (onehot(y) −
    softmax(z)), with the same floating-point operations in the same order (the values are
    those autograd computes, bit for bit). Autograd builds it from several ``[..., V]``
    tensors — the shifted logits, their exp, the product with g, the gather's zeros and the
    sum — at the start of the backward pass, when every activation of the model is still
    alive; here it is one buffer, updated in place.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor):  # type: ignore[override]
        lse = torch.logsumexp(logits, dim=-1)
        index = labels.unsqueeze(-1).long()
        logp = torch.gather(logits, -1, index).squeeze(-1) - lse
        ctx.save_for_backward(logits, index, lse)
        ctx.mark_non_differentiable(lse)
        return logp, lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_lse: torch.Tensor):  # type: ignore[override]
        logits, index, lse = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        # logsumexp's gradient −g · exp(z − lse), then the gather's +g at the label.
        grad_logits = (logits - lse.unsqueeze(-1)).exp_().mul_(-grad)
        return grad_logits.scatter_add_(-1, index, grad), None


def logprobs_and_logsumexp(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log softmax(logits)[labels], logsumexp(logits))`` over the last dimension.

    The log-probs are :func:`logprobs_from_logits`'s (differentiable); the logsumexp, which
    they are computed from, comes without gradient, for reuse (e.g. in an entropy metric).
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])} for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    logp, lse = _TokenLogProbs.apply(logits, labels)
    return logp, lse


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels] over the last dimension, without a full log-softmax copy.

    log p(y) = z_y − logsumexp(z).  ``logits`` is ``[..., V]``, ``labels`` ``[...]`` of valid
    indices in [0, V) (replace ignore-indices such as −100 before calling). Computed in the dtype
    of ``logits``; in bfloat16 the logsumexp is coarse, so upcast (per chunk) if that matters.
    Its gradient is built in one ``[..., V]`` buffer (see :func:`logprobs_and_logsumexp`).
    """
    return logprobs_and_logsumexp(logits, labels)[0]
