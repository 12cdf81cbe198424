"""The ``hf`` task on a tiny causal LM and a tiny reward classifier saved to a temporary folder.

Both are loaded through the real ``from_pretrained`` path, exactly as a hub model would be.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError, UnknownNameError
from harness.models.lm import LMPolicy, build_causal_lm
from harness.tasks.hf import HFParams, HFTask
from harness.tasks.tiny_lm import TinyLMParams, make_corpus, make_tokenizer

WORDS_PER_PROMPT = 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama, its word-level tokenizer, a 2-label classifier, and a prompt file."""
    root = tmp_path_factory.mktemp("hf")
    corpus, _ = make_corpus(TinyLMParams(corpus_size=400))
    tokenizer = make_tokenizer(corpus)
    vocab = len(tokenizer)
    model = build_causal_lm(
        "llama", vocab, hidden=32, layers=2, heads=2, intermediate=64, max_positions=64, seed=0,
        pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")

    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    classifier = transformers.LlamaForSequenceClassification(config).eval()
    classifier.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")

    prompts = [" ".join(doc.split()[:WORDS_PER_PROMPT]) for doc in corpus[:60]]
    prompts = list(dict.fromkeys(p for p in prompts if p))  # distinct, order kept
    frame = pd.DataFrame({"prompt": prompts, "chosen": ["x"] * len(prompts)})
    frame.to_json(root / "prompts.jsonl", orient="records", lines=True)
    frame.to_parquet(root / "prompts.parquet")
    return root, classifier, tokenizer


def make_task(saved, **overrides) -> HFTask:
    root = saved[0]
    params = {
        "model": str(root / "lm"),
        "prompts": str(root / "prompts.jsonl"),
        "num_eval_prompts": 8,
        "max_new_tokens": 8,
        "gold_reward": "classifier",
        "gold_reward_params": {"path": str(root / "rm"), "label": 1},
        **overrides,
    }
    return HFTask(HFParams(**params), seed=0)


def test_registered_as_a_core_task():
    assert get_plugin_host(entry_points=False).task("hf") is HFTask


def test_loads_model_and_prompts_through_from_pretrained(saved):
    task = make_task(saved)
    n_prompts = len(pd.read_json(saved[0] / "prompts.jsonl", lines=True))
    assert len(task.eval_prompts) == 8
    assert len(task.train_prompts) == n_prompts - 8
    # Train and eval prompts are disjoint and together are the file's prompts.
    train, held = set(task.prompt_texts("train")), set(task.prompt_texts("eval"))
    assert not train & held and len(train | held) == n_prompts
    policy = task.reference_policy()
    assert isinstance(policy, LMPolicy)
    g = torch.Generator().manual_seed(0)
    responses = policy.sample(task.train_prompts, max_new_tokens=task.max_new_tokens, generator=g)
    assert responses.tokens.shape[0] == len(task.train_prompts)
    assert responses.mask.sum(-1).le(task.max_new_tokens).all()


def test_parquet_prompts_give_the_same_split(saved):
    a = make_task(saved)
    b = make_task(saved, prompts=str(saved[0] / "prompts.parquet"))
    assert a.prompt_texts("train") == b.prompt_texts("train")


def test_gold_reward_is_the_classifier_logit_on_prompt_plus_response(saved):
    _, classifier, tokenizer = saved
    task = make_task(saved)
    prompts = task.train_prompts.select(slice(0, 6))
    g = torch.Generator().manual_seed(1)
    responses = task.reference_policy().sample(prompts, max_new_tokens=8, generator=g)
    gold = task.gold_reward(prompts, responses)
    texts = [p + r for p, r in zip(task.decode_prompts(prompts), task.decode_responses(responses),
                                   strict=True)]
    # One text at a time: no padding at all, an independent computation of the same logit.
    with torch.no_grad():
        expected = [classifier(**tokenizer(t, return_tensors="pt")).logits[0, 1].item()
                    for t in texts]
    assert gold.tolist() == pytest.approx(expected, abs=1e-4)
    assert gold.std() > 0  # a random classifier still scores different texts differently


def test_encode_decode_round_trip(saved):
    task = make_task(saved)
    prompts = task.train_prompts.select(slice(0, 5))
    g = torch.Generator().manual_seed(2)
    responses = task.reference_policy().sample(prompts, max_new_tokens=8, generator=g)
    p_text, r_text = task.decode_prompts(prompts), task.decode_responses(responses)
    enc_p, enc_r = task.encode(p_text, r_text)
    assert enc_p.index.tolist() == prompts.index.tolist()
    assert task.decode_responses(enc_r) == r_text
    # Responses that ended with EOS get it back (EOS is dropped by decoding).
    assert torch.equal(enc_r.lengths, responses.lengths)


def test_missing_prompt_column_names_file_and_column(saved, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(ConfigError) as err:
        make_task(saved, prompts=str(path))
    assert str(path) in str(err.value) and "'prompt'" in str(err.value)


def test_bad_settings_are_named(saved):
    with pytest.raises(ConfigError, match="exactly one of"):
        make_task(saved, dataset="some/dataset")
    with pytest.raises(ConfigError, match="num_eval_prompts"):
        make_task(saved, num_eval_prompts=10_000)
    with pytest.raises(ConfigError, match="cannot load model"):
        make_task(saved, model=str(saved[0] / "nowhere")).reference_policy()
    task = make_task(saved, gold_reward="clasifier")
    with pytest.raises(UnknownNameError, match="Did you mean 'classifier'"):
        task.gold_reward(task.train_prompts, task.reference_policy().sample(
            task.train_prompts, max_new_tokens=2))
    task = make_task(saved, gold_reward_params={"path": str(saved[0] / "rm"), "labl": 1})
    with pytest.raises(ConfigError, match="gold reward 'classifier'"):
        _ = task.gold


def test_the_task_keeps_its_model_in_host_memory_and_lora_puts_one_base_on_the_device(
        saved, monkeypatch):
    """π_ref's model as loaded stays on the CPU: with LoRA the device holds the policy's base
    (and its adapters) once, not a second copy for the task."""
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # no Hub kernels for a model read on a "GPU"
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import build_context
    from harness.models.device_trace import STAND_IN, stand_in_device

    root = saved[0]
    params = HFParams(model=str(root / "lm"), prompts=str(root / "prompts.jsonl"),
                      num_eval_prompts=8, max_new_tokens=8, gold_reward="classifier",
                      gold_reward_params={"path": str(root / "rm"), "label": 1})
    with stand_in_device() as trace:
        task = HFTask(params, seed=0, device=STAND_IN)
        base = sum(p.numel() * p.element_size() for p in task.model.parameters())
        assert not any(trace.on_device(p) for p in task.model.parameters())
        context = build_context(task, get_plugin_host().algorithm("dpo"), seed=0,
                                preferences=_pairs(task),
                                policy_options={"lora": {"r": 4}})
        assert trace.on_device(next(context.policy.parameters()))
        assert base <= torch.cuda.memory_allocated() < 1.3 * base


def _pairs(task):
    from harness.engine.annotator import simulate_preferences
    from harness.preference import BradleyTerry

    return simulate_preferences(task, BradleyTerry(1.0), num_pairs=4, seed=0)
