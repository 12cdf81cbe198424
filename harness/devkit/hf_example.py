"""Small HF-format assets for ``suites/hf-example.yaml``: a causal LM and its tokenizer, a
sequence-classification reward model, and a ``prompt``/``chosen``/``rejected`` Parquet file.

Everything is built locally from ``transformers`` configs (nothing is downloaded) and saved with
``save_pretrained``, so the ``hf`` task loads it through ``from_pretrained`` exactly as it loads a
hub model. The language is ``tiny-lm``'s (its word-level tokenizer and documents); the models are
untrained (random weights): the assets exercise the pipeline, they do not make a benchmark.

Write them with ``python -m harness.devkit.hf_example [FOLDER]`` (default ``hf-example-assets``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

__all__ = ["write_example_assets"]


def write_example_assets(folder: str | Path, *, pairs: int = 48, seed: int = 0) -> dict[str, Path]:
    """Write ``policy/`` (Llama, 2 layers, width 32, and its tokenizer), ``reward/`` (a 1-layer
    Llama sequence classifier with one label: a reward model) and ``pairs.parquet`` (``pairs``
    rows of prompt, chosen, rejected) under ``folder``; returns their paths by name."""
    import pandas as pd
    import transformers
    from transformers.utils import logging as hf_logging

    from harness.models.lm import build_causal_lm
    from harness.tasks.tiny_lm import TinyLMParams, make_corpus, make_tokenizer

    hf_logging.disable_progress_bar()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    corpus, _ = make_corpus(TinyLMParams(corpus_size=400, seed_language=seed))
    tokenizer = make_tokenizer(corpus)
    vocab = len(tokenizer)
    model = build_causal_lm(
        "llama", vocab, hidden=32, layers=2, heads=2, intermediate=64, max_positions=64,
        seed=seed, pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        classifier = transformers.LlamaForSequenceClassification(config).eval()
    classifier.save_pretrained(root / "reward")
    tokenizer.save_pretrained(root / "reward")

    rng = random.Random(seed)
    rows, seen = [], set()
    for doc in corpus:
        words = doc.split()
        prompt = " ".join(words[:3])
        if len(words) < 5 or prompt in seen:
            continue
        seen.add(prompt)
        other = rng.choice(corpus).split()
        rows.append({"prompt": prompt, "chosen": " ".join(words[3:7]),
                     "rejected": " ".join(other[:4])})
        if len(rows) == pairs:
            break
    pd.DataFrame(rows).to_parquet(root / "pairs.parquet")
    return {"policy": root / "policy", "reward": root / "reward",
            "pairs": root / "pairs.parquet"}


if __name__ == "__main__":  # pragma: no cover - run by hand, as the suite's comments say
    out = write_example_assets(sys.argv[1] if len(sys.argv) > 1 else "hf-example-assets")
    print("wrote " + ", ".join(str(p) for p in out.values()))
