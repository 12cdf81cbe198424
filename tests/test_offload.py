"""Offloading the frozen π_ref and r̂: on the device only while they run, same results."""

from __future__ import annotations

import torch

from harness.device_trace import STAND_IN, stand_in_device
from harness.lm import LMPolicy, LMRewardModel
from harness.offload import OffloadedPolicy, OffloadedReward, offload_totals
from harness.plugins import get_plugin_host
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
        # Back on the host after each call.
        assert not any(trace.on_device(t) for t in policy.parameters())
        assert not any(trace.on_device(t) for t in reward.parameters())
        assert ref.offload.bytes_moved == 2 * size
        ref.sample(p, max_new_tokens=3, generator=torch.Generator(STAND_IN).manual_seed(0))
        assert ref.offload.bytes_moved == 4 * size
        totals = offload_totals(ref, rm, policy)
        assert totals["bytes_moved"] == 4 * size + rm.offload.bytes_moved
        logp, score = logp.cpu(), score.cpu()
    assert torch.equal(logp, expected_logp) and torch.equal(score, expected_reward)
    assert rm.state_dict().keys() == reward.state_dict().keys()


def test_a_cpu_run_with_offloading_trains_as_without_it():
    from harness.runner import build_context, make_algorithm

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
