"""The seven new plugins on the token task: responses of several tokens over a tiny vocabulary,
where lengths differ (SimPO's and ORPO's length normalisation, REINFORCE++'s returns over tokens,
GSPO's per-sequence ratio all act). 60 steps each at Adam 0.05 on 2,000 pairs or the oracle r*.

Measured E r* (exact, from π_ref's 0.153): kto 0.181, rdpo and cdpo (ε = 0) 0.185, online-dpo
0.183, reinforce-pp 0.468, gspo 0.496 — each above π_ref's, which is what is asserted. simpo
(0.159) and orpo (0.140) are reference-free and fit the data's chosen responses rather than
ascend r* in 60 steps: for them only finiteness is asserted.
"""

from __future__ import annotations

import math

import pytest

from harness.engine.annotator import simulate_preferences
from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm, train
from harness.exact import ExactProblem
from harness.preference import BradleyTerry
from harness.reward import GoldRewardModel
from harness.tasks.token import TokenTask

CONFIGS = {
    "simpo": ({"beta": 2.0, "gamma": 0.5}, False),
    "orpo": ({}, False),
    "kto": ({"beta": 0.5}, True),
    "rdpo": ({"optimizer": "adam", "warmup_steps": 0, "beta": 0.5}, True),
    "cdpo": ({"optimizer": "adam", "warmup_steps": 0, "beta": 0.5}, True),
    "online-dpo": ({"beta": 0.5, "label": "btl"}, True),
    "reinforce-pp": ({"beta": 0.1}, True),
    "gspo": ({"prompts_per_step": 4}, True),
}


@pytest.fixture(scope="module")
def token_task():
    task = TokenTask(TokenTask.Params(), seed=0)
    return task, simulate_preferences(task, BradleyTerry(), num_pairs=2000, seed=0), \
        ExactProblem.from_task(task)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_runs_on_the_token_task(token_task, name):
    task, data, exact = token_task
    config, rises = CONFIGS[name]
    cls = get_plugin_host().algorithm(name)
    context = build_context(task, cls, seed=0, preferences=data,
                            reward_model=GoldRewardModel(task), label_noise=0.0)
    before = exact.expected_reward(exact.policy_logprobs(context.policy))
    records = train(make_algorithm(cls, {"learning_rate": 0.05, **config}, context), 60)
    assert len(records) == 60
    assert all(math.isfinite(v) for r in records for v in r.values())
    assert max(r["response_length"] for r in records) > 1
    if rises:
        assert exact.expected_reward(exact.policy_logprobs(context.policy)) > before
