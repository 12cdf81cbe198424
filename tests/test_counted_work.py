"""Counted work: samples, forward and backward tokens per model role, FLOPs from those counts,
table rows for tabular policies, and the load average beside the timed part.

The bandit runs have known batch sizes and steps, so every count is checked against the hand
count of what the algorithm's code does per step; a tiny neural run checks the roles' tokens
against the tokens actually sampled plus the prompt tokens each pass runs (derived by hand from
the prompts' lengths) and the FLOPs against 2·N·forward + 6·N·backward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from harness.compute import ROLES, ComputeMeter, flop_parameters, note_prompt_tokens
from harness.engine.executors import run_specs
from harness.engine.plugins import get_plugin_host
from harness.engine.runner import build_context, make_algorithm
from harness.models import cache
from harness.models.tabular import TabularValueModel
from harness.policy import PromptBatch
from harness.report import write_report
from harness.report.data import load_store
from harness.suite import check_suite, load_suite
from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

# 4 steps of 32 samples each for every algorithm: budget 128 samples
SUITE = """\
name: counted
tasks:
  - name: bandit
    params: {num_prompts: 4, num_arms: 8}
preferences: {num_pairs: 200}
reward_model: {epochs: 5}
algorithms:
  - name: ppo
    config: {learning_rate: 0.05, rollout_batch_size: 32, num_ppo_epochs: 2}
  - name: grpo
    config: {learning_rate: 0.05, num_generations: 4, prompts_per_step: 8, num_iterations: 2}
  - name: dpo
    config: {beta: 0.5, learning_rate: 0.05, optimizer: adam, batch_size: 32, warmup_steps: 0}
