"""Language-model policies, reward models and critics over ``transformers`` causal LMs.

- :class:`LMPolicy` — a :class:`~harness.policy.Policy` around any causal LM
  (``AutoModelForCausalLM``-like: a ``PreTrainedModel`` with a causal LM head). Its
  :meth:`~LMPolicy.logits` runs one teacher-forced forward over prompt ⧺ response; its
  :meth:`~LMPolicy.sample` is a batched sampling loop with a KV cache that records the log-probs
  of the tempered distribution it samples from.
- :class:`ScalarHeadModel` — a copy of a causal LM's transformer backbone plus a linear scalar
  head, giving one scalar per response token.
- :class:`LMRewardModel` — r̂(x, y): the scalar at the last response token (as OpenAI's
  lm-human-preferences and TRL score a sequence).
- :class:`LMValueModel` — a critic: V_t, the value of the state *before* response token t.
- :func:`build_causal_lm` — a small Llama or GPT-2 built from a config with deterministic init.
- :func:`draw_categorical` — one inverse-CDF draw per row, the sampler's draw.

**Repeated prompts.** A batch that holds a prompt in several rows (GRPO's groups, DPO's chosen
and rejected) has each distinct prompt's columns computed once, its KV cache repeated to its
rows, in :meth:`LMPolicy.logits`, :meth:`LMPolicy.sample` and the scalar heads
(``share_prompts``, on by default); the results equal one forward over every row up to float
rounding, and gradients sum over the repeats.

**Counted work.** Every forward notes the real prompt tokens it ran (:func:`harness.compute.
note_prompt_tokens`): the prefill of sampling, and the prompt columns of a forward over prompt ⧺
response — each distinct prompt's first ``Lp − 1`` columns once plus every row's last column
where prompts are shared, every row's prompt where not. The compute meter adds them to the
response tokens an algorithm reports for the model.

**Layout.** Prompts are left-padded and responses right-padded (see :mod:`harness.policy`), so
the model reads ``[pad … pad, x_1 … x_n, y_1 … y_m, pad … pad]``. Every forward passes the
attention mask (False on both kinds of padding) and position ids ``cumsum(mask) − 1`` clamped
at 0, so a prompt's positions start at 0 whatever its left padding: a left-padded prompt gives
the same logits as the same prompt unpadded (up to float rounding).

**Positions.** With prompt width ``Lp``, the hidden state at column ``Lp − 1 + t`` has read
``x, y_<t`` and predicts ``y_t``; the one at column ``Lp + t`` has read ``x, y_≤t``.

**One module, over 600 lines, on purpose.** The policy, the scalar-head models and the sampler
share the padding, position and repeated-prompt conventions described above, and are tested
against each other on them.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from harness.compute import note_prompt_tokens
from harness.policy import Policy, PromptBatch, ResponseBatch, ValueModel
from harness.reward import RewardModel

__all__ = [
    "LMPolicy",
    "LMRewardModel",
    "LMValueModel",
    "ScalarHeadModel",
    "build_causal_lm",
    "count_parameters",
    "draw_categorical",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _decode_cast_cache(device_type: str) -> Iterator[None]:
    """Under autocast (a run's ``precision: bf16``, whose regions keep the weight-cast cache off
    for training), generation with the cache on: each trainable fp32 weight is cast to bf16 once
    per call rather than at every generated token (for a 7B fp32 policy ≈ 13.5 GB of memory
    traffic per token instead of ≈ 54 GB). The cache is dropped when the call ends, so that no
    later forward (with an optimiser step between) computes with these weights; generation
    needs no gradient, so casts made under ``no_grad`` are harmless here."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    dtype = torch.get_autocast_dtype(device_type)
    try:
        with torch.autocast(device_type, dtype=dtype, cache_enabled=True):
            yield
    finally:
        torch.clear_autocast_cache()


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: ``cumsum(mask) − 1``, clamped at 0 (on left padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _joint(prompts: PromptBatch, responses: ResponseBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, Lp+T]`` and ``attention mask [B, Lp+T]`` (long) of prompt ⧺ response."""
    if prompts.ids.shape[0] != responses.tokens.shape[0]:
        raise ValueError(
            f"{prompts.ids.shape[0]} prompts but {responses.tokens.shape[0]} responses"
        )
    ids = torch.cat([prompts.ids, responses.tokens.to(prompts.ids.device)], dim=1)
    mask = torch.cat([prompts.mask.bool(), responses.mask.bool().to(prompts.mask.device)], dim=1)
    return ids, mask.long()


class _ForwardArgs:
    """The names a model's ``forward`` uses for the KV cache and for trimming logits.

    ``transformers`` 5 calls the cache ``cache`` (``past_key_values`` still works, with a
    deprecation warning); 4.x calls it ``past_key_values``. Likewise ``logits_to_keep`` was
    ``num_logits_to_keep`` before 4.50; where its annotation admits a tensor, it also takes the
    positions to keep (``keep_positions``), not just a count of last ones. We ask the signature
    once and use what it accepts.
    """

    def __init__(self, model: nn.Module) -> None:
        params = inspect.signature(model.forward).parameters
        self.cache = "cache" if "cache" in params else "past_key_values"
        self.keep: str | None = None
        for name in ("logits_to_keep", "num_logits_to_keep"):
            if name in params:
                self.keep = name
                break
        self.keep_positions = self.keep is not None and "Tensor" in str(
            params[self.keep].annotation
        )

    @staticmethod
    def cache_of(output: Any) -> Any:
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def draw_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs [B, V]`` (non-negative, each row summing to about 1): [B] long.

    Inverse-CDF sampling: the smallest ``i`` with ``c_i > u · c_V``, where ``c`` is the row's
    cumulative sum in float64 and ``u ~ U[0, 1)`` one float64 uniform from ``generator``. Token
    ``i`` is drawn with probability ``p_i / Σp`` up to float64 rounding (~1e-16 per token, so
    rare tokens keep their probability, which a float32 cumulative sum would not), and a zero
    ``p_i`` is never drawn. One uniform per row instead of ``torch.multinomial``'s one
    exponential per vocabulary entry: about 8× less time on a CPU at V = 8192.
    """
    cdf = probs.double().cumsum(-1)
    u = torch.rand(
        (probs.shape[0], 1), generator=generator, device=probs.device, dtype=torch.float64
    )
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return index.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def _distinct_prompts(prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(first, inverse)`` when some prompt occurs more than once in the batch, else None.

    ``first [U]`` holds the first row of each distinct prompt and ``inverse [B]`` each row's
    index into ``first``; two rows are the same prompt when their ids and masks agree.
    """
    rows = prompts.ids.shape[0]
    if rows < 2:
        return None
    key = prompts.ids.masked_fill(~prompts.mask.bool(), -1)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
    if distinct.shape[0] == rows:
        return None
    order = torch.arange(rows, device=key.device)
    first = torch.full((distinct.shape[0],), rows, dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    return first, inverse


def _expand_cache(cache: Any, rows: torch.Tensor) -> Any | None:
    """The KV cache with batch rows ``rows``; None for a cache that cannot select rows."""
    if not hasattr(cache, "batch_select_indices"):
        return None
    cache.batch_select_indices(rows)
    return cache


def _read_only_repeated(cache: Any, rows: torch.Tensor) -> bool:
    """Make ``cache``, the distinct prompts' KV, serve a forward over the batch's rows.

    Each layer's ``update`` then returns ``cat(prefix[rows], new)`` and stores nothing: the
    repeated copy of a layer's prefix lives only while that layer runs (without gradients, the
    forward holds no more than one layer's keys and values, as a forward without a cache does),
    and gradients reach the distinct prompts summed over their rows. Only ``transformers``'
    ``DynamicCache`` of plain ``DynamicLayer`` s (every full-attention model) qualifies: False
    for anything else (sliding windows, quantised or legacy caches), which then run unshared.
    """
    layers = getattr(cache, "layers", None)
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # older transformers: no cache layers
        return False
    if not layers or not all(type(layer) is DynamicLayer for layer in layers):
        return False
    for layer in layers:

        def update(
            key_states: torch.Tensor,
            value_states: torch.Tensor,
            *args: Any,
            keys: torch.Tensor = layer.keys,
            values: torch.Tensor = layer.values,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return (
                torch.cat([keys[rows], key_states], dim=-2),
                torch.cat([values[rows], value_states], dim=-2),
            )

        layer.update = update
    return True


def _shares_prompts(model: nn.Module, enabled: bool, prompts: PromptBatch) -> Any:
    """``(first, inverse)`` when a forward should compute each distinct prompt once, else None.

    Off when disabled, when the prompt has a single column (nothing before the last one to
    share) and under gradient checkpointing (which turns the KV cache off in training).
    """
    if not enabled or prompts.ids.shape[1] < 2:
        return None
    if model.training and _checkpointing(model):
        return None
    return _distinct_prompts(prompts)


def _checkpointing(model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on (``transformers`` ≥ 5 renamed it)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _tail_forward(
    model: nn.Module,
    args: _ForwardArgs,
    prompts: PromptBatch,
    responses: ResponseBatch,
    groups: tuple[torch.Tensor, torch.Tensor],
    end: int,
) -> Any | None:
    """The model's output at columns ``Lp − 1 … end − 1`` of prompt ⧺ response, each distinct
    prompt's first ``Lp − 1`` columns computed once; None where the model's cache does not
    allow it (see :func:`_read_only_repeated`).

    The token embeddings are looked up once for every row (one embedding gradient, not two). A
    first forward runs the distinct prompts without their last column and keeps its KV cache; a
    second runs every row's last prompt column and response on top of it, the cache repeated
    to the rows (``inverse``), with the whole attention mask and the same position ids as one
    forward over the joint sequence. The result equals that forward's columns up to float
    rounding.
    """
    first, inverse = groups
    ids, mask = _joint(prompts, responses)
    lp = prompts.ids.shape[1]
    embeds = model.get_input_embeddings()(ids[:, :end])
    head_mask = mask[first, : lp - 1]
    trim = {args.keep: 1} if args.keep is not None else {}
    out = model(
        inputs_embeds=embeds[first, : lp - 1],
        attention_mask=head_mask,
        position_ids=_position_ids(head_mask),
        use_cache=True,
        **trim,
    )
    note_prompt_tokens(model, head_mask)
    cache = args.cache_of(out)
    if not _read_only_repeated(cache, inverse):
        return None
    note_prompt_tokens(model, mask[:, lp - 1])  # every row's last prompt column
    return model(
        inputs_embeds=embeds[:, lp - 1 :],
        attention_mask=mask[:, :end],
        position_ids=_position_ids(mask[:, :end])[:, lp - 1 :],
        use_cache=True,
        **{args.cache: cache},
    )


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------


class LMPolicy(Policy):
    """π(y | x) given by a ``transformers`` causal LM.

    :param model: a causal LM (e.g. from ``AutoModelForCausalLM``): ``model(input_ids,
        attention_mask, position_ids, ...)`` returns ``.logits [B, L, V]``; it is registered
        as a submodule (``self.model``), so the policy's parameters are the model's.
    :param pad_id: the id used to pad prompts (left) and responses (right).
    :param eos_id: the end-of-sequence id; sampling stops a row after it. None: never stop early.
    :param vocab_size: the number of logits; defaults to ``model.config.vocab_size``.
    :param suppress_ids: token ids the policy never emits (e.g. pad, BOS, unknown): their logits
        are set to the dtype's most negative finite value in :meth:`logits` and in
        :meth:`sample` alike, so π is the model's softmax renormalised over the other tokens
        and sampled log-probs still agree with :meth:`token_logprobs`.
    :param share_prompts: when a batch holds the same prompt in several rows (GRPO's and
        RLOO's groups, best-of-n, DPO's chosen and rejected), compute each distinct prompt once
        and repeat its KV cache (see :func:`_tail_forward`); gradients are summed over the
        repeats. Off: one forward over every row's prompt ⧺ response. The two agree up to float
        rounding.

    Dropout is the model's business: :meth:`sample` runs in eval mode (then restores the mode),
    :meth:`logits` in whatever mode the policy is in. Models from :func:`build_causal_lm` have
    no dropout, so the two modes agree there.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pad_id: int,
        eos_id: int | None,
        vocab_size: int | None = None,
        suppress_ids: Sequence[int] = (),
        share_prompts: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.share_prompts = bool(share_prompts)
        self._cache_shareable = True
        self.pad_id = int(pad_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.vocab_size = int(vocab_size if vocab_size is not None else model.config.vocab_size)
        self.suppress_ids = tuple(int(i) for i in suppress_ids)
        if self.eos_id is not None and self.eos_id in self.suppress_ids:
            raise ValueError(f"eos_id {self.eos_id} cannot be suppressed")
        suppressed = torch.zeros(self.vocab_size, dtype=torch.bool)
        suppressed[list(self.suppress_ids)] = True
        self.register_buffer("_suppressed", suppressed, persistent=False)
        self._args = _ForwardArgs(model)

    def _suppress(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.suppress_ids:
            return logits
        mask = self._suppressed.to(logits.device)
        return logits.masked_fill(mask, torch.finfo(logits.dtype).min)

    def logits(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T, V] logits; row t is read at column ``Lp − 1 + t`` and predicts ``y_t``.

        One forward over prompt ⧺ response. Logits come back in the model's dtype; the base
        class casts them to float32 before its log-softmax.
        """
        ids, mask = _joint(prompts, responses)
        lp = prompts.ids.shape[1]
        t = responses.tokens.shape[1]
        if lp == 0:
            raise ValueError("LMPolicy needs at least one prompt column (e.g. a BOS token)")
        share = self.share_prompts and self._cache_shareable
        groups = _shares_prompts(self.model, share, prompts) if t else None
        if groups is not None:
            # Columns Lp − 1 … Lp + T − 2, each distinct prompt's first Lp − 1 columns once.
            out = _tail_forward(self.model, self._args, prompts, responses, groups, lp + t - 1)
            if out is not None:
                return self._suppress(out.logits)
            self._cache_shareable = False  # this model's cache cannot be shared: never again
        kwargs: dict[str, Any] = {}
        if self._args.keep_positions:
            # Exactly the T columns needed, Lp − 1 … Lp + T − 2: no [B, T + 1, V] tensor whose
            # slice's gradient would need a zero-padded copy of it in the backward pass.
            kwargs[self._args.keep] = torch.arange(lp - 1, lp - 1 + t, device=ids.device)
        elif self._args.keep is not None:
            # Only the last T + 1 columns are needed: Lp − 1 … Lp + T − 1 (the last is dropped).
            kwargs[self._args.keep] = t + 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_position_ids(mask),
            use_cache=False,
            **kwargs,
        )
        note_prompt_tokens(self.model, prompts.mask)
        logits = out.logits
        if logits.shape[1] == t and self._args.keep_positions:
            return self._suppress(logits)
        if logits.shape[1] == t + 1:
            return self._suppress(logits[:, :t])
        return self._suppress(logits[:, lp - 1 : lp - 1 + t])

    @torch.no_grad()
    def sample(
        self,
        prompts: PromptBatch,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> ResponseBatch:
        """Sample one response per prompt with a KV cache; see :meth:`Policy.sample`.

        Each step draws ``y_t ~ softmax(logits / temperature)`` by inverting its CDF at one
        uniform per row from ``generator`` (:func:`draw_categorical`; same generator state →
        same samples), and records that distribution's
        log-prob of ``y_t``. ``temperature == 0`` is greedy decoding (argmax, log-prob 0: the
        point mass actually sampled from). A row that emits EOS keeps it (in ``tokens`` and
        ``mask``); its later columns are ``pad_id`` with mask False and log-prob 0, and
        ``finished`` is True. The loop stops when every row has finished or after
        ``max_new_tokens`` tokens; ``T`` is the number of steps taken.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        try:
            with _decode_cast_cache(prompts.ids.device.type):
                return self._sample(prompts, max_new_tokens, temperature, generator)
        finally:
            self.train(was_training)

    def _sample(
        self,
        prompts: PromptBatch,
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> ResponseBatch:
        ids = prompts.ids
        mask = prompts.mask.long()
        batch = ids.shape[0]
        if ids.shape[1] == 0:
            raise ValueError("LMPolicy needs at least one prompt column (e.g. a BOS token)")
        device = ids.device
        keep = {self._args.keep: 1} if self._args.keep is not None else {}
        # Prefill: each distinct prompt once, its KV cache and last logits repeated to its rows.
        def prefill(rows: torch.Tensor | slice) -> tuple[Any, torch.Tensor]:
            out = self.model(
                input_ids=ids[rows],
                attention_mask=mask[rows],
                position_ids=_position_ids(mask[rows]),
                use_cache=True,
                **keep,
            )
            note_prompt_tokens(self.model, mask[rows])
            return self._args.cache_of(out), out.logits[:, -1]

        share = self.share_prompts and self._cache_shareable
        groups = _distinct_prompts(prompts) if share else None
        cache = None
        if groups is not None:
            first, inverse = groups
            cache, next_logits = prefill(first)
            cache = _expand_cache(cache, inverse)
            next_logits = next_logits[inverse]
            self._cache_shareable = cache is not None
        if cache is None:
            cache, next_logits = prefill(slice(None))
        # The next token's position: the number of real prompt tokens (0 for an empty prompt).
        position = mask.sum(-1, keepdim=True).clamp(min=0)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        alive_cols: list[torch.Tensor] = []
        pad = torch.full((batch,), self.pad_id, dtype=torch.long, device=device)
        zero = torch.zeros((), dtype=torch.float32, device=device)
        for step in range(max_new_tokens):
            logits = self._suppress(next_logits.float())
            if temperature == 0:
                token = logits.argmax(-1)
                logp = torch.zeros(batch, dtype=torch.float32, device=device)
            else:
                scaled = logits if temperature == 1.0 else logits / temperature  # x / 1 is x
                logp_all = torch.log_softmax(scaled, dim=-1)
                token = draw_categorical(logp_all.exp(), generator)
                logp = logp_all.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            alive = ~finished
            token = torch.where(alive, token, pad)
            tokens.append(token)
            logprobs.append(torch.where(alive, logp, zero))
            alive_cols.append(alive)
            if self.eos_id is not None:
                finished = finished | (alive & (token == self.eos_id))
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            # Feed the token just drawn; a finished row feeds pad, masked out.
            mask = torch.cat([mask, alive.long().unsqueeze(-1)], dim=1)
            out = self.model(
                input_ids=token.unsqueeze(-1),
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                **{self._args.cache: cache},
                **keep,
            )
            cache = self._args.cache_of(out)
            next_logits = out.logits[:, -1]
            position = position + 1
        return ResponseBatch(
            tokens=torch.stack(tokens, dim=1),
            mask=torch.stack(alive_cols, dim=1),
            logprobs=torch.stack(logprobs, dim=1),
            finished=finished,
        )


# --------------------------------------------------------------------------------------------
# Scalar heads: reward model and critic
# --------------------------------------------------------------------------------------------

ScalarPosition = Literal["token", "before"]


def _backbone_of(source: nn.Module) -> tuple[nn.Module, int]:
    """The transformer backbone (without LM head) of a causal LM or LMPolicy, and its width."""
    model = source.model if isinstance(source, LMPolicy) else source
    backbone = getattr(model, "base_model", None)
    if backbone is None or backbone is model:
        getter = getattr(model, "get_decoder", None)
        backbone = getter() if callable(getter) else model
    config = getattr(model, "config", None) or getattr(backbone, "config", None)
    hidden = getattr(config, "hidden_size", None)
    if hidden is None:
        raise ValueError(f"cannot tell the hidden size of {type(model).__name__}")
    return backbone, int(hidden)


class ScalarHeadModel(nn.Module):
    """A transformer backbone plus ``nn.Linear(hidden, 1)``: one scalar per response token.

    :param source: a causal LM or an :class:`LMPolicy`; its backbone (``model.base_model``:
        ``model.model`` for Llama, ``model.transformer`` for GPT-2) is deep-copied, so the new
        model starts from the source's weights and trains independently of it. The copy's
        parameters require gradients even if the source's did not (e.g. a frozen π_ref).
    :param seed: seeds the head's initialisation (a local generator: the global RNG is
        untouched). The head's weight is N(0, 1/(hidden + 1)) as in OpenAI's
        lm-human-preferences, its bias 0.
    :param share_prompts: compute each distinct prompt of a batch once in :meth:`forward` (see
        :class:`LMPolicy`).
    """

    def __init__(self, source: nn.Module, *, seed: int = 0, share_prompts: bool = True) -> None:
        super().__init__()
        self.share_prompts = bool(share_prompts)
        self._cache_shareable = True
        backbone, hidden = _backbone_of(source)
        self.backbone = copy.deepcopy(backbone)
        self._args = _ForwardArgs(self.backbone)
        self.backbone.requires_grad_(True)
        param = next(self.backbone.parameters(), None)
        self.head = nn.Linear(hidden, 1)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1), generator=gen)
            nn.init.zeros_(self.head.bias)
        if param is not None:
            self.head.to(param.device)

    def scalars(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, Lp + T] float32: the head at every column of prompt ⧺ response (unmasked)."""
        ids, mask = _joint(prompts, responses)
        out = self.backbone(
            input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask), use_cache=False
        )
        note_prompt_tokens(self.backbone, prompts.mask)
        return self._head(out.last_hidden_state)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head on ``hidden`` [..., H] → [...] float32, in the head's own dtype even under
        autocast (which would run ``nn.Linear`` in bf16 and leave r̂ and V ~3 digits)."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()

    def tail(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T + 1] float32: the head at columns ``Lp − 1 … Lp + T − 1`` (unmasked), i.e. the
        last prompt column and every response column: all that :meth:`forward` and
        :class:`LMRewardModel` read. Repeated prompts are computed once (``share_prompts``)."""
        lp = prompts.ids.shape[1]
        if lp == 0:
            raise ValueError("a scalar head needs at least one prompt column (e.g. a BOS token)")
        share = self.share_prompts and self._cache_shareable
        groups = _shares_prompts(self.backbone, share, prompts)
        end = lp + responses.tokens.shape[1]
        out = None
        if groups is not None:
            out = _tail_forward(self.backbone, self._args, prompts, responses, groups, end)
            self._cache_shareable = out is not None
        if out is None:
            return self.scalars(prompts, responses)[:, lp - 1 :]
        return self._head(out.last_hidden_state)

    def forward(
        self,
        prompts: PromptBatch,
        responses: ResponseBatch,
        *,
        position: ScalarPosition = "token",
    ) -> torch.Tensor:
        """[B, T] scalars, 0 on padding.

        ``position="token"``: column t is read at response token t's own position (the state
        after ``y_t``). ``position="before"``: at the position that predicts ``y_t`` (the state
        after ``x, y_<t``, before ``y_t``).
        """
        t = responses.tokens.shape[1]
        if prompts.ids.shape[1] == 0:
            if position == "before":
                raise ValueError("position='before' needs at least one prompt column")
            return self.scalars(prompts, responses).masked_fill(~responses.mask.bool(), 0.0)
        scores = self.tail(prompts, responses)
        start = 1 if position == "token" else 0
        values = scores[:, start : start + t]
        return values.masked_fill(~responses.mask.bool(), 0.0)


class LMRewardModel(RewardModel):
    """r̂(x, y): a :class:`ScalarHeadModel` read at the last response token.

    The score is the head at the position of the response's last token (EOS when generated),
    which has read the whole of ``x ⧺ y``; for an empty response, at the last prompt token.
    Initialised from ``source``'s backbone (e.g. π_ref) with a fresh head; see
    :class:`ScalarHeadModel`.
    """

    def __init__(self, source: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.scalar = ScalarHeadModel(source, seed=seed)

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B] float32 rewards."""
        scores = self.scalar.tail(prompts, responses)  # column 0 is the last prompt token
        last = responses.mask.long().sum(-1)
        return scores.gather(1, last.unsqueeze(-1)).squeeze(-1)


class LMValueModel(ValueModel):
    """A critic: ``V[:, t]`` is the value of the state *before* response token t.

    ``V_t = V(x, y_<t)`` is read from the hidden state at the position that predicts ``y_t``
    (column ``Lp − 1 + t``), the state in which the policy chooses ``y_t``. This matches the
    advantage recursion of :func:`harness.rl.gae`, δ_t = r_t + γ V_{t+1} − V_t, where r_t is
    the reward for emitting ``y_t`` and the value after the last token is 0 (terminal), and it
    is TRL's convention (values over ``context_length − 1 : −1``). Padding is 0.
    """

    def __init__(self, source: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.scalar = ScalarHeadModel(source, seed=seed)

    def forward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """[B, T] float32 values; 0 on padding."""
        return self.scalar(prompts, responses, position="before")


# --------------------------------------------------------------------------------------------
# Building small models
# --------------------------------------------------------------------------------------------

Arch = Literal["llama", "gpt2"]


def build_causal_lm(
    arch: str,
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    seed: int,
    *,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> nn.Module:
    """A randomly initialised Llama or GPT-2 causal LM from a ``transformers`` config.

    Input and output embeddings are tied and dropout is off (GPT-2's default 0.1 is set to 0),
    so train and eval modes compute the same function. Initialisation is deterministic: it runs
    under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``, so the global RNG is
    left as it was. The model is returned in eval mode on the CPU, in float32.

    :param arch: ``"llama"`` (RoPE, RMSNorm, SwiGLU MLP of width ``intermediate``) or ``"gpt2"``
        (learned positions, LayerNorm, GELU MLP of width ``intermediate``).
    :param max_positions: the longest sequence (prompt + response) the model accepts.
    """
    import transformers

    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    special = {"pad_token_id": pad_id, "bos_token_id": bos_id, "eos_token_id": eos_id}
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            attention_dropout=0.0,
            **special,
        )
        cls: Any = transformers.LlamaForCausalLM
    elif arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=intermediate,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **special,
        )
        cls = transformers.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown arch {arch!r}: expected 'llama' or 'gpt2'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    return model
