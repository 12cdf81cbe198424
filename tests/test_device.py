"""Device selection: what can be checked without a GPU."""

from __future__ import annotations

import os

import pytest
import torch

from harness.engine.runner import resolve_device
from harness.errors import ConfigError


def test_auto_picks_cuda_only_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_a_named_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested, but torch sees no CUDA"):
        resolve_device("cuda")


# --- every algorithm and evaluator keeps a run's tensors on its device ----------------------------
# ``stand_in_device`` runs code that asks for "cuda" on the CPU and fails any op that a GPU run
# would reject for mixing devices (harness/models/device_trace.py).

from harness.models.device_trace import STAND_IN, DeviceMixError, stand_in_device  # noqa: E402

SMALL = {
    "ppo": {"rollout_batch_size": 8, "num_mini_batches": 2, "num_ppo_epochs": 2},
    "grpo": {"prompts_per_step": 2, "num_generations": 2, "num_iterations": 2},
    "rloo": {"prompts_per_step": 2, "k": 2},
    "dpo": {"batch_size": 4},
    "ipo": {"batch_size": 4},
    "bon": {},
    "simpo": {"batch_size": 4},
    "orpo": {"batch_size": 4},
    "kto": {"batch_size": 4},
    "rdpo": {"batch_size": 4},
    "cdpo": {"batch_size": 4},
    "online-dpo": {"prompts_per_step": 2},
    "reinforce-pp": {"prompts_per_step": 2, "num_mini_batches": 2},
    "gspo": {"prompts_per_step": 2, "num_generations": 2, "num_mini_batches": 2},
}
"""Small configs: the check is of placement, not of learning."""


def make_task(name: str, device: str):
    if name == "bandit":
        from harness.tasks.bandit import BanditParams, BanditTask

        return BanditTask(BanditParams(num_prompts=4, num_arms=8), seed=0, device=device)
    if name == "token":
        from harness.tasks.token import TokenParams, TokenTask

        return TokenTask(TokenParams(num_prompts=4, vocab_size=3, max_len=4), seed=0,
                         device=device)
    tiny_lm = pytest.importorskip("harness.tasks.tiny_lm")
    params = tiny_lm.TinyLMParams(max_new_tokens=4, num_eval_prompts=8)
    return tiny_lm.TinyLMTask(params, seed=0, device=device)


@pytest.mark.parametrize("task_name", ["bandit", "token", "tiny-lm"])
def test_every_algorithm_and_evaluator_keeps_the_run_on_its_device(task_name):
    from harness.engine.annotator import simulate_preferences
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import build_context, make_algorithm
    from harness.evaluators import EvalContext
    from harness.exact import ExactProblem
    from harness.preference import BradleyTerry

    host = get_plugin_host()
    algorithms = host.names("algorithm")
    assert set(SMALL) <= set(algorithms)
    for name in algorithms:
        cls = host.algorithm(name)
        with stand_in_device() as trace:
            task = make_task(task_name, STAND_IN)
            prefs = (simulate_preferences(task, BradleyTerry(1.0), num_pairs=16, seed=0)
                     if {"preferences", "unpaired"} & cls.needs else None)
            # r̂ as the runner gives it: the task's reward model (an LM with a scalar head on
            # tiny-lm), copied to the device by build_context
            ctx = build_context(task, cls, seed=0, preferences=prefs,
                                reward_model=task.make_reward_model(), label_noise=0.1)
            assert trace.on_device(next(ctx.policy.parameters())), name
            algo = make_algorithm(cls, SMALL.get(name, {}), ctx)
            for _ in range(2):
                algo.step()
            exact = ExactProblem.from_task(task) if task.enumerate_responses() else None
            evaluation = EvalContext(
                task=task, policy=algo.eval_policy(), reference=ctx.reference,
                reward_model=task.make_reward_model().to(STAND_IN), beta=0.1,
                samples_per_prompt=2, seed=0, exact=exact,
            )
            results: dict[str, float] = {}
            with torch.no_grad():
                for evaluator in host.names("evaluator"):
                    results.update(host.evaluator(evaluator)().evaluate(evaluation))
            assert {"gold_reward", "proxy_reward", "kl_ref"} <= set(results), name
            assert trace.device_ops > 100  # the run did run on the (stand-in) device


