"""The algorithm interface: what a policy-optimisation plugin implements.

An algorithm is a small class. It declares a ``Config`` dataclass (every field documented,
defaults citing their source), what it ``needs`` from the suite (:data:`NEEDS`) — ``"reward"``
(online methods: they sample from the policy and score with the learned reward model r̂) or
``"preferences"`` (offline methods: they learn from the preference pairs directly), and for
offline methods that need data of a particular kind, ``"unpaired"`` or ``"label_noise"`` — and
implements :meth:`step`,
one update, returning its metrics. The runner owns everything else: building the context, the
loop and the budget, evaluation, compute accounting, divergence checks and failure capture.

Metric vocabulary: every algorithm reports, where they apply, the shared names of
:data:`harness.metrics.VOCABULARY` with exactly their meaning and unit — ``loss``,
``grad_norm``, ``kl_ref`` (the k1 estimate of the sequence-level KL(π‖π_ref) on the step's
samples, nats per response), ``entropy`` (mean per-token entropy of π), ``response_length``,
``reward`` (mean r̂ of the step's samples, online methods), ``logp_chosen`` / ``logp_rejected``
(mean *sequence* log-probs of the pairs, offline methods), ``reward_accuracy``,
``learning_rate``; then its own, prefixed by nothing and documented in :attr:`Algorithm.metrics`
(e.g. ``clip_frac``, ``value_loss``, ``reward_margin``). The conformance kit checks the shared
ones against their definitions.

Validating a config: a check that involves a field's value (a range, two fields that must
agree) belongs in ``Config.__post_init__``, raising :class:`ValueError` (or :class:`TypeError`)
with a message that names the field. ``rlhf-harness validate`` then reports it as one line naming
the suite file, the line and the key, before anything runs; a check in the algorithm's
``__init__`` is only seen when a run starts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from harness.compute import ComputeMeter

if TYPE_CHECKING:
    from harness.data import PreferenceBatches, UnpairedExamples
    from harness.exact import ExactProblem
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
POLICY_KINDS = ("tabular", "neural")


def policy_kind(task_kind: str) -> str:
    """The policy kind of a task's kind: ``"tabular"`` for ``tabular`` tasks, else
    ``"neural"`` (a language model)."""
    return "tabular" if task_kind == "tabular" else "neural"
"""The keys of :attr:`Algorithm.suggested`: the kinds of policy the built-in tasks have."""


def declared_metrics(cls: type) -> dict[str, str]:
    """The metric meanings ``cls`` declares (:attr:`Algorithm.metrics`), as plain strings."""
    declared = getattr(cls, "metrics", None)
    if not isinstance(declared, dict):
        return {}
    return {str(k): " ".join(str(v).split()) for k, v in declared.items()}


@dataclass
class RunContext:
    """What the runner hands an algorithm: the models, the data, the RNG and the meter."""

    task: Task
    """The task: ``train_prompts`` (a :class:`~harness.policy.PromptBatch`), ``max_new_tokens``,
    ``pad_id``, and its gold reward (which algorithms must not read: they learn from r̂ or the
    preference pairs)."""
    policy: Policy
    """The policy being trained, initialised to π_ref."""
    reference: Policy
    """π_ref, frozen (no gradients, eval mode)."""
    generator: torch.Generator
    """The run's random stream for sampling and shuffling (on the policy's device)."""
    meter: ComputeMeter
    """Where the step's compute is counted: samples, tokens, FLOPs and seconds per phase."""
    seed: int
    """The run's seed (``generator`` is seeded with it; seed other generators from it)."""
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
        """The policy's device: create new tensors there."""
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
        """The next ``size`` indices ([size] long, on ``device``), starting a new pass as needed."""
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


