"""The ``sentiment`` task: continue real movie-review text so that a sentiment scorer likes it.

The DPO paper's controlled experiment (Rafailov et al. 2023, §6.1 and Fig. 2) at CPU scale:
prompts are prefixes of real movie-review sentences, π_ref is a small causal LM pre-trained on
real English text, and the gold reward r* is a real, bounded, non-differentiable sentiment
scorer that no algorithm sees: algorithms learn from preference pairs labelled with r* (and
online ones from r̂ fitted to those pairs), so over-optimising r̂ against r* is possible.

**Corpus.** Three English corpora that the ``gensim`` package ships with its test data
(``gensim/test/test_data/``; gensim is LGPL-2.1; the texts keep their authors' terms, which
allow research use):

- ``pang_lee_polarity.cor``: 200 sentences of movie-review snippets from Pang & Lee's sentence
  polarity data set v1.0 (2005), half positive and half negative;
- ``alldata-id-10.txt``: 10 IMDb reviews of Maas et al.'s Large Movie Review Dataset (2011),
  the corpus of the DPO paper's sentiment experiment;
- ``lee_background.cor``: 300 news articles of the Lee et al. (2005) document-similarity corpus
  (Australian news), which gives the model more English than the reviews alone.

Nothing is downloaded: the files are read from the installed package. Text is lower-cased and
split into words and punctuation (``[a-z0-9]+('[a-z]+)?`` and ``. , ! ? ; :``); a sentence ends
at ``.``, ``!`` or ``?``. That gives 436 review sentences (7.0k words) and 2,758 news sentences
(65.8k words). Review sentences appear ``review_weight`` times in the pre-training corpus so
that π_ref writes reviews as often as news.

**Tokenizer.** Word level (one word or punctuation mark is one token): the ``vocab_size`` most
frequent words of the pre-training corpus (ties broken alphabetically) plus ``<pad>``,
``<bos>``, ``<eos>`` and ``<unk>``; rarer words (11% of the corpus at the default 3,000) are
``<unk>``, which π_ref is never allowed to emit (so every response decodes to words and encodes
back unchanged).

**π_ref.** A Llama (or GPT-2) from :func:`harness.models.lm.build_causal_lm`, pre-trained with
:func:`harness.tasks.tiny_lm.pretrain` (AdamW, warm-up then cosine, length-bucketed batches) on
``<bos> sentence <eos>`` documents; cached like tiny-lm's (``cache_dir()/sentiment/<hash>``, built
in :func:`~harness.models.cache.atomic_dir`, loaded with ``from_pretrained``). At the defaults the
model has 1.04M parameters (Llama, 4 layers of width 128, vocabulary 3,004). Its build — reading the
corpus, the tokenizer, 800 pre-training steps of 32 sentences, saving — took 206 s of CPU time on
one thread (loss 6.2 → 3.7; torch 2.13, transformers 5.25), 12 min 17 s of wall time on the 2-core
machine while it ran other jobs (load average ≈ 7); ``python -m harness.tasks.sentiment``
measures it. π_ref then ends 58% of its 64 eval-prompt samples with EOS within 16 tokens, and
its r* there is −0.03 ± 0.41 (mean ± sd): room to rise towards 1.

**Prompts.** The first ``prompt_min_words`` … ``prompt_max_words`` words of a review sentence
(never its last word, never an ``<unk>``), distinct, shuffled with ``seed_prompts``; the first
``num_train_prompts`` are the train split and the next ``num_eval_prompts`` the eval split.

**Gold reward.** VADER (Hutto & Gilbert 2014; the ``vaderSentiment`` package, MIT licence, its
lexicon shipped inside it): the ``compound`` score of the prompt and the response read together
(``score: full``, as TRL's sentiment example scores query and response) or of the response
alone (``score: response``). It lies in [−1, 1] and saturates (``compound = s / √(s² + 15)``
of the summed valences ``s``), so drifting far from π_ref stops paying: ``great great great
great great`` scores 0.97, not five times one ``great``. It is rule-based (negation, intensifiers,
"but", punctuation and capitals), not differentiable, and is never shown to an algorithm.

**Seeds.** π_ref and the prompts are fixed by the params (``seed_model``, ``seed_prompts``); the
task's ``seed`` only seeds the scalar heads of r̂ and of a critic, so every run shares one π_ref.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import random
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from harness.config import config_hash
from harness.errors import ConfigError
from harness.models.cache import atomic_dir, cache_dir, is_complete
from harness.models.lm import build_causal_lm, count_parameters
from harness.policy import PromptBatch, ResponseBatch
from harness.tasks.lm_task import LMTask

__all__ = [
    "FORMAT_VERSION",
    "MODEL_FIELDS",
    "SentimentParams",
    "SentimentTask",
    "build_assets",
    "cache_path",
    "corpus_sentences",
    "load_assets",
    "vader_scorer",
]

FORMAT_VERSION = 1
"""Bump when the corpus reading, the tokenizer or the training recipe changes (cache key)."""

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

REVIEW_FILES = ("pang_lee_polarity.cor", "alldata-id-10.txt")
NEWS_FILES = ("lee_background.cor",)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,!?;:]")
_SENTENCE_END = frozenset(".!?")


@dataclass
class SentimentParams:
    """Parameters of the ``sentiment`` task (defaults: a 1.04M-parameter Llama)."""

    arch: Literal["llama", "gpt2"] = "llama"
    """Model family of π_ref (see ``tiny-lm``'s ``arch``)."""
    hidden_size: int = 128
    """Width of the transformer."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block (``hidden_size`` must be a multiple)."""
    intermediate_size: int = 256
    """Width of each block's MLP."""
    max_positions: int = 64
    """Longest sequence the model accepts; pre-training sentences are cut to it."""
    vocab_size: int = 3000
    """Words kept by the tokenizer (the most frequent); the rest are ``<unk>``."""
    review_weight: int = 4
    """How many times each review sentence appears in the pre-training corpus."""
    pretrain_steps: int = 800
    """AdamW steps of pre-training."""
    pretrain_batch_size: int = 32
    """Sentences per pre-training step."""
    pretrain_lr: float = 3e-3
    """Peak learning rate (linear warm-up over the first 10% of steps, then cosine to 0)."""
    seed_model: int = 0
    """Seeds π_ref's initialisation and the order of pre-training batches."""
    seed_prompts: int = 0
    """Seeds the order of the prompts (and so the train/eval split)."""
    num_train_prompts: int = 256
    """Prompts of the train split."""
    num_eval_prompts: int = 64
    """Held-out prompts of the eval split, disjoint from the train split."""
    prompt_min_words: int = 2
    """Fewest words in a prompt (after ``<bos>``)."""
    prompt_max_words: int = 4
    """Most words in a prompt (after ``<bos>``)."""
    max_new_tokens: int = 16
    """Longest response (EOS included)."""
    score: Literal["full", "response"] = "full"
    """What VADER reads: the prompt and the response together (``full``) or the response."""

    def __post_init__(self) -> None:
        _check_params(self)  # here, so that ``validate`` names a bad value


MODEL_FIELDS: tuple[str, ...] = (
    "arch", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
    "vocab_size", "review_weight", "pretrain_steps", "pretrain_batch_size", "pretrain_lr",
    "seed_model",
)
"""The :class:`SentimentParams` fields that change the cached model and tokenizer."""


def _check_params(p: SentimentParams) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"sentiment task: {message}")

    need(p.arch in ("llama", "gpt2"), f"arch must be 'llama' or 'gpt2', got {p.arch!r}")
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size",
                 "review_weight", "pretrain_batch_size", "num_train_prompts",
                 "num_eval_prompts", "max_new_tokens"):
        need(getattr(p, name) >= 1, f"{name} must be >= 1, got {getattr(p, name)}")
    need(p.hidden_size % p.num_heads == 0,
         f"hidden_size ({p.hidden_size}) must be a multiple of num_heads ({p.num_heads})")
    need(p.pretrain_steps >= 0, f"pretrain_steps must be >= 0, got {p.pretrain_steps}")
    need(p.pretrain_lr > 0, f"pretrain_lr must be > 0, got {p.pretrain_lr}")
    need(1 <= p.prompt_min_words <= p.prompt_max_words,
         f"need 1 <= prompt_min_words ({p.prompt_min_words}) <= prompt_max_words "
         f"({p.prompt_max_words})")
    longest = 1 + p.prompt_max_words + p.max_new_tokens
    need(p.max_positions >= longest,
         f"max_positions ({p.max_positions}) must be >= 1 + prompt_max_words + max_new_tokens "
         f"= {longest}")
    need(p.score in ("full", "response"), f"score must be 'full' or 'response', got {p.score!r}")


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """Where the installed ``gensim`` keeps its test corpora (without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise ConfigError("sentiment task: its corpus ships with the gensim package, which is not "
                          "installed: pip install gensim")
    folder = Path(spec.origin).parent / "test" / "test_data"
    missing = [f for f in (*REVIEW_FILES, *NEWS_FILES) if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"sentiment task: {folder} lacks {', '.join(missing)} (this gensim "
                          f"release ships no test corpora; gensim 4.4 does)")
    return folder


def split_sentences(text: str) -> list[list[str]]:
    """Lower-cased words and punctuation of ``text``, cut into sentences after ``. ! ?``."""
    words = _WORD.findall(text.lower().replace("<br />", " "))
    sentences: list[list[str]] = []
    current: list[str] = []
    for word in words:
        current.append(word)
        if word in _SENTENCE_END:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def _read(name: str) -> list[str]:
    # The files are Windows-1252 (e.g. 0x97, an em dash); such characters are not words here.
    return (data_dir() / name).read_text(encoding="cp1252", errors="replace").splitlines()


def corpus_sentences() -> tuple[list[list[str]], list[list[str]]]:
    """``(review sentences, news sentences)`` of the corpus, as word lists."""
    reviews: list[list[str]] = []
    for line in _read("pang_lee_polarity.cor"):  # "__label__neg simplistic , silly ..."
        reviews += split_sentences(re.sub(r"^__label__\w+\s+", "", line))
    for line in _read("alldata-id-10.txt"):  # "_*0 it was a bit bizarre ..."
        reviews += split_sentences(line.split(" ", 1)[1] if " " in line else "")
    news = [s for line in _read("lee_background.cor") for s in split_sentences(line)]
    return [s for s in reviews if s], [s for s in news if s]


def pretraining_sentences(params: SentimentParams) -> list[list[str]]:
    """The pre-training corpus: each review sentence ``review_weight`` times, then the news."""
    reviews, news = corpus_sentences()
    return reviews * params.review_weight + news


def make_tokenizer(sentences: list[list[str]], vocab_size: int) -> Any:
    """A word-level tokenizer over the ``vocab_size`` most frequent words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts = collections.Counter(w for s in sentences for w in s)
    kept = sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size]
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *kept))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------------------------
# Building π_ref (cached)
# --------------------------------------------------------------------------------------------