def test_the_stand_in_device_fails_what_a_gpu_would():
    with stand_in_device() as trace:
        x = torch.ones(3, device=STAND_IN)
        assert x.device == torch.device(STAND_IN) and x.is_cuda and trace.on_device(x)
        assert trace.on_device(x[1:]) and trace.on_device(x * 2)  # views and results follow
        host = x.cpu()
        assert not trace.on_device(host) and trace.on_device(x)  # .cpu() copies, x stays
        with pytest.raises(DeviceMixError, match="meets a CPU tensor"):
            x + host
        with pytest.raises(DeviceMixError, match="meets a CPU tensor"):
            torch.stack([x, torch.zeros(3)])
        with pytest.raises(DeviceMixError, match="cannot become numpy"):
            x.numpy()
        g = torch.Generator(device=STAND_IN).manual_seed(0)
        assert isinstance(g, torch.Generator) and g.device == torch.device(STAND_IN)
        with pytest.raises(DeviceMixError, match="generator on the device draws a tensor on"):
            torch.randint(4, (2,), generator=g)
        assert trace.on_device(torch.randint(4, (2,), generator=g, device=g.device))
        with pytest.raises(DeviceMixError, match="generator on the CPU draws"):
            torch.rand(2, generator=torch.Generator(), device=STAND_IN)
        # what CUDA allows: a 0-dim CPU tensor, CPU indices, copies across
        assert trace.on_device(x * torch.tensor(2.0))
        assert trace.on_device(x[torch.tensor([0, 2])])
        host.copy_(x)
        layer = torch.nn.Linear(3, 2).to(STAND_IN)
        assert trace.on_device(layer.weight) and layer.weight.device.type == STAND_IN
        layer(x).sum().backward()
        assert trace.on_device(layer.weight.grad)


# --- what a suite asks of the devices: `validate` says it in one line -----------------------------

PLACEMENT = """\
name: placement
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
algorithms:
  - {name: dpo, config: {learning_rate: 0.05, warmup_steps: 0}}
seeds: [0]
budget: {steps: 1}
"""


