"""The tiny-lm task (harness.tasks.tiny_lm) and the on-disk cache it uses (harness.models.cache).

Every test builds into a temporary cache (``RLHF_HARNESS_CACHE``), with a small model and a
short pre-training (``SMALL``: ~15K parameters, 30 steps, about a second) instead of the defaults.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.config import build_config
from harness.errors import ConfigError
from harness.models import cache
from harness.models.lm import LMPolicy, LMRewardModel, LMValueModel
from harness.policy import ResponseBatch
from harness.tasks import tiny_lm
from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

SMALL = TinyLMParams(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_positions=32,
    corpus_size=1000,
    pretrain_steps=30,
    pretrain_batch_size=16,
    num_train_prompts=48,
    num_eval_prompts=16,
    max_new_tokens=12,
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def task(shared_cache: Path) -> TinyLMTask:
    t = TinyLMTask(SMALL, seed=0)
    t.reference_policy()  # build now, inside the module's cache
    return t


def entries(root: Path) -> list[str]:
    folder = root / "tiny-lm"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the cache -----------------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    assert cache.cache_dir() == tmp_path
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() == Path.home() / ".cache" / "rlhf-harness"


def test_atomic_dir_publishes_only_on_success(tmp_path) -> None:
    final = tmp_path / "ns" / "entry"
    with pytest.raises(RuntimeError), cache.atomic_dir(final) as tmp:
        (tmp / "half.bin").write_text("partial")
        raise RuntimeError("interrupted")
    assert not final.exists() and os.listdir(final.parent) == []
    with cache.atomic_dir(final) as tmp:
        (tmp / "data.txt").write_text("ok")
    assert cache.is_complete(final) and (final / "data.txt").read_text() == "ok"
    assert os.listdir(final.parent) == ["entry"]


def test_atomic_dir_race_keeps_the_first_writer(tmp_path) -> None:
    final = tmp_path / "entry"
    with cache.atomic_dir(final) as slow:
        (slow / "who").write_text("slow")
        with cache.atomic_dir(final) as fast:  # a second process finishing first
            (fast / "who").write_text("fast")
        assert (final / "who").read_text() == "fast"
    assert (final / "who").read_text() == "fast"  # write-once: the loser's copy is discarded
    assert os.listdir(tmp_path) == ["entry"]


def test_atomic_dir_replaces_an_incomplete_entry(tmp_path) -> None:
    final = tmp_path / "entry"
    final.mkdir()
    (final / "junk").write_text("no marker")
    assert not cache.is_complete(final)
    path, hit = cache.cached_dir(final, lambda d: (d / "data").write_text("new"))
    assert not hit and path == final and sorted(os.listdir(final)) == [".complete", "data"]
    assert cache.cached_dir(final, lambda d: pytest.fail("rebuilt")) == (final, True)


# --- building π_ref ------------------------------------------------------------------------------


def test_build_is_deterministic(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    states = []
    for name in ("a", "b"):
        monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / name))
        rng = torch.random.get_rng_state()
        t = TinyLMTask(SMALL)
        states.append((t.reference_policy().state_dict(), t.tokenizer.get_vocab(), t.cache_path))
        assert torch.equal(rng, torch.random.get_rng_state())
    (sa, va, pa), (sb, vb, pb) = states
    assert pa != pb and pa.name == pb.name  # two caches, one key
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert va == vb


def test_second_construction_hits_the_cache(
    task: TinyLMTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(tiny_lm, "pretrain", no_training)
    monkeypatch.setattr(tiny_lm, "build_assets", no_training)
    start = time.perf_counter()
    again = TinyLMTask(SMALL, seed=5)
    ref = again.reference_policy()
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0  # a load (≈ 0.05 s); the build takes seconds even at these sizes
    first = task.reference_policy().state_dict()
    assert all(torch.equal(v, first[k]) for k, v in ref.state_dict().items())


def test_params_outside_the_model_share_the_cache_entry(task: TinyLMTask) -> None:
    other = replace(SMALL, num_train_prompts=10, target_category="animal", eos_bonus=2.0,
                    target_saturation=None)
    assert tiny_lm.cache_key(other) == tiny_lm.cache_key(SMALL)
    assert tiny_lm.cache_key(replace(SMALL, seed_model=1)) != tiny_lm.cache_key(SMALL)
    assert tiny_lm.cache_key(replace(SMALL, arch="gpt2")) != tiny_lm.cache_key(SMALL)


def test_interrupted_build_leaves_no_entry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # inside the atomic_dir block, after the tokenizer was built

    with monkeypatch.context() as mp:
        mp.setattr(tiny_lm, "pretrain", killed)
        with pytest.raises(KeyboardInterrupt):
            TinyLMTask(SMALL).reference_policy()
    assert entries(tmp_path) == []  # neither an entry nor a temporary directory
    task = TinyLMTask(SMALL)
    task.reference_policy()
    assert entries(tmp_path) == [tiny_lm.cache_key(SMALL)]
    assert cache.is_complete(task.cache_path)


def test_gpt2_arch_builds(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    params = replace(SMALL, arch="gpt2", pretrain_steps=2)
    task = TinyLMTask(params)
    assert type(task.model).__name__ == "GPT2LMHeadModel"
    out = task.reference_policy().sample(
        task.eval_prompts, max_new_tokens=4, generator=torch.Generator().manual_seed(0)
    )
    assert out.tokens.shape[0] == 16


def test_pretraining_runs_on_the_tasks_device(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A task on a GPU (the CPU stand-in of harness.models.device_trace) pre-trains π_ref there:
    every op of the training loop on the device, none mixing it with the CPU."""
    from harness.models.device_trace import STAND_IN, stand_in_device

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    seen = []
    original = tiny_lm.pretrain

    def recording(model, docs, lengths, params):
        seen.append(trace.on_device(next(model.parameters())))
        return original(model, docs, lengths, params)

    monkeypatch.setattr(tiny_lm, "pretrain", recording)
    with stand_in_device() as trace:
        task = TinyLMTask(replace(SMALL, pretrain_steps=3), device=STAND_IN)
        task.reference_policy()
        before = trace.device_ops
    assert seen == [True] and before > 100
    info = json.loads((task.cache_path / "build.json").read_text())
    assert info["device"] == STAND_IN and info["threads"] is None