def cache_path(params: SentimentParams) -> Path:
    """Where the model and tokenizer for ``params`` are cached."""
    fields = {name: getattr(params, name) for name in MODEL_FIELDS}
    key = config_hash({"format": FORMAT_VERSION, "params": fields}, length=16)
    return cache_dir() / "sentiment" / key


def build_assets(params: SentimentParams, out: Path, device: str = "cpu") -> dict[str, Any]:
    """Build π_ref and its tokenizer for ``params`` under ``out`` (``model/``, ``tokenizer/``,
    ``build.json``). Deterministic on one machine; the global RNG is left as it was. Pre-training
    runs on ``device``, on one CPU thread there (see :func:`harness.tasks.tiny_lm.build_assets`)."""
    from harness.tasks.tiny_lm import pretrain

    start, start_cpu = time.perf_counter(), time.process_time()
    reviews, news = corpus_sentences()
    docs_words = pretraining_sentences(params)
    tokenizer = make_tokenizer(docs_words, params.vocab_size)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = tokenizer([" ".join(s) for s in docs_words], add_special_tokens=False)["input_ids"]
    room = params.max_positions - 2
    seqs = [[bos, *ids, eos] if len(ids) <= room else [bos, *ids[:room + 1]] for ids in encoded]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    docs = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        docs[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    model = build_causal_lm(
        params.arch, vocab_size=len(tokenizer), hidden=params.hidden_size,
        layers=params.num_layers, heads=params.num_heads, intermediate=params.intermediate_size,
        max_positions=params.max_positions, seed=params.seed_model, pad_id=pad, bos_id=bos,
        eos_id=eos,
    )
    threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            losses = pretrain(model.to(device), docs, lengths, params)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
        model.to("cpu")
    out = Path(out)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "tokenizer")
    unk = tokenizer.unk_token_id
    info = {
        "format": FORMAT_VERSION,
        "params": {name: getattr(params, name) for name in MODEL_FIELDS},
        "num_parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "review_sentences": len(reviews),
        "news_sentences": len(news),
        "corpus_tokens": int(lengths.sum()),
        "unk_share": sum(ids.count(unk) for ids in encoded) / max(1, sum(map(len, encoded))),
        "build_seconds": time.perf_counter() - start,
        "build_cpu_seconds": time.process_time() - start_cpu,
        "device": str(torch.device(device)),
        **losses,
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_assets(params: SentimentParams, device: str = "cpu") -> tuple[nn.Module, Any, Path]:
    """``(model, tokenizer, path)``: from the cache, building the entry (on ``device``) first if
    needed; the model is loaded on the CPU in float32, Hub kernels off
    (:mod:`harness.models.hub`)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from harness.models.hub import pretrained_kwargs

    path = cache_path(params)
    if not is_complete(path):
        with atomic_dir(path) as tmp:
            build_assets(params, tmp, device)
    model = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32,
                                                 **pretrained_kwargs())
    model.eval().requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
    return model, tokenizer, path


# --------------------------------------------------------------------------------------------
# The gold reward
# --------------------------------------------------------------------------------------------


def vader_scorer() -> Any:
    """VADER's ``SentimentIntensityAnalyzer`` (its lexicon is read from the installed package)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ConfigError("sentiment task: its gold reward needs the vaderSentiment package: "
                          "pip install vaderSentiment") from None
    return SentimentIntensityAnalyzer()


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _make_prompts(params: SentimentParams, reviews: list[list[str]], known: set[str]) -> list[str]:
    """Distinct review prefixes (see the module docstring), train split first."""
    prefixes: dict[str, None] = {}
    for sentence in reviews:
        for k in range(params.prompt_min_words, params.prompt_max_words + 1):
            words = sentence[:k]
            if len(sentence) > k and all(w in known for w in words):
                prefixes.setdefault(" ".join(words), None)
    texts = sorted(prefixes)
    random.Random(params.seed_prompts).shuffle(texts)
    wanted = params.num_train_prompts + params.num_eval_prompts
    if len(texts) < wanted:
        raise ConfigError(
            f"sentiment task: the corpus gives only {len(texts)} distinct prompts of "
            f"{params.prompt_min_words}-{params.prompt_max_words} words, fewer than "
            f"num_train_prompts + num_eval_prompts = {wanted}"
        )
    return texts[:wanted]


