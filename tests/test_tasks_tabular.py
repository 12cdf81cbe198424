"""The tabular tasks (bandit, token) and their models, checked against exact enumeration."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config import build_config
from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.exact import ExactProblem
from harness.models.tabular import SequenceSpace, TabularPolicy
from harness.policy import PromptBatch, ResponseBatch
from harness.tasks.bandit import BanditParams, BanditTask
from harness.tasks.token import TokenParams, TokenTask


@pytest.fixture(scope="module")
def token() -> TokenTask:
    return TokenTask(TokenParams(), seed=3)  # V=4, H=4: 341 responses per prompt


@pytest.fixture(scope="module")
def token_exact(token: TokenTask) -> ExactProblem:
    return ExactProblem.from_task(token)


def _pairs(prompts: PromptBatch, responses: ResponseBatch) -> tuple[PromptBatch, ResponseBatch]:
    """Every prompt × response, prompt-major (row p·N + n is (x_p, y_n)), as ExactProblem does."""
    n, p = len(responses), len(prompts)
    return prompts.repeat_interleave(n), ResponseBatch(
        tokens=responses.tokens.repeat(p, 1), mask=responses.mask.repeat(p, 1)
    )


# --- the response space --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v", "h", "eos"), [(4, 4, True), (3, 1, True), (5, 1, False), (2, 3, False)]
)
def test_enumeration_is_in_id_order_and_complete(v: int, h: int, eos: bool) -> None:
    space = SequenceSpace(v, h, eos)
    responses = space.enumerate()
    n = sum(v**k for k in range(h + 1)) if eos else v**h
    assert len(responses) == space.num_responses == n
    assert torch.equal(space.response_ids(responses), torch.arange(n))
    rows = {tuple(r[m].tolist()) for r, m in zip(responses.tokens, responses.mask, strict=True)}
    assert len(rows) == n  # all distinct


def test_response_ids_reject_non_responses() -> None:
    space = SequenceSpace(4, 3, eos=True)
    tokens = torch.tensor([[0, 1, 0], [0, 4, 1], [0, 1, 2], [4, 0, 0], [4, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 0]]).bool()
    ids = space.response_ids(ResponseBatch(tokens, mask))
    # cut short without EOS; token after EOS; ok (3 symbols, cut); ok (just EOS); after EOS.
    assert ids.tolist() == [-1, -1, 1 + 4 + 16 + 0 * 16 + 1 * 4 + 2, 0, -1]


# --- token task: π_ref, optimum, sampling ------------------------------------------------------


def test_token_reference_sums_to_one(token: TokenTask, token_exact: ExactProblem) -> None:
    # Per-token log-probs come from a float32 log-softmax (Policy.token_logprobs_and_entropy
    # computes in float32): each term is exact to ~1e-7 relative, so Σ_y π_ref(y|x) over the
    # 341 sequences is 1 to ~1e-6; 1e-5 leaves a 10× margin.
    totals = token_exact.ref_logp.exp().sum(-1)
    assert torch.allclose(totals, torch.ones_like(totals), atol=1e-5, rtol=0)
    # So does any tabular policy over the same space, e.g. one with large random logits.
    g = torch.Generator().manual_seed(0)
    policy = TabularPolicy(token.space, 3 * torch.randn(token.ref_logits.shape, generator=g))
    totals = token_exact.policy_logprobs(policy).exp().sum(-1)
    assert torch.allclose(totals, torch.ones_like(totals), atol=1e-5, rtol=0)
    # π_ref's responses vary in length: some mass on every length 0..H.
    lengths = token_exact.responses.mask.sum(-1)
    mass = torch.stack([token_exact.ref_logp.exp()[:, lengths == k].sum(-1) for k in range(1, 5)])
    assert (mass > 0.01).all()


def test_token_gradient_ascent_reaches_exact_optimum() -> None:
    beta = 0.5
    task = TokenTask(TokenParams(num_prompts=2), seed=3)
    exact = ExactProblem.from_task(task)
    policy = task.reference_policy()
    prompts, responses = _pairs(exact.prompts, exact.responses)
    shape = exact.ref_logp.shape
    reward, ref_logp = exact.reward.float(), exact.ref_logp.float()
    opt = torch.optim.Adam(policy.parameters(), lr=0.1)
    for _ in range(300):
        logp = policy.sequence_logprobs(prompts, responses).view(shape)
        objective = (logp.exp() * (reward - beta * (logp - ref_logp))).sum(-1).mean()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    logp = exact.policy_logprobs(policy)
    # The autoregressive table can represent any distribution over the enumerated responses
    # (one free logit per prefix and action), so ascent reaches π*_β itself. Observed: regret
    # ~2e-7 after 300 Adam steps (float32 limits J to ~1e-6), against π_ref's 0.046; 1e-4 is
    # the brief's bound, with room for other platforms' float rounding.
    assert exact.regret(exact.ref_logp, beta) > 0.02
    assert exact.objective(logp, beta) == pytest.approx(exact.optimal_objective(beta), abs=1e-4)
    assert exact.kl_to_optimal(logp, beta) < 1e-4


def test_token_sampling_frequencies_match_enumeration(
    token: TokenTask, token_exact: ExactProblem
) -> None:
    n = 50_000
    prompts = token.train_prompts.select([0, 5]).repeat_interleave(n)
    g = torch.Generator().manual_seed(1)
    samples = token.reference_policy().sample(
        prompts, max_new_tokens=token.max_new_tokens, generator=g
    )
    ids = token.response_ids(samples)
    assert (ids >= 0).all()
    for row, p in enumerate([0, 5]):
        freq = torch.bincount(ids[row * n:(row + 1) * n], minlength=341).double() / n
        prob = token_exact.ref_logp[p].exp()
        # Each frequency is Binomial(n, p)/n: std √(p(1−p)/n). 5 std plus 2/n (for cells whose
        # p is so small that the normal approximation fails) bounds all 341 cells; a 5-std
        # excursion has probability ~6e-7 per cell, ~2e-4 over the table (and the draw is seeded).
        bound = 5 * torch.sqrt(prob * (1 - prob) / n) + 2 / n
        assert ((freq - prob).abs() <= bound).all()
    # Lengths: responses cut at H are not finished, the others end with EOS.
    cut = samples.mask.sum(-1) == token.space.max_len
    last = samples.tokens.gather(1, (samples.mask.sum(-1, keepdim=True) - 1))[:, 0]
    assert torch.equal(samples.finished, last == token.space.eos_id)
    assert (~samples.finished == (cut & (last != token.space.eos_id))).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_logprobs_match_sequence_logprobs(token: TokenTask, temperature: float) -> None:
    policy = token.reference_policy()
    prompts = token.train_prompts.repeat_interleave(64)
    g = torch.Generator().manual_seed(2)
    samples = policy.sample(
        prompts, max_new_tokens=token.max_new_tokens, temperature=temperature, generator=g
    )
    assert (samples.logprobs[~samples.mask] == 0).all()
    # At temperature τ the sampled distribution is the tabular policy with logits / τ.
    tempered = TabularPolicy(token.space, token.ref_logits / temperature)
    expected = tempered.token_logprobs(prompts, samples)
    # Same float32 log-softmax of the same logits, computed two ways: agree to ~1e-7 per token.
    assert torch.allclose(samples.logprobs, expected, atol=1e-5)
    assert torch.allclose(
        samples.logprobs.sum(-1), tempered.sequence_logprobs(prompts, samples), atol=1e-5
    )
    logits = policy.logits(prompts, samples)
    assert logits.shape == (*samples.tokens.shape, token.space.num_actions)


def test_greedy_sampling_follows_the_argmax(token: TokenTask) -> None:
    policy = token.reference_policy()
    samples = policy.sample(token.train_prompts, max_new_tokens=4, temperature=0.0)
    logits = policy.logits(token.train_prompts, samples)
    picked = logits.argmax(-1)
    assert torch.equal(picked[samples.mask], samples.tokens[samples.mask])


def test_max_new_tokens_below_h_cuts_responses(token: TokenTask) -> None:
    policy = token.reference_policy()
    g = torch.Generator().manual_seed(0)
    samples = policy.sample(token.train_prompts.repeat_interleave(50), max_new_tokens=2,
                            generator=g)
    assert samples.tokens.shape[1] <= 2
    ended = samples.finished
    assert (samples.mask.sum(-1)[~ended] == 2).all()


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "params"),
    [(TokenTask, TokenParams()), (BanditTask, BanditParams(reward="peak_far"))],
)
def test_same_seed_same_task_and_samples(cls: type, params: object) -> None:
    a, b, c = cls(params, seed=7), cls(params, seed=7), cls(params, seed=8)
    assert torch.equal(a.ref_logits, b.ref_logits)
    assert torch.equal(a.prompt_tokens, b.prompt_tokens)
    ea, eb = ExactProblem.from_task(a), ExactProblem.from_task(b)
    assert torch.equal(ea.reward, eb.reward)
    assert not torch.equal(a.ref_logits, c.ref_logits)

    def draw(task: BanditTask | TokenTask) -> ResponseBatch:
        g = torch.Generator().manual_seed(11)
        prompts = task.train_prompts.repeat_interleave(20)
        return task.reference_policy().sample(
            prompts, max_new_tokens=task.max_new_tokens, generator=g
        )

    sa, sb = draw(a), draw(b)
    assert torch.equal(sa.tokens, sb.tokens) and torch.equal(sa.mask, sb.mask)
    assert torch.equal(sa.logprobs, sb.logprobs)


def test_task_rng_is_local() -> None:
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    TokenTask(TokenParams(), seed=1)
    BanditTask(BanditParams(), seed=1)
    assert torch.equal(torch.rand(3), before)  # the global generator was not touched


# --- sizes and parameters ------------------------------------------------------------------------


def test_too_large_enumeration_names_v_h_and_count() -> None:
    with pytest.raises(ConfigError) as info:
        TokenTask(TokenParams(vocab_size=8, max_len=6))
    message = str(info.value)
    assert "V=8" in message and "H=6" in message and "299593" in message
    assert "max_enumeration=4096" in message
    TokenTask(TokenParams(vocab_size=8, max_len=6, max_enumeration=300_000, num_prompts=1))


def test_params_build_from_a_mapping() -> None:
    params = build_config(BanditTask.Params, {"reward": "peak_near", "num_arms": 4})
    assert params.num_arms == 4 and params.reward == "peak_near"
    with pytest.raises(ConfigError, match="reward"):
        build_config(BanditTask.Params, {"reward": "nope"})
    with pytest.raises(ConfigError, match="vocab_sise"):
        build_config(TokenTask.Params, {"vocab_sise": 3})


def test_eval_prompts_are_the_first_train_prompts() -> None:
    task = BanditTask(BanditParams(num_prompts=5, num_eval_prompts=2))
    assert task.eval_prompts.index.tolist() == [0, 1]
    assert len(BanditTask(BanditParams(num_prompts=5)).eval_prompts) == 5
    with pytest.raises(ConfigError, match="num_eval_prompts"):
        BanditTask(BanditParams(num_prompts=5, num_eval_prompts=6))


# --- bandit rewards ------------------------------------------------------------------------------


def test_bandit_peak_near_and_far() -> None:
    near = BanditTask(BanditParams(reward="peak_near"), seed=4)
    far = BanditTask(BanditParams(reward="peak_far"), seed=4)
    assert torch.equal(near.ref_logits, far.ref_logits)  # the reward kind does not change π_ref
    ref = torch.softmax(near.ref_logits[:, 0], dim=-1)
    mode = ref.argmax(-1)
    best_near = near.reward_table.argmax(-1)
    best_far = far.reward_table.argmax(-1)
    assert torch.equal(best_near, mode)
    assert (best_far != mode).all()
    # peak_far's best arm is π_ref's least likely one: with 16 arms and N(0, 1) logits its
    # probability is e^(min − max) ≈ e^-3.5 of the mode's; 0.2 is a loose bound.
    rows = torch.arange(len(mode))
    assert (ref[rows, best_far] < 0.2 * ref[rows, mode]).all()
    assert torch.equal(best_far, ref.argmin(-1))
    # The peak's height is reward_scale, at its centre.
    assert torch.allclose(far.reward_table.max(-1).values, torch.ones(8))
    # And the exact optimum is far better than π_ref on peak_far, less so on peak_near.
    beta = 0.1
    regret_far = ExactProblem.from_task(far).regret(ExactProblem.from_task(far).ref_logp, beta)
    regret_near = ExactProblem.from_task(near).regret(ExactProblem.from_task(near).ref_logp, beta)
    assert regret_far > regret_near


def test_bandit_peak_far_with_uniform_reference() -> None:
    task = BanditTask(BanditParams(reward="peak_far", reference="uniform", num_arms=10))
    # All arms tie: the peak goes to the arm circularly farthest from the mode (arm 0).
    assert (task.reward_table.argmax(-1) == 5).all()


def test_bandit_normal_rewards_scale() -> None:
    task = BanditTask(BanditParams(num_prompts=64, num_arms=64, reward_scale=3.0), seed=0)
    # 4096 draws of N(0, 9): the sample std is 3 ± ~0.03 (std of a sample std ≈ σ/√(2n)).
    assert task.reward_table.std().item() == pytest.approx(3.0, abs=0.15)


# --- models --------------------------------------------------------------------------------------


def test_reward_model_is_a_table_over_response_ids(token: TokenTask) -> None:
    model = token.make_reward_model()
    responses = token.enumerate_responses()
    prompts = token.train_prompts.select([2]).repeat_interleave(len(responses))
    assert torch.equal(model(prompts, responses), torch.zeros(len(responses)))
    with torch.no_grad():
        model.table[2, 17] = 1.5
    out = model(prompts, responses)
    assert out[17] == 1.5 and out.abs().sum() == 1.5
    cut = ResponseBatch(tokens=torch.tensor([[0, 1]]), mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="not a complete response"):
        model(token.train_prompts.select([0]), cut)


def test_value_model_indexes_prefixes_and_zeroes_padding(token: TokenTask) -> None:
    policy = token.reference_policy()
    critic = token.make_value_model(policy)
    with torch.no_grad():
        critic.table.copy_(torch.arange(critic.table.numel()).view(critic.table.shape).float())
    prompts = token.train_prompts.select([1, 1])
    tokens = torch.tensor([[2, 3, 4, 0], [1, 0, 3, 2]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    values = critic(prompts, ResponseBatch(tokens, mask))
    row = 1 * token.space.num_prefixes
    # V(x, y_<t): prefixes (), (2), (2,3) then padding; (), (1), (1,0), (1,0,3).
    expected = torch.tensor([[0, 1 + 2, 5 + 2 * 4 + 3, -row], [0, 1 + 1, 5 + 4, 21 + 16 + 3]])
    assert torch.equal(values, (expected + row).float() * mask)


def test_policy_gradient_touches_only_visited_prefixes(token: TokenTask) -> None:
    policy = token.reference_policy()
    responses = ResponseBatch(torch.tensor([[1, 4]]), torch.ones(1, 2, dtype=torch.bool))
    policy.sequence_logprobs(token.train_prompts.select([3]), responses).sum().backward()
    touched = (policy.table.grad.abs().sum(-1) > 0).nonzero().tolist()
    assert touched == [[3, 0], [3, 2]]  # prompt 3: prefix () and prefix (b) = 1 + 1


def test_unknown_prompt_index_is_refused(token: TokenTask) -> None:
    prompts = PromptBatch(index=torch.tensor([-1]), ids=torch.zeros(1, 3, dtype=torch.long),
                          mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="prompt index -1"):
        token.reference_policy().sample(prompts, max_new_tokens=2)


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task", [TokenTask(TokenParams(), seed=0), BanditTask(BanditParams(num_arms=12), seed=0)]
)
def test_encode_decode_round_trip(task: BanditTask | TokenTask) -> None:
    responses = task.enumerate_responses()
    prompts = task.train_prompts.select(torch.arange(len(responses)) % task.num_prompts)
    p_text, r_text = task.decode_prompts(prompts), task.decode_responses(responses)
    p2, r2 = task.encode(p_text, r_text)
    assert torch.equal(p2.index, prompts.index) and torch.equal(p2.ids, prompts.ids)
    assert torch.equal(r2.mask, responses.mask)
    assert torch.equal(r2.tokens[r2.mask], responses.tokens[responses.mask])
    assert torch.equal(r2.finished, responses.finished)
    assert len(set(r_text)) == len(r_text)


def test_token_text_looks_like_letters() -> None:
    task = TokenTask(TokenParams(), seed=0)
    _, responses = task.encode(task.decode_prompts(task.train_prompts.select([0, 0])),
                               ["ab.", "dcba"])
    assert responses.tokens.tolist() == [[0, 1, 4, 0], [3, 2, 1, 0]]
    assert responses.finished.tolist() == [True, False]


@pytest.mark.parametrize(
    ("task", "prompt", "response", "bad"),
    [
        (BanditTask(BanditParams()), "q3", "a1", "'q3'"),
        (BanditTask(BanditParams()), "p99", "a1", "'p99'"),
        (BanditTask(BanditParams()), "p1", "a16", "'a16'"),
        (TokenTask(TokenParams()), "xyz", "ab.", "'xyz'"),
        (TokenTask(TokenParams()), None, "a.b", "'a.b'"),
        (TokenTask(TokenParams()), None, "ab", "'ab'"),
        (TokenTask(TokenParams()), None, "abcd.", "'abcd.'"),
        (TokenTask(TokenParams()), None, "", "''"),
    ],
)
def test_bad_text_names_the_string(
    task: BanditTask | TokenTask, prompt: str | None, response: str, bad: str
) -> None:
    prompt = prompt if prompt is not None else task.decode_prompts(task.train_prompts)[0]
    with pytest.raises(ConfigError, match=bad.replace(".", r"\.")):
        task.encode([prompt], [response])


def test_token_prompt_not_in_task_is_refused() -> None:
    task = TokenTask(TokenParams(), seed=0)
    known = set(task.decode_prompts(task.train_prompts))
    other = next(
        a + b + c for a in "abcd" for b in "abcd" for c in "abcd" if a + b + c not in known
    )
    with pytest.raises(ConfigError, match=f"'{other}' is not one of"):
        task.encode([other], ["a."])


# --- gold reward ---------------------------------------------------------------------------------


def test_token_gold_reward_is_partial_credit() -> None:
    task = TokenTask(TokenParams(length_bonus=0.01), seed=0)
    target = task.targets[0].tolist()
    letters = "abcd"
    full = "".join(letters[t] for t in target)
    wrong_first = letters[(target[0] + 1) % 4] + full[1:]
    texts = [full, full[:2] + ".", wrong_first, ".", full[:3] + "."]
    prompts, responses = task.encode([task.decode_prompts(task.train_prompts)[0]] * 5, texts)
    r = task.gold_reward(prompts, responses)
    expected = [1 + 0.04, 0.5 + 0.02, 0.75 + 0.04, 0.0, 0.75 + 0.03]
    assert torch.allclose(r, torch.tensor(expected))
    # The exact optimum at small β is the full target, cut at H.
    exact = ExactProblem.from_task(task)
    best = exact.optimal_logprobs(0.01)[0].argmax()
    assert task.decode_responses(exact.responses.select([int(best)])) == [full]


# --- registration --------------------------------------------------------------------------------


def test_tasks_are_registered() -> None:
    host = get_plugin_host(entry_points=False)
    assert host.task("bandit") is BanditTask
    assert host.task("token") is TokenTask
    assert host.registration("task", "bandit").plugin.core
    task = host.task("bandit")(build_config(host.task("bandit").Params, {}), seed=0)
    assert task.kind == "tabular" and task.max_new_tokens == 1
    assert math.isclose(float(ExactProblem.from_task(task).ref_logp.exp().sum(-1)[0]), 1.0,
                        abs_tol=1e-6)
