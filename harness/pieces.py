"""The pieces most algorithm plugins share, so that a plugin holds only its algorithm.

An online method (it samples from π and scores with r̂) and an offline one (it learns from the
suite's pairs or unpaired examples) set themselves up the same way: check that the context holds
what they need, move the prompts or the data to the run's device, build the optimiser named by
their config, and draw prompts or pairs in shuffled passes. :class:`OnlineAlgorithm` and
:class:`OfflineAlgorithm` do that in their constructor; a subclass adds what is its own. The
functions below are the same steps one by one, for an algorithm that needs a different
arrangement (PPO's critic shares its optimiser, best-of-n trains nothing):

- :func:`require_reward_model`, :func:`require_preferences`, :func:`require_examples` — what the
  context must hold, with the error a run reports when it does not;
- :func:`trainable_parameters`, :func:`make_optimizer`, :func:`warmup_scheduler` — the
  optimiser from ``optimizer`` / ``learning_rate`` / ``warmup_steps``;
- :func:`tempered_token_logprobs` — per-token log-probs of softmax(logits / T);
- :func:`standard_space`, :func:`log_uniform` — the default search space per policy kind;
- :func:`need` — one check of a ``Config.__post_init__``.

None of them draws from a random generator: an algorithm built from them consumes
``ctx.generator`` exactly as one that does the same steps inline (the bitwise fixture of
``tests/test_algorithm_fixture.py`` checks every shipped plugin).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from harness import rl
from harness.algorithm import Algorithm, LazyRows, RunContext, ShuffledPasses

if TYPE_CHECKING:
    from harness.data import PreferenceBatches, UnpairedExamples
    from harness.policy import Policy, PromptBatch, ResponseBatch
    from harness.reward import RewardModel

OPTIMIZERS = ("adam", "sgd", "rmsprop")
"""The optimiser names :func:`make_optimizer` builds."""

LEARNING_RATES: dict[str, tuple[float, float]] = {
    "tabular": (0.005, 0.5),
    "neural": (1e-5, 1e-2),
}
"""The learning rates the standard search space spans, per policy kind: two decades around those
that train a table of logits, three for language models (a 0.3M-parameter LM trains at 1e-3,
billion-parameter ones at 1e-5)."""


def need(ok: bool, message: str) -> None:
    """Raise :class:`ValueError` with ``message`` (which names the field) unless ``ok``: one
    check of a ``Config.__post_init__``, where ``rlhf-harness validate`` reports it."""
    if not ok:
        raise ValueError(message)


def log_uniform(low: float, high: float) -> dict[str, Any]:
    """A search-space entry drawn log-uniformly from [``low``, ``high``]."""
    return {"low": low, "high": high, "log": True}


def standard_space(policy_kind: str, **others: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The default search space of an algorithm on a policy of ``policy_kind``: the learning
    rate, log-uniform over :data:`LEARNING_RATES` of that kind (``"neural"`` for any kind but
    ``"tabular"``), then ``others`` (each a search-space entry, e.g. ``beta=log_uniform(0.01,
    1.0)``) in the order given."""
    low, high = LEARNING_RATES["tabular" if policy_kind == "tabular" else "neural"]
    return {"learning_rate": log_uniform(low, high), **others}


def require_reward_model(context: RunContext, name: str) -> RewardModel:
    """The context's frozen r̂; :class:`ValueError` ``"<name> needs a reward model"`` when the
    run has none (an online algorithm declares ``needs = {"reward"}``)."""
    if context.reward_model is None:
        raise ValueError(f"{name} needs a reward model")
    return context.reward_model


def require_preferences(context: RunContext, name: str) -> PreferenceBatches:
    """The suite's preference pairs on the run's device; :class:`ValueError` when the run has
    none (an offline algorithm declares ``needs = {"preferences"}``)."""
    if context.preferences is None:
        raise ValueError(f"{name} needs the suite's preference data")
    return context.preferences.to(context.device)


def require_examples(context: RunContext, name: str) -> UnpairedExamples:
    """The suite's data as unpaired examples on the run's device; :class:`ValueError` when the
    run has none (an algorithm declares ``needs = {"unpaired"}``)."""
    if context.examples is None:
        raise ValueError(f"{name} needs the suite's data as unpaired examples")
    return context.examples.to(context.device)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """``model``'s parameters that require a gradient, in order."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, learning_rate: float
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params`` at ``learning_rate``,
    every other setting at torch's default: ``"adam"`` (:func:`harness.rl.adam`), ``"sgd"``
    (no momentum) or ``"rmsprop"``."""
    if name == "adam":
        return rl.adam(params, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def warmup_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up of ``optimizer``'s learning rate over ``warmup_steps`` steps (the rate
    × min(1, (step + 1) / warmup_steps)), then constant; constant from the start at 0. Call its
    ``step()`` after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    )


