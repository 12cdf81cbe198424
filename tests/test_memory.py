"""The memory plan: model state predicted from configs equals the tensors of a real run (CPU);
``rlhf-harness plan`` and ``run``'s refusal of a run that cannot fit."""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner

from harness.cli import cli
from harness.engine.memory import format_bytes, measure_state, parse_bytes, plan_run
from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.models import cache
from harness.suite import check_suite, load_suite

TASK = textwrap.dedent("""\
    name: {name}
    tasks:
      - name: tiny-lm
        params: {{hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64,
                  max_positions: 32, corpus_size: 1000, pretrain_steps: 2,
                  num_train_prompts: 16, num_eval_prompts: 4, max_new_tokens: 4}}
    preferences: {{num_pairs: 8}}
    algorithms:
      - name: ppo
        config: {{rollout_batch_size: 4, num_ppo_epochs: 1, learning_rate: 0.001}}
      - name: dpo
        config: {{batch_size: 4, learning_rate: 0.001}}
    seeds: [0]
    budget: {{steps: 1}}
    evaluation: {{every: 1, samples_per_prompt: 1}}
    """)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.CACHE_ENV, str(root))
        yield root


def suite_file(folder, lora: bool, name: str = "plan-test"):
    text = TASK.format(name=name)
    if lora:
        text += "policy:\n  lora: {r: 4, target_modules: [q_proj, v_proj]}\n"
    path = folder / f"{name}{'-lora' if lora else ''}.yaml"
    path.write_text(text)
    return path


def specs_of(path):
    return [s.as_dict() for s in check_suite(load_suite(path), path, get_plugin_host())]


@pytest.mark.parametrize("algorithm, lora", [("ppo", False), ("ppo", True), ("dpo", False)])
def test_planned_model_state_equals_the_tensors_of_a_run(tmp_path, tiny_cache, algorithm, lora):
    """Parameters, gradients (at their peak, after a backward) and optimiser state of every
    resident model, as the plan counts them, byte for byte."""
    from harness.engine.annotator import simulate_preferences
    from harness.engine.runner import build_context, build_task, make_algorithm
    from harness.preference import BradleyTerry

    host = get_plugin_host()
    spec = next(s for s in specs_of(suite_file(tmp_path, lora)) if s["algorithm"] == algorithm)
    plan = plan_run(spec, host)
    task = build_task(host, spec, "cpu")
    cls = host.algorithm(algorithm)
    prefs = simulate_preferences(task, BradleyTerry(1.0), num_pairs=8, seed=0)
    reward_model = task.make_reward_model()  # r̂ of the run (the evaluator's proxy reward)
    context = build_context(task, cls, seed=0, preferences=prefs,
                            reward_model=reward_model if "reward" in cls.needs else None,
                            policy_options=spec["policy"])
    reward_model = context.reward_model or reward_model
    algo = make_algorithm(cls, spec["algorithm_config"], context)
    algo.step()
    critic = getattr(algo, "value_model", None)
    # The gradients at their peak: a backward through every trainable model.
    prompts = task.train_prompts.select(slice(0, 2))
    responses = context.policy.sample(prompts, max_new_tokens=2)
    loss = context.policy.token_logprobs(prompts, responses).sum()
    if critic is not None:
        loss = loss + critic(prompts, responses).sum()
    loss.backward()
    models = [context.policy, context.reference, reward_model]
    models += [critic] if critic is not None else []
    measured = measure_state(models, [algo.optimizer])
    [task_model] = [m for m in plan.models if m.name.startswith("task model")]
    assert task_model.host == measure_state([task.model])["parameters"]  # host memory
    assert task_model.parameters == 0
    planned = {k: sum(getattr(m, k) for m in plan.models)
               for k in ("parameters", "gradients", "optimizer")}
    assert planned == measured
    assert plan.model_state == sum(measured.values())
    names = [m.name for m in plan.models]
    assert ("π_ref" in names) == (not lora)
    assert ("critic" in names) == (algorithm == "ppo")


def test_lora_plan_saves_the_copy_and_the_optimizer_state(tmp_path, tiny_cache):
    host = get_plugin_host()
    full = plan_run(specs_of(suite_file(tmp_path, False))[0], host)
    lora = plan_run(specs_of(suite_file(tmp_path, True))[0], host)
    assert lora.model_state < full.model_state
    policy_full = next(m for m in full.models if m.name == "policy")
    policy_lora = next(m for m in lora.models if m.name == "policy")
    assert policy_lora.gradients < policy_full.gradients / 10


