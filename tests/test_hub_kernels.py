"""No model the harness loads fetches code or weights at run time (harness/models/hub.py).

transformers >= 5 turns Hub kernels on by default in ``from_pretrained`` and re-kernelizes a
model at every ``train()`` / ``eval()``; on CUDA that fetches kernel code from the Hub. Two
checks: every loader of the harness leaves kernels off (also after mode switches and in the
copies it makes), and a tiny-lm and an hf run's models, switched between modes on the CUDA
stand-in device, make no network call at all (an audit hook in a fresh interpreter fails on the
first socket connection or name lookup).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from harness.models.hub import pretrained_kwargs, transformers_has_hub_kernels, uses_hub_kernels
from tests.test_hf_task import make_task as make_hf_task
from tests.test_hf_task import saved  # noqa: F401  (the fixture)

needs_hub_kernels = pytest.mark.skipif(
    not transformers_has_hub_kernels(),
    reason="this transformers has no Hub kernels (< 4.54): nothing to switch off",
)


def _tiny_lm_task(device: str = "cpu"):
    from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask

    return TinyLMTask(TinyLMParams(max_new_tokens=4, num_eval_prompts=8), seed=0, device=device)


def _switch_modes(model) -> None:
    model.train()
    model.eval()
    model.train(True)


@needs_hub_kernels
def test_plain_from_pretrained_would_switch_kernels_on(tmp_path):
    """The premise: without the harness's argument this transformers kernelizes by default
    (so the checks below can fail)."""
    from transformers import AutoModelForCausalLM

    task = _tiny_lm_task()
    task.model.save_pretrained(tmp_path / "m")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    if os.environ.get("USE_HUB_KERNELS", "YES").upper() in {"0", "NO", "FALSE", "OFF"}:
        pytest.skip("USE_HUB_KERNELS switches kernels off in this environment")
    assert uses_hub_kernels(plain)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "m", **pretrained_kwargs())
    assert not uses_hub_kernels(ours)


def test_tiny_lm_models_never_use_hub_kernels():
    task = _tiny_lm_task()
    models = {
        "π_ref": task.model,
        "policy": task.reference_policy().model,
        "reward backbone": task.make_reward_model(),
    }
    for name, model in models.items():
        _switch_modes(model)
        assert not uses_hub_kernels(model), name
        assert not any(uses_hub_kernels(m) for m in model.modules()), name


def test_hf_task_and_classifier_gold_never_use_hub_kernels(saved):  # noqa: F811
    task = make_hf_task(saved)
    models = {"π_ref": task.model, "policy": task.reference_policy().model,
              "gold classifier": task.gold.model}
    for name, model in models.items():
        _switch_modes(model)
        assert not any(uses_hub_kernels(m) for m in model.modules()), name


@needs_hub_kernels
def test_hf_task_asks_for_hub_kernels_only_when_the_suite_does(saved, monkeypatch):  # noqa: F811
    """``hub_kernels: true`` reaches ``from_pretrained`` (recorded, not run: running it would
    fetch from the Hub)."""
    import transformers

    seen: list[object] = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("use_kernels"))
        kwargs["use_kernels"] = False
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    make_hf_task(saved).model  # noqa: B018 (loads it)
    make_hf_task(saved, hub_kernels=True).model  # noqa: B018
    assert seen == [False, True]


NO_NETWORK = textwrap.dedent("""
    import sys

    CALLS = []

    def audit(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                     "socket.sendto", "urllib.Request"):
            CALLS.append(event)  # recorded even if the caller swallows the error below
            raise RuntimeError(f"network call at run time: {event} {args!r:.200}")

    sys.addaudithook(audit)
""")


@needs_hub_kernels
def test_no_network_call_when_models_switch_modes_on_the_stand_in_gpu(saved, tmp_path):  # noqa: F811
    """On CUDA, kernelize() maps Llama's RMSNorm, rotary embedding and SiLU to Hub kernels and
    fetches them. The stand-in device makes the models look like they sit on CUDA; a fresh
    interpreter with an audit hook fails at the first connection or name lookup."""
    root = saved[0]
    script = NO_NETWORK + textwrap.dedent(f"""
        import torch
        from harness.models.device_trace import STAND_IN, stand_in_device
        from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask
        from harness.tasks.hf import HFParams, HFTask

        # what kernelize() asks a CUDA device before it picks a kernel: answer as an H100 would
        torch.cuda.get_device_capability = lambda *args, **kwargs: (9, 0)
        with stand_in_device():
            tiny = TinyLMTask(TinyLMParams(max_new_tokens=4, num_eval_prompts=8), seed=0,
                              device=STAND_IN)
            hf = HFTask(HFParams(model={str(root / "lm")!r},
                                 prompts={str(root / "prompts.jsonl")!r},
                                 num_eval_prompts=8, max_new_tokens=4,
                                 gold_reward_params={{"path": {str(root / "rm")!r}, "label": 1}}),
                        seed=0, device=STAND_IN)
            for task in (tiny, hf):
                policy = task.reference_policy()
                for _ in range(2):
                    policy.train()
                    policy.eval()
                with torch.no_grad():
                    policy.sample(task.eval_prompts, max_new_tokens=2,
                                  generator=torch.Generator(STAND_IN).manual_seed(0))
        print("network calls:", CALLS)
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "USE_HUB_KERNELS"}}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]  # e.g. "Kernel repository ... could
    # not verify publisher trust status", as on an offline GPU host
    assert "network calls: []" in result.stdout
