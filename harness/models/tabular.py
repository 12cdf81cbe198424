"""Tabular models for tasks whose responses can be enumerated (the ``bandit`` and ``token`` tasks).

A tabular task's responses live in a :class:`SequenceSpace`: sequences of at most H tokens over V
symbols (token ids ``0 .. V-1``), optionally ended by EOS (token id ``V``). With EOS, a response
is either ``s_1 .. s_L EOS`` with L < H (``finished``), or H symbols cut at the maximum length
(not finished); without EOS (the bandit: H = 1, V = K arms) every response is exactly H symbols.

Two closed-form indices, computed with vectorised torch ops (a loop over the ≤ H positions only):

- **prefix id** of y_<t (t symbols, t < H): ``offset(t) + Σ_{s<t} y_s · V^(t-1-s)``, where
  ``offset(t) = Σ_{j<t} V^j`` — prefixes ordered by length, then lexicographically. There are
  ``num_prefixes = offset(H)`` of them.
- **response id**: with EOS, a response with L symbols gets ``offset(L) + base-V(symbols)`` (the
  EOS, present iff L < H, is implied by L), so ids run over ``offset(H + 1) = Σ_{L≤H} V^L``
  responses; without EOS, ``base-V(symbols)`` over V^H responses. :meth:`SequenceSpace.enumerate`
  returns the responses in id order, so ``response_ids(enumerate()) == arange(N)``.

Models, all indexed by ``PromptBatch.index`` (a tabular prompt is its row; ``ids`` are display
only), with padding id 0 (the mask is authoritative):

- :class:`TabularPolicy` — π(a | x, y_<t) = softmax(table[x, prefix(y_<t)]), a table of logits
  ``[P, num_prefixes, A]`` (A = V + 1 with EOS, else V). It represents *every* distribution over
  the enumerated responses, so the exact optimum π*_β is reachable by gradient ascent.
- :class:`TabularRewardModel` — r̂(x, y) = table[x, response_id(y)], ``[P, N]``, zeros at start.
- :class:`TabularValueModel` — V(x, y_<t) = table[x, prefix(y_<t)], ``[P, num_prefixes]``.
- :class:`TabularTask` — the shared part of the tabular tasks (prompt splits, models, enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.errors import ConfigError
from harness.policy import Policy, PromptBatch, ResponseBatch, ValueModel
from harness.reward import RewardModel
from harness.tasks.base import Task

__all__ = [
    "SequenceSpace",
    "TabularPolicy",
    "TabularRewardModel",
    "TabularTask",
    "TabularValueModel",
    "check_eval_prompts",
    "prompt_rows",
]

PAD_ID = 0
"""Padding id of every tabular batch (a valid symbol id: masks, not this id, mark real tokens)."""


@dataclass(frozen=True)
class SequenceSpace:
    """Responses of at most ``max_len`` tokens over ``num_symbols`` symbols, optionally with EOS."""

    num_symbols: int
    """V: symbol token ids are ``0 .. V-1``."""
    max_len: int
    """H: the longest response, in tokens (EOS included)."""
    eos: bool = True
    """Whether responses may end early with EOS (token id V). Without EOS all have H tokens."""

    def __post_init__(self) -> None:
        if self.num_symbols < 1 or self.max_len < 1:
            raise ValueError(
                f"SequenceSpace needs num_symbols >= 1 and max_len >= 1, got "
                f"V={self.num_symbols}, H={self.max_len}"
            )

    @property
    def eos_id(self) -> int | None:
        return self.num_symbols if self.eos else None

    @property
    def num_actions(self) -> int:
        """A: the size of the per-step action alphabet (V symbols, plus EOS if any)."""
        return self.num_symbols + int(self.eos)

    def offset(self, length: int) -> int:
        """Σ_{j<length} V^j: the first prefix (or response) id of ``length`` symbols."""
        return sum(self.num_symbols**j for j in range(length))

    @property
    def num_prefixes(self) -> int:
        """Number of symbol prefixes y_<t with t < H (the decision points of a response)."""
        return self.offset(self.max_len)

    @property
    def num_responses(self) -> int:
        """N: number of distinct responses (Σ_{L≤H} V^L with EOS, V^H without)."""
        if self.eos:
            return self.offset(self.max_len + 1)
        return self.num_symbols**self.max_len

    # --- indices ---------------------------------------------------------------------------------

    def symbol_run(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: positions 0..t are all real tokens and symbols (the leading symbol run)."""
        is_sym = mask.bool() & (tokens >= 0) & (tokens < self.num_symbols)
        return torch.cumprod(is_sym.long(), dim=1).bool()

    def _horner(self, tokens: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """[B, min(T, H) + 1] long: column t holds base-V(y_<t) of the leading symbol run.

        Column t only counts symbols at positions s < t inside the run (where the run stops, the
        number stops growing).
        """
        batch, width = tokens.shape
        v = self.num_symbols
        num = torch.zeros(batch, dtype=torch.long, device=tokens.device)
        columns = [num]
        for t in range(min(width, self.max_len)):
            num = torch.where(run[:, t], num * v + tokens[:, t].clamp(0, v - 1), num)
            columns.append(num)
        return torch.stack(columns, dim=1)

    def prefix_ids(self, responses: ResponseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix id of y_<t at each position t, and where that position is a valid decision.

        Returns ``(ids, valid)``, both ``[B, T]``: ``valid[b, t]`` is True when token t is a real
        token (mask), t < H, and y_<t consists of symbols only (no EOS before it); ``ids`` is 0
        where not valid.
        """
        tokens, mask = responses.tokens, responses.mask.bool()
        width = tokens.shape[1]
        run = self.symbol_run(tokens, mask)
        nums = self._horner(tokens, run)  # [B, min(T, H) + 1]
        positions = torch.arange(width, device=tokens.device)
        before_ok = torch.ones_like(mask)
        before_ok[:, 1:] = run[:, :-1]
        valid = mask & before_ok & (positions < self.max_len)
        offsets = torch.tensor(
            [self.offset(t) for t in range(min(width, self.max_len))],
            dtype=torch.long,
            device=tokens.device,
        )
        ids = torch.zeros_like(tokens)
        h = min(width, self.max_len)
        ids[:, :h] = offsets + nums[:, :h]
        return torch.where(valid, ids, torch.zeros_like(ids)), valid

    def response_ids(self, responses: ResponseBatch) -> torch.Tensor:
        """[B] long: each response's id in :meth:`enumerate` order, or -1 if it is not one.

        Not a response of the space: a row that is cut short of H tokens without EOS, has tokens
        after EOS, holds ids outside ``0 .. A-1``, or whose mask is not a prefix of the row.
        """
        tokens, mask = responses.tokens, responses.mask.bool()
        width = tokens.shape[1]
        run = self.symbol_run(tokens, mask)
        n_sym = run.sum(1)  # L: leading symbols
        length = mask.sum(1)
        number = self._horner(tokens, run)[:, -1]
        full = (n_sym == self.max_len) & (length == self.max_len)
        if not self.eos:
            return torch.where(full, number, torch.full_like(number, -1))
        at = n_sym.clamp(max=width - 1).unsqueeze(1)
        eos_next = (n_sym < width) & (torch.gather(tokens, 1, at).squeeze(1) == self.eos_id)
        eos_next &= torch.gather(mask, 1, at).squeeze(1)
        ended = (n_sym < self.max_len) & eos_next & (length == n_sym + 1)
        offsets = torch.tensor(
            [self.offset(n) for n in range(self.max_len + 1)], dtype=torch.long,
            device=tokens.device,
        )
        ids = offsets[n_sym.clamp(max=self.max_len)] + number
        return torch.where(ended | full, ids, torch.full_like(ids, -1))

    def check_tokens(self, responses: ResponseBatch, valid: torch.Tensor | None = None) -> None:
        """Raise ValueError if a real token is out of range, after EOS, or at position ≥ H.

        ``valid`` is :meth:`prefix_ids`'s second output, when already computed.
        """
        tokens, mask = responses.tokens, responses.mask.bool()
        if valid is None:
            _, valid = self.prefix_ids(responses)
        bad_id = mask & ((tokens < 0) | (tokens >= self.num_actions))
        bad = bad_id | (mask & ~valid)
        if bool(bad.any()):
            row = int(bad.any(1).nonzero()[0, 0])
            raise ValueError(
                f"response row {row} is not a sequence of this space (V={self.num_symbols}, "
                f"H={self.max_len}, EOS={'yes' if self.eos else 'no'}): tokens "
                f"{tokens[row][mask[row]].tolist()}"
            )

    # --- enumeration -----------------------------------------------------------------------------

    def enumerate(self, device: torch.device | str = "cpu") -> ResponseBatch:
        """All N responses in id order, right-padded to H tokens (``finished`` True iff EOS)."""
        v, h = self.num_symbols, self.max_len
        lengths = range(h + 1) if self.eos else [h]
        tokens, masks, finished = [], [], []
        for n_sym in lengths:
            numbers = torch.arange(v**n_sym, dtype=torch.long, device=device)
            powers = v ** torch.arange(n_sym - 1, -1, -1, dtype=torch.long, device=device)
            digits = (numbers.unsqueeze(1) // powers) % v  # [V^L, L], most significant first
            rows = torch.full((len(numbers), h), PAD_ID, dtype=torch.long, device=device)
            mask = torch.zeros((len(numbers), h), dtype=torch.bool, device=device)
            rows[:, :n_sym] = digits
            mask[:, :n_sym] = True
            ends = self.eos and n_sym < h
            if ends:
                rows[:, n_sym] = v
                mask[:, n_sym] = True
            tokens.append(rows)
            masks.append(mask)
            # Without EOS a response of H symbols is complete (see TabularPolicy.sample).
            finished.append(torch.full((len(numbers),), ends or not self.eos, device=device))
        return ResponseBatch(
            tokens=torch.cat(tokens), mask=torch.cat(masks), finished=torch.cat(finished)
        )


def prompt_rows(prompts: PromptBatch, num_prompts: int) -> torch.Tensor:
    """The table rows of ``prompts`` (their ``index``), checked to be in ``0 .. P-1``."""
    index = prompts.index.long()
    if index.numel() and bool(((index < 0) | (index >= num_prompts)).any()):
        bad = index[(index < 0) | (index >= num_prompts)][0].item()
        raise ValueError(
            f"prompt index {bad} is not one of this tabular task's {num_prompts} prompts "
            f"(0 .. {num_prompts - 1}); a tabular model has no row for it"
        )
    return index


class TabularPolicy(Policy):
    """An autoregressive tabular policy: π(a | x, y_<t) = softmax(table[x, prefix_id(y_<t)]).

    :param space: the response space (V, H, EOS).
    :param init_logits: ``[P, num_prefixes, A]`` initial logits (e.g. π_ref's); copied into the
        trainable parameter :attr:`table`.
    """

    def __init__(self, space: SequenceSpace, init_logits: torch.Tensor) -> None:
        super().__init__()
        expected = (space.num_prefixes, space.num_actions)
        if init_logits.dim() != 3 or tuple(init_logits.shape[1:]) != expected:
            raise ValueError(
                f"init_logits must be [P, {expected[0]}, {expected[1]}] for this space, got "
                f"{tuple(init_logits.shape)}"
            )
        self.space = space
        self.table = nn.Parameter(init_logits.detach().clone())
        self.vocab_size = space.num_actions
        self.pad_id = PAD_ID
        self.eos_id = space.eos_id

    @property
    def num_prompts(self) -> int:
        return int(self.table.shape[0])

    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T, A]: row t is table[x, prefix_id(y_<t)] (row 0's logits at padding)."""
        ids, valid = self.space.prefix_ids(responses)
        self.space.check_tokens(responses, valid)
        rows = prompt_rows(prompts, self.num_prompts)
        return self.table[rows.unsqueeze(1), ids]

    @torch.no_grad()
    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        """Sample token by token (``torch.multinomial`` with ``generator``: deterministic).

        Logits are divided by ``temperature`` (0 means greedy: argmax, log-prob 0). A row stops
        after EOS; at ``min(max_new_tokens, H)`` tokens it is cut. ``finished`` is True for rows
        that emitted EOS and, in a space without EOS (the bandit), for complete rows of H tokens
        (there is nothing to cut: every arm is a whole response). Columns after the longest row
        are dropped.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        space = self.space
        rows = prompt_rows(prompts, self.num_prompts)
        device = self.table.device
        batch, width = len(rows), min(max_new_tokens, space.max_len)
        tokens = torch.full((batch, width), PAD_ID, dtype=torch.long, device=device)
        mask = torch.zeros((batch, width), dtype=torch.bool, device=device)
        logprobs = torch.zeros((batch, width), dtype=self.table.dtype, device=device)
        alive = torch.ones(batch, dtype=torch.bool, device=device)
        ended = torch.zeros(batch, dtype=torch.bool, device=device)
        number = torch.zeros(batch, dtype=torch.long, device=device)
        used = 0
        for t in range(width):
            logits = self.table[rows, space.offset(t) + number]  # [B, A]
            if temperature == 0:
                tok = logits.argmax(-1)
                lp = torch.zeros(batch, dtype=logits.dtype, device=device)
            else:
                logp = torch.log_softmax(logits / temperature, dim=-1)
                tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
                lp = logp.gather(1, tok.unsqueeze(1)).squeeze(1)
            tokens[:, t] = torch.where(alive, tok, PAD_ID)
            mask[:, t] = alive
            logprobs[:, t] = torch.where(alive, lp, torch.zeros_like(lp))
            used = t + 1
            if space.eos:
                stop = alive & (tok == space.eos_id)
                ended |= stop
                alive &= ~stop
            number = number * space.num_symbols + torch.where(alive, tok, 0)
            if not bool(alive.any()):
                break
        if not space.eos:
            ended = mask.sum(1) == space.max_len
        return ResponseBatch(
            tokens=tokens[:, :used],
            mask=mask[:, :used],
            logprobs=logprobs[:, :used],
            finished=ended,
        )


class TabularRewardModel(RewardModel):
    """r̂(x, y) = table[x, response_id(y)]: one free scalar per (prompt, response), zeros at start.

    Rows that are not responses of the space (see :meth:`SequenceSpace.response_ids`) raise
    ValueError: a tabular reward has no entry for them.
    """

    def __init__(self, space: SequenceSpace, num_prompts: int) -> None:
        super().__init__()
        self.space = space
        self.table = nn.Parameter(torch.zeros(num_prompts, space.num_responses))

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        rows = prompt_rows(prompts, int(self.table.shape[0]))
        ids = self.space.response_ids(responses)
        _check_response_ids(ids, responses)
        return self.table[rows, ids]


class TabularValueModel(ValueModel):
    """A tabular critic: ``values[b, t] = V(x, y_<t)``, the value of the state *before* token t.

    That is the state in which token t is chosen, as :func:`harness.rl.gae` expects
    (δ_t = r_t + γ V_{t+1} − V_t, with V after the last token = 0 since the episode ends there).
    One scalar per (prompt, prefix), a table ``[P, num_prefixes]`` of zeros at start; 0 on padding.
    """

    def __init__(self, space: SequenceSpace, num_prompts: int) -> None:
        super().__init__()
        self.space = space
        self.table = nn.Parameter(torch.zeros(num_prompts, space.num_prefixes))

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        rows = prompt_rows(prompts, int(self.table.shape[0]))
        ids, _ = self.space.prefix_ids(responses)
        values = self.table[rows.unsqueeze(1), ids]
        return values.masked_fill(~responses.mask.bool(), 0.0)


def _check_response_ids(ids: torch.Tensor, responses: ResponseBatch) -> None:
    if ids.numel() and bool((ids < 0).any()):
        row = int((ids < 0).nonzero()[0, 0])
        seq = responses.tokens[row][responses.mask[row].bool()].tolist()
        raise ValueError(
            f"response row {row} (tokens {seq}) is not a complete response of this tabular task"
        )


# --------------------------------------------------------------------------------------------
# The shared part of tabular tasks
# --------------------------------------------------------------------------------------------


class TabularTask(Task):
    """A task whose prompts are table rows and whose responses form a :class:`SequenceSpace`.

    Subclasses set, in ``__init__``: ``space``, ``prompt_tokens`` (``[P, Lp]`` long, for
    display), ``ref_logits`` (``[P, num_prefixes, A]``) and ``num_eval_prompts``; and implement
    :meth:`gold_reward` and the text methods. Train prompts are all P rows; eval prompts are the
    first ``num_eval_prompts`` of them — a tabular policy has no row for an unseen prompt, so the
    eval prompts of a tabular task are (a subset of) its train prompts.
    """

    kind: ClassVar[str] = "tabular"
    space: SequenceSpace
    prompt_tokens: torch.Tensor
    ref_logits: torch.Tensor
    num_eval_prompts: int

    @property
    def num_prompts(self) -> int:
        return int(self.prompt_tokens.shape[0])

    @property
    def train_prompts(self) -> PromptBatch:
        ids = self.prompt_tokens.to(self.device)
        return PromptBatch(
            index=torch.arange(self.num_prompts, device=self.device),
            ids=ids,
            mask=torch.ones_like(ids, dtype=torch.bool),
        )

    @property
    def eval_prompts(self) -> PromptBatch:
        return self.train_prompts.select(slice(0, self.num_eval_prompts))

    @property
    def max_new_tokens(self) -> int:
        return self.space.max_len

    def reference_policy(self) -> TabularPolicy:
        return TabularPolicy(self.space, self.ref_logits).to(self.device)

    def make_reward_model(self) -> TabularRewardModel:
        return TabularRewardModel(self.space, self.num_prompts).to(self.device)

    def make_value_model(self, policy: Policy) -> TabularValueModel:
        return TabularValueModel(self.space, self.num_prompts).to(self.device)

    def enumerate_responses(self) -> ResponseBatch:
        return self.space.enumerate(self.device)

    def response_ids(self, responses: ResponseBatch) -> torch.Tensor:
        """[B] long: ids in :meth:`enumerate_responses` order (-1 for non-responses)."""
        return self.space.response_ids(responses)

    # --- helpers for subclasses ------------------------------------------------------------------

    def _checked_response_ids(self, responses: ResponseBatch) -> torch.Tensor:
        ids = self.space.response_ids(responses)
        _check_response_ids(ids, responses)
        return ids

    def _prompt_batch(self, index: list[int]) -> PromptBatch:
        """The train prompts at ``index`` (a list of row numbers), on the task's device."""
        return self.train_prompts.select(torch.tensor(index, dtype=torch.long, device=self.device))

    def _response_batch(self, sequences: list[list[int]]) -> ResponseBatch:
        """Right-padded responses from token lists (``finished`` iff the last token is EOS)."""
        width = max([len(s) for s in sequences] + [1])
        tokens = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for i, seq in enumerate(sequences):
            tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = True
        eos = self.space.eos_id
        finished = torch.tensor(
            [
                bool(s) and s[-1] == eos if eos is not None else len(s) == self.space.max_len
                for s in sequences
            ],
            dtype=torch.bool,
        )
        return ResponseBatch(tokens=tokens, mask=mask, finished=finished).to(self.device)


def check_eval_prompts(task: str, num_eval_prompts: int | None, num_prompts: int) -> int:
    """``num_eval_prompts`` resolved (None: all P), or ConfigError when not in 1 .. P."""
    if num_eval_prompts is None:
        return num_prompts
    if not 1 <= num_eval_prompts <= num_prompts:
        raise ConfigError(
            f"{task} task: num_eval_prompts must be between 1 and num_prompts={num_prompts} "
            f"(eval prompts are the first train prompts), got {num_eval_prompts}"
        )
    return num_eval_prompts