def test_sizes_read_and_print():
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("141GB") == 141 * 10**9
    assert parse_bytes("1.5e3") == 1500
    assert format_bytes(3 * 2**30 // 2) == "1.50 GiB"
    with pytest.raises(ConfigError, match="--gpu-memory: cannot read '12 parsecs'"):
        parse_bytes("12 parsecs")


def test_plan_command_gives_a_verdict_only_with_a_size(tmp_path, tiny_cache):
    path = suite_file(tmp_path, True)
    runner = CliRunner()
    out = runner.invoke(cli, ["plan", str(path)])
    assert out.exit_code == 0, out.output
    if not torch.cuda.is_available():
        assert out.output.startswith("no GPU visible: pass --gpu-memory SIZE for a verdict")
    assert "policy:" in out.output and "kv cache" in out.output and "activations" in out.output
    assert "π_ref: the policy's base with its LoRA adapters off (no copy)" in out.output
    assert "fits" not in out.output or torch.cuda.is_available()
    out = runner.invoke(cli, ["plan", str(path), "--gpu-memory", "80GiB"])
    assert out.exit_code == 0 and out.output.count("  fits") == 2
    out = runner.invoke(cli, ["plan", str(path), "--gpu-memory", "64KiB"])
    assert out.exit_code == 1 and out.output.count("DOES NOT FIT") == 2
    for spec in check_suite(load_suite(path), path, get_plugin_host()):  # each plan named
        assert f"\n{spec.run_id}  ({spec.label} on {spec.task}): peak " in out.output


def test_run_refuses_a_run_that_cannot_fit_before_starting(tmp_path, tiny_cache, capsys):
    from harness.cli import main

    path = suite_file(tmp_path, False)
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--root", str(root), "--gpu-memory", "64KiB", "--no-wandb",
              "--no-progress", "--no-report"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs" in err and "more than the 64.00 KiB a run may use; see rlhf-harness plan" in err
    [spec, *_] = check_suite(load_suite(path), path, get_plugin_host())
    assert f"run {spec.run_id} needs" in err
    assert not root.exists()  # nothing started


def test_offloaded_models_are_planned_in_host_memory(tmp_path, tiny_cache):
    host = get_plugin_host()
    path = suite_file(tmp_path, False, name="plan-offload")
    path.write_text(path.read_text() + "policy:\n  offload_frozen: true\n")
    plan = plan_run(specs_of(path)[0], host)
    offloaded = [m for m in plan.models if "offloaded" in m.name]
    assert sorted(m.name for m in offloaded) == ["r̂ (reward model), offloaded (host memory)",
                                                  "π_ref, offloaded (host memory)"]
    assert all(m.parameters == 0 and m.host for m in offloaded)
    full = plan_run(specs_of(suite_file(tmp_path, False))[0], host)
    largest = max(m.host for m in offloaded)
    frozen = sum(m.host for m in offloaded)
    # resident without offloading; one visitor at a time with it
    assert full.phases["score"] - plan.phases["score"] == frozen - largest
    assert full.phases["train"] - plan.phases["train"] == frozen


def test_bf16_plans_the_weight_copies_autocast_keeps_and_half_width_activations(
        tmp_path, tiny_cache):
    host = get_plugin_host()
    path = suite_file(tmp_path, False, name="plan-bf16")
    fp32 = plan_run(specs_of(path)[0], host)
    bf16 = plan_run({**specs_of(path)[0], "precision": "bf16"}, host)
    policy32 = next(m for m in fp32.models if m.name == "policy")
    policy16 = next(m for m in bf16.models if m.name == "policy")
    assert policy16.kv_cache * 2 == policy32.kv_cache
    copies = policy32.parameters // 2  # 2 bytes per float32 parameter
    assert policy16.activations - copies < policy32.activations
    critic16 = next(m for m in bf16.models if m.name == "critic")
    assert critic16.activations > copies  # PPO's critic keeps its own, and its weight copies


def test_the_host_peak_is_the_run_s_own_after_a_larger_earlier_allocation():
    """A run after a larger one in the same process, whose tensors live within a step: RSS read
    afterwards shows nothing above the baseline, the reset high-water mark shows the step."""
    import psutil

    from harness.engine.runner import host_peak, reset_host_peak

    process = psutil.Process()
    earlier = torch.ones(256 * 2**20 // 4)  # 256 MB, touched, then freed: the heap may keep it
    earlier.add_(1)
    del earlier
    if not reset_host_peak():
        pytest.skip("no /proc/self/clear_refs (not Linux)")
    baseline = process.memory_info().rss
    step = torch.ones(64 * 2**20 // 4)  # a step's transient 64 MB
    step.add_(1)
    del step
    after = process.memory_info().rss
    peak = host_peak()
    assert peak is not None
    assert (peak - baseline) / 2**20 == pytest.approx(64, abs=8)
    assert (after - baseline) / 2**20 < 8  # what sampling after the step would have seen


# --- the plan against the device's peak, measured on the stand-in ---------------------------------

MEASURED = textwrap.dedent("""    name: plan-vs-peak
    tasks:
      - name: tiny-lm
        params: {{hidden_size: 64, num_layers: 2, num_heads: 4, intermediate_size: 256,
                  max_positions: 64, corpus_size: 1000, pretrain_steps: 2,
                  num_train_prompts: 32, num_eval_prompts: 8, max_new_tokens: 4}}
    preferences: {{num_pairs: 16}}
    algorithms:
      - name: {algorithm}
        config: {config}
    seeds: [0]
    budget: {{steps: 2}}
    evaluation: {{every: 2, samples_per_prompt: 1}}
    device: cuda
    precision: {precision}
    """)

CONFIGS = {
    "ppo": "{rollout_batch_size: 16, num_ppo_epochs: 1, learning_rate: 0.001}",
    "grpo": "{prompts_per_step: 4, num_generations: 4, learning_rate: 0.001}",
    "dpo": "{batch_size: 8, learning_rate: 0.0001}",
    # trains nothing: n candidates per prompt, ranked by r̂ (no optimiser state, no gradients)
    "bon": "{n: 8, prompts_per_step: 8}",
    # one response per example (not a pair), and a no-grad pass over mismatched pairs
    "kto": "{batch_size: 8, learning_rate: 0.0001}",
    # four shuffled minibatches: a minibatch's rows may each have their own prompt
    "gspo": "{prompts_per_step: 4, num_generations: 4, learning_rate: 0.001}",
    # two samples per prompt (the class's samples_per_prompt), both trained on
    "online-dpo": "{prompts_per_step: 8, learning_rate: 0.001}",
}


@pytest.mark.parametrize("algorithm, precision, policy", [
    ("ppo", "fp32", ""), ("ppo", "bf16", ""), ("grpo", "bf16", "lora: {r: 4}"),
    ("grpo", "bf16", "offload_frozen: true"), ("dpo", "fp32", ""),
    ("dpo", "fp32", "activation_checkpointing: true"), ("bon", "fp32", ""), ("bon", "bf16", ""),
    ("kto", "fp32", ""), ("gspo", "bf16", ""), ("online-dpo", "bf16", ""),
])
def test_the_plan_is_within_15_percent_of_the_peak_on_the_stand_in(
        tmp_path, tiny_cache, monkeypatch, algorithm, precision, policy):
    """``run_one`` on the CUDA stand-in (harness/models/device_trace.py) records the device's peak
    of r̂'s fit and of the run; the plan's phases predict both within 15%. (Responses of 4 tokens:
    the plan is for full-length responses, and these reach it.)"""
    from harness.engine.runner import build_task, run_one
    from harness.engine.store import RunStore
    from harness.models.device_trace import stand_in_device

    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # no Hub kernels for a model read on a "GPU"
    text = MEASURED.format(algorithm=algorithm, config=CONFIGS[algorithm], precision=precision)
    if policy:
        text += f"policy: {{{policy}}}\n"
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    on_cpu = tmp_path / "cpu.yaml"  # π_ref pre-trained once, into the cache (not planned)
    on_cpu.write_text(text.replace("device: cuda", "device: cpu").replace("bf16", "fp32"))
    [cpu_spec] = specs_of(on_cpu)
    assert build_task(get_plugin_host(), cpu_spec, "cpu").model is not None
    with stand_in_device():
        [spec] = specs_of(path)
        assert run_one(spec, str(tmp_path / "runs")) == "done"
    [record] = list(RunStore(tmp_path / "runs", "plan-vs-peak").records())
    memory = record.summary["memory_plan"]
    phases = memory["planned"]["phases"]
    run_phases = max(v for k, v in phases.items() if k != "prepare")
    assert run_phases == pytest.approx(memory["peak_device_bytes"], rel=0.15)
    assert phases["prepare"] == pytest.approx(memory["peak_prepare_bytes"], rel=0.15)


def test_best_of_n_plans_no_training_state_and_scores_n_candidates_per_prompt(
        tmp_path, tiny_cache):
    """Best-of-n trains nothing: no gradients and no optimiser state anywhere in its plan; its
    step samples and ranks n candidates per prompt, so its KV cache grows n-fold with n, and
    its scoring pass (r̂ only: no vocabulary-wide logits) grows with n too."""
    host = get_plugin_host()

    def plan(n: int):
        text = MEASURED.format(algorithm="bon", config=f"{{n: {n}, prompts_per_step: 8}}",
                               precision="fp32")
        path = tmp_path / f"bon-{n}.yaml"
        path.write_text(text)
        return plan_run(specs_of(path)[0], host)

    two, eight = plan(2), plan(8)
    for p in (two, eight):
        assert all(m.gradients == 0 and m.optimizer == 0 for m in p.models)
        assert "train" not in p.phases
    policy2, policy8 = (next(m for m in p.models if m.name == "policy") for p in (two, eight))
    assert policy8.kv_cache == 4 * policy2.kv_cache
    assert eight.phases["score"] > two.phases["score"]
