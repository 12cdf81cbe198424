"""LoRA through PEFT, π_ref as the base with adapters off, activation checkpointing, and the
memory they save (counted from tensors)."""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch

from harness.engine.memory import measure_state
from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.models.lm import LMPolicy
from harness.models.lora import (
    AdapterOffReference,
    apply_lora,
    enable_activation_checkpointing,
    has_lora,
    linear_module_names,
)
from harness.suite import check_suite, load_suite
from harness.testing import _kit_lm_task
from tests.test_lm import (
    EOS,
    PAD,
    SHARED_PROMPTS,
    SHARED_RESPONSES,
    first_forward_rows,
    prompt_batch,
    response_batch,
    tiny_lm,
)

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": None}


def lora_policy(arch: str = "llama", **lora) -> tuple[LMPolicy, torch.nn.Module]:
    """A LoRA policy and an untouched copy of its base model."""
    model = tiny_lm(arch)
    base = copy.deepcopy(model)
    policy = LMPolicy(model.requires_grad_(True), pad_id=PAD, eos_id=EOS)
    apply_lora(policy, {**LORA, **lora})
    return policy, base


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_reference_is_the_base_with_adapters_off(arch):
    policy, base = lora_policy(arch)
    reference = AdapterOffReference(policy)
    assert has_lora(policy) and list(reference.parameters()) == []  # no second copy
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapters off zero: the policy now differs from its base
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    plain = LMPolicy(base, pad_id=PAD, eos_id=EOS)
    policy.train()
    expected = plain.token_logprobs(prompts, responses)
    assert torch.equal(reference.token_logprobs(prompts, responses), expected)
    assert not torch.allclose(policy.token_logprobs(prompts, responses), expected)
    assert policy.training  # the reference restores the policy's mode
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = reference.sample(prompts, max_new_tokens=4, generator=g1)
    b = plain.sample(prompts, max_new_tokens=4, generator=g2)
    assert torch.equal(a.tokens, b.tokens)
    assert reference.frozen_copy() is reference


def test_only_adapters_get_gradients_and_frozen_reference_stays():
    policy, _ = lora_policy()
    reference = AdapterOffReference(policy)
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    reference.requires_grad_(False)  # as a frozen model is treated: it must not freeze adapters
    reference.eval()
    logp = policy.token_logprobs(prompts, responses)
    logp.sum().backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert reference.token_logprobs(prompts, responses).grad_fn is None


