"""The ``token`` task: short sequences over a tiny vocabulary, scored against a hidden pattern.

P prompts, each ``prompt_length`` tokens over V symbols (distinct, shown as letters, e.g. ``bca``).
A response is at most H tokens over V symbols (ids ``0 .. V-1``, letters ``a``, ``b``, ...) plus
EOS (id V, written ``.``): either ``s_1 .. s_L .`` with L < H (finished), or H symbols cut at the
maximum length (``finished`` False). There are N = Σ_{L=0..H} V^L responses per prompt, all
enumerated, so the exact optimum is known (:mod:`harness.exact`); response ids follow
:class:`harness.models.tabular.SequenceSpace` (by length, then lexicographically).

Gold reward, with t_x the prompt's hidden target (H symbols) and y_1 .. y_L the response's
symbols (EOS excluded):

    r*(x, y) = (1/H) · #{i < H : i < L and y_i = t_x,i}  +  length_bonus · L

— the fraction of target positions matched (positions at or beyond the response's end, EOS
included, are misses), plus an optional per-symbol length term (0 by default). With the default,
r* ∈ [0, 1] and its maximum 1 is the full target, cut at H.

π_ref is an autoregressive tabular policy (:class:`harness.models.tabular.TabularPolicy`): at every
prefix, logits ~ N(0, 1)/ref_temperature over the V + 1 actions, with ``eos_bias`` added to EOS's
logit, so π_ref's responses vary in length.

Everything random is drawn from a local ``torch.Generator`` seeded with ``seed``, in this order:
the prompts, π_ref's logits, the targets.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.errors import ConfigError
from harness.models.tabular import SequenceSpace, TabularTask, check_eval_prompts, prompt_rows
from harness.policy import PromptBatch, ResponseBatch

__all__ = ["TokenTask"]

LETTERS = string.ascii_lowercase
"""Symbol i is written as the i-th lower-case letter."""
EOS_TEXT = "."
"""How EOS is written."""


@dataclass
class TokenParams:
    """Parameters of the ``token`` task."""

    num_prompts: int = 8
    """P: number of prompts, each with its own π_ref rows, target and reward."""
    num_eval_prompts: int | None = None
    """Eval prompts: the first ``num_eval_prompts`` train prompts (None: all P). A tabular policy
    has no row for an unseen prompt, so eval prompts are train prompts."""
    vocab_size: int = 4
    """V: number of symbols (2 to 26, written a, b, ...); EOS comes on top."""
    max_len: int = 4
    """H: the longest response in tokens (EOS included), and the target's length."""
    prompt_length: int = 3
    """Tokens per prompt (display only: prompts are told apart by their index); needs
    V^prompt_length ≥ P, as prompts are distinct."""
    ref_temperature: float = 1.0
    """π_ref's logits are N(0, 1)/ref_temperature (smaller: a more peaked π_ref)."""
    eos_bias: float = 0.0
    """Added to π_ref's EOS logit at every prefix (negative: longer responses)."""
    length_bonus: float = 0.0
    """Reward per response symbol (EOS not counted), added to the partial-credit match score."""
    max_enumeration: int = 4096
    """Largest N = Σ_{L≤H} V^L (responses per prompt) accepted; larger raises ConfigError."""


