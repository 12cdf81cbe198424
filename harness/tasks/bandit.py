"""The ``bandit`` task: a contextual K-armed bandit, one token per response.

P prompts (contexts) ``p0 .. p{P-1}``; a response is one arm ``a0 .. a{K-1}`` (token id k, no
EOS; ``max_new_tokens`` = 1). π_ref(· | x) is a softmax over arms and r*(x, k) a table, so the
exact optimum π*_β(k | x) ∝ π_ref(k | x) exp(r*(x, k)/β) is known (:mod:`harness.exact`).

Rewards (``Params.reward``):

- ``normal`` — r*(x, k) ~ N(0, reward_scale²), i.i.d. over prompts and arms.
- ``peak_near`` / ``peak_far`` — the didactic bandit of Tajwar et al. (2024), "Preference
  Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data": the reward is one peak over
  arms, r*(x, k) = reward_scale · exp(−d(k, c_x)² / (2 w²)), with d the circular distance between
  arm indices (min(|k − c|, K − |k − c|)) and w = ``peak_width``. ``peak_near`` centres it at
  π_ref's mode (the most likely arm; ties → the lowest index): the optimum is where π_ref already
  puts mass. ``peak_far`` centres it at π_ref's least likely arm (ties, e.g. a uniform π_ref →
  the one circularly farthest from the mode, then the lowest index): the optimum lies where π_ref
  rarely samples, so on-policy sampling must move mass there to find it.

Everything random is drawn from a local ``torch.Generator`` seeded with the task's ``seed``, in
this order: π_ref's logits (``reference: softmax`` only), then the rewards (``reward: normal``
only). So changing the reward kind never changes π_ref.

Prompt ids are ``[[i]]`` (the prompt's index, for display); the arm is the response token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from harness.errors import ConfigError
from harness.models.tabular import SequenceSpace, TabularTask, check_eval_prompts, prompt_rows
from harness.policy import PromptBatch, ResponseBatch

__all__ = ["BanditTask"]

_PROMPT_RE = re.compile(r"^p(\d+)$")
_ARM_RE = re.compile(r"^a(\d+)$")


@dataclass
class BanditParams:
    """Parameters of the ``bandit`` task."""

    num_prompts: int = 8
    """P: number of prompts (contexts), each with its own π_ref row and reward row."""
    num_arms: int = 16
    """K: number of arms; a response is one arm."""
    num_eval_prompts: int | None = None
    """Eval prompts: the first ``num_eval_prompts`` train prompts (None: all P). A bandit has no
    held-out contexts — a tabular policy has no row for an unseen one — so train = eval prompts
    by default."""
    reward: Literal["normal", "peak_near", "peak_far"] = "normal"
    """r*: ``normal`` (i.i.d. N(0, reward_scale²)), or one peak at π_ref's mode (``peak_near``)
    or at its least likely arm (``peak_far``); see the module docstring."""
    reward_scale: float = 1.0
    """The standard deviation of ``normal`` rewards, or the height of the peak."""
    peak_width: float = 2.0
    """w: the peak's width in arms (r* = reward_scale · exp(−d²/(2w²)), d circular distance)."""
    reference: Literal["uniform", "softmax"] = "softmax"
    """π_ref: ``uniform`` over arms, or ``softmax`` of logits ~ N(0, 1)/ref_temperature per
    prompt."""
    ref_temperature: float = 1.0
    """Temperature of the ``softmax`` reference (smaller: a more peaked π_ref)."""


