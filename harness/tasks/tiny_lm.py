"""The ``tiny-lm`` task: a small transformer LM, pre-trained on a synthetic language, on the CPU.

**The language.** Documents are word sequences from a first-order Markov chain over word
classes (``_TRANSITIONS``), each class emitting one of its words (``_LEXICON``) with Zipfian
weights ∝ 1/rank:

- classes: determiners (*the, a, every, some*), sizes (*big, small, old, young*), colours
  (*red, blue, green, yellow, black, white, brown, grey*), animals (*cat, dog, fox, bird, …*),
  adverbs (*often, never, …*), verbs (*sees, chases, …*), prepositions (*near, under, …*),
  conjunctions (*and, but, then*) and the full stop ``.``;
- e.g. ``the red fox often chases a small dog . some owl near the bear .``; a document ends
  (EOS) only after a full stop. A sentence averages about 8 words (full stop included), a
  document about 1.4 sentences (12 words).

The tokenizer is a word-level ``tokenizers`` model (whitespace split) trained on the corpus with
special tokens ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``, wrapped as a
``transformers.PreTrainedTokenizerFast`` (``clean_up_tokenization_spaces=False``, so decoding
joins words with single spaces). One word is one token.

**π_ref.** A Llama (or GPT-2) causal LM built by :func:`harness.models.lm.build_causal_lm`,
pre-trained
with AdamW for ``pretrain_steps`` steps of ``pretrain_batch_size`` documents ``<bos> … <eos>``
(next-token cross-entropy, length-bucketed batches, linear warm-up then cosine decay). It is
brief on purpose: π_ref writes varied, mostly but not always grammatical text (at the defaults,
on 64 train prompts: 42 distinct responses, 94% ending with EOS, 97% of word transitions
grammatical, linear r* 0.66 ± 0.47). At the default parameters the model has 265,920 parameters
(Llama, 4 layers of width 64, vocabulary 50; 207,360 with ``arch: gpt2``) and the whole build
— corpus, tokenizer, pre-training, saving — takes 12–15 s of CPU time on one thread; measured
wall time on a 2-core machine shared with other jobs (load average 3–4): **14–29 s**
(torch 2.13, transformers 5.24; ``python -m harness.tasks.tiny_lm`` measures it). Pre-training
runs on the task's device — a GPU run's π_ref trains on the GPU — and on the CPU on one thread,
or on every core the process may use for a model of 5M parameters or more. The build is
deterministic: fixed seeds, local generators, a fixed thread count and the global RNG untouched,
so the same params give the same weights bit for bit (with the same library versions); a large
model built on another core count or on a GPU rounds reductions differently, and the cache entry
is that of the machine that built it.

**Cache.** The model and tokenizer are saved with ``save_pretrained`` into
``cache_dir()/tiny-lm/<hash>`` (:mod:`harness.models.cache`), built inside
:func:`~harness.models.cache.atomic_dir` so an interrupted build leaves no entry; every task
instance loads them with ``from_pretrained`` from that local folder. The hash covers
:data:`FORMAT_VERSION` and the parameters that change the model (:data:`MODEL_FIELDS`); the
prompt and reward parameters do not, so changing them reuses the cached model.

**Prompts.** ``<bos>`` plus the first 2–4 words (``prompt_min_words`` … ``prompt_max_words``) of a
fresh document, never crossing its first full stop; distinct, in the order drawn, from a stream
seeded by ``seed_language``; the first ``num_train_prompts`` are the train split and the next
``num_eval_prompts`` the eval split, so the two are disjoint.

**Gold reward.** For a response y (its words w_1 … w_n, EOS excluded) with h = Σ_i [w_i ∈ target]
target words (repeats included)::

    r*(x, y) = s · (1 − exp(−h / s))  +  eos_bonus · [y ended with EOS]  −  length_penalty · n

with ``target`` the words of ``target_category`` (colours by default) and s =
``target_saturation`` (2 by default). With ``target_saturation: null`` the first term is h
itself, one point per target word (the gold before saturation). It is computed on token ids,
which is the same thing as on the decoded text since one word is one token. r* rewards
*mentioning* the category and does not look at grammar, so it can be over-optimised: there
are grammatical ways up (more noun phrases, more of them coloured: ``the red cat sees a blue
dog .``), and stacking colours — ``red blue red green …``, which the language never does (a
colour is always followed by an animal) — scores higher still. :meth:`TinyLMTask.fluency`
measures that hidden quality — the fraction of the response's word transitions the grammar
allows — and is not part of r*.

*Why it saturates.* Counted linearly, a response stacking 15 colours scores 14.75 against 3.75
for the best grammatical response, so at β = 0.1 a policy tens of nats from π_ref still gained
in J_β = E r* − β·KL (in the zoo, GSPO and SimPO led tiny-lm at a final KL of 76 and 70
nats, by stacking colours). Saturating, r* < s + eos_bonus, so a policy more than
(s + eos_bonus − E_π_ref r*)/β nats from π_ref cannot beat π_ref itself in J_β: about 19 nats
at the defaults and β = 0.1 (π_ref's mean r* is 0.59 on the samples below).

s comes from what the grammar allows. A colour must be followed by an animal and preceded by a
determiner or a size, so a response of at most ``max_new_tokens`` = 16 tokens (EOS included)
holds at most 4 colours (``red cat sees a blue dog and the green fox sees a white owl .`` after
``the big``). Measured on 2,048 samples of π_ref (8 per train prompt, seed 0), its 1,765
grammatical finished responses carry 0/1/2/3/4 colours 1050/570/129/15/1 times (mean 0.50); of
20,000 documents of the language cut after a 2–4-word prompt and ending within 16 tokens, 54%
carry none, 98.3% at most 2 and all but 4 at most 3. With s = 2, h = 0…4 score 0, 0.79, 1.26,
1.55, 1.73: a grammatical response gets 63% of the bounded term with 2 colours, 78% with 3 and
86% with 4, and the best grammatical responses (3 colours in 11 words, 1.50; 4 in 15, 1.48)
still beat those with fewer colours (2 in 7 words, 1.41). Stacking 15 colours adds only
s·(e^(−4/s) − e^(−15/s)) < 2e^(−2) = 0.27 to a 4-colour response of the same length, and past
2·ln(1/length_penalty) = 6 colours a further one earns less than its length penalty. The best
response overall is still ungrammatical (6 stacked colours and EOS: 2.10), but ahead of the
best grammatical one by 0.6 rather than by 11.

**One module, over 600 lines, on purpose.** The language, the cached pre-trained π_ref and the
task that samples, scores and checks responses of that language read one grammar (the lexicon
and the transitions): split, each part would import the others' private tables.

**Seeds.** π_ref, the prompts and r* are fixed by the ``Params`` (``seed_language`` for the
corpus and prompts, ``seed_model`` for the initialisation and batch order). The task's ``seed``
only seeds the scalar heads of :meth:`~TinyLMTask.make_reward_model` and
:meth:`~TinyLMTask.make_value_model`, so runs with different seeds share one π_ref.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
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
    "PARALLEL_PRETRAIN_PARAMETERS",
    "TinyLMParams",
    "TinyLMTask",
    "build_assets",
    "cache_key",
    "cache_path",
    "length_bucketed_batches",
    "load_assets",
    "make_corpus",
    "make_tokenizer",
    "pretrain",
    "sample_document",
]

FORMAT_VERSION = 2
"""Bump when the language, the tokenizer or the training recipe changes: it is in the cache key."""

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

_LEXICON: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "every", "some"),
    "size": ("big", "small", "old", "young"),
    "colour": ("red", "blue", "green", "yellow", "black", "white", "brown", "grey"),
    "animal": ("cat", "dog", "fox", "bird", "horse", "mouse", "owl", "frog", "bear", "wolf"),
    "adverb": ("often", "never", "quickly", "slowly"),
    "verb": ("sees", "chases", "likes", "finds", "follows", "hears", "meets", "watches"),
    "prep": ("near", "under", "behind", "with"),
    "conj": ("and", "but", "then"),
    "stop": (".",),
}
"""Word classes and their words (most frequent first: word i has weight 1/(i + 1))."""

_TRANSITIONS: dict[str, dict[str, float]] = {
    BOS: {"det": 1.0},
    "det": {"size": 0.2, "colour": 0.35, "animal": 0.45},
    "size": {"colour": 0.4, "animal": 0.6},
    "colour": {"animal": 1.0},
    "animal": {"verb": 0.35, "adverb": 0.08, "prep": 0.07, "conj": 0.05, "stop": 0.45},
    "adverb": {"verb": 1.0},
    "verb": {"det": 1.0},
    "prep": {"det": 1.0},
    "conj": {"det": 1.0},
    "stop": {EOS: 0.7, "det": 0.3},
}
"""P(next class | class); ``<bos>`` starts a document and ``<eos>`` ends it."""

TargetCategory = Literal["colour", "animal", "size", "verb", "adverb"]


@dataclass
class TinyLMParams:
    """Parameters of the ``tiny-lm`` task (defaults: a 0.27M-parameter Llama, built in ~15 s)."""

    arch: Literal["llama", "gpt2"] = "llama"
    """Model family of π_ref: ``llama`` (RoPE, RMSNorm, SwiGLU) or ``gpt2`` (learned positions,
    LayerNorm, GELU). Both tie input and output embeddings and have no dropout."""
    hidden_size: int = 64
    """Width of the transformer (embedding and residual stream)."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block (``hidden_size`` must be a multiple)."""
    intermediate_size: int = 256
    """Width of each block's MLP."""
    max_positions: int = 64
    """Longest sequence the model accepts (pre-training documents are cut to it); must hold
    ``<bos>`` + ``prompt_max_words`` + ``max_new_tokens``."""
    corpus_size: int = 4000
    """Number of synthetic documents pre-training draws from (and the tokenizer is trained on)."""
    pretrain_steps: int = 300
    """AdamW steps of pre-training. Few on purpose: π_ref should be varied and mediocre."""
    pretrain_batch_size: int = 32
    """Documents per pre-training step."""
    pretrain_lr: float = 3e-3
    """Peak learning rate (linear warm-up over the first 10% of steps, then cosine to 0)."""
    seed_language: int = 0
    """Seeds the corpus and the prompts."""
    seed_model: int = 0
    """Seeds π_ref's initialisation and the order of pre-training batches."""
    num_train_prompts: int = 256
    """Prompts of the train split (algorithms and the annotator draw from these)."""
    num_eval_prompts: int = 64
    """Held-out prompts of the eval split, disjoint from the train split."""
    prompt_min_words: int = 2
    """Fewest words in a prompt (after ``<bos>``)."""
    prompt_max_words: int = 4
    """Most words in a prompt (after ``<bos>``)."""
    max_new_tokens: int = 16
    """Longest response (EOS included) a policy may generate."""
    target_category: TargetCategory = "colour"
    """The word class r* rewards: its words in the response are r*'s hits h."""
    eos_bonus: float = 0.5
    """r* bonus for a response that ends with EOS (a finished document)."""
    length_penalty: float = 0.05
    """r* cost per response word (EOS not counted)."""
    target_saturation: float | None = 2.0
    """s in r*'s target term s·(1 − exp(−h/s)) for h target words: that term is below s, so
    drifting far from π_ref stops paying. 2 because a grammatical response of at most 16 tokens
    holds at most 4 colours (98% of such responses in the language hold at most 2): with 2, 3
    and 4 colours it gets 63%, 78% and 86% of s, and stacking 15 colours adds less than 0.27
    over 4 (see the module docstring for the measurements). ``None``: the linear count h, one
    point per target word, as before. Not a model field: the cached π_ref does not change."""


