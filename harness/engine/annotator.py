"""The simulated annotator: preference data generated from the gold reward.

For each of N pairs: a prompt x is drawn uniformly from the task's train prompts, two responses
y¹, y² are drawn independently from π_ref(·|x), both are scored with r*, and the annotator prefers
y¹ with probability P(y¹ ≻ y²) given by a preference model at a chosen scale (the lecture's model
of a human labeller). Optionally a fraction of the labels is then flipped at random, as
AlpacaFarm's simulated annotators do (they flip 25%), to model careless labellers.

The result is a :class:`~harness.data.PreferenceDataset` with the gold rewards of both responses
and the token ids. Everything is drawn from generators seeded with ``seed``: the same task, model
and seed give the same dataset, whatever ran before. Pairs whose two responses are identical are
kept (they carry no preference information, as in real data sampled from one policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from harness.data import PreferenceDataset
from harness.errors import ConfigError
from harness.policy import PromptBatch, ResponseBatch
from harness.preference import PreferenceModel
from harness.tasks.base import Task


@dataclass
class AnnotatorConfig:
    """How preference data is simulated."""

    num_pairs: int = 1000
    """Number of labelled pairs N."""
    preference_model: str = "btl"
    """Name of the preference model that labels the pairs (``btl``, ``thurstone``, plugins)."""
    scale: float = 1.0
    """Its noise scale (τ for BTL, σ for Thurstone): larger is noisier."""
    flip_rate: float = 0.0
    """Fraction of labels flipped after labelling; AlpacaFarm (Dubois et al. 2023) uses 0.25."""
    temperature: float = 1.0
    """Sampling temperature of π_ref when drawing the two responses."""
    batch_size: int = 256
    """Pairs generated per sampling call. Part of the data's identity: the random streams are
    consumed batch by batch, so another batch size draws other (equally distributed) pairs."""


def simulate_preferences(
    task: Task,
    model: PreferenceModel,
    *,
    num_pairs: int,
    seed: int,
    flip_rate: float = 0.0,
    temperature: float = 1.0,
    batch_size: int = 256,
) -> PreferenceDataset:
    """Draw ``num_pairs`` response pairs from ``task``'s π_ref and label them with ``model``."""
    if num_pairs < 1:
        raise ConfigError(f"num_pairs must be >= 1, got {num_pairs}")
    if not 0.0 <= flip_rate <= 1.0:
        raise ConfigError(f"flip_rate must be in [0, 1], got {flip_rate}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

    # Separate streams, so that e.g. changing the flip rate leaves the responses unchanged.
    g_prompt = torch.Generator().manual_seed(seed)
    g_sample = torch.Generator(device=task.device).manual_seed(seed + 1)
    g_label = torch.Generator().manual_seed(seed + 2)
    g_flip = torch.Generator().manual_seed(seed + 3)

    train = task.train_prompts
    rows = torch.randint(len(train), (num_pairs,), generator=g_prompt)
    ref = task.reference_policy().to(task.device)
    ref.eval()

    chunks: list[pd.DataFrame] = []
    for start in range(0, num_pairs, batch_size):
        prompts = train.select(rows[start : start + batch_size]).to(task.device)
        n = len(prompts)
        with torch.no_grad():
            # One sampling call for both responses of every pair: rows [0, n) and [n, 2n).
            both = ref.sample(
                PromptBatch.cat([prompts, prompts]),
                max_new_tokens=task.max_new_tokens,
                temperature=temperature,
                generator=g_sample,
            )
            first, second = both.select(slice(0, n)), both.select(slice(n, 2 * n))
            r1 = task.gold_reward(prompts, first).double().cpu()
            r2 = task.gold_reward(prompts, second).double().cpu()
        prefer_first = model.sample(r1, r2, generator=g_label)
        flip = torch.rand(n, generator=g_flip, dtype=torch.float64) < flip_rate
        prefer_first = prefer_first ^ flip

        p_text = task.decode_prompts(prompts)
        t1, t2 = task.decode_responses(first), task.decode_responses(second)
        ids1, ids2 = _id_lists(first), _id_lists(second)
        width = prompts.ids.shape[1]
        p_len = prompts.mask.sum(-1).tolist()
        prompt_ids = [row[width - n :] for row, n in zip(prompts.ids.tolist(), p_len, strict=True)]
        pf = prefer_first.tolist()
        chunks.append(
            pd.DataFrame(
                {
                    "prompt": p_text,
                    "chosen": [a if f else b for a, b, f in zip(t1, t2, pf, strict=True)],
                    "rejected": [b if f else a for a, b, f in zip(t1, t2, pf, strict=True)],
                    "gold_chosen": torch.where(prefer_first, r1, r2).tolist(),
                    "gold_rejected": torch.where(prefer_first, r2, r1).tolist(),
                    "prompt_ids": prompt_ids,
                    "chosen_ids": [a if f else b for a, b, f in zip(ids1, ids2, pf, strict=True)],
                    "rejected_ids": [b if f else a for a, b, f in zip(ids1, ids2, pf, strict=True)],
                    "prompt_index": prompts.index.cpu().tolist(),
                    "flipped": flip.tolist(),
                }
            )
        )
    return PreferenceDataset(pd.concat(chunks, ignore_index=True), source="simulated annotator")


def _id_lists(responses: ResponseBatch) -> list[list[int]]:
    """Each response's token ids (responses are right-padded: the mask is a prefix)."""
    lengths = responses.lengths.tolist()
    return [row[:n] for row, n in zip(responses.tokens.tolist(), lengths, strict=True)]