@pytest.mark.parametrize("large", [True, False])
def test_pretraining_a_large_model_on_the_cpu_uses_every_core(
    monkeypatch: pytest.MonkeyPatch, tmp_path, large: bool
) -> None:
    """Every core for a model of PARALLEL_PRETRAIN_PARAMETERS or more; one thread below (a small
    model only loses to more threads on a busy machine)."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tiny_lm, "available_cores", lambda: 3)
    if large:  # SMALL stands for a large model
        monkeypatch.setattr(tiny_lm, "PARALLEL_PRETRAIN_PARAMETERS", 1)
    threads = []
    original = tiny_lm.pretrain

    def recording(*args):
        threads.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(tiny_lm, "pretrain", recording)
    before = torch.get_num_threads()
    task = TinyLMTask(replace(SMALL, pretrain_steps=2))
    task.reference_policy()
    expected = 3 if large else 1
    assert threads == [expected] and torch.get_num_threads() == before  # restored after
    assert json.loads((task.cache_path / "build.json").read_text())["threads"] == expected


# --- params --------------------------------------------------------------------------------------


def test_params_are_validated() -> None:
    assert build_config(TinyLMParams, {"arch": "gpt2", "hidden_size": 48}).hidden_size == 48
    with pytest.raises(ConfigError, match="arch"):
        build_config(TinyLMParams, {"arch": "rnn"})
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        TinyLMTask(replace(SMALL, hidden_size=30, num_heads=4))
    with pytest.raises(ConfigError, match="max_positions"):
        TinyLMTask(replace(SMALL, max_positions=8))
    with pytest.raises(ConfigError, match="distinct prompts"):
        # One-word prompts: only the 4 determiners.
        TinyLMTask(replace(SMALL, prompt_min_words=1, prompt_max_words=1, num_train_prompts=4))
    assert build_config(TinyLMParams, {"target_saturation": None}).target_saturation is None
    assert build_config(TinyLMParams, {"target_saturation": 3}).target_saturation == 3.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ConfigError, match="target_saturation must be a positive") as err:
            TinyLMTask(replace(SMALL, target_saturation=bad))
        assert "\n" not in str(err.value)


# --- prompts, sampling and r* ----------------------------------------------------------------


def test_prompts_are_disjoint_and_indexed(task: TinyLMTask) -> None:
    train, held = task.train_prompts, task.eval_prompts
    assert len(train) == 48 and len(held) == 16
    assert torch.equal(train.index, torch.arange(48)) and torch.equal(held.index, torch.arange(16))
    train_text, eval_text = task.decode_prompts(train), task.decode_prompts(held)
    assert len(set(train_text)) == 48 and not set(train_text) & set(eval_text)
    assert all(2 <= len(t.split()) <= 4 and "." not in t for t in train_text)
    # Left-padded, starting with <bos>.
    first = train.mask.float().argmax(-1)
    assert torch.all(train.ids.gather(1, first.unsqueeze(1)) == task.bos_id)
    assert torch.all(train.mask[:, -1])


def draw(task: TinyLMTask, n: int = 32, seed: int = 0) -> tuple:
    prompts = task.train_prompts.select(torch.arange(n) % len(task.train_prompts))
    out = task.reference_policy().sample(
        prompts, max_new_tokens=task.max_new_tokens, generator=torch.Generator().manual_seed(seed)
    )
    return prompts, out


def test_reference_samples_vary_and_so_does_r_star(task: TinyLMTask) -> None:
    prompts, out = draw(task)
    texts = task.decode_responses(out)
    # Even a fully trained model would repeat only the commonest endings ("cat ."): a quarter
    # distinct is a loose bound; all 32 identical would mean a collapsed π_ref.
    assert len(set(texts)) >= 8
    reward = task.gold_reward(prompts, out)
    assert reward.shape == (32,) and reward.dtype == torch.float32
    assert reward.std() > 0
    fluency = task.fluency(prompts, out)
    assert fluency.shape == (32,) and torch.all((fluency >= 0) & (fluency <= 1))


def test_reference_policy_is_a_fresh_copy(task: TinyLMTask) -> None:
    a, b = task.reference_policy(), task.reference_policy()
    assert isinstance(a, LMPolicy) and a.model is not b.model
    assert all(p.requires_grad for p in a.parameters())
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    fresh = task.reference_policy()
    assert torch.equal(next(fresh.parameters()), next(b.parameters()))


def test_gold_reward_formula(task: TinyLMTask) -> None:
    prompts, responses = task.encode(
        ["the", "a dog", "the owl", "a dog"],
        ["blue fox sees a green dog .", "red red red red red red red red red red red red", "",
         "sees the red cat ."],
    )
    assert responses.finished.tolist() == [True, False, True, True]  # 12 words: cut
    r = task.gold_reward(prompts, responses)
    # r* = 2·(1 − exp(−colour words / 2)) + 0.5·[EOS] − 0.05·words
    expected = torch.tensor([2 * (1 - math.exp(-1)) + 0.5 - 0.05 * 7,
                             2 * (1 - math.exp(-6)) - 0.05 * 12,
                             0.5,
                             2 * (1 - math.exp(-0.5)) + 0.5 - 0.05 * 5])
    torch.testing.assert_close(r, expected)  # float32 rounding: relative 1.3e-6
    # The linear gold (target_saturation: null): one point per colour word, as before.
    linear = TinyLMTask(replace(SMALL, target_saturation=None)).gold_reward(prompts, responses)
    torch.testing.assert_close(linear, torch.tensor([2 + 0.5 - 0.05 * 7, 12 - 0.05 * 12, 0.5,
                                                     1 + 0.5 - 0.05 * 5]))
    # The hidden quality: the first response is grammatical, the second mostly not.
    fluency = task.fluency(prompts, responses)
    assert fluency[0] == 1.0 and fluency[1] < 0.5


def test_linear_gold_gives_the_old_values_bit_for_bit(task: TinyLMTask) -> None:
    """``target_saturation: null`` is the gold the recorded runs used: colour words + 0.5·[EOS]
    − 0.05·words, in float32 in that order, on π_ref's samples."""
    prompts, out = draw(task, n=48, seed=2)
    linear = TinyLMTask(replace(SMALL, target_saturation=None))
    colours = set(tiny_lm._LEXICON["colour"])
    words = [t.split() for t in linear.decode_responses(out)]
    hits = torch.tensor([sum(w in colours for w in ws) for ws in words], dtype=torch.float32)
    n = torch.tensor([len(ws) for ws in words], dtype=torch.float32)
    old = hits + 0.5 * out.finished.float() - 0.05 * n
    assert hits.max() >= 2 and out.finished.any() and not out.finished.all()  # a varied draw
    assert torch.equal(linear.gold_reward(prompts, out), old)
    # The default saturates: equal where no colour is named, below wherever one is.
    saturated = task.gold_reward(prompts, out)
    assert torch.equal(saturated[hits == 0], old[hits == 0])
    assert torch.all(saturated[hits > 0] < old[hits > 0])


