"""Preference models: the probability that response a is preferred to response b, from rewards.

A preference model turns a reward difference d = r_a − r_b into P(a ≻ b). The harness uses one in
two places: the simulated annotator labels response pairs with it from the gold reward r*, and
reward learning fits r̂ by maximising its likelihood on those labels. The two may differ on
purpose (misspecification). Both built-ins depend on d alone, so P(a ≻ b) + P(b ≻ a) = 1.

- **Bradley-Terry-Luce** (``btl``), with temperature τ:   P(a ≻ b) = σ((r_a − r_b) / τ)
- **Thurstone** (``thurstone``, Case V), with noise σ:    P(a ≻ b) = Φ((r_a − r_b) / (σ√2)),
  the probability that r_a + ε_a > r_b + ε_b for independent ε ~ N(0, σ²).

Log-likelihoods use ``logsigmoid`` and ``log_ndtr``, which stay finite (with finite gradients) at
reward differences of 1e4 and beyond, in float32 and float64.

New preference models are plugins: subclass :class:`PreferenceModel`, implement
:meth:`~PreferenceModel.log_prob` (and, for speed, :meth:`~PreferenceModel.prob`), and register
the class with the ``register_preference_models`` hook.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.hookspecs import Register, hookimpl

TensorLike = torch.Tensor | float | list[float]


def _as_tensor(x: TensorLike, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    return torch.as_tensor(x, dtype=dtype)


class PreferenceModel(ABC):
    """P(a ≻ b) as a function of the two rewards; ``scale`` is the model's noise scale."""

    name: ClassVar[str] = ""
    """The name users write in suite files."""

    def __init__(self, scale: float = 1.0) -> None:
        """
        :param scale: the noise scale (τ, σ). It fixes units: r̂ fitted at scale s to labels an
            annotator made at scale a comes out as r̂ ≈ r*·s/a (only reward differences over
            the scale are identified). A suite's ``reward_model.scale`` defaults to its
            ``preferences.scale``, so that r̂ is in r*'s units and a KL weight β on r̂ aims at
            π*_β ∝ π_ref·exp(r*/β); DPO's likelihood is this one at scale 1, so its β aims at
            π_ref·exp(r*/(a·β)) (docs/reward-units.md).
        """
        ok = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
        if not (ok and math.isfinite(float(scale)) and float(scale) > 0):
            raise ConfigError(
                f"{type(self).__name__}: scale must be a positive finite number, got {scale!r}"
            )
        self.scale = float(scale)

    @abstractmethod
    def log_prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        """log P(a ≻ b), elementwise, differentiable in both rewards."""

    def prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        """P(a ≻ b), elementwise."""
        return self.log_prob(r_a, r_b).exp()

    def log_likelihood(
        self, r_chosen: TensorLike, r_rejected: TensorLike, reduction: str = "mean"
    ) -> torch.Tensor:
        """Log-likelihood of preferences ``chosen ≻ rejected`` (``mean``, ``sum`` or ``none``)."""
        ll = self.log_prob(r_chosen, r_rejected)
        if reduction == "mean":
            return ll.mean()
        if reduction == "sum":
            return ll.sum()
        if reduction == "none":
            return ll
        raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def sample(
        self, r_a: TensorLike, r_b: TensorLike, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw labels: a boolean tensor, True where the annotator prefers a to b.

        Deterministic for a given ``generator`` state (uniforms are drawn in float64 on the CPU).
        """
        p = self.prob(r_a, r_b).detach().to("cpu", torch.float64)
        u = torch.rand(p.shape, generator=generator, dtype=torch.float64)
        return u < p

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale})"


class BradleyTerry(PreferenceModel):
    """Bradley-Terry-Luce: P(a ≻ b) = σ((r_a − r_b) / τ), τ = ``scale``."""

    name = "btl"

    def log_prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        r_a = _as_tensor(r_a)
        r_b = _as_tensor(r_b, like=r_a)
        return F.logsigmoid((r_a - r_b) / self.scale)

    def prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        r_a = _as_tensor(r_a)
        r_b = _as_tensor(r_b, like=r_a)
        return torch.sigmoid((r_a - r_b) / self.scale)


class Thurstone(PreferenceModel):
    """Thurstone Case V: P(a ≻ b) = Φ((r_a − r_b) / (σ√2)), σ = ``scale``."""

    name = "thurstone"

    def _z(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        r_a = _as_tensor(r_a)
        r_b = _as_tensor(r_b, like=r_a)
        return (r_a - r_b) / (self.scale * math.sqrt(2.0))

    def log_prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        z = self._z(r_a, r_b)
        # log_ndtr's gradient loses accuracy in float32 far in the lower tail (24% off at a gap of
        # 1e4, 0 at 1e6): evaluate it in float64 and return the input's dtype.
        return torch.special.log_ndtr(z.double()).to(z.dtype)

    def prob(self, r_a: TensorLike, r_b: TensorLike) -> torch.Tensor:
        return torch.special.ndtr(self._z(r_a, r_b))


@hookimpl
def register_preference_models(register: Register) -> None:
    register(BradleyTerry.name, BradleyTerry)
    register(Thurstone.name, Thurstone)