class SentimentTask(LMTask):
    """Movie-review prefixes, a small LM pre-trained on real text, VADER as r* (module doc)."""

    name: ClassVar[str] = "sentiment"
    Params: ClassVar[type] = SentimentParams

    def __init__(self, params: SentimentParams, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        reviews, _ = corpus_sentences()
        known = set(make_tokenizer(pretraining_sentences(params), params.vocab_size).get_vocab())
        texts = _make_prompts(params, reviews, known)
        self._texts = {"train": texts[: params.num_train_prompts],
                       "eval": texts[params.num_train_prompts:]}
        self._path: Path | None = None

    def load_assets(self) -> tuple[nn.Module, Any]:
        model, tokenizer, self._path = load_assets(self.params, self.device)
        return model, tokenizer

    @property
    def cache_path(self) -> Path:
        """The cache entry holding the model and tokenizer (built if missing)."""
        self._loaded()
        assert self._path is not None
        return self._path

    @property
    def suppress_ids(self) -> tuple[int, ...]:
        """``<pad>``, ``<bos>`` and ``<unk>`` are never emitted."""
        tok = self.tokenizer
        return (tok.pad_token_id, tok.bos_token_id, tok.unk_token_id)

    def prompt_texts(self, split: str) -> list[str]:
        return self._texts[split]

    def prompt_token_ids(self, texts: list[str]) -> list[list[int]]:
        """``<bos>`` and the prompt's words."""
        words = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [[int(self.tokenizer.bos_token_id), *ids] for ids in words]

    def prompt_key(self, text: str) -> str:
        return " ".join(text.split())

    @property
    def max_new_tokens(self) -> int:
        return int(self.params.max_new_tokens)

    def check_responses(self, texts: list[str], ids: list[list[int]]) -> None:
        """A response with a word outside the vocabulary raises ConfigError (π_ref never emits
        ``<unk>``, so it would have probability 0)."""
        unk = self.tokenizer.unk_token_id
        for row, (text, seq) in enumerate(zip(texts, ids, strict=True)):
            if unk in seq:
                word = text.split()[seq.index(unk)]
                raise ConfigError(f"sentiment task: response {row} has the word {word!r}, which "
                                  f"is not in the vocabulary: {text!r}")

    @cached_property
    def _vader(self) -> Any:
        return vader_scorer()

    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float32: VADER's compound score of prompt + response (or the response alone)."""
        texts = self.decode_responses(responses)
        if self.params.score == "full":
            texts = [f"{p} {r}".strip()
                     for p, r in zip(self.decode_prompts(prompts), texts, strict=True)]
        scores = [self._vader.polarity_scores(t)["compound"] for t in texts]
        return torch.tensor(scores, dtype=torch.float32, device=responses.tokens.device)


def _main() -> None:  # pragma: no cover - a measurement, run by hand
    """Build the default task into a fresh temporary cache; print the build and π_ref's r*."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLHF_HARNESS_CACHE"] = tmp
        task = SentimentTask(SentimentParams())
        policy = task.reference_policy()
        info = json.loads((task.cache_path / "build.json").read_text())
        prompts = task.eval_prompts
        with torch.no_grad():
            responses = policy.sample(prompts, max_new_tokens=task.max_new_tokens,
                                      generator=torch.Generator().manual_seed(0))
        gold = task.gold_reward(prompts, responses)
        texts = task.decode_responses(responses)
        info["gold_mean"] = float(gold.mean())
        info["gold_std"] = float(gold.std())
        info["ended_with_eos"] = float((responses.tokens == task.eos_id).any(-1).float().mean())
        info["examples"] = [f"{p} | {r}" for p, r in
                            zip(task.decode_prompts(prompts)[:8], texts[:8], strict=True)]
        print(json.dumps(info, indent=2))


if __name__ == "__main__":  # pragma: no cover
    _main()