class BanditTask(TabularTask):
    """A contextual K-armed bandit (see the module docstring)."""

    name: ClassVar[str] = "bandit"
    Params: ClassVar[type] = BanditParams

    def __init__(self, params: BanditParams, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        p, k = params.num_prompts, params.num_arms
        if p < 1:
            raise ConfigError(f"bandit task: num_prompts must be >= 1, got {p}")
        if k < 2:
            raise ConfigError(f"bandit task: num_arms must be >= 2, got {k}")
        if params.reference == "softmax" and not params.ref_temperature > 0:
            raise ConfigError(
                f"bandit task: ref_temperature must be > 0, got {params.ref_temperature}"
            )
        if params.reward.startswith("peak") and not params.peak_width > 0:
            raise ConfigError(f"bandit task: peak_width must be > 0, got {params.peak_width}")
        self.num_eval_prompts = check_eval_prompts("bandit", params.num_eval_prompts, p)
        self.space = SequenceSpace(num_symbols=k, max_len=1, eos=False)
        self.prompt_tokens = torch.arange(p, dtype=torch.long).unsqueeze(1)

        g = torch.Generator().manual_seed(seed)
        if params.reference == "softmax":
            logits = torch.randn(p, k, generator=g) / params.ref_temperature
        else:
            logits = torch.zeros(p, k)
        self.ref_logits = logits.unsqueeze(1)  # [P, 1 prefix, K]
        self.reward_table = self._make_rewards(logits, g).to(device)
        """[P, K] float32: r*(x, k)."""

    def _make_rewards(self, logits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = self.params
        p, k = logits.shape
        if params.reward == "normal":
            return torch.randn(p, k, generator=g) * params.reward_scale
        arms = torch.arange(k)
        mode = self.mode_arms(logits)
        if params.reward == "peak_near":
            centre = mode
        else:
            least = logits == logits.min(dim=1, keepdim=True).values
            # Among the least likely arms, the farthest from the mode (then the lowest index).
            dist = _circular_distance(arms.unsqueeze(0), mode.unsqueeze(1), k)
            score = torch.where(least, dist * k - arms, torch.full_like(dist, -(k**2)))
            centre = score.argmax(dim=1)
        d = _circular_distance(arms.unsqueeze(0), centre.unsqueeze(1), k).float()
        return params.reward_scale * torch.exp(-(d**2) / (2 * params.peak_width**2))

    @staticmethod
    def mode_arms(logits: torch.Tensor) -> torch.Tensor:
        """[P] long: the most likely arm of each row of ``[P, K]`` logits (ties: lowest index)."""
        k = logits.shape[-1]
        arms = torch.arange(k, device=logits.device)
        top = logits == logits.max(dim=-1, keepdim=True).values
        return torch.where(top, arms, k).min(dim=-1).values

    # --- reward ----------------------------------------------------------------------------------

    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        arms = self._checked_response_ids(responses)
        rows = prompt_rows(prompts, self.num_prompts)
        return self.reward_table.to(rows.device)[rows, arms]

    # --- text ------------------------------------------------------------------------------------

    def decode_prompts(self, prompts: PromptBatch) -> list[str]:
        return [f"p{i}" for i in prompts.index.tolist()]

    def decode_responses(self, responses: ResponseBatch) -> list[str]:
        tokens, mask = responses.tokens.cpu(), responses.mask.cpu().bool()
        rows = zip(tokens, mask, strict=True)
        return ["".join(f"a{t}" for t in row[m].tolist()) for row, m in rows]

    def encode(self, prompts: list[str], responses: list[str]) -> tuple[PromptBatch, ResponseBatch]:
        """Parse ``p{i}`` prompts and ``a{k}`` responses; anything else raises ConfigError."""
        if len(prompts) != len(responses):
            raise ConfigError(
                f"bandit task: {len(prompts)} prompts but {len(responses)} responses to encode"
            )
        p, k = self.params.num_prompts, self.params.num_arms
        index = [_parse(text, _PROMPT_RE, p, "prompt", f"p0 .. p{p - 1}") for text in prompts]
        arms = [_parse(text, _ARM_RE, k, "response", f"a0 .. a{k - 1}") for text in responses]
        return self._prompt_batch(index), self._response_batch([[a] for a in arms])


def _parse(text: object, pattern: re.Pattern[str], limit: int, what: str, allowed: str) -> int:
    match = pattern.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) >= limit:
        raise ConfigError(
            f"bandit task: cannot read the {what} {text!r}: expected one of {allowed}"
        )
    return int(match.group(1))


def _circular_distance(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    diff = (a - b).abs()
    return torch.minimum(diff, k - diff)