MODEL_FIELDS: tuple[str, ...] = (
    "arch",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_positions",
    "corpus_size",
    "pretrain_steps",
    "pretrain_batch_size",
    "pretrain_lr",
    "seed_language",
    "seed_model",
)
"""The :class:`TinyLMParams` fields that change the cached model and tokenizer (its cache key)."""


# --------------------------------------------------------------------------------------------
# The synthetic language
# --------------------------------------------------------------------------------------------


def _word_weights(words: tuple[str, ...]) -> list[float]:
    return [1.0 / (i + 1) for i in range(len(words))]


def sample_document(rng: random.Random, max_words: int) -> tuple[list[str], bool]:
    """One document's words (``<bos>``/``<eos>`` excluded) and whether it ended (reached EOS).

    Documents longer than ``max_words`` are cut there (and did not end).
    """
    words: list[str] = []
    state = BOS
    while len(words) < max_words:
        nxt = _TRANSITIONS[state]
        state = rng.choices(list(nxt), weights=list(nxt.values()))[0]
        if state == EOS:
            return words, True
        lex = _LEXICON[state]
        words.append(rng.choices(lex, weights=_word_weights(lex))[0])
    return words, False


def _class_of_word() -> dict[str, str]:
    return {w: c for c, words in _LEXICON.items() for w in words}