@pytest.mark.parametrize("s", [0.5, 2.0, 5.0])
def test_saturating_gold_is_bounded_by_s_plus_the_eos_bonus(task: TinyLMTask, s: float) -> None:
    """r* ≤ s + eos_bonus on any response (length penalty 0, its most favourable; < in exact
    arithmetic, but s·(1 − e^(−11/s)) rounds to s in float32 for s = 0.5), and the bound is the
    least one: responses of colours only come ever closer to it."""
    bounded = TinyLMTask(replace(SMALL, target_saturation=s, length_penalty=0.0))
    vocabulary = [w for ws in tiny_lm._LEXICON.values() for w in ws]
    colours = list(tiny_lm._LEXICON["colour"])
    rng = random.Random(0)
    texts = [" ".join(rng.choices(colours if i % 2 else vocabulary, k=rng.randint(0, 12)))
             for i in range(200)]
    texts += [" ".join(colours[i % 8] for i in range(k)) for k in range(12)]
    prompts, responses = bounded.encode(["the"] * len(texts), texts)
    r = bounded.gold_reward(prompts, responses)
    assert torch.all(r <= s + 0.5)
    # The highest is 11 colours and EOS: s·(1 − e^(−11/s)) + 0.5, short of the bound by
    # s·e^(−11/s) (0.008 at s = 2), which more colours would shrink further.
    assert float(r.max()) == pytest.approx(s * -math.expm1(-11 / s) + 0.5, rel=1e-6)
    # The linear gold has no such bound: 11 colours and EOS score 11.5 (12, cut, score 12).
    linear = replace(bounded.params, target_saturation=None)
    assert float(TinyLMTask(linear).gold_reward(prompts, responses).max()) >= 11.5


