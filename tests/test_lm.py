"""LMPolicy, the scalar-head reward and value models, and build_causal_lm (harness.models.lm).

Models are tiny random Llama and GPT-2 (≈ 20K parameters), built from configs: nothing is
downloaded. Tolerances: 1e-5 where the same float32 quantity is computed by two different but
equivalent forwards (padding vs none, batched vs per-example: only summation order differs,
giving errors ~1e-7 on log-probs of size ~3); 1e-4 where a KV-cached incremental forward is
compared with a full one (different kernels and shapes, errors ~1e-6 observed).
"""

from __future__ import annotations

import pytest
import torch

from harness.models.lm import (
    LMPolicy,
    LMRewardModel,
    LMValueModel,
    ScalarHeadModel,
    build_causal_lm,
    count_parameters,
)
from harness.policy import PromptBatch, ResponseBatch

VOCAB = 32
PAD, BOS, EOS = 0, 1, 2
ARCHS = ("llama", "gpt2")


def tiny_lm(arch: str, seed: int = 0) -> torch.nn.Module:
    return build_causal_lm(
        arch,
        VOCAB,
        hidden=32,
        layers=2,
        heads=4,
        intermediate=64,
        max_positions=64,
        seed=seed,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def policy(arch: str) -> LMPolicy:
    return LMPolicy(tiny_lm(arch), pad_id=PAD, eos_id=EOS)


def prompt_batch(rows: list[list[int]], width: int | None = None) -> PromptBatch:
    """Left-padded prompts (``width`` ≥ the longest row)."""
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = True
    return PromptBatch(index=torch.arange(len(rows)), ids=ids, mask=mask)


def response_batch(rows: list[list[int]], width: int | None = None) -> ResponseBatch:
    """Right-padded responses."""
    width = width or max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ResponseBatch(tokens=tokens, mask=mask)


PROMPTS = [[BOS, 5, 6, 7, 8], [BOS, 9], [BOS, 10, 11]]
RESPONSES = [[12, 13, 14], [15, 16, 17, 18, 19], [20, EOS]]


# --- logits and log-probs ------------------------------------------------------------------------


def test_left_padding_does_not_change_logits(policy: LMPolicy) -> None:
    prompt, response = [BOS, 5, 6], [7, 8, 9, 10]
    plain = policy.logits(prompt_batch([prompt]), response_batch([response]))
    padded_p = prompt_batch([prompt], width=7)
    padded_r = response_batch([response], width=6)  # right padding too
    padded = policy.logits(padded_p, padded_r)
    assert plain.shape == (1, 4, VOCAB) and padded.shape == (1, 6, VOCAB)
    torch.testing.assert_close(padded[:, :4], plain, atol=1e-5, rtol=0)
    lp_plain = policy.token_logprobs(prompt_batch([prompt]), response_batch([response]))
    lp_padded = policy.token_logprobs(padded_p, padded_r)
    torch.testing.assert_close(lp_padded[:, :4], lp_plain, atol=1e-5, rtol=0)
    assert torch.all(lp_padded[:, 4:] == 0)


def naive_logprobs(model: torch.nn.Module, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Full forward on the unpadded sequence, log_softmax, gather."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(response))
    return logp[positions, torch.tensor(response)]


def test_logprobs_match_naive_per_example(policy: LMPolicy) -> None:
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    with torch.no_grad():
        tok = policy.token_logprobs(prompts, responses)
        seq = policy.sequence_logprobs(prompts, responses)
    torch.testing.assert_close(seq, tok.sum(-1), atol=1e-5, rtol=0)
    assert torch.all(tok[~responses.mask] == 0)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        expected = naive_logprobs(policy.model, p, r)
        torch.testing.assert_close(tok[i, : len(r)], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(seq[i], expected.sum(), atol=1e-5, rtol=0)


def test_entropy_is_finite_and_masked(policy: LMPolicy) -> None:
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    _, ent = policy.token_logprobs_and_entropy(prompts, responses)
    assert ent is not None and torch.isfinite(ent).all()
    assert torch.all(ent[~responses.mask] == 0) and torch.all(ent[responses.mask] > 0)


# --- sampling ------------------------------------------------------------------------------------


def sample(
    policy: LMPolicy, prompts: PromptBatch, seed: int = 0, **kwargs: object
) -> ResponseBatch:
    kwargs.setdefault("max_new_tokens", 12)
    return policy.sample(prompts, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_sampled_logprobs_match_teacher_forcing(policy: LMPolicy) -> None:
    prompts = prompt_batch(PROMPTS * 3)
    out = sample(policy, prompts)
    assert out.logprobs is not None and out.finished is not None
    assert out.tokens.shape == out.mask.shape == out.logprobs.shape
    recomputed = policy.token_logprobs(prompts, out)
    torch.testing.assert_close(recomputed, out.logprobs, atol=1e-4, rtol=0)


def test_same_generator_seed_same_samples(policy: LMPolicy) -> None:
    prompts = prompt_batch(PROMPTS * 3)
    a, b, c = sample(policy, prompts, 7), sample(policy, prompts, 7), sample(policy, prompts, 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_sampling_leaves_global_rng_and_mode_alone(policy: LMPolicy) -> None:
    policy.train()
    state = torch.random.get_rng_state()
    sample(policy, prompt_batch(PROMPTS))
    assert torch.equal(state, torch.random.get_rng_state())
    assert policy.training


def test_eos_stops_rows_and_masks_the_rest(arch: str) -> None:
    model = tiny_lm(arch)
    prompts = prompt_batch(PROMPTS * 4)
    free = sample(LMPolicy(model, pad_id=PAD, eos_id=None), prompts)
    assert free.tokens.shape[1] == 12 and free.mask.all() and not free.finished.any()
    # Take as EOS a token that row 0 draws at step 2: the draws are the same up to each row's
    # first EOS (the generator's stream does not depend on the EOS id), then padding follows.
    eos = int(free.tokens[0, 2])
    out = sample(LMPolicy(model, pad_id=PAD, eos_id=eos), prompts)
    is_eos = free.tokens == eos
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.float().argmax(-1), free.tokens.shape[1])
    lengths = torch.where(has_eos, first + 1, free.tokens.shape[1])
    assert torch.equal(out.finished, has_eos)
    assert int(first[0]) <= 2 and bool(out.finished[0])
    width = out.tokens.shape[1]
    assert width == int(lengths.max())
    cols = torch.arange(width)
    expected_mask = cols < lengths.unsqueeze(1)
    assert torch.equal(out.mask, expected_mask)
    assert torch.equal(out.tokens[expected_mask], free.tokens[:, :width][expected_mask])
    assert torch.all(out.tokens[~expected_mask] == PAD)
    assert torch.all(out.logprobs[~expected_mask] == 0)
    # Each finished row's last real token is EOS, and EOS appears nowhere else.
    last = out.tokens.gather(1, (lengths.clamp(max=width) - 1).unsqueeze(1)).squeeze(1)
    assert torch.all(last[has_eos] == eos)
    assert int(((out.tokens == eos) & out.mask).sum()) == int(has_eos.sum())


def test_sampling_stops_when_every_row_has_finished(policy: LMPolicy) -> None:
    prompts = prompt_batch([PROMPTS[0]])
    policy.eos_id = None
    first = sample(policy, prompts)
    policy.eos_id = int(first.tokens[0, 1])
    out = sample(policy, prompts)
    stop = int((first.tokens[0] == policy.eos_id).float().argmax()) + 1
    assert out.tokens.shape == (1, stop) and bool(out.finished[0]) and out.mask.all()


def greedy_naive(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize("temperature", [0.0, 1e-4])
def test_small_temperature_is_greedy(policy: LMPolicy, temperature: float) -> None:
    policy.eos_id = None
    out = sample(policy, prompt_batch(PROMPTS), max_new_tokens=8, temperature=temperature)
    for i, p in enumerate(PROMPTS):
        assert out.tokens[i].tolist() == greedy_naive(policy.model, p, 8)
    # The sampled distribution is (nearly) a point mass: log-probs ≈ 0.
    assert torch.all(out.logprobs > -1e-3)


def test_suppressed_tokens_are_never_sampled(policy: LMPolicy) -> None:
    banned = tuple(range(3, VOCAB - 2))  # all but pad, bos, eos and the last two ids
    pol = LMPolicy(policy.model, pad_id=PAD, eos_id=EOS, suppress_ids=banned)
    prompts = prompt_batch(PROMPTS * 4)
    out = sample(pol, prompts)
    assert not torch.isin(out.tokens[out.mask], torch.tensor(banned)).any()
    torch.testing.assert_close(pol.token_logprobs(prompts, out), out.logprobs, atol=1e-4, rtol=0)
    _, ent = pol.token_logprobs_and_entropy(prompts, out)
    assert ent is not None and torch.isfinite(ent).all()


def test_save_and_reload_gives_identical_logits(arch: str, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_lm(arch)
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    a = LMPolicy(model, pad_id=PAD, eos_id=EOS)
    b = LMPolicy(loaded, pad_id=PAD, eos_id=EOS)
    with torch.no_grad():
        torch.testing.assert_close(
            a.logits(prompts, responses), b.logits(prompts, responses), atol=0, rtol=0
        )


# --- building --------------------------------------------------------------------------------


def test_build_is_deterministic_and_leaves_global_rng(arch: str) -> None:
    state = torch.random.get_rng_state()
    a, b, c = tiny_lm(arch, seed=3), tiny_lm(arch, seed=3), tiny_lm(arch, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert 5_000 < count_parameters(a) < 50_000


def test_build_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_causal_lm("rnn", 10, 8, 1, 1, 8, 8, 0)


# --- reward and value models -------------------------------------------------------------------


def test_reward_and_value_shapes_and_padding(policy: LMPolicy) -> None:
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    reward, value = LMRewardModel(policy), LMValueModel(policy)
    r, v = reward(prompts, responses), value(prompts, responses)
    assert r.shape == (3,) and r.dtype == torch.float32
    assert v.shape == responses.tokens.shape and v.dtype == torch.float32
    assert torch.all(v[~responses.mask] == 0) and torch.all(v[responses.mask] != 0)
    scalar = ScalarHeadModel(policy)(prompts, responses)
    assert scalar.shape == responses.tokens.shape and torch.all(scalar[~responses.mask] == 0)
    # More padding (prompt left, response right) changes neither.
    wide_p, wide_r = prompt_batch(PROMPTS, width=8), response_batch(RESPONSES, width=9)
    torch.testing.assert_close(reward(wide_p, wide_r), r, atol=1e-5, rtol=0)
    torch.testing.assert_close(value(wide_p, wide_r)[:, :5], v, atol=1e-5, rtol=0)


def test_reward_reads_the_last_token_and_value_the_state_before_each(policy: LMPolicy) -> None:
    prompts = prompt_batch([PROMPTS[0], PROMPTS[0]])
    responses = response_batch([[12, 13, 14], [12, 13, 15]])  # differ in the last token only
    reward, value = LMRewardModel(policy), LMValueModel(policy)
    r, v = reward(prompts, responses), value(prompts, responses)
    assert not torch.allclose(r[0], r[1])
    # V_t has not seen y_t: the values before the differing token agree, all of them.
    torch.testing.assert_close(v[0], v[1], atol=1e-6, rtol=0)
    scalar = reward.scalar(prompts, responses)  # "token" position: y_t's own
    torch.testing.assert_close(scalar[:, 2], r, atol=1e-6, rtol=0)


def test_heads_copy_the_backbone_and_get_gradients(policy: LMPolicy) -> None:
    frozen = policy.frozen_copy()
    reward, value = LMRewardModel(frozen, seed=1), LMValueModel(frozen, seed=1)
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    loss = reward(prompts, responses).sum() + value(prompts, responses).pow(2).sum()
    loss.backward()
    for model in (reward.scalar, value.scalar):
        assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
        grads = [p.grad for p in model.backbone.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    # Same seed, same head; the backbone starts as the source's.
    torch.testing.assert_close(reward.scalar.head.weight, value.scalar.head.weight)
    src = dict(frozen.model.base_model.named_parameters())
    for name, p in reward.scalar.backbone.named_parameters():
        torch.testing.assert_close(p, src[name], atol=0, rtol=0)
        assert p.data_ptr() != src[name].data_ptr()


def test_policy_gradient_flows(policy: LMPolicy) -> None:
    prompts, responses = prompt_batch(PROMPTS), response_batch(RESPONSES)
    policy.sequence_logprobs(prompts, responses).sum().backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None for g in grads) and all(torch.isfinite(g).all() for g in grads)


# --- repeated prompts computed once ---------------------------------------------------------

# Repeats that are not adjacent, prompts of different lengths (left padding; one prompt has a
# single token, so the shared columns of its rows are all padding), responses of different
# lengths (an empty one, one ending in EOS).
SHARED_PROMPTS = [[BOS, 5, 6, 7, 8], [BOS, 9], [BOS, 5, 6, 7, 8], [9], [BOS, 9], [9]]
SHARED_RESPONSES = [[12, 13, 14], [15, 16, 17, 18, 19], [20, EOS], [21], [], [22, 23, EOS]]


def distinct_policies(arch: str) -> tuple[LMPolicy, LMPolicy]:
    model = tiny_lm(arch).train()
    shared = LMPolicy(model, pad_id=PAD, eos_id=EOS, share_prompts=True)
    full = LMPolicy(model, pad_id=PAD, eos_id=EOS, share_prompts=False)
    return shared, full


def first_forward_rows(model: torch.nn.Module, run) -> list[int]:
    """The batch size of every forward of ``model`` while ``run()`` runs."""
    rows: list[int] = []

    def record(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        given = kwargs.get("input_ids")
        rows.append((given if given is not None else kwargs["inputs_embeds"]).shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return rows


def test_distinct_prompts_finds_repeats_by_ids_and_mask() -> None:
    from harness.models.lm import _distinct_prompts

    prompts = prompt_batch(SHARED_PROMPTS)
    first, inverse = _distinct_prompts(prompts)
    assert sorted(first.tolist()) == [0, 1, 3]
    for row, k in enumerate(inverse.tolist()):
        assert SHARED_PROMPTS[row] == SHARED_PROMPTS[int(first[k])]
    assert _distinct_prompts(prompt_batch(PROMPTS)) is None  # all different: nothing to share
    # The same ids but different masks are different prompts: a real PAD token vs padding.
    real_pad = prompt_batch([[PAD, 5], [5]])
    assert torch.equal(real_pad.ids[0], real_pad.ids[1])
    assert _distinct_prompts(real_pad) is None


def test_shared_prompts_give_the_same_logprobs_and_gradients(arch: str) -> None:
    shared, full = distinct_policies(arch)
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    rows = first_forward_rows(shared.model, lambda: shared.token_logprobs(prompts, responses))
    assert rows == [3, 6]  # the three distinct prompts once, then every row's last column on
    params = [p for p in shared.parameters() if p.requires_grad]
    results = []
    for policy in (shared, full):
        logp, ent = policy.token_logprobs_and_entropy(prompts, responses)
        grads = torch.autograd.grad((logp + 0.1 * ent).sum(), params)
        results.append((logp.detach(), ent.detach(), grads))
    (lp_s, ent_s, g_s), (lp_f, ent_f, g_f) = results
    # Same quantities, different float32 summation order (see the module docstring).
    torch.testing.assert_close(lp_s, lp_f, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent_s, ent_f, atol=1e-5, rtol=0)
    for a, b in zip(g_s, g_f, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert torch.all(lp_s[~responses.mask] == 0)


def test_shared_prompts_give_the_same_rewards_values_and_gradients(arch: str) -> None:
    model = tiny_lm(arch)
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    for cls in (LMRewardModel, LMValueModel):
        head = cls(model, seed=3)
        rows = first_forward_rows(head.scalar.backbone, lambda h=head: h(prompts, responses))
        assert rows == [3, 6]
        params = [p for p in head.parameters() if p.requires_grad]
        out = []
        for share in (True, False):
            head.scalar.share_prompts = share
            value = head(prompts, responses)
            out.append((value.detach(), torch.autograd.grad(value.square().sum(), params)))
        torch.testing.assert_close(out[0][0], out[1][0], atol=1e-5, rtol=0)
        for a, b in zip(out[0][1], out[1][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prompts_in_sampling(arch: str) -> None:
    shared, full = distinct_policies(arch)
    prompts = prompt_batch(SHARED_PROMPTS)
    rows = first_forward_rows(shared.model, lambda: sample(shared, prompts, max_new_tokens=4))
    assert rows[0] == 3 and set(rows[1:]) == {6}  # prefill of the distinct prompts only
    a, b = sample(shared, prompts), sample(full, prompts)
    # Prefill logits differ by float rounding only (~1e-7), far from moving a draw.
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def test_no_sharing_under_gradient_checkpointing_or_one_column(arch: str) -> None:
    shared, _ = distinct_policies(arch)
    model = shared.model
    enable = getattr(model, "activation_checkpointing_enable", None)
    (enable or model.gradient_checkpointing_enable)()
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    rows = first_forward_rows(shared.model, lambda: shared.token_logprobs(prompts, responses))
    assert rows == [6]  # the KV cache is off when checkpointing: one forward over every row
    shared, _ = distinct_policies(arch)  # checkpointing off again
    one_column = prompt_batch([[BOS], [BOS]])
    two = response_batch([[5, 6], [7]])
    rows = first_forward_rows(shared.model, lambda: shared.token_logprobs(one_column, two))
    assert rows == [2]  # nothing before the last prompt column to share


# --- drawing from a categorical -------------------------------------------------------------------


def test_draw_categorical_frequencies_zeros_and_rare_tokens() -> None:
    from harness.models.lm import draw_categorical

    p = torch.tensor([0.5, 0.0, 0.3, 0.19, 0.0, 0.01])
    n = 200_000
    draws = draw_categorical(
        p.expand(n, -1).contiguous(), torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[1] == 0 and counts[4] == 0  # zero probability: never drawn
    # Each count is Binomial(n, p_i): within 5 standard deviations (a false alarm ~1e-6).
    sd = (n * p * (1 - p)).double().sqrt()
    assert torch.all((counts - n * p.double()).abs() <= 5 * sd + 1e-9), counts
    # Deterministic under a generator; rows are independent draws.
    again = draw_categorical(p.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_draw_categorical_inverts_the_float64_cdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every token owns exactly its interval of u, rare ones included: with u at the middle of
    token i's interval [c_{i-1}, c_i) the draw is i. A float32 cumulative sum would give the
    1e-9 token no interval at all (float32 spacing near 1 is 6e-8)."""
    from harness.models.lm import draw_categorical

    v = 8192
    p = torch.rand(v, generator=torch.Generator().manual_seed(1))
    p[v - 3] = 0.0
    p = p / p.sum()
    p[v - 2] = 1e-9
    cdf = p.double().cumsum(0)
    lower = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
    u = ((lower + cdf) / 2 / cdf[-1]).unsqueeze(-1)  # one row per token
    monkeypatch.setattr(torch, "rand", lambda *a, **k: u)
    drawn = draw_categorical(p.expand(v, -1))
    live = p > 0
    assert torch.equal(drawn[live], torch.arange(v)[live])
    assert drawn[v - 3] != v - 3  # a zero-probability token owns no interval


def test_a_cache_that_cannot_be_shared_falls_back_to_one_forward_per_row(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.models.lm

    monkeypatch.setattr(harness.models.lm, "_read_only_repeated", lambda cache, rows: False)
    monkeypatch.setattr(harness.models.lm, "_expand_cache", lambda cache, rows: None)
    shared, full = distinct_policies(arch)
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    rows = first_forward_rows(shared.model, lambda: shared.token_logprobs(prompts, responses))
    assert rows == [3, 6]  # tried once: the distinct prompts, then every row unshared
    torch.testing.assert_close(
        shared.token_logprobs(prompts, responses), full.token_logprobs(prompts, responses),
        atol=1e-5, rtol=0,
    )
    rows = first_forward_rows(shared.model, lambda: shared.token_logprobs(prompts, responses))
    assert rows == [6]  # and not tried again
    again, _ = distinct_policies(arch)
    rows = first_forward_rows(again.model, lambda: sample(again, prompts, max_new_tokens=2))
    assert rows == [3, 6, 6]  # sampler: prefill of the distinct prompts, then of every row
    assert torch.equal(sample(again, prompts).tokens, sample(full, prompts).tokens)
    head = LMRewardModel(tiny_lm(arch), seed=3)
    rows = first_forward_rows(head.scalar.backbone, lambda: head(prompts, responses))
    assert rows == [3, 6]
    head.scalar.share_prompts = False
    expected = head(prompts, responses)
    head.scalar.share_prompts = True
    torch.testing.assert_close(head(prompts, responses), expected, atol=1e-5, rtol=0)
