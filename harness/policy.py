"""The policy interface every algorithm uses, whatever the task.

A task's prompts and responses are token sequences. For a bandit a prompt is one token (its
index) and a response one token (the chosen arm); for the token task responses are a few tokens
over a tiny vocabulary; for language-model tasks they are real token ids. So one interface serves
all of them:

- :class:`PromptBatch` — prompts, left-padded: ``ids[B, Lp]``, ``mask[B, Lp]``, and ``index[B]``,
  each prompt's position in its task's prompt set.
- :class:`ResponseBatch` — responses, right-padded: ``tokens[B, T]``, ``mask[B, T]`` (True on
  response tokens, EOS included when generated), the behaviour policy's per-token log-probs at
  sampling time, and whether each response ended with EOS.
- :class:`Policy` — a ``torch.nn.Module`` that samples responses in batches and returns the logits
  of given responses, from which :meth:`Policy.token_logprobs` (padding masked to 0) and
  :meth:`Policy.sequence_logprobs` (their sum) follow.
- :class:`ValueModel` — per-token scalar estimates (a critic), for algorithms that ask for one.
- :class:`RewardModel` — one scalar per response, r̂(x, y): the proxy reward online algorithms
  optimise (fitted, and imported, in :mod:`harness.reward`; defined here, beside the critic, so
  that the task interface can name it without depending on the fitting).
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from harness.rl import logprobs_and_logsumexp


def _map_tensors(obj, fn):
    """Apply ``fn`` to every tensor field of a dataclass instance (None fields are kept)."""
    return replace(
        obj,
        **{
            f.name: fn(getattr(obj, f.name))
            for f in fields(obj)
            if isinstance(getattr(obj, f.name), torch.Tensor)
        },
    )


@dataclass
class PromptBatch:
    """A batch of prompts, left-padded so that every prompt ends at the last column."""

    index: torch.Tensor
    """[B] long: each prompt's position in its task's prompt set (train or eval split)."""
    ids: torch.Tensor
    """[B, Lp] long: token ids, left-padded with the policy's ``pad_id``."""
    mask: torch.Tensor
    """[B, Lp] bool: True on real prompt tokens."""

    def __len__(self) -> int:
        """B, the number of prompts."""
        return int(self.index.shape[0])

    def to(self, device: torch.device | str) -> PromptBatch:
        """The same prompts on ``device``."""
        return _map_tensors(self, lambda t: t.to(device))

    def select(self, rows: torch.Tensor | slice | list[int]) -> PromptBatch:
        """The prompts at ``rows``."""
        return _map_tensors(self, lambda t: t[rows])

    def repeat_interleave(self, n: int) -> PromptBatch:
        """Each prompt ``n`` times in a row: [p0, p0, ..., p1, p1, ...] (groups of size n)."""
        return _map_tensors(self, lambda t: t.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(batches: list[PromptBatch], pad_id: int = 0) -> PromptBatch:
        """Stack prompt batches, left-padding narrower ones to the widest."""
        width = max(b.ids.shape[1] for b in batches)
        return PromptBatch(
            index=torch.cat([b.index for b in batches]),
            ids=torch.cat([_pad(b.ids, width, pad_id, left=True) for b in batches]),
            mask=torch.cat([_pad(b.mask, width, False, left=True) for b in batches]),
        )


@dataclass
class ResponseBatch:
    """A batch of responses, right-padded, aligned row by row with a :class:`PromptBatch`."""

    tokens: torch.Tensor
    """[B, T] long: response token ids, right-padded with the policy's ``pad_id``."""
    mask: torch.Tensor
    """[B, T] bool: True on response tokens (EOS included when it was generated)."""
    logprobs: torch.Tensor | None = None
    """[B, T] float: per-token log-probs under the sampling policy (0 on padding), if known.
    :meth:`Policy.sample` of the built-in tabular and language-model policies fills it (the
    distribution sampled from, temperature applied, without gradient); responses not sampled by a
    policy — preference pairs, ``Task.enumerate_responses()``, a ``cat`` of batches one of which
    lacks it — have None. An algorithm that needs them under π_θ recomputes them
    (:meth:`Policy.token_logprobs`)."""
    finished: torch.Tensor | None = None
    """[B] bool: the response ended with EOS (False when cut at the maximum length)."""

    def __len__(self) -> int:
        """B, the number of responses."""
        return int(self.tokens.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """[B] long: number of response tokens."""
        return self.mask.sum(-1)

    def to(self, device: torch.device | str) -> ResponseBatch:
        """The same responses on ``device``."""
        return _map_tensors(self, lambda t: t.to(device))

    def select(self, rows: torch.Tensor | slice | list[int]) -> ResponseBatch:
        """The responses at ``rows``."""
        return _map_tensors(self, lambda t: t[rows])

    @staticmethod
    def cat(batches: list[ResponseBatch], pad_id: int = 0) -> ResponseBatch:
        """Stack response batches, right-padding shorter ones to the longest.

        ``logprobs`` and ``finished`` are kept only when every batch has them.
        """
        width = max(b.tokens.shape[1] for b in batches)
        logprobs = finished = None
        if all(b.logprobs is not None for b in batches):
            logprobs = torch.cat([_pad(b.logprobs, width, 0.0) for b in batches])
        if all(b.finished is not None for b in batches):
            finished = torch.cat([b.finished for b in batches])
        return ResponseBatch(
            tokens=torch.cat([_pad(b.tokens, width, pad_id) for b in batches]),
            mask=torch.cat([_pad(b.mask, width, False) for b in batches]),
            logprobs=logprobs,
            finished=finished,
        )


def pad_token_lists(
    seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L]`` long ids and a bool mask from B token lists, padded on the left (prompts) or
    the right (responses), without a Python loop over tokens. ``L`` is at least 1."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = max(int(lengths.max()) if len(seqs) else 0, 1)
    positions = torch.arange(width).expand(len(seqs), width)
    if left:
        mask = positions >= (width - lengths).unsqueeze(1)
    else:
        mask = positions < lengths.unsqueeze(1)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    # The mask's row-major order is the order of the concatenated lists.
    ids[mask] = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)
    return ids, mask


def _pad(t: torch.Tensor, width: int, value: float | bool, left: bool = False) -> torch.Tensor:
    """Pad the last dimension of a [B, L] tensor to ``width`` with ``value``."""
    extra = width - t.shape[1]
    if extra == 0:
        return t
    fill = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


class Policy(nn.Module, ABC):
    """A stochastic policy π(y | x) over token sequences. Subclasses implement two methods.

    **Repeated prompts.** The language-model policy (:class:`harness.models.lm.LMPolicy`) computes a
    prompt that occurs in several rows of *one call* once (rows with equal ids and mask, anywhere
    in the batch: they need not be adjacent) and repeats its KV cache to its rows; results equal
    one forward per row up to float rounding. Put a group of samples, or a pair's chosen and
    rejected responses, in one call to get this; separate calls compute the prompt each time.
    """

    vocab_size: int
    """V: the number of token ids (the last dimension of :meth:`logits`)."""
    pad_id: int
    """The id that pads prompts (on the left) and responses (on the right)."""
    eos_id: int | None
    """The end-of-sequence id (sampling stops a row after it); None: responses have a fixed
    length."""
    has_logprobs: bool = True
    """Whether π's log-probs can be computed (:meth:`token_logprobs` and the rest). False for a
    policy defined by a sampling procedure whose likelihood is intractable — best-of-n on a
    language model: evaluators then skip what needs log-probs (``entropy``) and take the KL from
    :meth:`kl_to_reference`."""

    def kl_to_reference(self) -> float | None:
        """KL(π(·|x) ‖ π_ref(·|x)) in closed form (the same for every prompt), for a policy whose
        log-probs are intractable (see :attr:`has_logprobs`); None (the default) when unknown."""
        return None

    @abstractmethod
    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T, V] logits whose row t predicts ``responses.tokens[:, t]`` (teacher forcing)."""

    @abstractmethod
    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        """Draw one response per prompt (repeat prompts for several), with per-token log-probs.

        The returned ``logprobs`` are those of the distribution actually sampled from (with the
        temperature applied), computed without gradient.
        """

    def token_logprobs(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T] log π(y_t | x, y_<t) over response tokens; 0 on padding."""
        return self.token_logprobs_and_entropy(prompts, responses, entropy=False)[0]

    def sequence_logprobs(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] log π(y | x) = Σ_t log π(y_t | x, y_<t)."""
        return self.token_logprobs(prompts, responses).sum(-1)

    def token_logprobs_and_entropy(
        self,
        prompts: PromptBatch,
        responses: ResponseBatch,
        *,
        entropy: bool = True,
        entropy_grad: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs and (optionally) per-token entropies, both 0 on padding.

        One forward pass serves both. The log-probs z_y − logsumexp(z) are gathered without a
        log-softmax copy, their gradient built in one ``[B, T, V]`` buffer
        (:func:`harness.rl.logprobs_and_logsumexp`). The entropy H_t = logsumexp(z) −
        Σ softmax(z)·z is a metric, computed without gradient unless ``entropy_grad`` (e.g. for
        an entropy bonus).
        """
        logits = self.logits(prompts, responses)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # log-softmax in at least float32
        logp, norm = logprobs_and_logsumexp(logits, responses.tokens)
        logp = logp.masked_fill(~responses.mask, 0.0)
        ent = None
        if entropy:
            grad = entropy_grad and torch.is_grad_enabled()
            with torch.set_grad_enabled(grad):
                probs = torch.softmax(logits, dim=-1)
                if grad:  # the bonus's gradient flows through logsumexp too
                    norm = torch.logsumexp(logits, dim=-1)
                    weighted = (probs * logits).sum(-1)
                else:  # a metric: no copy of the [B, T, V] product
                    weighted = probs.mul_(logits).sum(-1)
                ent = (norm - weighted).masked_fill(~responses.mask, 0.0)
        return logp, ent

    def frozen_copy(self) -> Policy:
        """A deep copy with gradients off, in eval mode (e.g. the reference policy π_ref)."""
        ref = copy.deepcopy(self)
        ref.requires_grad_(False)
        ref.eval()
        return ref

    @property
    def device(self) -> torch.device:
        """Where its parameters (or buffers) are; for a policy without either, where the first
        policy among its submodules runs (best-of-n over an offloaded π_ref: the run's device,
        not the host memory the weights wait in); the CPU when there is none."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        for module in self.modules():
            if module is not self and isinstance(module, Policy):
                return module.device
        return torch.device("cpu")


class ValueModel(nn.Module, ABC):
    """Per-token scalar estimates for a batch of responses (a critic).

    ``values[:, t]`` is V(x, y_<t): the value of the state *before* response token t is emitted,
    which is what :func:`harness.rl.gae` expects.
    """

    @abstractmethod
    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T] values; 0 on padding."""


class RewardModel(nn.Module, ABC):
    """r̂(x, y) for a batch: subclasses implement :meth:`forward`."""

    @abstractmethod
    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float rewards."""
