"""Preference datasets in TRL's column convention, saved as Parquet.

A :class:`PreferenceDataset` is a table with one row per labelled pair:

=================  =====================================================================
``prompt``         the prompt, as text
``chosen``         the preferred response, as text
``rejected``       the other response, as text
``gold_chosen``    r*(prompt, chosen), when known (simulated annotators know it)
``gold_rejected``  r*(prompt, rejected), when known
``prompt_ids``     token ids of the prompt (optional; lists of ints)
``chosen_ids``     token ids of the chosen response, EOS included when generated (optional)
``rejected_ids``   token ids of the rejected response (optional)
``prompt_index``   the prompt's position in the task's train split (optional, with the ids)
=================  =====================================================================

Only the first three columns are required, so a user's own file in TRL's convention (``prompt``,
``chosen``, ``rejected``) loads too; its text is tokenised by the task. When the id columns are
present they are authoritative: decoding then re-tokenising text need not round-trip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from harness.errors import ConfigError
from harness.policy import Policy, PromptBatch, ResponseBatch, pad_token_lists
from harness.tasks.base import Task

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids", "prompt_index")


@dataclass
class PreferenceBatches:
    """A preference dataset as token batches, row-aligned: prompts[i], chosen[i], rejected[i]."""

    prompts: PromptBatch
    """[N] the pairs' prompts (a prompt with several pairs is in several rows)."""
    chosen: ResponseBatch
    """[N] the preferred responses y⁺."""
    rejected: ResponseBatch
    """[N] the other responses y⁻."""

    def __len__(self) -> int:
        """N, the number of pairs."""
        return len(self.prompts)

    def select(self, rows: torch.Tensor | slice | list[int]) -> PreferenceBatches:
        """The pairs at ``rows`` (a minibatch)."""
        return PreferenceBatches(
            self.prompts.select(rows), self.chosen.select(rows), self.rejected.select(rows)
        )

    def to(self, device: torch.device | str) -> PreferenceBatches:
        """The same pairs on ``device``."""
        return PreferenceBatches(
            self.prompts.to(device), self.chosen.to(device), self.rejected.to(device)
        )

    def sequence_logprobs(
        self, policy: Policy, chunk: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(y⁺|x) and log π(y⁻|x) of every pair, ``chunk`` pairs per forward (no grad:
        e.g. the reference log-probs that offline methods compute once per dataset)."""
        chosen, rejected = [], []
        with torch.no_grad():
            for start in range(0, len(self), chunk):
                part = self.select(slice(start, start + chunk))
                chosen.append(policy.sequence_logprobs(part.prompts, part.chosen))
                rejected.append(policy.sequence_logprobs(part.prompts, part.rejected))
        return torch.cat(chosen), torch.cat(rejected)

    def unpaired(self, one_per_pair: torch.Generator | None = None) -> UnpairedExamples:
        """The pairs as unpaired examples (see :class:`UnpairedExamples`).

        Without ``one_per_pair``: every chosen response (desirable), then every rejected one
        (undesirable), 2N examples — TRL's ``unpair_preference_dataset``. With a generator: one
        example per pair, its chosen or its rejected response by a fair coin from that generator,
        so that no two examples share a prompt's pair (the KTO paper's "one-y-per-x" setting,
        §4.3), N examples.
        """
        n = len(self)
        if one_per_pair is None:
            prompts = PromptBatch.cat([self.prompts, self.prompts])
            responses = ResponseBatch.cat([self.chosen, self.rejected])
            device = self.prompts.ids.device
            desirable = torch.arange(2 * n, device=device) < n
            return UnpairedExamples(prompts, responses, desirable)
        g = one_per_pair
        coin = torch.rand(n, generator=g, device=g.device)
        keep_chosen = (coin < 0.5).to(self.prompts.ids.device)
        both = ResponseBatch.cat([self.chosen, self.rejected])
        rows = torch.arange(n, device=keep_chosen.device) + n * (~keep_chosen).long()
        return UnpairedExamples(self.prompts, both.select(rows), keep_chosen)


@dataclass
class UnpairedExamples:
    """Binary feedback on single responses, row-aligned: prompts[i], responses[i], desirable[i].

    What algorithms that need ``"unpaired"`` data (KTO) learn from. The harness makes them from
    its preference pairs (:meth:`PreferenceBatches.unpaired`): each pair's chosen response is a
    desirable example and its rejected response an undesirable one, as TRL's
    ``unpair_preference_dataset`` does; when a suite marks its data unpaired
    (``preferences.unpaired: true``) each pair gives one of the two only.
    """

    prompts: PromptBatch
    responses: ResponseBatch
    desirable: torch.Tensor
    """[N] bool: True for a desirable example (a chosen response), False for an undesirable one."""

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: torch.Tensor | slice | list[int]) -> UnpairedExamples:
        return UnpairedExamples(
            self.prompts.select(rows), self.responses.select(rows), self.desirable[rows]
        )

    def to(self, device: torch.device | str) -> UnpairedExamples:
        return UnpairedExamples(
            self.prompts.to(device), self.responses.to(device), self.desirable.to(device)
        )

    def sequence_logprobs(self, policy: Policy, chunk: int = 256) -> torch.Tensor:
        """log π(y|x) of every example, ``chunk`` examples per forward (no grad)."""
        out = []
        with torch.no_grad():
            for start in range(0, len(self), chunk):
                part = self.select(slice(start, start + chunk))
                out.append(policy.sequence_logprobs(part.prompts, part.responses))
        return torch.cat(out)


class PreferenceDataset:
    """Labelled response pairs (see the module docstring for the columns)."""

    def __init__(self, frame: pd.DataFrame, *, source: str = "<memory>") -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"{source}: preference data lacks the column '{missing[0]}' (a preference file "
                f"needs the columns {', '.join(REQUIRED_COLUMNS)}; it has "
                f"{', '.join(map(str, frame.columns)) or 'none'})"
            )
        if len(frame) == 0:
            raise ConfigError(f"{source}: preference data has no rows")
        self.frame = frame.reset_index(drop=True)
        self.source = source

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_ids(self) -> bool:
        return all(c in self.frame.columns for c in ID_COLUMNS)

    @property
    def has_gold(self) -> bool:
        return "gold_chosen" in self.frame.columns and "gold_rejected" in self.frame.columns

    # --- files -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write Parquet atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreferenceDataset:
        """Read a Parquet or JSON-lines file (``.parquet``, ``.jsonl``, ``.json``)."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: preference file not found")
        if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
            raise ConfigError(f"{path}: not a regular file (a FIFO, a device or a folder); "
                              f"preference data is a .parquet, .jsonl or .json file")
        try:
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif path.suffix in (".jsonl", ".json"):
                frame = pd.read_json(path, lines=path.suffix == ".jsonl")
            else:
                raise ConfigError(
                    f"{path}: unsupported preference file type '{path.suffix}' "
                    f"(use .parquet, .jsonl or .json)"
                )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{path}: cannot read preference data: {exc}") from None
        for column in REQUIRED_COLUMNS:
            if column in frame.columns and not all(isinstance(v, str) for v in frame[column]):
                raise ConfigError(f"{path}: column '{column}' must hold text in every row")
        return cls(frame, source=str(path))

    # --- tensors ---------------------------------------------------------------------------------

    def to_batches(self, task: Task) -> PreferenceBatches:
        """Token batches for ``task``: from the id columns when present, else by encoding text."""
        f = self.frame
        if self.has_ids:
            index = torch.tensor(f["prompt_index"].to_numpy(), dtype=torch.long)
            prompts, chosen = _from_ids(task.pad_id, index, f["prompt_ids"], f["chosen_ids"])
            _, rejected = _from_ids(task.pad_id, index, f["prompt_ids"], f["rejected_ids"])
        else:
            prompts, chosen = task.encode(list(f["prompt"]), list(f["chosen"]))
            _, rejected = task.encode(list(f["prompt"]), list(f["rejected"]))
        return PreferenceBatches(prompts, chosen, rejected)

    def split(
        self, holdout_fraction: float, seed: int
    ) -> tuple[PreferenceDataset, PreferenceDataset]:
        """A seeded random split into (train, held-out)."""
        if not 0 < holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=g).tolist()
        n_hold = max(1, round(len(self) * holdout_fraction))
        held, train = order[:n_hold], order[n_hold:]
        return (
            PreferenceDataset(self.frame.iloc[train], source=self.source),
            PreferenceDataset(self.frame.iloc[held], source=self.source),
        )


def _from_ids(
    pad: int, index: torch.Tensor, prompt_ids: pd.Series, response_ids: pd.Series
) -> tuple[PromptBatch, ResponseBatch]:
    """Batches from id lists: prompts left-padded, responses right-padded with ``pad``."""
    ids, pmask = pad_token_lists([list(p) for p in prompt_ids], pad, left=True)
    tokens, rmask = pad_token_lists([list(r) for r in response_ids], pad, left=False)
    return PromptBatch(index=index, ids=ids, mask=pmask), ResponseBatch(tokens=tokens, mask=rmask)