def validate(tmp_path, capsys, text: str, *args: str) -> tuple[int, str, str, str]:
    """``rlhf-harness validate`` on ``text``: (exit status, stdout, stderr, the file's path)."""
    from harness.cli import main

    path = tmp_path / "suite.yaml"
    path.write_text(text)
    code = 0
    try:
        main(["validate", str(path), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err, str(path)


def test_cuda_under_ray_without_gpus_is_a_one_line_error(tmp_path, capsys):
    text = PLACEMENT + "device: cuda\n"
    assert validate(tmp_path, capsys, text)[0] == 0  # locally: the run's host is checked later
    code, _, err, path = validate(tmp_path, capsys, text, "--executor", "ray")
    assert code == 2
    assert err.strip() == (
        f"rlhf-harness: error: {path}:9: gpus_per_run: device cuda under the ray executor needs "
        f"gpus_per_run > 0 (Ray hides the GPUs from a run that requests none)"
    )
    code, _, err, _ = validate(tmp_path, capsys, text + "gpus_per_run: 1\n", "--executor", "ray")
    assert code == 0 and err == ""


def test_auto_under_ray_without_gpus_warns_that_every_run_is_on_the_cpu(tmp_path, capsys):
    code, out, err, path = validate(tmp_path, capsys, PLACEMENT + "gpus_per_run: 0\n",
                                    "--executor", "ray")
    assert code == 0 and "ok: 1 runs" in out
    assert err.strip() == (
        f"{path}:9: warning: gpus_per_run: 0 with device auto under the ray executor: Ray hides "
        f"the GPUs from a run that requests none, so every run is on the CPU"
    )


def test_a_ray_run_of_cuda_specs_without_gpus_is_refused_before_ray_starts(tmp_path):
    import dataclasses

    from harness.engine.executors import run_specs
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(PLACEMENT)
    specs = [dataclasses.replace(s, device="cuda") for s in
             check_suite(load_suite(path), path, get_plugin_host())]
    with pytest.raises(ConfigError, match="device cuda under the ray executor needs gpus_per"):
        run_specs(specs, str(tmp_path / "runs"), executor="ray", wandb=False, progress=False)


def test_bf16_on_a_host_that_cannot_honour_it_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    text = PLACEMENT + "precision: bf16\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err, path = validate(tmp_path, capsys, text)
    assert code == 2
    assert err.strip() == (
        f"rlhf-harness: error: {path}:9: precision: bf16 with device auto, on a host without a "
        f"CUDA device: the runs would be on the CPU; use precision fp32, or a GPU host"
    )
    # a GPU without native bf16 (compute capability < 8.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    code, _, err, path = validate(tmp_path, capsys, text)
    assert code == 2
    assert err.strip() == (
        f"rlhf-harness: error: {path}:9: precision: bf16, but this host's CUDA device (Tesla "
        f"V100) has no native bf16 arithmetic (compute capability 8.0 or later); use precision "
        f"fp32"
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert validate(tmp_path, capsys, text)[0] == 0


def test_a_run_refuses_bf16_on_a_gpu_without_native_bf16(monkeypatch):
    from harness.engine.runner import check_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError, match=r"CUDA device \(Tesla T4\) has no native bf16"):
        check_precision("cuda", "bf16")
    check_precision("cuda", "fp32")
    check_precision("cpu", "bf16")  # CPU autocast: what the run asks, honoured


HF_BF16 = """\
name: hf-bf16
tasks:
  - name: hf
    params: {{model: /models/m, prompts: p.jsonl, dtype: {dtype}}}
algorithms:
  - name: ppo
  - name: dpo
    config: {{learning_rate: 0.001}}
seeds: [0]
budget: {{steps: 1}}
"""


def test_pure_bf16_hf_weights_with_adam_at_a_tiny_learning_rate_warn(tmp_path, capsys):
    code, _, err, path = validate(tmp_path, capsys, HF_BF16.format(dtype="bfloat16"))
    assert code == 0
    # ppo at its default 3e-6 warns; dpo at 1e-3 moves weights up to 0.5: no warning
    mine = [line for line in err.splitlines() if "params.dtype" in line]
    assert mine == [
        f"{path}:4: warning: tasks.0.params.dtype: bfloat16 weights trained by algorithms.0 "
        f"(ppo) with Adam at learning_rate 3e-06: an update below half an ulp (2^-9·|w|) rounds "
        f"away, so no weight larger than 0.0015 in magnitude ever changes; load float32 weights "
        f"and set precision: bf16 instead"
    ]
    assert "params.dtype" not in validate(tmp_path, capsys, HF_BF16.format(dtype="float32"))[2]


# --- local worker processes and GPUs --------------------------------------------------------------


def fake_gpus(monkeypatch, count: int, visible: str | None = None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


SPEC = {"suite": "s", "task": "bandit", "task_params": {}, "algorithm": "dpo", "label": "dpo",
        "algorithm_config": {}, "sweep_point": {}, "seed": 0, "preferences": {},
        "reward_model": {}, "budget": {"steps": 1}, "evaluation": {}, "divergence": {},
        "device": "cpu", "precision": "fp32", "gpus": 0.0}


def test_each_worker_gets_its_own_gpu(monkeypatch):
    from harness.engine.executors import _use_gpu, _worker_gpus
    from harness.suite import RunSpec

    spec = RunSpec(**{**SPEC, "device": "cuda"})
    fake_gpus(monkeypatch, 4)
    assert _worker_gpus([spec], 3) == ["0", "1", "2"]
    fake_gpus(monkeypatch, 4, visible="5,7")  # the devices this process was given
    assert _worker_gpus([spec], 2) == ["5", "7"]
    with pytest.raises(ConfigError, match=r"--workers 3 with 2 visible GPU\(s\): runs would share"):
        _worker_gpus([spec], 3)
    assert _worker_gpus([dataclasses_replace(spec, device="cpu")], 3) == []
    fake_gpus(monkeypatch, 0)
    assert _worker_gpus([spec], 3) == []
    _use_gpu("7")  # what a worker does first, before anything touches CUDA
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


# --- deterministic: true --------------------------------------------------------------------------


def test_a_deterministic_suite_runs_with_deterministic_kernels(tmp_path, monkeypatch):
    import harness.engine.runner
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import run_one
    from harness.engine.store import RunStore
    from harness.suite import check_suite, load_suite

    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    path = tmp_path / "suite.yaml"
    path.write_text(PLACEMENT + "device: cpu\n")
    [plain] = check_suite(load_suite(path), path, get_plugin_host())
    path.write_text(PLACEMENT + "device: cpu\ndeterministic: true\n")
    [spec] = check_suite(load_suite(path), path, get_plugin_host())
    assert spec.deterministic and not plain.deterministic
    assert spec.run_id != plain.run_id
    seen = []
    build = harness.engine.runner.make_algorithm

    def spying(*args, **kwargs):
        algo = build(*args, **kwargs)
        step = algo.step

        def recorded():
            seen.append((torch.are_deterministic_algorithms_enabled(),
                         os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
            return step()

        algo.step = recorded
        return algo

    monkeypatch.setattr(harness.engine.runner, "make_algorithm", spying)
    assert run_one(spec.as_dict(), str(tmp_path / "runs")) == "done"
    assert seen == [(True, ":4096:8")]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert run_one(plain.as_dict(), str(tmp_path / "runs")) == "done"
    assert seen[1] == (False, None)
    assert len(list(RunStore(tmp_path / "runs", "placement").records())) == 2


# --- the stand-in's stricter rules and its memory counters ----------------------------------------


def test_the_stand_in_follows_cudas_indexing_rules():
    with stand_in_device() as trace:
        x = torch.arange(6.0, device=STAND_IN).view(2, 3)
        cpu_index = torch.tensor([[0], [1]])
        for op in (lambda i: torch.gather(x, 1, i), lambda i: torch.take_along_dim(x, i, 1),
                   lambda i: x.index_select(0, i.view(-1)),
                   lambda i: torch.zeros_like(x).scatter_(1, i, 1.0)):
            with pytest.raises(DeviceMixError, match="meets a CPU tensor"):
                op(cpu_index)
            assert trace.on_device(op(cpu_index.to(STAND_IN)))
        with pytest.raises(DeviceMixError, match="meets a CPU tensor"):
            torch.arange(3.0)[torch.tensor([0], device=STAND_IN)]  # a CPU tensor, device index
        assert trace.on_device(x[torch.tensor([0])])  # what CUDA allows: CPU indices
        x[torch.tensor([1])] = 0.0


def test_the_stand_in_counts_device_memory_as_cudas_counters_do():
    with stand_in_device():
        assert torch.cuda.memory_allocated() == 0
        a = torch.zeros(1000, device=STAND_IN)
        b = a.cpu()
        assert torch.cuda.memory_allocated() == 4000 and b.numel() == 1000
        del a
        assert torch.cuda.memory_allocated() == 0 and torch.cuda.max_memory_allocated() == 4000
        torch.cuda.reset_peak_memory_stats()
        assert torch.cuda.max_memory_allocated() == 0
        layer = torch.nn.Linear(100, 100, bias=False).to(STAND_IN)
        x = torch.ones(1, 100, device=STAND_IN, requires_grad=True)  # as a hidden state
        weights = torch.cuda.memory_allocated()
        assert weights == 100 * 100 * 4 + 400
        with torch.autocast(STAND_IN, dtype=torch.bfloat16, cache_enabled=False):
            y = layer(x)
        assert y.dtype == torch.bfloat16  # autocast ran, as on the GPU
        # kept for the backward pass: the bf16 copy of the weight (autograd's, never in Python)
        assert torch.cuda.memory_allocated() - weights >= 100 * 100 * 2
        y.float().sum().backward()
        assert layer.weight.grad is not None
        assert torch.cuda.max_memory_allocated() >= weights + 3 * 100 * 100 * 2


def test_generation_under_bf16_casts_each_weight_once_per_call_not_per_token():
    """The run's autocast keeps the weight-cast cache off (training); generation turns it on
    for its call: the casts of an 8-token sample are those of one forward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from harness.engine.runner import precision_context
    from harness.testing import _kit_lm_task

    task = _kit_lm_task()
    policy = task.reference_policy()
    shapes = {tuple(p.shape) for p in policy.parameters() if p.dim() == 2}
    casts = [0]

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if (func is torch.ops.aten._to_copy.default and args[0].dtype == torch.float32
                    and out.dtype == torch.bfloat16 and tuple(args[0].shape) in shapes):
                casts[0] += 1
            return out

    prompts = task.train_prompts.select(slice(0, 4))
    linear = sum(1 for m in policy.modules() if isinstance(m, torch.nn.Linear))
    with precision_context("cpu", "bf16"), Casts():
        responses = policy.sample(prompts, max_new_tokens=8,
                                  generator=torch.Generator().manual_seed(0))
    assert responses.tokens.shape[1] > 2  # several tokens, several forwards
    assert 0 < casts[0] <= linear
    casts[0] = 0  # the cache is dropped after the call: a training forward casts afresh
    with precision_context("cpu", "bf16"), Casts():
        policy.token_logprobs(prompts, responses)
    assert 0 < casts[0] <= linear


def test_a_run_frees_its_models_without_waiting_for_the_cycle_collector(tmp_path, monkeypatch):
    import gc
    import weakref

    import harness.engine.runner
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import run_one
    from harness.suite import check_suite, load_suite

    monkeypatch.setenv("RLHF_HARNESS_WANDB", "0")
    monkeypatch.setenv("RLHF_HARNESS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "suite.yaml"
    path.write_text(TINY_LM_SUITE)
    [spec] = check_suite(load_suite(path), path, get_plugin_host())
    alive = []
    build = harness.engine.runner.build_context

    def keeping(*args, **kwargs):
        context = build(*args, **kwargs)
        alive.append(weakref.ref(context.policy))
        return context

    monkeypatch.setattr(harness.engine.runner, "build_context", keeping)
    gc.disable()
    try:
        assert run_one(spec.as_dict(), str(tmp_path / "runs")) == "done"
        assert alive and alive[0]() is None
    finally:
        gc.enable()


TINY_LM_SUITE = """\
name: tiny-free
tasks:
  - name: tiny-lm
    params: {hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64,
             max_positions: 32, corpus_size: 400, pretrain_steps: 2, num_train_prompts: 8,
             num_eval_prompts: 4, max_new_tokens: 4}
algorithms:
  - {name: grpo, config: {prompts_per_step: 2, num_generations: 2, learning_rate: 0.001}}
reward_model: {kind: gold}
seeds: [0]
budget: {steps: 1}
device: cpu
"""


def test_lora_dropout_is_refused_in_one_line(tmp_path, capsys):
    text = PLACEMENT.replace("bandit", "tiny-lm").replace(
        "params: {num_prompts: 2, num_arms: 4}", "params: {}")
    code, _, err, _ = validate(tmp_path, capsys, text + "policy:\n  lora: {dropout: 0.05}\n")
    assert code == 2 and err.count("\n") == 1
    assert "policy.lora.dropout" in err and "0.05 is not supported" in err and "use 0" in err


def test_pure_bf16_warning_is_for_the_weights_adam_trains(tmp_path, capsys):
    """With LoRA the policy trains float32 adapters (no warning), but PPO's critic is a full
    copy in the base's dtype (a warning naming it)."""
    text = HF_BF16.format(dtype="bfloat16") + "policy:\n  lora: {r: 4}\n"
    code, _, err, path = validate(tmp_path, capsys, text)
    assert code == 0
    mine = [line for line in err.splitlines() if "params.dtype" in line]
    assert mine == [
        f"{path}:4: warning: tasks.0.params.dtype: bfloat16 a critic of algorithms.0 (ppo) with "
        f"Adam at learning_rate 3e-06: an update below half an ulp (2^-9·|w|) rounds away, so "
        f"no weight larger than 0.0015 in magnitude ever changes; load float32 weights and set "
        f"precision: bf16 instead"
    ]
    grpo = HF_BF16.replace("  - name: ppo\n", "  - name: grpo\n").format(dtype="bfloat16")
    assert "params.dtype" in validate(tmp_path, capsys, grpo)[2]  # full weights: warned
    assert "params.dtype" not in validate(tmp_path, capsys, grpo + "policy:\n  lora: {r: 4}\n")[2]


def test_a_fraction_of_a_gpu_per_ray_run_is_said(tmp_path, capsys):
    code, out, err, path = validate(tmp_path, capsys, PLACEMENT + "gpus_per_run: 0.5\n",
                                    "--executor", "ray")
    assert code == 0 and "ok: 1 runs" in out
    assert err.strip() == (
        f"{path}:9: warning: gpus_per_run: 0.5 is a fraction of a GPU: Ray packs runs onto one "
        f"GPU, where they share its memory (each run's memory plan is its own) and its time, so "
        f"their timings are not comparable"
    )


def test_lora_training_is_counted_without_the_bases_weight_gradients():
    from harness.compute import ComputeMeter, flop_parameters
    from harness.models.lora import apply_lora
    from harness.testing import LORA_SETTINGS, _kit_lm_task

    policy = _kit_lm_task().reference_policy()
    full = ComputeMeter()
    full.train(policy, 10)
    n = flop_parameters(policy)
    assert full.flops == 6 * n * 10
    apply_lora(policy, LORA_SETTINGS)
    adapters = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    lora = ComputeMeter()
    lora.train(policy, 10)
    assert lora.flops == (4 * flop_parameters(policy) + 2 * adapters) * 10
    assert lora.flops < 0.8 * 6 * flop_parameters(policy) * 10