def _check_params(p: TinyLMParams) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"tiny-lm task: {message}")

    need(p.arch in ("llama", "gpt2"), f"arch must be 'llama' or 'gpt2', got {p.arch!r}")
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "corpus_size"):
        need(getattr(p, name) >= 1, f"{name} must be >= 1, got {getattr(p, name)}")
    need(
        p.hidden_size % p.num_heads == 0,
        f"hidden_size ({p.hidden_size}) must be a multiple of num_heads ({p.num_heads})",
    )
    need(p.pretrain_steps >= 0, f"pretrain_steps must be >= 0, got {p.pretrain_steps}")
    need(
        p.pretrain_batch_size >= 1, f"pretrain_batch_size must be >= 1, got {p.pretrain_batch_size}"
    )
    need(p.pretrain_lr > 0, f"pretrain_lr must be > 0, got {p.pretrain_lr}")
    need(p.num_train_prompts >= 1, f"num_train_prompts must be >= 1, got {p.num_train_prompts}")
    need(p.num_eval_prompts >= 1, f"num_eval_prompts must be >= 1, got {p.num_eval_prompts}")
    need(
        1 <= p.prompt_min_words <= p.prompt_max_words,
        f"need 1 <= prompt_min_words ({p.prompt_min_words}) <= prompt_max_words "
        f"({p.prompt_max_words})",
    )
    need(p.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {p.max_new_tokens}")
    longest = 1 + p.prompt_max_words + p.max_new_tokens
    need(
        p.max_positions >= longest,
        f"max_positions ({p.max_positions}) must be >= 1 + prompt_max_words + max_new_tokens "
        f"= {longest}",
    )
    need(p.target_category in _LEXICON, f"unknown target_category {p.target_category!r}")
    s = p.target_saturation
    need(
        s is None or (math.isfinite(s) and s > 0),
        f"target_saturation must be a positive finite number or null, got {s}",
    )


# --------------------------------------------------------------------------------------------
# Building π_ref (cached)
# --------------------------------------------------------------------------------------------


def cache_key(params: TinyLMParams) -> str:
    """The cache entry's name: a hash of :data:`FORMAT_VERSION` and the :data:`MODEL_FIELDS`."""
    fields = {name: getattr(params, name) for name in MODEL_FIELDS}
    return config_hash({"format": FORMAT_VERSION, "params": fields}, length=16)


def cache_path(params: TinyLMParams) -> Path:
    """Where the model and tokenizer for ``params`` are cached."""
    return cache_dir() / "tiny-lm" / cache_key(params)


def make_corpus(params: TinyLMParams) -> tuple[list[str], list[bool]]:
    """The pre-training corpus: ``corpus_size`` documents as space-separated words, and whether
    each ended (documents are cut at ``max_positions − 2`` words, leaving room for ``<bos>``
    and ``<eos>``; a cut document gets no ``<eos>``)."""
    rng = random.Random(params.seed_language * 2 + 1)  # odd: the corpus stream
    docs = [sample_document(rng, params.max_positions - 2) for _ in range(params.corpus_size)]
    return [" ".join(words) for words, _ in docs], [ended for _, ended in docs]


def make_tokenizer(corpus: list[str]) -> Any:
    """A word-level tokenizer trained on ``corpus``, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    missing = sorted(set(_class_of_word()) - set(tok.get_vocab()))
    if missing:
        raise ConfigError(
            f"tiny-lm task: corpus_size={len(corpus)} is too small: the corpus never uses "
            f"{', '.join(missing)}"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, steps: int, generator: torch.Generator, pool: int = 8
) -> list[torch.Tensor]:
    """``steps`` batches of row indices, drawn with replacement, grouped by length.

    Draws ``pool · batch_size`` documents at a time, sorts them by length, cuts them into
    ``pool`` batches and shuffles those. Documents in a batch then have similar lengths, so
    little of each batch is padding (documents average ~14 tokens but the longest of 32 random
    ones ~43: bucketing makes pre-training about twice as fast).
    """
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        rows = torch.randint(lengths.shape[0], (pool * batch_size,), generator=generator)
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        chunks = rows.split(batch_size)
        order = torch.randperm(len(chunks), generator=generator).tolist()
        batches.extend(chunks[i] for i in order)
    return batches[:steps]


def pretrain(
    model: nn.Module, docs: torch.Tensor, lengths: torch.Tensor, params: TinyLMParams
) -> dict[str, float]:
    """Pre-train ``model`` in place on right-padded documents ``docs [N, L]`` of ``lengths [N]``.

    Next-token cross-entropy on real tokens, AdamW (β = (0.9, 0.95), weight decay 0.01, gradient
    norm clipped at 1), linear warm-up over 10% of the steps then cosine decay to 0. Batches
    come from :func:`length_bucketed_batches` with a generator seeded by ``seed_model``.
    Returns the mean loss over the first and the last 10% of steps.
    """
    steps = params.pretrain_steps
    if steps == 0:
        return {"loss_first": math.nan, "loss_last": math.nan}
    g = torch.Generator().manual_seed(params.seed_model * 2 + 1)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.01
    )
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    device = next(model.parameters()).device
    positions = torch.arange(docs.shape[1], device=device)
    docs, on_device = docs.to(device), lengths.to(device)
    losses: list[float] = []
    model.train()
    for rows in length_bucketed_batches(lengths, params.pretrain_batch_size, steps, g):
        width = int(lengths[rows].max())
        rows = rows.to(device)
        ids = docs[rows, :width]
        mask = positions[:width] < on_device[rows].unsqueeze(1)
        logits = model(
            input_ids=ids,
            attention_mask=mask.long(),
            position_ids=positions[:width].expand_as(ids),
            use_cache=False,
        ).logits
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=-100,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    model.eval()
    tenth = max(1, steps // 10)
    return {
        "loss_first": sum(losses[:tenth]) / tenth,
        "loss_last": sum(losses[-tenth:]) / tenth,
    }


def build_assets(params: TinyLMParams, out: Path, device: str = "cpu") -> dict[str, Any]:
    """Build π_ref and its tokenizer for ``params`` and save them under ``out``.

    Writes ``out/model`` and ``out/tokenizer`` (``save_pretrained``) and ``out/build.json``
    (params, timings, losses, parameter count, device, threads). Deterministic on one machine;
    leaves the global RNG as it was.

    Pre-training runs on ``device`` — a run's device, so that a GPU suite's larger π_ref is
    trained on the GPU (``suites/gpu.yaml``'s 34M model took ~37 minutes on one CPU thread) —
    and, on the CPU, on every core this process may use for a model of at least
    :data:`PARALLEL_PRETRAIN_PARAMETERS` parameters, on one thread for a smaller one (the
    previous thread count is restored after). A small model gains nothing from more threads and
    loses much on a busy machine: the default 0.27M model took 490 s of wall time (146 s of CPU)
    on two threads of a 2-core machine at load average 9, against 14–29 s on one thread at load
    3–4. Reductions split over threads, or run on a GPU, round differently, so a large model's
    weights depend on the machine that built the cache entry, as the entry is the machine's own.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    corpus, ended = make_corpus(params)
    tokenizer = make_tokenizer(corpus)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    seqs = [[bos, *ids, eos] if e else [bos, *ids] for ids, e in zip(encoded, ended, strict=True)]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    docs = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        docs[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    model = build_causal_lm(
        params.arch,
        vocab_size=len(tokenizer),
        hidden=params.hidden_size,
        layers=params.num_layers,
        heads=params.num_heads,
        intermediate=params.intermediate_size,
        max_positions=params.max_positions,
        seed=params.seed_model,
        pad_id=pad,
        bos_id=bos,
        eos_id=eos,
    )
    threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    big = count_parameters(model) >= PARALLEL_PRETRAIN_PARAMETERS
    used = (available_cores() if big else 1) if on_cpu else threads
    torch.set_num_threads(used)
    try:
        with torch.random.fork_rng(devices=[]):
            losses = pretrain(model.to(device), docs, lengths, params)
    finally:
        torch.set_num_threads(threads)
        model.to("cpu")
    out = Path(out)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "tokenizer")
    info = {
        "format": FORMAT_VERSION,
        "params": {name: getattr(params, name) for name in MODEL_FIELDS},
        "num_parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "corpus_tokens": int(lengths.sum()),
        "build_seconds": time.perf_counter() - start,
        "build_cpu_seconds": time.process_time() - start_cpu,
        "device": str(torch.device(device)),
        "threads": used if on_cpu else None,
        **losses,
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


PARALLEL_PRETRAIN_PARAMETERS = 5_000_000
"""From this many parameters up, CPU pre-training uses every available core (see
:func:`build_assets`)."""


def available_cores() -> int:
    """The CPU cores this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_assets(params: TinyLMParams, device: str = "cpu") -> tuple[nn.Module, Any, Path]:
    """``(model, tokenizer, path)`` for ``params``: from the cache, building the entry (on
    ``device``) if needed; the model is loaded on the CPU, in float32.

    The read is lock-free: a complete entry is used as is. Otherwise the entry is built in a
    temporary directory and renamed into place (:func:`harness.models.cache.atomic_dir`); if another
    process finished the same entry first, its copy is kept. Either way the model and tokenizer
    are then loaded with ``from_pretrained`` from the local folder.
    """
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from harness.models.hub import pretrained_kwargs

    path = cache_path(params)
    if not is_complete(path):
        with atomic_dir(path) as tmp:
            build_assets(params, tmp, device)
    model = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32,
                                                 **pretrained_kwargs())  # no Hub kernels
    model.eval()
    model.requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
    return model, tokenizer, path


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _make_prompts(params: TinyLMParams) -> list[str]:
    """Distinct prompt texts, train split first then eval split (see the module docstring)."""
    rng = random.Random(params.seed_language * 2 + 2)  # even: the prompt stream
    wanted = params.num_train_prompts + params.num_eval_prompts
    seen: dict[str, None] = {}
    draws = 0
    max_draws = 200 * wanted
    while len(seen) < wanted and draws < max_draws:
        draws += 1
        k = rng.randint(params.prompt_min_words, params.prompt_max_words)
        words, _ = sample_document(rng, k)
        if len(words) < k or "." in words:
            continue
        seen.setdefault(" ".join(words), None)
    if len(seen) < wanted:
        raise ConfigError(
            f"tiny-lm task: found only {len(seen)} distinct prompts of "
            f"{params.prompt_min_words}-{params.prompt_max_words} words in {max_draws} draws, "
            f"fewer than num_train_prompts + num_eval_prompts = {wanted}"
        )
    return list(seen)


class TinyLMTask(LMTask):
    """A tiny pre-trained LM on a synthetic language (see the module docstring)."""

    name: ClassVar[str] = "tiny-lm"
    Params: ClassVar[type] = TinyLMParams

    def __init__(self, params: TinyLMParams, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        _check_params(params)
        self._path: Path | None = None
        texts = _make_prompts(params)
        self._texts = {
            "train": texts[: params.num_train_prompts],
            "eval": texts[params.num_train_prompts :],
        }

    # --- assets (built or loaded on first use) ---------------------------------------------------

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
    def bos_id(self) -> int:
        return int(self.tokenizer.bos_token_id)

    @property
    def suppress_ids(self) -> tuple[int, ...]:
        """``<pad>``, ``<bos>`` and ``<unk>`` are never emitted (they are not words of a
        response), so every sampled response decodes to text and encodes back unchanged."""
        tok = self.tokenizer
        return (tok.pad_token_id, tok.bos_token_id, tok.unk_token_id)

    # --- data ------------------------------------------------------------------------------------

    def prompt_texts(self, split: str) -> list[str]:
        return self._texts[split]

    def prompt_token_ids(self, texts: list[str]) -> list[list[int]]:
        """``<bos>`` and the prompt's words."""
        words = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [[self.bos_id, *ids] for ids in words]

    def prompt_key(self, text: str) -> str:
        return " ".join(text.split())

    @property
    def max_new_tokens(self) -> int:
        return int(self.params.max_new_tokens)

    def check_responses(self, texts: list[str], ids: list[list[int]]) -> None:
        """Unknown words in a response raise ConfigError: π_ref never emits ``<unk>``, so such a
        response would have probability 0. (In a prompt they become ``<unk>``.)"""
        unk = self.tokenizer.unk_token_id
        for row, (text, seq) in enumerate(zip(texts, ids, strict=True)):
            if unk in seq:
                word = text.split()[seq.index(unk)]
                raise ConfigError(
                    f"tiny-lm task: response {row} has the word {word!r}, which is not in the "
                    f"language: {text!r}"
                )

    # --- reward ----------------------------------------------------------------------------------

    def _ids_of(self, words: tuple[str, ...] | list[str]) -> torch.Tensor:
        vocab = self.tokenizer.get_vocab()
        return torch.tensor(sorted(vocab[w] for w in words), dtype=torch.long)

    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float32: r* (see the module docstring)."""
        p = self.params
        tokens, mask = responses.tokens, responses.mask.bool()
        target = self._ids_of(_LEXICON[p.target_category]).to(tokens.device)
        words = self._ids_of(list(_class_of_word())).to(tokens.device)
        hits = (torch.isin(tokens, target) & mask).sum(-1).float()
        n_words = (torch.isin(tokens, words) & mask).sum(-1).float()
        ended = ((tokens == self.eos_id) & mask).any(-1).float()
        s = p.target_saturation
        target_term = hits if s is None else -s * torch.expm1(-hits / s)
        return target_term + p.eos_bonus * ended - p.length_penalty * n_words

    def _valid_transitions(self) -> torch.Tensor:
        """[V, V] bool: token b may follow token a in the language."""
        vocab = self.tokenizer.get_vocab()
        valid = torch.zeros(len(vocab), len(vocab), dtype=torch.bool)
        members = {c: [vocab[w] for w in ws] for c, ws in _LEXICON.items()}
        members[BOS] = [vocab[BOS]]
        members[EOS] = [vocab[EOS]]
        for a, nxt in _TRANSITIONS.items():
            for b, prob in nxt.items():
                if prob > 0:
                    rows = torch.tensor(members[a]).unsqueeze(1)
                    valid[rows, torch.tensor(members[b])] = True
        return valid

    def fluency(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float32: fraction of the response's transitions that the grammar allows.

        A hidden quality measure (not part of r*): each response token is judged with the
        token before it (the prompt's last token for the first). 1 for an empty response.
        """
        valid = self._valid_transitions().to(responses.tokens.device)
        tokens, mask = responses.tokens, responses.mask.bool()
        prev = torch.cat([prompts.ids[:, -1:].to(tokens.device), tokens[:, :-1]], dim=1)
        ok = valid[prev, tokens] & mask
        n = mask.sum(-1)
        return torch.where(n > 0, ok.sum(-1).float() / n.clamp(min=1).float(), 1.0)


def _main() -> None:  # pragma: no cover - a measurement, run by hand
    """Build the default task into a fresh temporary cache and print the time it took."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLHF_HARNESS_CACHE"] = tmp
        params = TinyLMParams()
        start = time.perf_counter()
        task = TinyLMTask(params)
        task.reference_policy()
        built = time.perf_counter() - start
        info = json.loads((task.cache_path / "build.json").read_text())
        start = time.perf_counter()
        TinyLMTask(params).reference_policy()
        cached = time.perf_counter() - start
        print(json.dumps({**info, "total_seconds": built, "cached_seconds": cached}, indent=2))
        print(dataclasses.asdict(params))


if __name__ == "__main__":  # pragma: no cover
    _main()