def test_stacking_colours_gains_little_over_the_best_grammatical_response(
    task: TinyLMTask,
) -> None:
    """With max_new_tokens = 16 (the shipped suites'), a grammatical response holds at most 4
    colours, a stacked one 15 (and EOS). At s = 2 the stacked one scores at most
    s·(e^(−4/s) − e^(−15/s)) < 2e^(−2) = 0.27 above the 4-colour grammatical response of the
    same length, so above the best grammatical one; counted linearly, 11 above."""
    grammatical = [
        ("the", "cat ."),
        ("the", "red cat ."),
        ("the", "red cat sees a blue dog ."),
        ("the", "red cat sees a blue dog and the green fox ."),
        ("the big", "red cat sees a blue dog and the green fox sees a white owl ."),
        ("the big", "red cat and a blue dog . a green fox sees the white owl ."),
    ]
    colours = tiny_lm._LEXICON["colour"]
    stacked = ("the", " ".join(colours[i % 8] for i in range(15)))
    params = replace(SMALL, max_new_tokens=16)
    margins = {}
    for s in (2.0, None):
        long = TinyLMTask(replace(params, target_saturation=s))
        prompts, responses = long.encode(*map(list, zip(*grammatical, stacked, strict=True)))
        assert responses.finished.all() and int(responses.mask.sum(-1).max()) == 16
        fluency = long.fluency(prompts, responses)
        assert torch.all(fluency[:-1] == 1.0) and fluency[-1] < 0.1
        r = long.gold_reward(prompts, responses)
        margins[s] = float(r[-1] - r[:-1].max())
    # The default: 2(1 − e^(−7.5)) + 0.5 − 0.75 = 1.749 against 1.504 (3 colours in 11 words).
    assert 0 < margins[2.0] <= 2 * math.exp(-2)
    assert margins[2.0] == pytest.approx(1.7489 - 1.5037, abs=1e-4)
    # The linear gold fails the same check by far: 14.75 against 3.75.
    assert margins[None] == pytest.approx(11.0, abs=1e-5) and margins[None] > 2 * math.exp(-2)
    # The best stack is shorter: past 2·ln(20) ≈ 6 colours one more earns less than its 0.05
    # length penalty; 6 and EOS score 2.100, 0.597 above the best grammatical response.
    long = TinyLMTask(params)
    stacks = [" ".join(colours[i % 8] for i in range(k)) for k in range(1, 16)]
    r = long.gold_reward(*long.encode(["the"] * 15, stacks))
    assert int(r.argmax()) + 1 == 6
    best_grammatical = float(r[-1]) - margins[2.0]  # r[-1]: the 15 colours above
    assert float(r.max()) - best_grammatical == pytest.approx(0.597, abs=1e-3)


