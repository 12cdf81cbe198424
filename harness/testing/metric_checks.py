"""The checks on what ``step()`` reports: ``metrics`` (Python numbers under the shared names,
none reserved or misspelt), ``vocabulary`` (the shared names mean what
:data:`harness.metrics.VOCABULARY` says, on two small cases with known values) and
``accounting`` (the work is counted on the meter).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.algorithm import Algorithm
from harness.config import build_config
from harness.metrics import ALGORITHM_METRICS
from harness.reward import RewardModel
from harness.testing.common import (
    _GLOBAL_SEEDS,
    RESERVED_METRICS,
    _global_rng,
    _names,
    _one_thread,
    _raised,
    required_metrics,
)

CONSTANT_REWARD = 0.5
"""The score the constant reward model of the ``vocabulary`` check gives every response."""


class MetricChecks:
    """The checks of :class:`~harness.testing.kit.Conformance` on what ``step()`` reports:
    ``metrics`` (types and names), ``vocabulary`` (their meanings) and ``accounting`` (the
    meter counts the work)."""

    def _check_metrics(self, cls: type[Algorithm]) -> str | None:
        trace = self._trace(self.steps, _GLOBAL_SEEDS[0])
        if trace.error and not trace.records:
            return trace.error
        required = (
            self.metrics if self.metrics is not None
            else required_metrics(cls, trains=trace.trains)
        )
        shared = set(ALGORITHM_METRICS)
        for number, metrics in enumerate(trace.records, 1):
            at = f"step {number}"
            if not isinstance(metrics, dict):
                return f"{at}: step() returned {type(metrics).__name__}, not a dict of metrics"
            for key, value in metrics.items():
                if not isinstance(key, str):
                    return f"{at}: metric names are strings, got {key!r}"
                if key in RESERVED_METRICS:
                    return (f"{at}: metric '{key}' is a name the runner writes itself "
                            f"({', '.join(sorted(RESERVED_METRICS))}); rename it")
                canonical = key.strip().lower().replace("-", "_").replace(" ", "_")
                if key not in shared and canonical in shared:
                    return (f"{at}: metric '{key}' must be spelt '{canonical}', the shared "
                            f"name (see harness/metrics.py)")
                if isinstance(value, bool) or not isinstance(value, float | int):
                    kind = f"{type(value).__module__}.{type(value).__qualname__}"
                    hint = (" (a tensor keeps its autograd graph alive)"
                            if isinstance(value, torch.Tensor) else "")
                    return (f"{at}: metric '{key}' is a {kind}, not a float: return "
                            f"float(...){hint}")
            missing = sorted(required - set(metrics))
            if missing:
                kind = "online " if "reward" in cls.needs else ""
                return (f"{at}: step() did not report {_names(missing)}, shared metric(s) every "
                        f"{kind}algorithm reports (it reported: "
                        f"{', '.join(sorted(map(str, metrics))) or 'nothing'})")
        if trace.error:
            return trace.error
        return None

    def _check_vocabulary(self, cls: type[Algorithm]) -> str | None:
        cases = []
        if "reward" in cls.needs:
            cases.append(self._online_case)
        if "preferences" in cls.needs:
            cases.append(self._offline_case)
        for case in cases:
            with _global_rng(_GLOBAL_SEEDS[0]), _one_thread():
                try:
                    algo, expected, where = case(cls)
                except Exception as exc:
                    return f"building it for the vocabulary case {_raised(exc)}"
                try:
                    metrics = algo.step()
                except Exception as exc:
                    return f"step 1 of the vocabulary case ({where}) {_raised(exc)}"
                if not isinstance(metrics, dict):
                    return f"step() returned {type(metrics).__name__}, not a dict of metrics"
                if "kl_ref" in expected and algo.eval_policy() is not algo.ctx.policy:
                    del expected["kl_ref"]
            problem = _vocabulary_problem(metrics, expected, where)
            if problem:
                return problem
        return None

    def _online_case(self, cls: type[Algorithm]) -> tuple[Algorithm, dict[str, Any], str]:
        """One prompt, every response scored ``CONSTANT_REWARD``: step 1's expected values."""
        from harness.engine.runner import build_context, make_algorithm
        from harness.tasks.bandit import BanditParams, BanditTask

        params = {**self.task_params, "num_prompts": 1, "num_eval_prompts": None}
        task = BanditTask(build_config(BanditParams, params), seed=self.seed, device="cpu")
        preferences = None
        if {"preferences", "unpaired"} & cls.needs:
            from harness.engine.annotator import simulate_preferences
            from harness.preference import BradleyTerry

            preferences = simulate_preferences(task, BradleyTerry(1.0), num_pairs=64,
                                               seed=self.seed)
        context = build_context(task, cls, seed=self.seed, preferences=preferences,
                                reward_model=_ConstantReward(CONSTANT_REWARD), label_noise=0.0)
        with torch.no_grad():
            prompts = task.train_prompts
            responses = task.enumerate_responses()
            assert responses is not None
            logits = context.reference.logits(prompts.select([0] * len(responses)), responses)
            probs = torch.softmax(logits[0, 0].double(), -1)
            entropy = float(-(probs * probs.clamp_min(1e-300).log()).sum())
        expected = {"reward": CONSTANT_REWARD, "kl_ref": 0.0, "entropy": entropy,
                    "response_length": 1.0}
        where = (f"one-prompt bandit, constant reward {CONSTANT_REWARD}, π = π_ref at the "
                 f"first step")
        return make_algorithm(cls, self.config, context), expected, where

    def _offline_case(self, cls: type[Algorithm]) -> tuple[Algorithm, dict[str, Any], str]:
        """One prompt, every pair the same (x, y⁺ of 3 tokens, y⁻ of 2): step 1's values."""
        import pandas as pd

        from harness.data import PreferenceDataset
        from harness.engine.runner import build_context, make_algorithm
        from harness.policy import ResponseBatch
        from harness.reward import GoldRewardModel
        from harness.tasks.token import TokenParams, TokenTask

        task = TokenTask(build_config(TokenParams, {"num_prompts": 1, "vocab_size": 3,
                                                    "max_len": 3}), seed=self.seed, device="cpu")
        eos = task.space.eos_id
        chosen, rejected = [0, 1, eos], [2, eos]
        prompt = task.train_prompts
        prompt_ids = prompt.ids[0][prompt.mask[0]].tolist()
        pairs = 64
        batch = ResponseBatch(tokens=torch.tensor([chosen, [*rejected, eos]]),
                              mask=torch.tensor([[True] * 3, [True, True, False]]))
        texts = task.decode_responses(batch)
        frame = pd.DataFrame({
            "prompt": task.decode_prompts(prompt) * pairs,
            "chosen": [texts[0]] * pairs,
            "rejected": [texts[1]] * pairs,
            "prompt_ids": [prompt_ids] * pairs,
            "chosen_ids": [chosen] * pairs,
            "rejected_ids": [rejected] * pairs,
            "prompt_index": [0] * pairs,
        })
        context = build_context(
            task, cls, seed=self.seed, preferences=PreferenceDataset(frame, source="vocabulary"),
            reward_model=GoldRewardModel(task) if "reward" in cls.needs else None,
            label_noise=0.0,
        )
        with torch.no_grad():
            logp, ent = context.reference.token_logprobs_and_entropy(
                prompt.select([0, 0]), batch
            )
        assert ent is not None
        expected = {
            "logp_chosen": float(logp[0].sum()),
            "logp_rejected": float(logp[1].sum()),
            "response_length": 2.5,
            "entropy": float(ent.sum() / batch.mask.sum()),
        }
        where = "one-prompt token task, every pair y⁺ = 3 tokens, y⁻ = 2, π = π_ref at step 1"
        return make_algorithm(cls, self.config, context), expected, where

    def _check_accounting(self, cls: type[Algorithm]) -> str | None:
        trace = self._trace(self.steps, _GLOBAL_SEEDS[0])
        if trace.error:
            return trace.error
        if trace.algo is not None and trace.algo.finished:
            return None  # it stops by itself: no budget has to run out
        idle = [kind for kind, value in trace.spent.items() if not value > 0]
        if idle:
            return (f"after {len(trace.records)} steps ctx.meter counted no "
                    f"{', '.join(idle)}, so a suite's {'/'.join(idle)} budget would never run "
                    f"out: call meter.generated(model, samples, tokens) for sampled responses "
                    f"(offline: meter.samples += pairs), meter.train(model, tokens) for "
                    f"backward passes, meter.forward(model, tokens) for scoring, and wrap the "
                    f"work in meter.phase(\"generate\" | \"score\" | \"train\")")
        return None


