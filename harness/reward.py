"""Reward models r̂(x, y): the proxy that online algorithms optimise.

A reward model (:class:`RewardModel`; plugins import it from here, it is defined in
:mod:`harness.policy` beside the critic) maps a batch of (prompt, response) pairs to one scalar
each. Tasks build a fresh, trainable one with :meth:`harness.tasks.Task.make_reward_model`:
tabular for tabular tasks, a transformer with a scalar head initialised from π_ref's backbone for
language-model tasks.
:func:`fit_reward_model` fits it by maximum likelihood on a preference dataset, under a preference
model that may differ from the annotator's, and reports held-out accuracy and agreement with r*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.policy import PromptBatch, ResponseBatch, RewardModel
from harness.preference import PreferenceModel

if TYPE_CHECKING:
    from harness.data import PreferenceBatches, PreferenceDataset
    from harness.tasks.base import Task


class GoldRewardModel(RewardModel):
    """The task's gold reward r* used as the reward model: an oracle, with no parameters.

    For tests of the algorithms against exact answers, and as the "perfect reward model" arm of an
    experiment; suites normally give online algorithms a fitted r̂.
    """

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        return self.task.gold_reward(prompts, responses).float()

    def __deepcopy__(self, memo: dict) -> GoldRewardModel:
        return GoldRewardModel(self.task)  # the task is shared, not copied


# --- fitting -------------------------------------------------------------------------------------


@dataclass
class RewardFitConfig:
    """How r̂ is fitted: maximum likelihood of the preferences under a preference model."""

    preference_model: str = "btl"
    """The likelihood used for fitting; may differ from the annotator's (misspecification)."""
    scale: float = 1.0
    """Its scale (τ or σ). Only fixes the units of r̂; the ranking does not depend on it."""
    epochs: int | None = None
    """Passes over the training pairs (default: 50 for tabular tasks, 2 for LM tasks)."""
    learning_rate: float | None = None
    """Adam step size (default: 0.1 for tabular tasks, 1e-4 for LM tasks)."""
    batch_size: int | None = None
    """Pairs per step (default: 512 for tabular tasks, 32 for LM tasks)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    holdout_fraction: float = 0.1
    """Fraction of pairs held out to measure accuracy and correlation with r*."""


_DEFAULTS = {
    "tabular": {"epochs": 50, "learning_rate": 0.1, "batch_size": 512},
    "lm": {"epochs": 2, "learning_rate": 1e-4, "batch_size": 32},
}


@dataclass
class RewardFitReport:
    """What a fit achieved, measured on the held-out pairs."""

    train_pairs: int
    heldout_pairs: int
    train_loss: float
    """Mean negative log-likelihood on the training pairs after fitting."""
    heldout_loss: float
    heldout_accuracy: float
    """Fraction of held-out pairs where r̂(chosen) > r̂(rejected) (ties count half)."""
    gold_heldout_accuracy: float | None
    """The same with r* in place of r̂: the ceiling that label noise allows."""
    spearman_gold: float | None
    """Spearman correlation of r̂ and r* over the held-out responses (chosen and rejected)."""
    pearson_gold_margin: float | None
    """Pearson correlation of r̂(chosen) − r̂(rejected) with r*(chosen) − r*(rejected)."""


def fit_reward_model(
    task: Task,
    dataset: PreferenceDataset,
    model: PreferenceModel,
    config: RewardFitConfig,
    *,
    seed: int,
) -> tuple[RewardModel, RewardFitReport]:
    """Fit a fresh ``task.make_reward_model()`` to ``dataset``: maximum likelihood under ``model``.

    Minimises −(1/|D|) Σ log P(chosen ≻ rejected) = −mean log P(r̂(y⁺) − r̂(y⁻)) with AdamW over
    shuffled minibatches. Deterministic for a seed on the CPU.
    """
    defaults = _DEFAULTS["tabular" if task.kind == "tabular" else "lm"]
    epochs = config.epochs if config.epochs is not None else defaults["epochs"]
    lr = config.learning_rate if config.learning_rate is not None else defaults["learning_rate"]
    batch_size = config.batch_size if config.batch_size is not None else defaults["batch_size"]

    train_set, held_set = dataset.split(config.holdout_fraction, seed)
    train = train_set.to_batches(task).to(task.device)
    held = held_set.to_batches(task).to(task.device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reward = task.make_reward_model().to(task.device)
    optimizer = torch.optim.AdamW(reward.parameters(), lr=lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(seed)
    reward.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for start in range(0, len(train), batch_size):
            batch = train.select(order[start : start + batch_size])
            loss = -model.log_likelihood(*_scores(reward, batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    reward.eval()

    with torch.no_grad():
        train_loss = float(-model.log_likelihood(*_scores(reward, train, batch_size)))
        chosen, rejected = _scores(reward, held, batch_size)
        held_loss = float(-model.log_likelihood(chosen, rejected))
        held_acc = _accuracy(chosen, rejected)
    gold_acc = spearman = pearson = None
    if held_set.has_gold:
        from scipy import stats

        g_c = torch.tensor(held_set.frame["gold_chosen"].to_numpy(), dtype=torch.float64)
        g_r = torch.tensor(held_set.frame["gold_rejected"].to_numpy(), dtype=torch.float64)
        gold_acc = _accuracy(g_c, g_r)
        r_hat = torch.cat([chosen, rejected]).double().cpu().numpy()
        r_star = torch.cat([g_c, g_r]).numpy()
        spearman = _finite(stats.spearmanr(r_hat, r_star).statistic)
        margin_hat = (chosen - rejected).double().cpu().numpy()
        margin_star = (g_c - g_r).numpy()
        pearson = _finite(stats.pearsonr(margin_hat, margin_star).statistic) if len(
            margin_hat
        ) > 2 else None
    report = RewardFitReport(
        train_pairs=len(train),
        heldout_pairs=len(held),
        train_loss=train_loss,
        heldout_loss=held_loss,
        heldout_accuracy=held_acc,
        gold_heldout_accuracy=gold_acc,
        spearman_gold=spearman,
        pearson_gold_margin=pearson,
    )
    return reward, report


def _scores(
    reward: RewardModel, batch: PreferenceBatches, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """r̂ of the chosen and rejected responses (in chunks of ``chunk`` rows when given)."""
    if chunk is None or len(batch) <= chunk:
        return reward(batch.prompts, batch.chosen), reward(batch.prompts, batch.rejected)
    starts = range(0, len(batch), chunk)
    parts = [_scores(reward, batch.select(slice(s, s + chunk))) for s in starts]
    return torch.cat([c for c, _ in parts]), torch.cat([r for _, r in parts])


def _accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    wins = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()
    return float(wins.mean())


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None