def tempered_token_logprobs(
    policy: Policy,
    prompts: PromptBatch,
    responses: ResponseBatch,
    temperature: float,
    *,
    entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, T]`` log-probs of softmax(logits / ``temperature``) at the responses' tokens (0 on
    padding), and its per-token entropies (without gradient) if ``entropy``. At temperature 1
    they are the policy's own (:meth:`Policy.token_logprobs_and_entropy`)."""
    if temperature == 1.0:
        return policy.token_logprobs_and_entropy(prompts, responses, entropy=entropy)
    logits = policy.logits(prompts, responses).float() / temperature
    padding = ~responses.mask.bool()
    logp = rl.logprobs_from_logits(logits, responses.tokens).masked_fill(padding, 0.0)
    ent = None
    if entropy:
        with torch.no_grad():
            ent = rl.entropy_from_logits(logits).masked_fill(padding, 0.0)
    return logp, ent


class OnlineAlgorithm(Algorithm):
    """An online method's set-up: its ``Config`` has ``learning_rate`` and may have
    ``optimizer`` (see :func:`make_optimizer`; ``"adam"`` where it has none) and
    ``max_new_tokens`` (None or absent: the task's). The constructor sets

    - ``reward_model`` — r̂ (:func:`require_reward_model`); ``policy`` — the trained policy;
    - ``prompts`` — the task's train prompts on the run's device;
    - ``max_new_tokens`` — the config's, else the task's;
    - ``params`` and ``optimizer`` — the policy's trainable parameters and their optimiser;
    - ``_rows`` — prompt indices in shuffled passes (:class:`ShuffledPasses` on
      ``ctx.generator``): ``self.prompts.select(self.next_rows(n))`` draws ``n`` prompts.
    """

    needs = frozenset({"reward"})

    def __init__(self, config: Any, context: RunContext) -> None:
        super().__init__(config, context)
        self.reward_model = require_reward_model(context, self.name)
        self.policy = context.policy
        self.prompts = context.task.train_prompts.to(context.device)
        self.max_new_tokens: int = (getattr(config, "max_new_tokens", None)
                                    or context.task.max_new_tokens)
        self.params = trainable_parameters(self.policy)
        self.optimizer = make_optimizer(self.params, getattr(config, "optimizer", "adam"),
                                        config.learning_rate)
        self._rows = ShuffledPasses(len(self.prompts), context.generator, context.device)

    def next_rows(self, size: int) -> torch.Tensor:
        """The next ``size`` indices of the train prompts ([size] long, on the run's device), in
        shuffled passes drawn from ``ctx.generator`` (:meth:`ShuffledPasses.take`)."""
        return self._rows.take(size)


class OfflineAlgorithm(Algorithm):
    """An offline method's set-up: its ``Config`` has ``learning_rate`` and may have
    ``optimizer`` (see :func:`make_optimizer`; ``"adam"`` where it has none) and
    ``warmup_steps`` (0 where it has none). The constructor sets

    - ``data`` — the suite's pairs (:func:`require_preferences`), or its unpaired examples
      (:func:`require_examples`) when the class ``needs`` ``"unpaired"``, on the run's device;
    - ``policy``, ``params``, ``optimizer`` and ``scheduler`` (:func:`warmup_scheduler`);
    - ``ref`` — when :attr:`uses_reference`, π_ref's sequence log-probs of the data's rows,
      each computed the first time a batch holds it (:meth:`LazyRows.reference`);
    - ``_rows`` — row indices in shuffled passes (:class:`ShuffledPasses` on ``ctx.generator``):
      ``self.data.select(self.next_rows(batch_size))`` is the next minibatch.
    """

    needs = frozenset({"preferences"})
    uses_reference: bool = True
    """Whether the loss reads π_ref (DPO does; SimPO and ORPO do not, and get no ``ref``)."""

    def __init__(self, config: Any, context: RunContext) -> None:
        super().__init__(config, context)
        if "unpaired" in self.needs:
            self.data: Any = require_examples(context, self.name)
        else:
            self.data = require_preferences(context, self.name)
        self.policy = context.policy
        self.params = trainable_parameters(self.policy)
        self.optimizer = make_optimizer(self.params, getattr(config, "optimizer", "adam"),
                                        config.learning_rate)
        self.scheduler = warmup_scheduler(self.optimizer, getattr(config, "warmup_steps", 0))
        if self.uses_reference:
            self.ref = LazyRows.reference(self.data, context)
        self._rows = ShuffledPasses(len(self.data), context.generator, context.device)

    def next_rows(self, size: int) -> torch.Tensor:
        """The next ``size`` indices of the data's rows ([size] long, on the run's device), in
        shuffled passes drawn from ``ctx.generator`` (:meth:`ShuffledPasses.take`)."""
        return self._rows.take(size)
