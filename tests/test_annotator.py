"""The simulated annotator and preference datasets."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from harness.data import PreferenceDataset
from harness.engine.annotator import simulate_preferences
from harness.errors import ConfigError
from harness.preference import BradleyTerry, Thurstone
from harness.tasks.bandit import BanditTask


def bandit(seed: int = 0, **params) -> BanditTask:
    defaults = {"num_prompts": 4, "num_arms": 8}
    return BanditTask(BanditTask.Params(**{**defaults, **params}), seed=seed)


def test_same_seed_same_data_and_other_seed_other_data():
    task = bandit()
    a = simulate_preferences(task, BradleyTerry(), num_pairs=300, seed=7)
    b = simulate_preferences(task, BradleyTerry(), num_pairs=300, seed=7)
    c = simulate_preferences(task, BradleyTerry(), num_pairs=300, seed=8)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame[["chosen", "rejected"]].equals(c.frame[["chosen", "rejected"]])


@pytest.mark.parametrize("model", [BradleyTerry(scale=0.5), Thurstone(scale=0.5)])
def test_label_frequencies_match_the_preference_model(model):
    """The better response wins with probability P(|Δr|) under the annotator's model.

    Over n = 20k pairs, the number of pairs won by the higher-gold response is a sum of
    independent Bernoullis with probabilities p_i = P(|Δ_i|); its standard deviation is
    sqrt(Σ p_i(1 − p_i)). We allow 5 of them: a false failure has probability < 1e-6.
    """
    task = bandit(reward="normal")
    data = simulate_preferences(task, model, num_pairs=20_000, seed=11)
    f = data.frame
    gap = torch.tensor((f["gold_chosen"] - f["gold_rejected"]).to_numpy())
    distinct = gap != 0
    p = model.prob(gap.abs()[distinct], torch.zeros(int(distinct.sum()), dtype=torch.float64))
    wins = float((gap[distinct] > 0).sum())
    expected = float(p.sum())
    sd = math.sqrt(float((p * (1 - p)).sum()))
    assert abs(wins - expected) < 5 * sd, (wins, expected, sd)


def test_flips_at_the_requested_rate():
    """Flip indicators are Bernoulli(0.25): 5 binomial standard deviations over 20k draws."""
    task = bandit()
    rate, n = 0.25, 20_000
    data = simulate_preferences(task, BradleyTerry(), num_pairs=n, seed=5, flip_rate=rate)
    observed = data.frame["flipped"].mean()
    assert abs(observed - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    # A flip reverses the label: with a near-deterministic annotator (τ = 1e-3, gaps ~ N(0, 2))
    # the higher-gold response loses essentially exactly when the label was flipped.
    sharp = simulate_preferences(task, BradleyTerry(scale=1e-3), num_pairs=2000, seed=5,
                                 flip_rate=rate)
    f = sharp.frame
    decided = (f["gold_chosen"] - f["gold_rejected"]).abs() > 0.05
    lost = (f["gold_chosen"] < f["gold_rejected"])[decided]
    assert (lost == f["flipped"][decided]).all()


def test_flip_rate_leaves_the_responses_unchanged():
    task = bandit()
    a = simulate_preferences(task, BradleyTerry(), num_pairs=500, seed=2, flip_rate=0.0)
    b = simulate_preferences(task, BradleyTerry(), num_pairs=500, seed=2, flip_rate=0.5)
    pairs = lambda d: {  # noqa: E731
        frozenset(x) for x in zip(d.frame["chosen"], d.frame["rejected"], strict=True)
    }
    assert pairs(a) == pairs(b)


def test_parquet_round_trip_and_batches_from_ids_equal_batches_from_text(tmp_path):
    task = bandit()
    data = simulate_preferences(task, BradleyTerry(), num_pairs=64, seed=0)
    path = data.save(tmp_path / "prefs.parquet")
    loaded = PreferenceDataset.load(path)
    pd.testing.assert_frame_equal(loaded.frame, data.frame)
    from_ids = loaded.to_batches(task)
    text_only = PreferenceDataset(loaded.frame[["prompt", "chosen", "rejected"]])
    from_text = text_only.to_batches(task)
    assert torch.equal(from_ids.prompts.index, from_text.prompts.index)
    for side in ("chosen", "rejected"):
        a, b = getattr(from_ids, side), getattr(from_text, side)
        assert torch.equal(a.tokens[a.mask], b.tokens[b.mask])
    # The gold rewards recorded are those of the task.
    gold = task.gold_reward(from_ids.prompts, from_ids.chosen).double()
    assert torch.allclose(gold, torch.tensor(data.frame["gold_chosen"].to_numpy()), atol=1e-6)


def test_user_file_with_a_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "mine.jsonl"
    pd.DataFrame({"prompt": ["p0"], "chosen": ["a1"]}).to_json(path, orient="records", lines=True)
    with pytest.raises(ConfigError) as err:
        PreferenceDataset.load(path)
    message = str(err.value)
    assert str(path) in message and "'rejected'" in message and "\n" not in message


def test_user_file_in_trl_convention_loads(tmp_path):
    path = tmp_path / "mine.jsonl"
    frame = pd.DataFrame({"prompt": ["p0", "p1"], "chosen": ["a1", "a2"], "rejected": ["a0", "a3"]})
    frame.to_json(path, orient="records", lines=True)
    batches = PreferenceDataset.load(path).to_batches(bandit())
    assert batches.prompts.index.tolist() == [0, 1]
    assert len(batches) == 2


@pytest.mark.parametrize(
    "kwargs", [{"num_pairs": 0}, {"num_pairs": 10, "flip_rate": 1.5}, {"num_pairs": 10,
                                                                       "batch_size": 0}]
)
def test_bad_annotator_settings_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        simulate_preferences(bandit(), BradleyTerry(), seed=0, **kwargs)
