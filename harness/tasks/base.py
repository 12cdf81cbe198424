"""The task interface: prompts, a reference policy π_ref, and a gold reward r*(x, y).

Every task knows its true reward, so a run is judged by r*, not by the proxy r̂ an algorithm
optimises. Tasks whose responses can be enumerated (the tabular ones) also give the exact
optimum: see :meth:`Task.enumerate_responses` and :mod:`harness.exact`.

How a report scores a run is fixed by its task, never by the other algorithms of a suite: where
the task enumerates its responses, the gap closure in J_β (the share of the way from π_ref to
π*_β); otherwise the gold gain over π_ref in units of sd_ref, the standard deviation of r*(x, y)
over the eval prompts and y ~ π_ref, which the ``gold_reward`` evaluator records with every run
at its first evaluation (``gold_reward_sd``). sd_ref depends only on the task instance (its
π_ref, r* and eval prompts; the evaluation's samples are seeded by the instance), so a task
needs no code for it; a task whose π_ref has a gold reward with no spread gets no score.

A task is built from a parameter dataclass ``Params`` (every field documented) and a seed; the
same params and seed give the same prompts, π_ref and r*. New tasks are plugins: subclass
:class:`Task` and register it with the ``register_tasks`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from harness.policy import Policy, PromptBatch, ResponseBatch, RewardModel, ValueModel


class Task(ABC):
    """A benchmark task: subclasses set ``name`` and ``Params``, implement the abstract methods."""

    name: ClassVar[str] = ""
    Params: ClassVar[type]
    """Dataclass of the task's parameters, as written under ``task:`` in a suite file."""
    kind: ClassVar[str] = "tabular"
    """``"tabular"`` (responses enumerable, exact optimum known) or ``"lm"`` (a language model)."""

    def __init__(self, params: Any, *, seed: int = 0, device: str = "cpu") -> None:
        self.params = params
        self.seed = seed
        self.device = device

    # --- data ------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def train_prompts(self) -> PromptBatch:
        """All training prompts (algorithms draw batches from these)."""

    @property
    @abstractmethod
    def eval_prompts(self) -> PromptBatch:
        """All held-out evaluation prompts."""

    @property
    def pad_id(self) -> int:
        """The token id that pads this task's batches (masks, not this id, mark real tokens)."""
        return 0

    @property
    @abstractmethod
    def max_new_tokens(self) -> int:
        """The longest response a policy may generate on this task."""

    # --- models ----------------------------------------------------------------------------------

    @abstractmethod
    def reference_policy(self) -> Policy:
        """A fresh, trainable copy of π_ref (the same weights on every call)."""

    @abstractmethod
    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float: the true reward r*(x, y) of each (prompt, response) pair."""

    @abstractmethod
    def make_reward_model(self) -> RewardModel:
        """A fresh, trainable reward model r̂ suited to this task (to be fitted on preferences)."""

    @abstractmethod
    def make_value_model(self, policy: Policy) -> ValueModel:
        """A fresh, trainable value model (critic) for ``policy``'s responses."""

    # --- text ------------------------------------------------------------------------------------

    @abstractmethod
    def decode_prompts(self, prompts: PromptBatch) -> list[str]:
        """Prompts as text (the ``prompt`` column of a preference dataset)."""

    @abstractmethod
    def decode_responses(self, responses: ResponseBatch) -> list[str]:
        """Responses as text (``chosen`` / ``rejected`` columns)."""

    @abstractmethod
    def encode(self, prompts: list[str], responses: list[str]) -> tuple[PromptBatch, ResponseBatch]:
        """Inverse of decoding: a user's preference file, as token batches for this task.

        ``PromptBatch.index`` is the prompt's position in the train split when found there, and
        -1 otherwise.
        """

    # --- exact answers (tabular tasks) -----------------------------------------------------------

    def enumerate_responses(self) -> ResponseBatch | None:
        """Every possible response (the same set for each prompt), or None if not enumerable.

        Tabular tasks return all N responses; :mod:`harness.exact` then computes π*_β, J_β and KL
        exactly. Raise :class:`~harness.errors.ConfigError` naming the sizes when too large.
        """
        return None
