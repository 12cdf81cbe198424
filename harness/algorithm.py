"""The algorithm interface: what a policy-optimisation plugin implements.

An algorithm is a small class. It declares a ``Config`` dataclass (every field documented,
defaults citing their source), what it ``needs`` from the suite (:data:`NEEDS`) — ``"reward"``
(online methods: they sample from the policy and score with the learned reward model r̂) or
``"preferences"`` (offline methods: they learn from the preference pairs directly), and for
offline methods that need data of a particular kind, ``"unpaired"`` or ``"label_noise"`` — and
implements :meth:`step`,
one update, returning its metrics. The runner owns everything else: building the context, the
loop and the budget, evaluation, compute accounting, divergence checks and failure capture.

Metric vocabulary: every algorithm reports, where they apply, the shared names ``loss``,
``grad_norm``, ``kl_ref`` (an estimate of KL(π‖π_ref) on the step's data), ``entropy`` (mean
per-token entropy of π), ``response_length``, ``reward`` (mean r̂ of the step's samples, for
online methods); then its own, prefixed by nothing and documented in its module (e.g.
``clip_frac``, ``approx_kl``, ``value_loss``, ``advantage_mean``, ``reward_accuracy``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.compute import ComputeMeter

if TYPE_CHECKING:
    from harness.data import PreferenceBatches, UnpairedExamples
    from harness.policy import Policy
    from harness.reward import RewardModel
    from harness.tasks.base import Task

NEEDS = frozenset({"reward", "preferences", "unpaired", "label_noise"})
"""What an algorithm may declare it ``needs``; ``rlhf-harness validate`` refuses a suite that
cannot provide it, in one line naming the file, line and key:

``"reward"``
    the frozen reward model r̂ (``RunContext.reward_model``): online methods.
``"preferences"``
    the preference *pairs* (x, y⁺, y⁻) (``RunContext.preferences``). A suite that marks its data
    unpaired (``preferences.unpaired: true``) cannot feed them.
``"unpaired"``
    binary feedback on single responses (x, y, desirable) (``RunContext.examples``), e.g. KTO.
    Every suite feeds it: from pairs (chosen → desirable, rejected → undesirable, as TRL's
    ``unpair_preference_dataset``), or, when the suite marks its data unpaired, one example per
    pair (see :meth:`harness.data.PreferenceBatches.unpaired`).
``"label_noise"``
    the rate ε at which the data's labels were flipped (``RunContext.label_noise``), e.g. rDPO
    and cDPO. Known when the suite simulates its data (``preferences.flip_rate``); a suite that
    loads ``preferences.file`` cannot feed it unless the algorithm's config sets ε itself.
"""


@dataclass
class RunContext:
    """What the runner hands an algorithm: the models, the data, the RNG and the meter."""

    task: Task
    policy: Policy
    """The policy being trained, initialised to π_ref."""
    reference: Policy
    """π_ref, frozen (no gradients, eval mode)."""
    generator: torch.Generator
    """The run's random stream for sampling and shuffling (on the policy's device)."""
    meter: ComputeMeter
    seed: int
    reward_model: RewardModel | None = None
    """r̂, frozen; given to algorithms that need ``"reward"``."""
    preferences: PreferenceBatches | None = None
    """The suite's preference pairs as token batches; given to algorithms that need them."""
    examples: UnpairedExamples | None = None
    """The suite's data as unpaired examples; given to algorithms that need ``"unpaired"``."""
    label_noise: float | None = None
    """The known rate ε at which the data's labels were flipped (the suite's
    ``preferences.flip_rate`` when it simulates its data), None when unknown; given to
    algorithms that need ``"label_noise"``."""

    @property
    def device(self) -> torch.device:
        return self.policy.device


class ShuffledPasses:
    """Indices 0..n−1 in shuffled passes: each pass a fresh permutation from ``generator``.

    ``take(size)`` returns the next ``size`` indices, crossing into a new pass when one runs
    out — the usual minibatch order of offline methods (pairs) and of prompt sampling.
    """

    def __init__(self, n: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.generator, self.device = n, generator, device
        self._order = torch.empty(0, dtype=torch.long, device=device)
        self._cursor = 0

    def take(self, size: int) -> torch.Tensor:
        rows = []
        while size > 0:
            if self._cursor >= len(self._order):
                g = self.generator
                self._order = torch.randperm(self.n, generator=g, device=g.device).to(self.device)
                self._cursor = 0
            chunk = self._order[self._cursor : self._cursor + size]
            self._cursor += len(chunk)
            size -= len(chunk)
            rows.append(chunk)
        return torch.cat(rows)


class Algorithm(ABC):
    """Base class of policy-optimisation algorithms; see the module docstring."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    needs: ClassVar[frozenset[str]] = frozenset()
    label_noise_key: ClassVar[str | None] = None
    """For an algorithm that needs ``"label_noise"``: the ``Config`` field that, when set (not
    None), gives the noise rate ε itself, so that the suite need not know it (``rlhf-harness
    validate`` reads it)."""

    def __init__(self, config: Any, context: RunContext) -> None:
        self.config = config
        self.ctx = context
        self.finished = False
        """Set True when the algorithm has nothing more to do (e.g. best-of-n after its one
        step): the runner then stops, whatever budget is left."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """One update of the policy; returns this step's metrics (floats, by name)."""

    def eval_policy(self) -> Policy:
        """The policy the evaluators measure: ``ctx.policy`` unless the algorithm's output is
        another one (e.g. best-of-n sampling on top of π_ref)."""
        return self.ctx.policy

    def models_resident(self) -> int:
        """How many models this algorithm keeps in memory (policy, reference, reward, critic)."""
        count = 2  # policy and reference
        if "reward" in self.needs:
            count += 1
        return count

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The search space a suite's ``tuning:`` section uses unless it gives its own.

        :param policy_kind: the task's kind, ``"tabular"`` (a table of logits) or ``"lm"`` (a
            neural language model): learning rates that suit one do not suit the other.
        :returns: ``{field: {"low", "high", "log", "int"} | {"choices": [...]}}``, each field one
            of ``Config``'s; ``{}`` (the default) means the plugin declares none, and a suite that
            tunes it must give ``tuning.space``. The ranges also bound what ``validate`` calls a
            plausible learning rate.
        """
        return {}