def test_a_target_that_matches_no_module_is_one_line():
    with pytest.raises(ConfigError) as err:
        lora_policy(target_modules=["q_proj", "qkv"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("policy.lora.target_modules: 'qkv' matches no module")
    assert "q_proj" in message and "v_proj" in message
    assert "lm_head" not in linear_module_names(tiny_lm("llama"))
    policy, _ = lora_policy(target_modules=["q_proj", "v_proj"])
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in policy.named_parameters()
               if "lora_" in n}
    assert adapted == {"q_proj", "v_proj"}


def write_suite(tmp_path, task: str, policy: str, algorithm: str = "dpo"):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: lora-check
        tasks:
          - name: {task}
        algorithms:
          - name: {algorithm}
        seeds: [0]
        budget: {{steps: 1}}
        policy:
        {textwrap.indent(policy, "  ")}
        """))
    return path


def validate(path):
    return check_suite(load_suite(path), path, get_plugin_host())


@pytest.mark.parametrize("policy, where, fragment", [
    ("lora: {r: 0}", ":9: policy.lora.r:", "greater than or equal to 1"),
    ("lora: {r: 4, target_modules: []}", ":9: policy.lora.target_modules:", "at least 1"),
    ("lora: {r: 4, alpah: 2}", ":9: unknown key 'policy.lora.alpah'", "did you mean 'alpha'"),
    ("lora: {r: 4, target_modules: [qkv]}", ":9: policy.lora.target_modules: 'qkv' matches no "
     "module of LlamaForCausalLM (task 'tiny-lm')", "its linear layers: q_proj, k_proj"),
])
def test_bad_lora_settings_are_one_line_with_file_line_and_key(tmp_path, policy, where, fragment):
    path = write_suite(tmp_path, "tiny-lm", policy)
    with pytest.raises(ConfigError) as err:
        validate(path)
    message = str(err.value)
    assert message.startswith(f"{path}{where}") and fragment in message and "\n" not in message


def test_lora_with_a_tabular_task_is_refused(tmp_path):
    path = write_suite(tmp_path, "bandit", "lora: {r: 4}")
    with pytest.raises(ConfigError, match=r":9: policy.lora: applies to neural policies"):
        validate(path)


def test_an_algorithms_own_policy_section_is_checked_and_named(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent("""\
        name: lora-check
        tasks:
          - name: bandit
        algorithms:
          - name: dpo
          - name: dpo
            label: dpo-lora
            policy: {lora: {r: 4}}
        seeds: [0]
        budget: {steps: 1}
        """))
    with pytest.raises(ConfigError, match=r":8: algorithms.1.policy.lora: applies to neural "
                                          r"policies .* task 'bandit' has a tabular policy"):
        validate(path)


def test_an_algorithm_that_cannot_train_adapters_is_refused(tmp_path, monkeypatch):
    host = get_plugin_host()
    monkeypatch.setattr(host.algorithm("dpo"), "supports_lora", False)
    path = write_suite(tmp_path, "tiny-lm", "lora: {r: 4}")
    with pytest.raises(ConfigError, match=r"algorithm 'dpo' .* cannot train LoRA adapters"):
        validate(path)


def test_policy_section_enters_the_run_id_only_when_set(tmp_path):
    plain = tmp_path / "a"
    plain.mkdir()
    with_lora = tmp_path / "b"
    with_lora.mkdir()
    path_a = write_suite(plain, "tiny-lm", "activation_checkpointing: false")
    path_b = write_suite(with_lora, "tiny-lm", "lora: {r: 4}")
    spec_a, spec_b = validate(path_a)[0], validate(path_b)[0]
    assert spec_a.policy == {} and "policy" not in spec_a.identity
    assert spec_b.policy["lora"]["r"] == 4 and spec_a.run_id != spec_b.run_id


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_checkpointing_keeps_logprobs_and_gradients(arch):
    """Under activation checkpointing the shared-prompt path falls back to one forward over
    every row; log-probs and gradients equal those without it (and with LoRA too)."""
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    for lora in (False, True):
        results = []
        for checkpointing in (False, True):
            model = tiny_lm(arch).requires_grad_(True).train()
            policy = LMPolicy(model, pad_id=PAD, eos_id=EOS)
            if lora:
                apply_lora(policy, LORA)
                with torch.no_grad():
                    for name, p in policy.named_parameters():
                        if "lora_B" in name:
                            p.fill_(0.01)
            if checkpointing:
                enable_activation_checkpointing(policy)
            policy.train()
            rows = first_forward_rows(policy.model,
                                      lambda p=policy: p.token_logprobs(prompts, responses))
            assert rows == ([6] if checkpointing else [3, 6])
            params = [p for p in policy.parameters() if p.requires_grad]
            logp, ent = policy.token_logprobs_and_entropy(prompts, responses)
            grads = torch.autograd.grad((logp + 0.1 * ent).sum(), params)
            results.append((logp.detach(), grads))
        (lp_off, g_off), (lp_on, g_on) = results
        torch.testing.assert_close(lp_on, lp_off, atol=1e-5, rtol=0)
        for a, b in zip(g_on, g_off, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_checkpointing_is_exact_against_itself_without_sharing():
    """With sharing off both ways the forward is the same computation: bit for bit."""
    prompts, responses = prompt_batch(SHARED_PROMPTS), response_batch(SHARED_RESPONSES)
    out = []
    for checkpointing in (False, True):
        model = tiny_lm("llama").requires_grad_(True).train()
        policy = LMPolicy(model, pad_id=PAD, eos_id=EOS, share_prompts=False)
        if checkpointing:
            enable_activation_checkpointing(policy)
        logp = policy.token_logprobs(prompts, responses)
        out.append((logp.detach(), torch.autograd.grad(logp.sum(), list(policy.parameters()))))
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1], strict=True):
        assert torch.equal(a, b)


def run_state(algorithm: str, config: dict, lora: bool) -> dict[str, int]:
    """Model state (bytes) after one step of ``algorithm`` on the kit's tiny LM: the policy,
    π_ref and the critic, the optimiser state, and the adapters alone."""
    from harness.engine.runner import build_context, make_algorithm
    from harness.reward import GoldRewardModel

    task = _kit_lm_task()
    cls = get_plugin_host().algorithm(algorithm)
    context = build_context(
        task, cls, seed=0, reward_model=GoldRewardModel(task),
        policy_options={"lora": LORA} if lora else None,
    )
    algo = make_algorithm(cls, config, context)
    algo.step()
    models = [context.policy, context.reference, getattr(algo, "value_model", torch.nn.Module())]
    state = measure_state(models, [algo.optimizer])
    state["adapters"] = sum(p.numel() * p.element_size()
                            for n, p in context.policy.named_parameters() if "lora_" in n)
    state["weights"] = sum(p.numel() * p.element_size() for p in task.model.parameters())
    trainable = [p for p in context.policy.parameters() if p.requires_grad]
    state["trainable"] = sum(p.numel() * p.element_size() for p in trainable)
    state["trainable_tensors"] = len(trainable)
    return state


def test_lora_saves_the_reference_copy_and_the_optimiser_state():
    config = {"rollout_batch_size": 4, "num_ppo_epochs": 1, "learning_rate": 1e-3}
    full, lora = run_state("ppo", config, False), run_state("ppo", config, True)
    weights, adapters = full["weights"], lora["adapters"]
    assert 0 < adapters < weights
    # Parameters: π_ref's copy is gone; the adapters come on top of the policy's base.
    assert full["parameters"] - lora["parameters"] == weights - adapters
    # Adam keeps two tensors per trainable parameter (plus a float32 step count each): the
    # policy's share shrinks from its weights to its adapters; the critic's is unchanged.
    assert lora["trainable"] == adapters and full["trainable"] == weights
    saved = full["optimizer"] - lora["optimizer"]
    assert saved == 2 * (weights - adapters) + 4 * (
        full["trainable_tensors"] - lora["trainable_tensors"])