class TokenTask(TabularTask):
    """Sequences over a tiny vocabulary with partial credit for matching a hidden target."""

    name: ClassVar[str] = "token"
    Params: ClassVar[type] = TokenParams

    def __init__(self, params: TokenParams, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        p, v, h, lp = params.num_prompts, params.vocab_size, params.max_len, params.prompt_length
        if not 2 <= v <= len(LETTERS):
            raise ConfigError(f"token task: vocab_size must be between 2 and 26, got {v}")
        if h < 1:
            raise ConfigError(f"token task: max_len must be >= 1, got {h}")
        if p < 1 or lp < 1:
            raise ConfigError(
                f"token task: num_prompts and prompt_length must be >= 1, got {p} and {lp}"
            )
        if p > v**lp:
            raise ConfigError(
                f"token task: num_prompts={p} distinct prompts do not fit in V^prompt_length = "
                f"{v}^{lp} = {v**lp}; raise prompt_length or lower num_prompts"
            )
        if not params.ref_temperature > 0:
            raise ConfigError(
                f"token task: ref_temperature must be > 0, got {params.ref_temperature}"
            )
        self.space = SequenceSpace(num_symbols=v, max_len=h, eos=True)
        self._check_size()
        self.num_eval_prompts = check_eval_prompts("token", params.num_eval_prompts, p)

        g = torch.Generator().manual_seed(seed)
        self.prompt_tokens = _distinct_rows(p, lp, v, g)
        logits = torch.randn(p, self.space.num_prefixes, v + 1, generator=g)
        logits = logits / params.ref_temperature
        logits[..., v] += params.eos_bias
        self.ref_logits = logits
        self.targets = torch.randint(v, (p, h), generator=g).to(device)
        """[P, H] long: each prompt's hidden target pattern."""
        self._prompt_lookup = {tuple(row): i for i, row in enumerate(self.prompt_tokens.tolist())}

    def _check_size(self) -> None:
        n, limit = self.space.num_responses, self.params.max_enumeration
        if n > limit:
            v, h = self.space.num_symbols, self.space.max_len
            raise ConfigError(
                f"token task: V={v}, H={h} gives {n} responses per prompt, more than "
                f"max_enumeration={limit}; reduce V (vocab_size) or H (max_len)"
            )

    def enumerate_responses(self) -> ResponseBatch:
        self._check_size()
        return super().enumerate_responses()

    # --- reward ----------------------------------------------------------------------------------

    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """r*(x, y) = matched target positions / H + length_bonus · #symbols (module docstring)."""
        h = self.space.max_len
        rows = prompt_rows(prompts, self.num_prompts)
        run = self.space.symbol_run(responses.tokens, responses.mask)[:, :h]
        tokens = responses.tokens[:, :h]
        if tokens.shape[1] < h:  # positions past the batch's width are misses
            pad = h - tokens.shape[1]
            tokens = torch.nn.functional.pad(tokens, (0, pad))
            run = torch.nn.functional.pad(run, (0, pad))
        target = self.targets.to(rows.device)[rows]
        hits = (run & (tokens == target)).sum(1)
        return hits.float() / h + self.params.length_bonus * run.sum(1).float()

    # --- text ------------------------------------------------------------------------------------

    def decode_prompts(self, prompts: PromptBatch) -> list[str]:
        ids, mask = prompts.ids.cpu(), prompts.mask.cpu().bool()
        return [_letters(row[m].tolist(), None) for row, m in zip(ids, mask, strict=True)]

    def decode_responses(self, responses: ResponseBatch) -> list[str]:
        tokens, mask = responses.tokens.cpu(), responses.mask.cpu().bool()
        eos = self.space.eos_id
        return [_letters(row[m].tolist(), eos) for row, m in zip(tokens, mask, strict=True)]

    def encode(self, prompts: list[str], responses: list[str]) -> tuple[PromptBatch, ResponseBatch]:
        """Parse prompts (one of the task's prompts, e.g. ``bca``) and responses (``ab.``,
        ``.``, or H letters); anything else raises ConfigError naming the string."""
        if len(prompts) != len(responses):
            raise ConfigError(
                f"token task: {len(prompts)} prompts but {len(responses)} responses to encode"
            )
        index = [self._parse_prompt(text) for text in prompts]
        sequences = [self._parse_response(text) for text in responses]
        return self._prompt_batch(index), self._response_batch(sequences)

    def _parse_prompt(self, text: object) -> int:
        symbols = LETTERS[: self.space.num_symbols]
        s = text.strip() if isinstance(text, str) else None
        if s is None or not s or any(c not in symbols for c in s):
            raise ConfigError(
                f"token task: cannot read the prompt {text!r}: expected letters from "
                f"'{symbols}'"
            )
        key = tuple(symbols.index(c) for c in s)
        if key not in self._prompt_lookup:
            raise ConfigError(
                f"token task: the prompt {text!r} is not one of this task's "
                f"{self.num_prompts} prompts"
            )
        return self._prompt_lookup[key]

    def _parse_response(self, text: object) -> list[int]:
        v, h = self.space.num_symbols, self.space.max_len
        symbols = LETTERS[:v]
        s = text.strip() if isinstance(text, str) else None
        rule = (
            f"a response is up to {h - 1} letters from '{symbols}' followed by '{EOS_TEXT}', "
            f"or exactly {h} letters"
        )
        if s is None or not s:
            raise ConfigError(f"token task: cannot read the response {text!r}: {rule}")
        body, ends = (s[:-1], True) if s.endswith(EOS_TEXT) else (s, False)
        if any(c not in symbols for c in body) or len(body) > (h - 1 if ends else h) or (
            not ends and len(body) != h
        ):
            raise ConfigError(f"token task: cannot read the response {text!r}: {rule}")
        return [symbols.index(c) for c in body] + ([v] if ends else [])


def _letters(ids: list[int], eos: int | None) -> str:
    return "".join(EOS_TEXT if t == eos else LETTERS[t] for t in ids)


def _distinct_rows(n: int, length: int, v: int, g: torch.Generator) -> torch.Tensor:
    """[n, length] rows of symbols, pairwise distinct; a repeated row is redrawn (needs n ≤ v^L)."""
    rows = torch.randint(v, (n, length), generator=g)
    seen: set[tuple[int, ...]] = set()
    for i in range(n):
        while tuple(rows[i].tolist()) in seen:
            rows[i] = torch.randint(v, (length,), generator=g)
        seen.add(tuple(rows[i].tolist()))
    return rows
