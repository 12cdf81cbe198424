"""The checks on placement and LoRA: ``devices`` (a run's tensors stay on the task's device, a
GPU or its stand-in on the CPU, with and without the policy options) and ``lora`` (a LoRA
policy on a tiny Llama trains its adapters and leaves the base and π_ref as they were).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from harness.algorithm import Algorithm
from harness.errors import HarnessError
from harness.testing.common import _GLOBAL_SEEDS, _finite, _global_rng, _one_thread, _raised, _show

LORA_STEPS = 2
"""Steps of the ``lora`` check's run."""

LORA_SETTINGS: dict[str, Any] = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": None}
"""The adapters of the ``lora`` check: rank 4 on every linear layer but the output head."""

LM_SMALL: dict[str, Any] = {
    "learning_rate": 1e-3, "rollout_batch_size": 4, "num_mini_batches": 1, "prompts_per_step": 2,
    "batch_size": 4,
}
"""The config fields the ``devices`` check sets, where an algorithm has them, on its language
model: a learning rate that suits one, and small batches (the check is of placement)."""


class DeviceChecks:
    """The checks of :class:`~harness.testing.kit.Conformance` on where a run's tensors live and on
    LoRA: ``devices`` (a GPU, or its stand-in on the CPU) and ``lora``."""

    def _check_lora(self, cls: type[Algorithm]) -> str | None:
        from harness.engine.runner import build_context, make_algorithm
        from harness.reward import GoldRewardModel

        task = _kit_lm_task()
        preferences = None
        config = dict(self.config)
        if any(f.name == "learning_rate" for f in dataclasses.fields(cls.Config)):
            config["learning_rate"] = 1e-3
        with _global_rng(_GLOBAL_SEEDS[0]), _one_thread():
            try:
                if {"preferences", "unpaired"} & cls.needs:
                    from harness.engine.annotator import simulate_preferences
                    from harness.preference import BradleyTerry

                    preferences = simulate_preferences(task, BradleyTerry(1.0), num_pairs=32,
                                                       seed=self.seed)
                context = build_context(
                    task, cls, seed=self.seed, preferences=preferences, label_noise=0.0,
                    reward_model=GoldRewardModel(task) if "reward" in cls.needs else None,
                    policy_options={"lora": LORA_SETTINGS},
                )
            except HarnessError as exc:
                if not getattr(cls, "supports_lora", True):
                    return None  # it declares that it cannot, and the run is refused
                return f"building a LoRA run raised {type(exc).__name__}: {exc}"
            except Exception as exc:
                return f"building a LoRA run {_raised(exc)}"
            if not getattr(cls, "supports_lora", True):
                return ("it declares supports_lora = False, but a LoRA run of it was built "
                        "without a ConfigError")
            policy = context.policy
            prompts = task.train_prompts.select(slice(0, 4))
            g = torch.Generator().manual_seed(0)
            responses = context.reference.sample(prompts, max_new_tokens=task.max_new_tokens,
                                                 generator=g)
            with torch.no_grad():
                ref_before = context.reference.token_logprobs(prompts, responses)
            state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            try:
                algo = make_algorithm(cls, config, context)
                records = [algo.step() for _ in range(LORA_STEPS)]
            except Exception as exc:
                return f"a LoRA run {_raised(exc)}"
            bad = [f"{k}={_show(v)}" for r in records for k, v in r.items() if not _finite(v)]
            if bad:
                return f"a LoRA run returned non-finite {', '.join(bad[:3])}"
            after = policy.state_dict()
            moved = [k for k, v in state.items() if "lora_" not in k
                     and not torch.equal(v, after[k])]
            if moved:
                return (f"a LoRA run changed the base weight '{moved[0]}': with LoRA only the "
                        f"adapters train (optimise the parameters that require gradients)")
            trained = any(not torch.equal(v, after[k]) for k, v in state.items() if "lora_" in k)
            if not trained and algo.eval_policy() is policy:
                return "a LoRA run left the adapters unchanged: they are the trainable weights"
            with torch.no_grad():
                ref_after = context.reference.token_logprobs(prompts, responses)
            if not torch.equal(ref_before, ref_after):
                return "π_ref (the base with adapters off) changed during a LoRA run"
        return None


    def _check_devices(self, cls: type[Algorithm]) -> str | None:
        from harness.models.device_trace import stand_in_device

        variants: list[tuple[str, bool, dict[str, Any], str]] = [
            ("", False, {}, "fp32"),
            (" with offload_frozen", False, {"offload_frozen": True}, "fp32"),
        ]
        if getattr(cls, "supports_lora", True):
            variants.append((" on a language model with lora, activation_checkpointing and "
                             "offload_frozen under bf16 autocast", True,
                             {"lora": LORA_SETTINGS, "activation_checkpointing": True,
                              "offload_frozen": True}, "bf16"))
        else:
            variants.append((" on a language model with offload_frozen under bf16 autocast",
                             True, {"offload_frozen": True}, "bf16"))
        for where, lm, options, precision in variants:
            with _global_rng(self.seed), _one_thread(), stand_in_device():
                found = self._on_device(cls, where, lm, options, precision)
            if found:
                return found
        if isinstance(self.algorithm, str):
            with _global_rng(self.seed), _one_thread(), stand_in_device():
                return self._run_one_on_device()
        return None

    def _on_device(self, cls: type[Algorithm], where: str, lm: bool, options: dict[str, Any],
                   precision: str) -> str | None:
        """Build, step twice and evaluate on the stand-in device; what failed, or None."""
        from harness.engine.runner import build_context, make_algorithm, precision_context
        from harness.evaluators import EvalContext, register_evaluators
        from harness.exact import ExactProblem
        from harness.models.device_trace import STAND_IN
        from harness.reward import GoldRewardModel

        evaluators: list[tuple[str, Any]] = []
        register_evaluators(lambda name, ev: evaluators.append((name, ev)))
        autocast = precision_context(STAND_IN, precision)
        with autocast:
            try:
                if lm:
                    task = _kit_lm_task(STAND_IN)
                    preferences = None
                    if {"preferences", "unpaired"} & cls.needs:
                        from harness.engine.annotator import simulate_preferences
                        from harness.preference import BradleyTerry

                        preferences = simulate_preferences(task, BradleyTerry(1.0), num_pairs=16,
                                                           seed=self.seed)
                    fields = {f.name for f in dataclasses.fields(cls.Config)}
                    config = {**self.config, **{k: v for k, v in LM_SMALL.items() if k in fields}}
                    context = build_context(
                        task, cls, seed=self.seed, preferences=preferences, label_noise=0.0,
                        reward_model=task.make_reward_model() if "reward" in cls.needs else None,
                        policy_options=options,
                    )
                    algo = make_algorithm(cls, config, context)
                else:
                    algo = self.build(device=STAND_IN, policy_options=options)
            except Exception as exc:
                return f"building it with the task on a device{where} {_raised(exc)}"
            for number in (1, 2):
                try:
                    algo.step()
                except Exception as exc:
                    return f"step {number} on a device{where} {_raised(exc)}"
                if algo.finished:
                    break
            task = algo.ctx.task
            try:
                policy = algo.eval_policy()
                ctx = EvalContext(
                    task=task, policy=policy, reference=algo.ctx.reference,
                    reward_model=GoldRewardModel(task), beta=self.beta, samples_per_prompt=2,
                    seed=self.seed, exact=ExactProblem.from_task(task) if not lm else None,
                )
            except Exception as exc:
                return f"eval_policy() on a device{where} {_raised(exc)}"
            for name, evaluator in evaluators:
                try:
                    with torch.no_grad():
                        evaluator().evaluate(ctx)
                except Exception as exc:
                    return (f"evaluator '{name}' of its eval_policy() on a device{where} "
                            f"{_raised(exc)}")
        return None

    def _run_one_on_device(self) -> str | None:
        """One run of a one-run suite through :func:`harness.engine.runner.run_one` (the store, the
        memory counters, bf16 autocast, r̂ fitted on the device): what failed."""
        import tempfile
        from pathlib import Path

        import yaml

        from harness.engine.plugins import get_plugin_host
        from harness.engine.runner import run_one
        from harness.engine.store import RunStore
        from harness.suite import check_suite, load_suite

        suite = {
            "name": "conformance-devices",
            "tasks": [{"name": "bandit", "params": dict(self.task_params)}],
            "preferences": {"num_pairs": min(self.num_pairs, 64)},
            "reward_model": {"kind": "fitted"},
            "algorithms": [{"name": self.algorithm, "config": dict(self.config)}],
            "seeds": [self.seed], "budget": {"steps": 2},
            "evaluation": {"every": 1, "samples_per_prompt": 2,
                           "evaluators": ["gold_reward", "proxy_reward", "kl_ref"]},
            "device": "cuda", "precision": "bf16",
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "suite.yaml"
            path.write_text(yaml.safe_dump(suite, allow_unicode=True))
            try:
                [spec] = check_suite(load_suite(path), path, get_plugin_host())
                status = run_one(spec.as_dict(), str(Path(tmp) / "runs"))
            except Exception as exc:
                return f"run_one of a run on a device {_raised(exc)}"
            if status != "done":
                [record] = list(RunStore(Path(tmp) / "runs", suite["name"]).records())
                reason = record.status.get("reason") or status
                return f"run_one of a run on a device (bf16) ended {status}: {reason}"
        return None


def _kit_lm_task(device: str = "cpu") -> Any:
    """The ``lora`` check's task (its class defined on first use: it imports transformers), on
    ``device``."""
    from harness.models.lm import build_causal_lm
    from harness.tasks.tiny_lm import TinyLMParams, TinyLMTask, make_corpus, make_tokenizer

    class KitLMTask(TinyLMTask):
        """``tiny-lm``'s prompts, language and gold reward on an untrained 2-layer Llama built
        in memory (no pre-training, no cache)."""

        def __init__(self) -> None:
            params = TinyLMParams(hidden_size=32, num_layers=2, num_heads=2,
                                  intermediate_size=64, corpus_size=400, num_train_prompts=16,
                                  num_eval_prompts=4, max_new_tokens=4)
            super().__init__(params, seed=0, device=device)

        def load_assets(self) -> tuple[Any, Any]:
            p = self.params
            tokenizer = make_tokenizer(make_corpus(p)[0])
            model = build_causal_lm(
                p.arch, len(tokenizer), p.hidden_size, p.num_layers, p.num_heads,
                p.intermediate_size, p.max_positions, p.seed_model,
                pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
                eos_id=tokenizer.eos_token_id,
            )
            return model.requires_grad_(False), tokenizer

    return KitLMTask()
