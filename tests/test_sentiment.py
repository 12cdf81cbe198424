"""The ``sentiment`` task (harness/tasks/sentiment.py): real review text, VADER as r*.

Builds use a temporary cache and a small model (``SMALL``: ~30K parameters, 40 pre-training
steps, a few seconds) instead of the defaults (1.04M parameters, ~3 CPU-minutes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.errors import ConfigError
from harness.models import cache
from harness.tasks import sentiment
from harness.tasks.sentiment import SentimentParams, SentimentTask

SMALL = SentimentParams(
    hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=32,
    vocab_size=1200, pretrain_steps=40, pretrain_batch_size=16, num_train_prompts=64,
    num_eval_prompts=16, max_new_tokens=10,
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def task(shared_cache: Path) -> SentimentTask:
    t = SentimentTask(SMALL, seed=0)
    t.reference_policy()  # build now, inside the module's cache
    return t


def test_the_corpus_is_the_shipped_real_text():
    reviews, news = sentiment.corpus_sentences()
    # counts of the gensim 4.4 files as read by split_sentences (module docstring)
    assert (len(reviews), len(news)) == (436, 2758)
    assert reviews[0] == ["simplistic", ",", "silly", "and", "tedious", "."]
    assert sum(map(len, news)) > 60_000
    assert all(s and all(w == w.lower() for w in s) for s in reviews + news)


def test_sentences_split_after_end_marks_and_keep_contractions():
    got = sentiment.split_sentences("It's GREAT!  Really?<br />No. the end")
    assert got == [["it's", "great", "!"], ["really", "?"], ["no", "."], ["the", "end"]]


def test_tokenizer_keeps_the_most_frequent_words_and_round_trips():
    tok = sentiment.make_tokenizer([["b", "a", "b", "c", "c", "c"]], vocab_size=2)
    vocab = tok.get_vocab()
    assert set(vocab) == {"<pad>", "<bos>", "<eos>", "<unk>", "c", "b"}  # 'a' (once) left out
    ids = tok("c b a", add_special_tokens=False)["input_ids"]
    assert ids == [vocab["c"], vocab["b"], tok.unk_token_id]
    assert tok.decode(ids[:2]) == "c b"


def test_prompts_are_distinct_review_prefixes_in_two_disjoint_splits(task):
    train, evals = task.prompt_texts("train"), task.prompt_texts("eval")
    assert (len(train), len(evals)) == (SMALL.num_train_prompts, SMALL.num_eval_prompts)
    assert len(set(train) | set(evals)) == len(train) + len(evals)
    reviews, _ = sentiment.corpus_sentences()
    starts = {" ".join(s[:k]) for s in reviews for k in range(2, 5) if len(s) > k}
    assert set(train) | set(evals) <= starts
    unk = task.tokenizer.unk_token_id
    assert all(unk not in ids for ids in task.prompt_token_ids(train + evals))
    ids = task.train_prompts.ids
    assert (ids[:, -1] != task.pad_id).all()  # left-padded
    too_many = replace(SMALL, num_train_prompts=100_000)
    with pytest.raises(ConfigError, match="distinct prompts"):
        SentimentTask(too_many)


def test_gold_is_vader_bounded_and_saturating(task):
    vader = sentiment.vader_scorer()
    texts = ["a great , funny film .", "a bad , bad film .", "the film ."]
    prompts, responses = task.encode(["the story is"] * 3, texts)
    got = task.gold_reward(prompts, responses)
    want = [vader.polarity_scores(f"the story is {t}")["compound"] for t in texts]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert got[0] > 0.5 and got[1] < -0.5 and got[2] == 0.0
    # bounded: stacking positive words saturates below 1 instead of adding up
    stacked = task.encode(["the story is"], [" ".join(["great"] * 12)])
    one = task.encode(["the story is"], ["great"])
    s12, s1 = float(task.gold_reward(*stacked)), float(task.gold_reward(*one))
    assert s1 < s12 < 1.0 and s12 < 2 * s1
    only = SentimentTask(replace(SMALL, score="response"))
    assert float(only.gold_reward(*task.encode(["it was awful but"], ["good ."]))) > 0


def test_the_build_is_cached_deterministic_and_loads_without_hub_kernels(task, shared_cache,
                                                                         tmp_path, monkeypatch):
    from harness.models.hub import uses_hub_kernels

    info = json.loads((task.cache_path / "build.json").read_text())
    assert info["review_sentences"] == 436 and info["vocab_size"] == SMALL.vocab_size + 4
    assert info["loss_last"] < info["loss_first"]  # pre-training learned something
    assert not uses_hub_kernels(task.model)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    again = SentimentTask(SMALL)
    for a, b in zip(task.model.state_dict().values(), again.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_responses_decode_and_encode_back_unchanged(task):
    policy = task.reference_policy()
    with torch.no_grad():
        responses = policy.sample(task.eval_prompts, max_new_tokens=task.max_new_tokens,
                                  generator=torch.Generator().manual_seed(0))
    texts = task.decode_responses(responses)
    assert task.tokenizer.unk_token_id not in responses.tokens[responses.mask.bool()].tolist()
    prompts, again = task.encode(task.prompt_texts("eval"), texts)
    assert torch.equal(again.tokens[again.mask.bool()], responses.tokens[responses.mask.bool()])
    gold = task.gold_reward(prompts, again)
    assert gold.shape == (len(texts),) and bool(((gold >= -1) & (gold <= 1)).all())
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        task.encode(["the story is"], ["zyzzyva"])


def test_registered_and_validated_through_a_suite(tmp_path):
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    assert get_plugin_host(entry_points=False).task("sentiment") is SentimentTask
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks:\n  - name: sentiment\n    params: {hidden_size: 30, "
                     "num_heads: 4}\nalgorithms: [{name: dpo}]\nbudget: {samples: 64}\n"
                     "seeds: {instances: [0], replicates: 1}\n")
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        check_suite(load_suite(suite), str(suite), get_plugin_host(), allow_large=False)


def test_dpo_raises_gold_on_the_sentiment_task(task):
    """Offline DPO on 400 pairs labelled from VADER by BTL (τ = 0.1): the mean r* of 256 eval
    samples (same generator before and after) rises. r*'s per-sample sd is ≈ 0.38 here, so the
    standard error of a mean of 256 is ≈ 0.024; a rise of 0.08 is over 3 of them. Measured:
    0.092 → 0.280 (+0.19) in 40 steps."""
    from harness.engine.annotator import simulate_preferences
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import build_context, make_algorithm, train
    from harness.preference import BradleyTerry

    def mean_gold(policy) -> float:
        g = torch.Generator().manual_seed(123)
        prompts = task.eval_prompts
        p = prompts.select(torch.randint(len(prompts), (256,), generator=g))
        with torch.no_grad():
            responses = policy.sample(p, max_new_tokens=task.max_new_tokens, generator=g)
        return float(task.gold_reward(p, responses).mean())

    cls = get_plugin_host().algorithm("dpo")
    prefs = simulate_preferences(task, BradleyTerry(0.1), num_pairs=400, seed=0)
    context = build_context(task, cls, seed=0, preferences=prefs)
    before = mean_gold(context.reference)
    config = {"learning_rate": 1e-2, "batch_size": 32, "optimizer": "adam", "beta": 0.1}
    records = train(make_algorithm(cls, config, context), 40)
    assert all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float))
    assert mean_gold(context.policy) > before + 0.08


def test_the_memory_plan_sizes_the_sentiment_model(tmp_path, capsys):
    """``plan`` builds the task's model on the meta device from its params (no pre-training):
    its model state is the parameters, gradients and Adam state of the policy and the rest."""
    from harness.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks:\n  - name: sentiment\nalgorithms: [{name: dpo}]\n"
                     "budget: {samples: 64}\nseeds: [0]\n")
    main(["plan", str(suite), "--gpu-memory", "4GiB"])
    out = capsys.readouterr().out
    assert "(dpo on sentiment)" in out and "  fits" in out
    # the default model's parameters (1,041,024 float32), planned for the policy
    assert "parameters 3.97 MiB" in out