class _ConstantReward(RewardModel):
    """r̂(x, y) = c for every response: the online case of the ``vocabulary`` check."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, prompts: Any, responses: Any) -> torch.Tensor:
        return torch.full((len(responses),), self.value, device=responses.tokens.device)


def _vocabulary_problem(metrics: dict[str, Any], expected: dict[str, float], where: str
                        ) -> str | None:
    """One line naming the first shared metric whose value contradicts the vocabulary."""
    from harness.metrics import VOCABULARY

    for name, want in expected.items():
        if name not in metrics:
            continue
        try:
            got = float(metrics[name])
        except (TypeError, ValueError):
            return f"metric '{name}' is {metrics[name]!r}, not a number"
        if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4):
            meaning = VOCABULARY[name]
            return (f"metric '{name}' is {got:.6g} where the shared name means "
                    f"{meaning.meaning} [{meaning.unit}], which is {want:.6g} here ({where}): "
                    f"report it as defined in harness/metrics.py, or under a name of your own")
    grad_norm = metrics.get("grad_norm")
    if isinstance(grad_norm, float | int) and not grad_norm >= 0:
        return f"metric 'grad_norm' is {grad_norm!r}: a norm is ≥ 0"
    accuracy = metrics.get("reward_accuracy")
    if isinstance(accuracy, float | int) and not 0.0 <= accuracy <= 1.0:
        return f"metric 'reward_accuracy' is {accuracy!r}: a fraction is in [0, 1]"
    return None
