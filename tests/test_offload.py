"""Offloading the frozen π_ref and r̂: on the device only while they run, same results."""

from __future__ import annotations

import torch

from harness.engine.plugins import get_plugin_host
from harness.models.device_trace import STAND_IN, stand_in_device
from harness.models.lm import LMPolicy, LMRewardModel
from harness.models.offload import OffloadedPolicy, OffloadedReward, offload_totals
from harness.testing import _kit_lm_task
from tests.test_lm import (
    EOS,
    PAD,
    SHARED_PROMPTS,
    SHARED_RESPONSES,
    prompt_batch,
    response_batch,
    tiny_lm,
)


def test_frozen_models_visit_the_device_per_call_and_give_the_same_results():
    policy = LMPolicy(tiny_lm("llama"), pad_id=PAD, eos_id=EOS).eval()
    size = sum(t.numel() * t.element_size() for t in [*policy.parameters(), *policy.buffers()])
    reward = LMRewardModel(tiny_lm("llama"), seed=1).eval()
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    with torch.no_grad():
        expected_logp = policy.token_logprobs(prompts, responses)
        expected_reward = reward(prompts, responses)
    with stand_in_device() as trace, torch.no_grad():
        ref = OffloadedPolicy(policy, STAND_IN)
        rm = OffloadedReward(reward, STAND_IN)
        assert list(ref.parameters()) == [] and ref.device.type == STAND_IN
        p, r = prompts.to(STAND_IN), responses.to(STAND_IN)
        logp = ref.token_logprobs(p, r)
        score = rm(p, r)
        assert trace.on_device(logp) and trace.on_device(score)
        # Back on the host after each call: the same host tensors, nothing copied back.
        assert not any(trace.on_device(t) for t in policy.parameters())
        assert not any(trace.on_device(t) for t in reward.parameters())
        assert ref.offload.bytes_moved == size
        ref.sample(p, max_new_tokens=3, generator=torch.Generator(STAND_IN).manual_seed(0))
        assert ref.offload.bytes_moved == 2 * size
        totals = offload_totals(ref, rm, policy)
        assert totals["bytes_moved"] == 2 * size + rm.offload.bytes_moved
        logp, score = logp.cpu(), score.cpu()
    assert torch.equal(logp, expected_logp) and torch.equal(score, expected_reward)
    assert rm.state_dict().keys() == reward.state_dict().keys()


def test_a_cpu_run_with_offloading_trains_as_without_it():
    from harness.engine.runner import build_context, make_algorithm

    host = get_plugin_host()
    config = {"rollout_batch_size": 4, "num_ppo_epochs": 1, "learning_rate": 1e-3}
    metrics = []
    for offload in (False, True):
        task = _kit_lm_task()
        reward = LMRewardModel(task.model, seed=0)
        context = build_context(task, host.algorithm("ppo"), seed=0, reward_model=reward,
                                policy_options={"offload_frozen": offload})
        assert isinstance(context.reference, OffloadedPolicy) == offload
        assert isinstance(context.reward_model, OffloadedReward) == offload
        algo = make_algorithm(host.algorithm("ppo"), {**config, "value_init": "reward"}, context)
        metrics.append(algo.step())
    assert metrics[0] == metrics[1]


def test_a_call_copies_the_frozen_weights_one_way_and_frees_them_after():
    """The host weights are frozen: a call copies them to the device and drops that copy (no
    device → host copy of unchanged weights, the same host tensors after as before)."""
    policy = LMPolicy(tiny_lm("llama"), pad_id=PAD, eos_id=EOS).eval()
    size = sum(t.numel() * t.element_size() for t in [*policy.parameters(), *policy.buffers()])
    host = [t.data_ptr() for t in policy.parameters()]
    with stand_in_device(), torch.no_grad():
        ref = OffloadedPolicy(policy, STAND_IN)
        p = prompt_batch(SHARED_PROMPTS).to(STAND_IN)
        r = response_batch(SHARED_RESPONSES).to(STAND_IN)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        logp = ref.token_logprobs(p, r)
        assert torch.cuda.max_memory_allocated() >= before + size  # the weights were there
        assert torch.cuda.memory_allocated() == before + logp.untyped_storage().nbytes()
        assert [t.data_ptr() for t in policy.parameters()] == host
        assert ref.offload.bytes_moved == size


def test_building_an_offloaded_run_never_puts_the_frozen_copies_on_the_device():
    """π_ref's copy and r̂'s are made in host memory: building a PPO run adds the policy, and
    nothing else, to the device (before: policy, π_ref, and a second r̂ at once)."""
    from harness.engine.runner import build_context

    host = get_plugin_host()
    with stand_in_device() as trace:
        task = _kit_lm_task(STAND_IN)
        reward = task.make_reward_model()  # r̂ as the run loads it, on the device
        policy_bytes = sum(p.numel() * p.element_size() for p in task.model.parameters())
        assert not trace.on_device(next(task.model.parameters()))  # the task's: host memory
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        context = build_context(task, host.algorithm("ppo"), seed=0, reward_model=reward,
                                policy_options={"offload_frozen": True})
        added = torch.cuda.max_memory_allocated() - before
        assert policy_bytes <= added < 1.2 * policy_bytes
        assert isinstance(context.reference, OffloadedPolicy)
        assert not any(trace.on_device(t) for t in context.reference.offload.module.parameters())
        assert not any(trace.on_device(t) for t in context.reward_model.offload.module.parameters())
