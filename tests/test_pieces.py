"""harness.pieces: the set-up algorithm plugins share, one piece at a time.

Each piece replaced code that 13 plugins held inline; ``tests/test_algorithm_fixture.py`` checks
that the plugins built from them give their recorded numbers bit for bit. Here each piece is
checked against what it promises.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from harness import pieces, rl
from harness.pieces import OfflineAlgorithm, OnlineAlgorithm
from harness.testing import bandit_algorithm


def test_need_raises_its_message_only_when_the_check_fails():
    pieces.need(True, "never shown")
    with pytest.raises(ValueError, match=r"^beta must be > 0, got -1$"):
        pieces.need(False, "beta must be > 0, got -1")


def test_the_standard_space_is_the_learning_rate_then_the_others_in_order():
    assert pieces.standard_space("tabular") == {
        "learning_rate": {"low": 0.005, "high": 0.5, "log": True}}
    for kind in ("neural", "hf", "tiny-lm"):  # any kind but "tabular" is a language model
        assert pieces.standard_space(kind) == {
            "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}
    space = pieces.standard_space("tabular", tau=pieces.log_uniform(0.01, 1.0),
                                  gamma={"low": 0.0, "high": 2.0})
    assert list(space) == ["learning_rate", "tau", "gamma"]
    assert space["tau"] == {"low": 0.01, "high": 1.0, "log": True}
    assert space["gamma"] == {"low": 0.0, "high": 2.0}


@pytest.mark.parametrize("kind", ["tabular", "neural"])
def test_the_shipped_plugins_search_spaces_are_the_ones_they_declared_inline(kind):
    """The spaces the plugins wrote out before they used :func:`standard_space`."""
    from harness.engine.plugins import get_plugin_host

    rates = {"low": 0.005, "high": 0.5} if kind == "tabular" else {"low": 1e-5, "high": 1e-2}
    lr = {"learning_rate": {**rates, "log": True}}
    expected = {
        "grpo": {**lr, "beta": {"low": 0.01, "high": 1.0, "log": True}},
        "rloo": {**lr, "beta": {"low": 0.01, "high": 1.0, "log": True}},
        "reinforce-pp": {**lr, "beta": {"low": 0.01, "high": 1.0, "log": True}},
        "ppo": {**lr, "kl_coef": {"low": 0.01, "high": 1.0, "log": True}},
        "gspo": lr,
        "online-dpo": {**lr, "beta": {"low": 0.02, "high": 2.0, "log": True}},
        "dpo": {**lr, "beta": {"low": 0.02, "high": 2.0, "log": True}},
        "rdpo": {**lr, "beta": {"low": 0.02, "high": 2.0, "log": True}},
        "ipo": {**lr, "tau": {"low": 0.01, "high": 1.0, "log": True}},
        "kto": {**lr, "beta": {"low": 0.01, "high": 1.0, "log": True}},
        "orpo": {**lr, "lam": {"low": 0.01, "high": 1.0, "log": True}},
        "simpo": {**lr, "beta": {"low": 0.5, "high": 5.0, "log": True},
                  "gamma": {"low": 0.0, "high": 2.0}},
    }
    host = get_plugin_host()
    for name, space in expected.items():
        got = host.algorithm(name).tuning_space(kind)
        assert got == space and list(got) == list(space), name


def test_make_optimizer_builds_the_named_optimiser_at_the_rate():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = pieces.make_optimizer(params, "adam", 0.1)
    sgd = pieces.make_optimizer(params, "sgd", 0.2)
    rmsprop = pieces.make_optimizer(params, "rmsprop", 0.3)
    assert type(adam) is torch.optim.Adam and type(sgd) is torch.optim.SGD
    assert type(rmsprop) is torch.optim.RMSprop
    assert [o.param_groups[0]["lr"] for o in (adam, sgd, rmsprop)] == [0.1, 0.2, 0.3]
    assert sgd.param_groups[0]["momentum"] == 0
    assert adam.param_groups[0]["weight_decay"] == 0
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd, rmsprop, got 'lion'"):
        pieces.make_optimizer(params, "lion", 0.1)


def test_make_optimizer_steps_as_the_optimiser_built_by_hand():
    """One step of each from the same gradient: the same parameters, bit for bit."""
    for name, by_hand in [("adam", lambda p: rl.adam(p, lr=0.1)),
                          ("sgd", lambda p: torch.optim.SGD(p, lr=0.1)),
                          ("rmsprop", lambda p: torch.optim.RMSprop(p, lr=0.1))]:
        results = []
        for make in (lambda p, name=name: pieces.make_optimizer(p, name, 0.1), by_hand):
            w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
            opt = make([w])
            for _ in range(3):
                opt.zero_grad()
                (w ** 2).sum().backward()
                opt.step()
            results.append(w.detach().clone())
        assert torch.equal(*results), name


def test_warmup_scales_the_rate_linearly_then_holds_it():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.8)
    sched = pieces.warmup_scheduler(opt, 4)
    rates = []
    for _ in range(6):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8], rel=1e-12)
    opt = torch.optim.SGD([w], lr=0.8)
    sched = pieces.warmup_scheduler(opt, 0)
    for _ in range(3):
        assert sched.get_last_lr()[0] == 0.8
        opt.step()
        sched.step()


def test_trainable_parameters_leave_out_frozen_ones_in_order():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].bias.requires_grad_(False)
    assert [id(p) for p in pieces.trainable_parameters(model)] == [
        id(model[0].weight), id(model[1].weight), id(model[1].bias)]


@dataclass
class _OnlineConfig:
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    max_new_tokens: int | None = None


class _Online(OnlineAlgorithm):
    name = "pieces-online"
    Config = _OnlineConfig

    def step(self) -> dict[str, float]:
        return {}


@dataclass
class _OfflineConfig:
    learning_rate: float = 0.1
    optimizer: str = "rmsprop"
    warmup_steps: int = 2


class _Offline(OfflineAlgorithm):
    name = "pieces-offline"
    Config = _OfflineConfig

    def step(self) -> dict[str, float]:
        return {}


class _OfflineUnpaired(_Offline):
    name = "pieces-unpaired"
    needs = frozenset({"unpaired"})
    uses_reference = False


def test_the_online_base_sets_up_r_hat_prompts_optimiser_and_prompt_order():
    alg = bandit_algorithm(_Online)
    ctx = alg.ctx
    assert alg.reward_model is ctx.reward_model and alg.policy is ctx.policy
    assert len(alg.prompts) == len(ctx.task.train_prompts)
    assert alg.max_new_tokens == ctx.task.max_new_tokens
    assert type(alg.optimizer) is torch.optim.SGD
    assert alg.optimizer.param_groups[0]["params"] == alg.params
    assert alg.params == pieces.trainable_parameters(ctx.policy)
    # Shuffled passes: n draws cover every prompt once before any repeats.
    n = len(alg.prompts)
    first = alg.next_rows(n)
    assert sorted(first.tolist()) == list(range(n))
    assert sorted(torch.cat([alg.next_rows(n - 1), alg.next_rows(1)]).tolist()) == \
        list(range(n))
    assert _Online.tuning_space("tabular") == {}  # a plugin declares its own space


def test_the_online_base_refuses_a_run_without_a_reward_model():
    alg = bandit_algorithm(_Online)
    alg.ctx.reward_model = None
    with pytest.raises(ValueError, match=r"^pieces-online needs a reward model$"):
        _Online(_OnlineConfig(), alg.ctx)


def test_the_offline_base_sets_up_data_optimiser_warmup_reference_and_minibatches():
    alg = bandit_algorithm(_Offline, num_pairs=40)
    ctx = alg.ctx
    assert len(alg.data) == len(ctx.preferences) == 40
    assert type(alg.optimizer) is torch.optim.RMSprop
    assert alg.scheduler.get_last_lr() == [0.1 / 2]  # step 0 of a two-step warm-up
    rows = alg.next_rows(40)
    assert sorted(rows.tolist()) == list(range(40))
    ref_chosen, ref_rejected = alg.ref(rows[:5])
    want_chosen, want_rejected = alg.data.select(rows[:5]).sequence_logprobs(ctx.reference)
    assert torch.equal(ref_chosen, want_chosen) and torch.equal(ref_rejected, want_rejected)


def test_the_offline_base_reads_unpaired_examples_when_the_class_needs_them():
    alg = bandit_algorithm(_OfflineUnpaired, num_pairs=40)
    assert len(alg.data) == len(alg.ctx.examples)
    assert not hasattr(alg, "ref")  # uses_reference = False: π_ref is never read
    ctx = alg.ctx
    ctx.examples = None
    with pytest.raises(ValueError, match=r"^pieces-unpaired needs the suite's data as unpaired"):
        _OfflineUnpaired(_OfflineConfig(), ctx)
    ctx.preferences = None
    with pytest.raises(ValueError, match=r"^pieces-offline needs the suite's preference data$"):
        _Offline(_OfflineConfig(), ctx)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_tempered_log_probs_are_those_of_the_scaled_logits(temperature):
    alg = bandit_algorithm(_Online)
    policy, prompts = alg.policy, alg.prompts
    g = torch.Generator().manual_seed(1)
    responses = policy.sample(prompts, max_new_tokens=alg.max_new_tokens, generator=g)
    logp, ent = pieces.tempered_token_logprobs(policy, prompts, responses, temperature,
                                               entropy=True)
    assert ent is not None and not ent.requires_grad and logp.requires_grad
    logits = policy.logits(prompts, responses).float() / temperature
    want = torch.log_softmax(logits, -1).gather(-1, responses.tokens.unsqueeze(-1)).squeeze(-1)
    mask = responses.mask.bool()
    # float32 log-softmax by two code paths: equal to a few ulps of values of order 1.
    torch.testing.assert_close(logp[mask], want[mask], rtol=0, atol=1e-6)
    p = torch.softmax(logits, -1)
    want_ent = -(p * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(ent[mask], want_ent[mask], rtol=0, atol=1e-6)
    assert (logp[~mask] == 0).all() and (ent[~mask] == 0).all()
    no_ent = pieces.tempered_token_logprobs(policy, prompts, responses, temperature)[1]
    assert no_ent is None