seeds: [0, 1]
budget: {samples: 128}
evaluation: {every: 2, samples_per_prompt: 1, evaluators: [gold_reward, kl_ref]}
device: cpu
"""
STEPS, BATCH = 4, 32
N = STEPS * BATCH  # samples per run; a bandit response is one token (one table row)


def _zeros() -> dict[str, int]:
    return dict.fromkeys(ROLES, 0)


# What each algorithm's step does on the bandit (its source, with the suite's settings):
# PPO: sample 32 (π), score with r̂ and π_ref, 2 epochs of one minibatch for π and the critic.
# GRPO: sample 8 prompts × 4 (π), score with r̂, π_ref (β > 0) and π_old (μ = 2 passes differ
#   from the first update's forward), 2 passes of updates of π.
# DPO: read 32 pairs; π_ref's log-probs of each pair's two responses once (the first 128 of the
#   200 pairs, one shuffled pass); one update of π over both responses of each pair.
HAND = {
    "ppo": dict(generated=N, from_data=0,
                forward={**_zeros(), "policy": N, "reference": N, "reward": N},
                backward={**_zeros(), "policy": 2 * N, "critic": 2 * N}),
    "grpo": dict(generated=N, from_data=0,
                 forward={**_zeros(), "policy": 2 * N, "reference": N, "reward": N},
                 backward={**_zeros(), "policy": 2 * N}),
    "dpo": dict(generated=0, from_data=N,
                forward={**_zeros(), "reference": 2 * N},
                backward={**_zeros(), "policy": 2 * N}),
}


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")


def _run_suite(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "suite.yaml"
    path.write_text(SUITE)
    specs = check_suite(load_suite(path), path, get_plugin_host())
    outcome = run_specs(specs, str(folder / "runs"), wandb=False, progress=False)
    assert outcome.statuses == {"done": len(specs)}
    store = folder / "runs" / "counted"
    (store / "suite.yaml").write_text(SUITE)
    return store


def _summaries(store: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(store.glob("*/summary.json")):
        spec = json.loads((path.parent / "spec.json").read_text())
        out[f"{spec['algorithm']}-{spec['seed']}"] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_HARNESS_WANDB", "0")
        root = tmp_path_factory.mktemp("counted")
        return _run_suite(root / "a"), _run_suite(root / "b")


def test_bandit_counts_equal_the_hand_count(stores: tuple[Path, Path]) -> None:
    summaries = _summaries(stores[0])
    assert len(summaries) == 6
    for key, summary in summaries.items():
        hand = HAND[key.split("-")[0]]
        c = summary["compute"]
        assert summary["steps"] == STEPS, key
        assert c["samples"] == N
        assert c["samples_generated"] == hand["generated"], key
        assert c["samples_from_data"] == hand["from_data"], key
        assert c["forward_tokens"] == hand["forward"], key
        assert c["backward_tokens"] == hand["backward"], key
        # a tabular policy: the same counts as table rows, and no FLOPs
        assert c["rows_read"] == hand["forward"] and c["rows_updated"] == hand["backward"], key
        assert c["flops"] is None and c["flops_by_role"] is None
        # the older totals agree with the per-role counts
        assert c["tokens_generated"] == hand["generated"]
        assert c["tokens_trained"] == hand["backward"]["policy"]


def test_counts_are_identical_between_two_runs_of_the_same_spec(
    stores: tuple[Path, Path],
) -> None:
    first, second = (_summaries(s) for s in stores)
    assert first.keys() == second.keys()
    timed = {"seconds", "cpu_seconds"}
    for key in first:
        a, b = first[key]["compute"], second[key]["compute"]
        assert {k: v for k, v in a.items() if k not in timed} == \
            {k: v for k, v in b.items() if k not in timed}, key


def test_load_average_is_recorded_and_shown_beside_the_counts(stores: tuple[Path, Path]) -> None:
    for summary in _summaries(stores[0]).values():
        load = summary["load_average"]
        # sampled before training, at steps 2 and 4 and at the end
        assert load["points"] == 4
        assert 0 <= load["mean_1min"] <= load["max_1min"]
    runs = load_store(stores[0]).runs
    for column in ("load_mean", "load_max", "samples_generated", "samples_from_data",
                   *(f"{k}_{r}" for k in ("forward", "backward") for r in ROLES)):
        assert column in runs and runs[column].notna().all(), column
    assert set(runs["work_unit"]) == {"table rows"}
    dpo = runs[runs["algorithm"] == "dpo"]
    assert (dpo["forward_reference"] == 2 * N).all() and (dpo["samples_from_data"] == N).all()


def test_report_has_the_counted_work_table_and_its_method_note(
    stores: tuple[Path, Path], tmp_path: Path,
) -> None:
    out = write_report(stores[0], tmp_path / "report", figures=False)
    table = pd.read_csv(out / "tables" / "counted_work.csv").set_index("label")
    for label, hand in HAND.items():
        row = table.loc[label]
        assert row["runs"] == 2 and row["unit"] == "table rows"
        assert row["samples_generated"] == hand["generated"]
        assert row["samples_from_data"] == hand["from_data"]
        for role in ROLES:
            assert row[f"forward_{role}"] == hand["forward"][role], (label, role)
            assert row[f"backward_{role}"] == hand["backward"][role], (label, role)
        assert math.isfinite(row["train_cpu_seconds"]) and row["load_max"] >= 0
    page = (out / "index.md").read_text()
    assert "Counted work per run" in page
    assert "Compute is counted, then timed." in page
    assert "not a machine-independent measure" in page


# --- the meter's roles ---------------------------------------------------------------------------


def test_roles_come_from_assignment_then_class_and_an_argument_overrides() -> None:
    from harness.models.tabular import SequenceSpace, TabularPolicy, TabularRewardModel

    space = SequenceSpace(num_symbols=3, max_len=1, eos=False)
    policy = TabularPolicy(space, torch.zeros(2, space.num_prefixes, space.num_actions))
    frozen = TabularPolicy(space, torch.zeros(2, space.num_prefixes, space.num_actions))
    frozen.requires_grad_(False)
    critic, reward = TabularValueModel(space, 2), TabularRewardModel(space, 2)
    plain = nn.Linear(2, 2)
    meter = ComputeMeter()
    assert [meter.role_of(m) for m in (policy, frozen, critic, reward, plain)] == \
        ["policy", "reference", "critic", "reward", "other"]
    meter.assign(plain, "reward")
    assert meter.role_of(plain) == "reward"
    meter.forward(plain, 5)
    meter.forward(critic, 3, role="policy")  # an explicit role wins
    meter.generated(frozen, 2, 4)  # best-of-n samples from π_ref
    meter.samples += 7  # an offline method's pairs, as plugins add them
    assert meter.forward_tokens == {**_zeros(), "reward": 5, "policy": 3, "reference": 4}
    assert (meter.samples_generated, meter.samples_from_data) == (2, 7)
    with pytest.raises(ValueError, match="unknown model role"):
        meter.assign(plain, "judge")
    with pytest.raises(ValueError, match="unknown model role"):
        meter.train(plain, 1, role="judge")


# --- a tiny neural run ---------------------------------------------------------------------------

SMALL = TinyLMParams(
    hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=32,
    corpus_size=1000, pretrain_steps=30, pretrain_batch_size=16, num_train_prompts=48,
    num_eval_prompts=16, max_new_tokens=8,
)


@pytest.fixture(scope="module")
def lm_task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyLMTask]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        task = TinyLMTask(SMALL, seed=0)
        task.reference_policy()
        yield task


def _sampled_tokens(policy: nn.Module) -> list[tuple[int, PromptBatch]]:
    """Record the response tokens and the prompts of every batch ``policy`` samples (its
    ``sample`` wrapped)."""
    seen: list[tuple[int, PromptBatch]] = []
    original = policy.sample

    def sample(prompts: PromptBatch, *args, **kwargs):
        out = original(prompts, *args, **kwargs)
        seen.append((int(out.mask.sum()), prompts))
        return out

    policy.sample = sample
    return seen


def _prompt_lengths(prompts: PromptBatch) -> tuple[list[int], list[int]]:
    """Each row's prompt length, and each distinct prompt's (rows with equal unpadded ids)."""
    rows = [tuple(ids[m].tolist()) for ids, m in
            zip(prompts.ids, prompts.mask.bool(), strict=True)]
    return [len(r) for r in rows], [len(r) for r in set(rows)]


def _hand_prompt_tokens(prompts: PromptBatch) -> tuple[int, int]:
    """The prompt tokens of (sampling's prefill, one pass over prompt ⧺ response), by hand.

    The language-model code computes a prompt repeated in a batch once: the prefill runs each
    distinct prompt (Σ_distinct len); a pass over prompt ⧺ response runs each distinct prompt
    but its last token once, then every row's last prompt token with its response
    (Σ_distinct (len − 1) + B). Without repeats both are Σ_rows len.
    """
    lengths, distinct = _prompt_lengths(prompts)
    return sum(distinct), sum(d - 1 for d in distinct) + len(lengths)


@pytest.mark.parametrize("name, config, steps", [
    ("grpo", {"num_generations": 4, "prompts_per_step": 4, "learning_rate": 1e-3}, 3),
    ("ppo", {"rollout_batch_size": 8, "num_ppo_epochs": 2, "learning_rate": 1e-3}, 2),
])
def test_tiny_lm_tokens_per_role_and_flops_from_the_counts(
    lm_task: TinyLMTask, name: str, config: dict, steps: int,
) -> None:
    cls = get_plugin_host().algorithm(name)
    context = build_context(lm_task, cls, seed=0, reward_model=lm_task.make_reward_model())
    algo = make_algorithm(cls, config, context)
    sampled = _sampled_tokens(context.policy)
    for _ in range(steps):
        algo.step()
    meter = context.meter
    tokens = sum(t for t, _ in sampled)
    prefill = sum(_hand_prompt_tokens(p)[0] for _, p in sampled)
    joint = sum(_hand_prompt_tokens(p)[1] for _, p in sampled)
    samples = steps * (16 if name == "grpo" else 8)
    assert len(sampled) == steps and 0 < tokens <= samples * SMALL.max_new_tokens
    assert (meter.samples_generated, meter.samples_from_data) == (samples, 0)
    rows = sum(len(_prompt_lengths(p)[0]) for _, p in sampled)
    assert rows == samples and 0 < prefill <= joint  # every pass runs some prompt tokens
    if name == "grpo":  # groups of 4 rows share a prompt: computed once, not 4 times
        assert joint < sum(sum(_prompt_lengths(p)[0]) for _, p in sampled)
    # r̂ and π_ref read every sampled token and the prompts once; π samples them after a prefill
    fwd, bwd = meter.forward_tokens, meter.backward_tokens
    assert fwd["reward"] == fwd["reference"] == tokens + joint
    # one update pass (GRPO) / one minibatch (PPO): no π_old pass
    assert fwd["policy"] == tokens + prefill
    epochs = 1 if name == "grpo" else 2
    assert bwd["policy"] == epochs * (tokens + joint)
    assert meter.tokens_generated == tokens and meter.tokens_trained == epochs * tokens
    models = {"policy": context.policy, "reference": context.reference,
              "reward": context.reward_model}
    if name == "ppo":  # the critic, found by its class: trains beside π on every token
        assert bwd["critic"] == epochs * (tokens + joint) and fwd["critic"] == 0
        models["critic"] = algo.value_model
    else:
        assert bwd["critic"] == fwd["critic"] == 0
    assert fwd["other"] == bwd["other"] == 0
    n = {role: flop_parameters(m) for role, m in models.items()}
    assert meter.parameters_by_role == n
    expected = sum(2 * n[r] * fwd[r] + 6 * n[r] * bwd[r] for r in n)
    # integers below 2^53 summed in float64: exact up to rounding of the running sums
    assert meter.flops == pytest.approx(expected, rel=1e-12)
    for role in n:
        assert meter.flops_by_role[role] == pytest.approx(
            2 * n[role] * fwd[role] + 6 * n[role] * bwd[role], rel=1e-12)


def test_prompt_tokens_count_in_counted_phases_for_the_model_that_ran_them() -> None:
    # a network inside a model (as an LM policy holds its transformer) notes its prompt tokens
    outer, other = nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2)
    inner = outer[0]
    mask = torch.tensor([[False, True, True], [True, True, True]])  # 5 real prompt tokens
    meter = ComputeMeter()
    note_prompt_tokens(inner, mask)  # outside any phase (set-up): not counted
    with meter.phase("eval"):
        note_prompt_tokens(inner, mask)  # evaluation is not counted work
    meter.forward(outer, 3, role="policy")
    assert meter.forward_tokens["policy"] == 3
    with meter.phase("score"):
        note_prompt_tokens(inner, mask)
        note_prompt_tokens(inner, mask[:, -1])  # a second pass over each row's last token
        with meter.phase("eval"):
            note_prompt_tokens(inner, mask)  # an evaluation nested in it: still not counted
        note_prompt_tokens(other, mask)
    meter.forward(outer, 3, role="policy")
    assert meter.forward_tokens["policy"] == 3 + 3 + 5 + 2
    meter.forward(outer, 3, role="policy")  # taken once: the next count has only its own
    assert meter.forward_tokens["policy"] == 3 + 3 + 5 + 2 + 3
    meter.train(other, 4, role="reward")  # the backward runs over the prompt too
    assert meter.backward_tokens["reward"] == 4 + 5 and meter.tokens_trained == 4
    n_outer, n_other = flop_parameters(outer), flop_parameters(other)
    assert meter.flops == pytest.approx(2 * n_outer * 16 + 6 * n_other * 9, rel=1e-12)
