"""``suites/imdb-sentiment.yaml`` (the DPO paper's IMDb experiment for a GPU and the Hub), run end
to end here through the ``hf`` task's real loading code on locally built models of the same
architectures — a GPT-2 causal LM and a DistilBERT sequence classifier, saved with
``save_pretrained`` — and a few rows of real IMDb text (the reviews gensim ships); and its memory
plan for an 80 GB GPU at the real models' sizes (GPT-2 124M, DistilBERT 66M, built from their
default configs on the meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "imdb-sentiment.yaml"


def _texts() -> list[str]:
    from harness.tasks.sentiment import REVIEW_FILES, data_dir

    imdb = (data_dir() / REVIEW_FILES[1]).read_text(encoding="cp1252", errors="replace")
    polarity = (data_dir() / REVIEW_FILES[0]).read_text(encoding="cp1252", errors="replace")
    rows = [line.split(" ", 1)[1] for line in imdb.splitlines() if " " in line]
    rows += [line.split(" ", 1)[1] for line in polarity.splitlines()[:40]]
    return rows


def _tokenizers(texts: list[str]):
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from transformers import DistilBertTokenizerFast, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"])
    gpt2 = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=300)
    bert = DistilBertTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]",
                                   sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                   mask_token="[MASK]")
    return gpt2, bert


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("imdb")
    texts = _texts()
    gpt2_tok, bert_tok = _tokenizers(texts)
    torch.manual_seed(0)
    eos = gpt2_tok.eos_token_id
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2_tok), n_positions=128, n_embd=32,
                                    n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos))
    lm.save_pretrained(root / "gpt2-imdb")
    gpt2_tok.save_pretrained(root / "gpt2-imdb")
    clf = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=len(bert_tok), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
        max_position_embeddings=512, num_labels=2, pad_token_id=bert_tok.pad_token_id))
    clf.save_pretrained(root / "distilbert-imdb")
    bert_tok.save_pretrained(root / "distilbert-imdb")
    pd.DataFrame({"text": texts}).to_json(root / "imdb.jsonl", orient="records", lines=True)
    return {"root": root, "lm": root / "gpt2-imdb", "clf": root / "distilbert-imdb",
            "prompts": root / "imdb.jsonl"}


def local_suite(assets: dict[str, Path], out: Path, *, small: bool = True) -> Path:
    """The shipped suite pointed at the local assets; ``small`` also shrinks it to run on a CPU."""
    text = SUITE.read_text()
    swaps = {
        "model: lvwerra/gpt2-imdb": f"model: {assets['lm']}",
        "dataset: stanfordnlp/imdb": f"prompts: {assets['prompts']}",
        "path: lvwerra/distilbert-imdb": f"path: {assets['clf']}",
    }
    if small:
        swaps |= {
            "device: cuda}": "device: cpu}",
            "num_eval_prompts: 256": "num_eval_prompts: 8",
            "num_pairs: 8192": "num_pairs: 48",
            "batch_size: 64, epochs: 1": "batch_size: 16, epochs: 1",
            "rollout_batch_size: 256, num_mini_batches: 4": "rollout_batch_size: 8, "
                                                            "num_mini_batches: 2",
            "prompts_per_step: 32, num_generations: 8": "prompts_per_step: 2, num_generations: 4",
            "batch_size: 64, warmup_steps: 20": "batch_size: 8, warmup_steps: 0",
            "instances: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]": "instances: [0]",
            "budget: {samples: 16384}": "budget: {steps: 1}",
            "every: 16": "every: 1",
            "device: cuda\nprecision: bf16\ngpus_per_run: 1\n": "device: cpu\n",
        }
    for old, new in swaps.items():
        assert old in text, old
        text = text.replace(old, new)
    out.write_text(text)
    return out


@pytest.mark.slow
def test_the_suite_runs_end_to_end_on_local_models_of_the_same_architectures(
        assets, tmp_path, monkeypatch, capsys):
    """About 2 minutes on two cores. Faster tests cover its parts: the hf task's whole path to
    a report (``tests/test_hf_example.py``), the prompts (below) and the plan at the real
    sizes (below)."""
    monkeypatch.chdir(tmp_path)
    suite = local_suite(assets, tmp_path / "imdb-sentiment.yaml")
    main(["run", str(suite), "--no-wandb", "--no-progress"])
    assert "imdb-sentiment: 16 runs: done 16;" in capsys.readouterr().out
    summaries = [json.loads(p.read_text())
                 for p in (tmp_path / "runs" / "imdb-sentiment").glob("*/summary.json")]
    assert len(summaries) == 16
    for summary in summaries:
        assert summary["status"] == "done"
        assert {"gold_reward", "kl_ref"} <= set(summary["final"])
    report = (tmp_path / "reports" / "imdb-sentiment" / "index.md").read_text()
    assert "frontier" in report.lower()


def test_prompts_are_short_review_prefixes(assets):
    from harness.tasks.hf import HFParams, HFTask

    params = HFParams(model=str(assets["lm"]), prompts=str(assets["prompts"]),
                      prompt_column="text", prompt_words=[2, 8], num_eval_prompts=8)
    task = HFTask(params, seed=0)
    prompts = task.prompt_texts("train") + task.prompt_texts("eval")
    lengths = [len(p.split()) for p in prompts]
    assert min(lengths) >= 2 and max(lengths) <= 8 and len(set(lengths)) >= 4
    starts = {tuple(t.split()[:k]) for t in _texts() for k in range(2, 9)}
    assert all(tuple(p.split()) in starts for p in prompts)
    assert HFTask(params, seed=0).prompt_texts("eval") == task.prompt_texts("eval")
    with pytest.raises(ValueError, match="prompt_words"):
        HFParams(model=str(assets["lm"]), prompts=str(assets["prompts"]), prompt_words=[3, 2])


def test_the_plan_fits_an_80_gb_gpu_at_the_real_models_sizes(assets, tmp_path, capsys):
    """GPT-2 small (124M) and DistilBERT (66M) from their default configs, no weights: the plan
    builds every model on the meta device."""
    from transformers import DistilBertConfig, GPT2Config

    full = {**assets, "lm": tmp_path / "gpt2", "clf": tmp_path / "distilbert",
            "prompts": tmp_path / "imdb.jsonl"}
    # more rows than the suite holds out for evaluation (256): the local texts, repeated
    pd.DataFrame({"text": _texts() * 8}).to_json(full["prompts"], orient="records", lines=True)
    GPT2Config().save_pretrained(full["lm"])
    (full["lm"] / "config.json").write_text(json.dumps(
        {**json.loads((full["lm"] / "config.json").read_text()),
         "architectures": ["GPT2LMHeadModel"]}))
    gpt2_tok, bert_tok = _tokenizers(_texts())
    gpt2_tok.save_pretrained(full["lm"])
    DistilBertConfig(num_labels=2).save_pretrained(full["clf"])
    bert_tok.save_pretrained(full["clf"])
    suite = local_suite(full, tmp_path / "imdb-sentiment.yaml", small=False)
    main(["plan", str(suite), "--gpu-memory", "80GiB"])
    out = capsys.readouterr().out
    assert out.count("  fits") == 160 and "does not fit" not in out  # 16 configurations × 10
    assert "gold reward (classifier)" in out