class LazyRows:
    """Values of a frozen model on a dataset's rows, each row computed the first time a batch
    holds it, then kept: e.g. an offline method's log π_ref(y⁺|x) and log π_ref(y⁻|x).

    The values are those of computing every row up front (TRL's ``precompute_ref_log_probs``)
    or in every batch (TRL's default), but a run pays for the rows it uses once: a budget of a
    tenth of the data costs a tenth of the pass.

    :param n: the number of rows.
    :param compute: ``rows ([k] long) -> tuple of [k] tensors``, called without gradients on
        the rows not yet known (each once, in ascending order).
    """

    def __init__(
        self, n: int, compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    ) -> None:
        self.n, self.compute = n, compute
        self._known: torch.Tensor | None = None
        self._values: tuple[torch.Tensor, ...] = ()

    @classmethod
    def reference(cls, data: PreferenceBatches | UnpairedExamples, ctx: RunContext) -> LazyRows:
        """π_ref's sequence log-probs of ``data``'s rows — (log π_ref(y⁺|x), log π_ref(y⁻|x)) of
        pairs, (log π_ref(y|x),) of unpaired examples — each computed in the meter's ``"score"``
        phase and counted as a forward pass of π_ref."""
        from harness.data import PreferenceBatches

        def compute(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            part = data.select(rows)
            with ctx.meter.phase("score"):
                out = part.sequence_logprobs(ctx.reference, chunk=len(part))
            if isinstance(part, PreferenceBatches):
                tokens = part.chosen.mask.sum() + part.rejected.mask.sum()
            else:
                tokens = part.responses.mask.sum()
            ctx.meter.forward(ctx.reference, int(tokens))
            return out if isinstance(out, tuple) else (out,)

        return cls(len(data), compute)

    @property
    def computed(self) -> int:
        """How many rows have been computed so far."""
        return 0 if self._known is None else int(self._known.sum())

    def __call__(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The values of ``rows`` ([k] long), computing the ones not yet known."""
        if self._known is None:
            self._known = torch.zeros(self.n, dtype=torch.bool, device=rows.device)
        missing = torch.unique(rows[~self._known[rows]])
        if len(missing):
            with torch.no_grad():
                new = self.compute(missing)
            if not self._values:
                self._values = tuple(torch.full((self.n,), math.nan, dtype=v.dtype,
                                                device=v.device) for v in new)
            for store, v in zip(self._values, new, strict=True):
                store[missing] = v
            self._known[missing] = True
        return tuple(v[rows] for v in self._values)


class Algorithm(ABC):
    """Base class of policy-optimisation algorithms; see the module docstring."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    needs: ClassVar[frozenset[str]] = frozenset()
    label_noise_key: ClassVar[str | None] = None
    """For an algorithm that needs ``"label_noise"``: the ``Config`` field that, when set (not
    None), gives the noise rate ε itself, so that the suite need not know it (``rlhf-harness
    validate`` reads it)."""
    suggested: ClassVar[dict[str, dict[str, Any]]] = {}
    """Settings that work on the built-in tasks, by policy kind: ``"tabular"`` (the ``bandit``
    and ``token`` tasks, a table of logits) and ``"neural"`` (``tiny-lm``, ``hf``), e.g.
    ``{"tabular": {"learning_rate": 0.05}, "neural": {"learning_rate": 1e-3}}``. ``Config``'s
    defaults stay the paper's; these are what a suite on the harness's own tasks should start
    from. ``rlhf-harness show NAME`` prints them; nothing applies them automatically."""
    trains_critic: ClassVar[bool] = False
    """Whether it trains a critic of its own (PPO's value model, from
    ``task.make_value_model``): the memory plan (:mod:`harness.engine.memory`) counts one more
    trainable model of r̂'s shape."""
    supports_lora: ClassVar[bool] = True
    """Whether it runs with a LoRA policy (a suite's ``policy.lora``, :mod:`harness.models.lora`):
    the policy's base weights frozen (``requires_grad`` False), only its adapters trainable, and
    π_ref the policy's own model with the adapters off. An algorithm that optimises
    ``[p for p in policy.parameters() if p.requires_grad]`` needs nothing more; one that cannot
    (e.g. it copies or reinitialises the policy's weights) sets this False, and a suite that asks
    for LoRA with it is refused by ``validate``."""
    metrics: ClassVar[dict[str, str]] = {}
    """What each metric of the algorithm's own means, by name, e.g. ``{"clip_frac": "fraction
    of tokens whose ratio was clipped"}``. Shared names (:data:`harness.metrics.VOCABULARY`)
    need no entry. A report that shows two algorithms using one name with different meanings
    names each ``ALGORITHM:NAME``."""

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

    def fixed_point(self, exact: ExactProblem) -> torch.Tensor | None:
        """On a task whose responses can be enumerated, the ``[P, N]`` log-probs of the policy
        this algorithm's expected update converges to (with the gold reward r* as its reward),
        when that is not the Gibbs policy π*_β of the KL-regularised objective J_β; ``None``
        (the default) when it is, or is not known. ``exact`` (an
        :class:`~harness.exact.ExactProblem`) holds π_ref's log-probs and r* for every prompt ×
        response, and ``exact.beta``, the evaluation's β: an algorithm whose target is π*_γ for
        its own γ returns None when γ equals ``exact.beta`` and ``exact.optimal_logprobs(γ)``
        otherwise. The runner records the regret of this policy, and reports split an
        algorithm's regret into the part its objective causes and the part its optimisation
        leaves."""
        del exact
        return None

    def models_resident(self) -> int:
        """How many models this algorithm keeps in memory (policy, reference, reward, critic)."""
        count = 2  # policy and reference
        if "reward" in self.needs:
            count += 1
        return count

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The search space a suite's ``tuning:`` section uses unless it gives its own.

        :param policy_kind: ``"tabular"`` (a table of logits) or ``"neural"`` (a language
            model), as in :attr:`suggested`: learning rates that suit one do not suit the other.
        :returns: ``{field: {"low", "high", "log", "int"} | {"choices": [...]}}``, each field one
            of ``Config``'s; ``{}`` (the default) means the plugin declares none, and a suite that
            tunes it must give ``tuning.space``. The ranges also bound what ``validate`` calls a
            plausible learning rate.
        """
        return {}