def test_decode_encode_round_trip(task: TinyLMTask) -> None:
    prompts, out = draw(task, seed=1)
    p_text, r_text = task.decode_prompts(prompts), task.decode_responses(out)
    p2, r2 = task.encode(p_text, r_text)
    assert torch.equal(p2.ids, prompts.ids) and torch.equal(p2.mask, prompts.mask)
    assert torch.equal(p2.index, prompts.index)
    width = out.tokens.shape[1]
    assert r2.tokens.shape[1] <= width
    padded = ResponseBatch(
        tokens=torch.nn.functional.pad(r2.tokens, (0, width - r2.tokens.shape[1]), value=0),
        mask=torch.nn.functional.pad(r2.mask, (0, width - r2.mask.shape[1]), value=False),
    )
    assert torch.equal(padded.mask, out.mask)
    assert torch.equal(padded.tokens[out.mask], out.tokens[out.mask])
    assert torch.equal(r2.finished, out.finished)
    assert task.decode_responses(r2) == r_text


def test_encode_indexes_prompts_and_rejects_foreign_words(task: TinyLMTask) -> None:
    train_text = task.decode_prompts(task.train_prompts)
    eval_text = task.decode_prompts(task.eval_prompts)
    prompts, _ = task.encode([train_text[3], eval_text[0], "zebra cat"], ["cat .", "", "."])
    assert prompts.index.tolist() == [3, -1, -1]
    with pytest.raises(ConfigError, match="'zebra'"):
        task.encode(["the cat"], ["sees a zebra ."])
    with pytest.raises(ConfigError, match="2 prompts but 1"):
        task.encode(["a", "b"], ["c"])


def test_reward_and_value_models(task: TinyLMTask) -> None:
    prompts, out = draw(task, n=4)
    reward = task.make_reward_model()
    value = task.make_value_model(task.reference_policy())
    assert isinstance(reward, LMRewardModel) and isinstance(value, LMValueModel)
    assert reward(prompts, out).shape == (4,)
    v = value(prompts, out)
    assert v.shape == out.tokens.shape and torch.all(v[~out.mask] == 0)
    assert task.enumerate_responses() is None and task.kind == "lm" and task.name == "tiny-lm"
