"""The conformance kit: the checks every algorithm plugin should pass, for its author's tests.

Nine checks, eight run on the ``bandit`` task (a table of logits: milliseconds per step, and an
exact optimum to measure against) and one on a tiny language model, each failing with one line
that names the algorithm and the check:

``config``
    ``Config`` is a dataclass whose every field has a default and a docstring (a string literal
    on the line after the field, read from the source) and whose defaults build; and every
    setting it accepts builds the algorithm: each ``int`` or ``float`` field set in turn to
    each of :data:`SETTING_PROBES` (−1, 0, …), a value the Config accepts — which
    ``rlhf-harness validate`` then calls ok — must not make the algorithm's ``__init__`` raise.
    Checks of values belong in ``Config.__post_init__`` (see :mod:`harness.config`), where
    ``validate`` sees them, not in ``__init__``, where a suite learns of them as a failed run.
``metrics``
    Every ``step()`` returns a ``dict`` of Python numbers (floats; not tensors, whose autograd
    graph a kept metric would hold on to, nor numpy scalars) by string name, with the
    shared names that apply (see below), none misspelt (``KL_ref``, ``kl-ref``) and none of the
    names the runner writes itself (``step``, ``samples``, ``tokens``, ``wall_seconds``,
    ``flops``, ``models_resident``, ``diverged``).
``vocabulary``
    The shared metric names it reports mean what :data:`harness.metrics.VOCABULARY` says, on two
    small deterministic cases where the value is known. Online (``needs`` has ``"reward"``): a
    one-prompt bandit scored by a constant reward model c, where at the first step ``reward``
    is c, ``kl_ref`` is 0 (π = π_ref; not checked when ``eval_policy()`` is another policy, as
    best-of-n's is), ``entropy`` is H(π_ref(·|x)) and ``response_length`` is 1. Offline
    (``"preferences"``): a one-prompt ``token`` task whose pairs are all one (x, y⁺, y⁻), y⁺ of
    three tokens and y⁻ of two, where at the first step ``logp_chosen`` and ``logp_rejected``
    are the *sequence* log-probs log π_ref(y|x) (a per-token mean fails), ``response_length``
    is 2.5 and ``entropy`` the per-token mean over the five tokens. Everywhere, ``grad_norm``
    is ≥ 0 and ``reward_accuracy`` in [0, 1].
``accounting``
    The steps are counted on ``ctx.meter``: samples, tokens and FLOPs grow, and time is spent
    in a phase (``with meter.phase("train"):``), or a suite's ``samples``, ``tokens``,
    ``flops`` or ``seconds`` budget would never run out (unless the algorithm sets
    ``finished``).
``determinism``
    Two fresh runs with the same seed give bit-identical metrics and policy parameters on the
    CPU, although the global random generators (``torch``, ``random``, ``numpy``) are seeded
    differently for each: randomness must come from ``ctx.generator`` (or generators seeded from
    ``ctx.seed``).
``finite``
    No metric is NaN or infinite, no step raises, and the policy's parameters stay finite, over
    a training run of ``train_steps`` steps.
``improves``
    After that run, the KL-regularised objective J_β of ``eval_policy()``, computed exactly with
    the gold reward (:class:`harness.exact.ExactProblem`), has closed at least
    ``min_improvement`` of the gap from J_β(π_ref) to the optimum J_β(π*_β).
``devices``
    With the task on a GPU — a stand-in on the CPU (:func:`harness.device_trace.stand_in_device`)
    — building the algorithm, two steps, and every built-in evaluator on its ``eval_policy()``
    keep the run's tensors on that device: an op that combines a tensor on the device with one
    on the CPU (a ``.cpu()`` result, a tensor made without ``device=``, an index on the other
    side of a ``gather``), or a draw from a device generator into a CPU tensor, fails the check,
    naming the line, as it would fail on a GPU. So do the policy options: on the ``bandit``
    task with ``offload_frozen``, and on the ``lora`` check's language model under bf16
    autocast with ``offload_frozen``, and with ``lora`` and ``activation_checkpointing`` (unless
    the algorithm declares ``supports_lora = False``). An algorithm checked by its registered
    name also runs once through :func:`harness.runner.run_one` on the device (bf16, a fitted
    r̂, ``offload_frozen``), and must end ``done``.
``lora``
    With a LoRA policy (a suite's ``policy.lora``, :mod:`harness.lora`) on a tiny untrained
    Llama (2 layers, width 32; ``tiny-lm``'s language, built in memory), ``LORA_STEPS`` steps
    run without error and with finite metrics, the base weights stay bit for bit as they were,
    the adapters train (unless the policy is left as π_ref, as best-of-n leaves it), and π_ref —
    the base with the adapters off — still gives the log-probs it gave before training. The
    config given to the kit is used with ``learning_rate`` 1e-3, a rate that suits a language
    model. An algorithm that declares ``supports_lora = False`` passes when a LoRA run of it is
    refused with a :class:`~harness.errors.ConfigError`.

**Required metrics.** Every algorithm that updates the policy reports ``loss``. Online
algorithms (``needs`` has ``"reward"``) also report ``reward``, ``kl_ref`` and
``response_length``, and ``entropy`` when they update the policy: they sample and score
responses, so these cost nothing (ppo and grpo report them all). An algorithm that leaves the
policy's parameters as π_ref's (best-of-n sampling on top of π_ref: the checks see it) has no
``loss`` nor ``entropy`` of its own. For offline algorithms the online names and ``grad_norm``
are optional, but when reported they carry those names (dpo reports ``grad_norm``, ``entropy``
and ``response_length``). An algorithm that legitimately cannot report one (grpo with β = 0
never computes π_ref's log-probs, so no ``kl_ref``) passes ``metrics=`` explicitly, e.g.
``Conformance("grpo", {"beta": 0}, metrics={"loss", "reward"})``.

**What the checks give an algorithm.** A ``bandit`` task on the CPU (``task_params``, default 4
prompts × 8 arms, r* ~ N(0, 1), a softmax π_ref), the context :func:`harness.runner.build_context`
builds, with the gold reward as r̂ (:class:`harness.reward.GoldRewardModel`) for algorithms that
need ``"reward"`` and ``num_pairs`` preference pairs simulated from the gold reward
(:func:`harness.annotator.simulate_preferences`, Bradley-Terry at scale 1, no flipped labels:
``label_noise`` 0) for those that need ``"preferences"`` or ``"unpaired"``. The algorithm's
``config`` is validated as a suite's would be; learning rates
for language models are far too small for a table of logits, so pass one that suits it.

Use it from your tests, in one line::

    from harness.testing import conformance_tests
    test_conformance = conformance_tests("my-algo", config={"learning_rate": 0.1})

which collects one test per check (:func:`bandit_algorithm` builds the algorithm as the checks
do, for tests of its own behaviour), or with the pytest option this package registers
(``pytest --rlhf-conformance=my-algo --rlhf-conformance-config='my-algo={learning_rate: 0.1}'``;
see :mod:`harness.testing_plugin`), or by calling :func:`check_conformance` or
:class:`Conformance` yourself.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import math
import random
import struct
import textwrap
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.algorithm import Algorithm
from harness.config import build_config
from harness.errors import HarnessError
from harness.metrics import ALGORITHM_METRICS, RUNNER_METRICS
from harness.reward import RewardModel

__all__ = [
    "CHECKS",
    "DEFAULT_TASK_PARAMS",
    "OPTIONAL_METRICS",
    "RESERVED_METRICS",
    "SETTING_PROBES",
    "Conformance",
    "ConformanceError",
    "bandit_algorithm",
    "check_conformance",
    "conformance_tests",
    "field_docstrings",
    "required_metrics",
]

CHECKS: tuple[str, ...] = (
    "config", "metrics", "vocabulary", "accounting", "determinism", "finite", "improves",
    "devices", "lora",
)
"""The checks, in the order they are run and reported."""

ONLINE_METRICS: tuple[str, ...] = ("reward", "kl_ref", "response_length")
"""Shared names every online algorithm (``needs`` has ``"reward"``) reports."""

TRAINING_METRICS: tuple[str, ...] = ("loss",)
"""Shared names every algorithm that updates the policy reports (and ``entropy``, if online)."""

OPTIONAL_METRICS: tuple[str, ...] = tuple(sorted(ALGORITHM_METRICS - {"loss"}))
"""Shared names an algorithm may report; when it does, under exactly these names and with the
meanings of :data:`harness.metrics.VOCABULARY`."""

RESERVED_METRICS: frozenset[str] = RUNNER_METRICS
"""Names the runner writes next to an algorithm's metrics: an algorithm must not use them."""

CONSTANT_REWARD = 0.5
"""The score the constant reward model of the ``vocabulary`` check gives every response."""

DEFAULT_TASK_PARAMS: dict[str, Any] = {
    "num_prompts": 4, "num_arms": 8, "reward": "normal", "reference": "softmax",
}
"""The ``bandit`` task the checks run on, unless ``task_params`` says otherwise."""

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

SETTING_PROBES: dict[type, tuple[Any, ...]] = {
    int: (-1, 0, 1, 2, 3),
    float: (-1.0, 0.0, 0.5, 1.0, 1.5),
}
"""Values the ``config`` check gives each ``int`` or ``float`` field of ``Config`` in turn: a
value the Config accepts must build (a value it cannot take is refused in ``__post_init__``)."""

_GLOBAL_SEEDS = (12345, 67890)
"""Seeds of the global generators in the two runs of the determinism check (they differ)."""


class ConformanceError(AssertionError):
    """A failed conformance check; its message is one line naming the algorithm and the check.

    :func:`check_conformance` raises one whose message has one such line per failed check.
    """

    def __init__(self, algorithm: str, check: str, detail: str) -> None:
        self.algorithm = algorithm
        self.check = check
        self.detail = " ".join(str(detail).split())
        super().__init__(
            f"rlhf-harness conformance: algorithm '{algorithm}' fails check '{check}': "
            f"{self.detail}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across pytest-xdist workers
        return (type(self), (self.algorithm, self.check, self.detail),
                {**self.__dict__, "args": self.args})


def required_metrics(algorithm: type[Algorithm], *, trains: bool = True) -> frozenset[str]:
    """The shared metric names ``algorithm`` must report at every step (module docstring).

    :param trains: whether it updates the policy's parameters (the checks find out by running
        it); an algorithm that does not (best-of-n on top of π_ref) has no ``loss`` to report.
    """
    online = "reward" in getattr(algorithm, "needs", ())
    names: set[str] = set(TRAINING_METRICS) if trains else set()
    if online:
        names.update(ONLINE_METRICS)
        if trains:
            names.add("entropy")
    return frozenset(names)


def field_docstrings(cls: type) -> dict[str, str]:
    """The attribute docstrings of ``cls``'s annotated fields, its bases' included.

    An attribute docstring is the string literal statement right after the field in the class
    body (the convention Sphinx and this harness use)::

        learning_rate: float = 1e-5
        \"\"\"Adam step size.\"\"\"

    Read from the source with :mod:`ast`; raises :class:`OSError` when the source of ``cls``
    itself cannot be read (a class made by ``exec`` or typed into a REPL). A base class's
    unreadable source only loses that base's docstrings.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            if klass is cls:
                raise OSError(f"cannot read the source of {cls.__qualname__}") from None
            continue
        node = next(
            (n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None
        )
        if node is None:
            continue
        body = node.body
        for stmt, nxt in zip(body, [*body[1:], None], strict=True):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
                and nxt.value.value.strip()
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


@dataclass
class _Trace:
    """What one run of an algorithm produced (or how it broke)."""

    records: list[Any] = field(default_factory=list)
    """What each ``step()`` returned, as returned."""
    parameters: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """State dicts after the last step: ``{"policy": ..., "eval_policy": ...}``."""
    error: str | None = None
    """One line: where and how the run broke, if it did."""
    trains: bool = True
    """Whether the run changed the policy's parameters (π_ref's, at the start)."""
    spent: dict[str, float] = field(default_factory=dict)
    """What ``ctx.meter`` counted: samples, tokens, flops and seconds (evaluation excluded)."""
    algo: Algorithm | None = None


class Conformance:
    """The conformance checks of one algorithm with one config; runs are shared between checks.

    :param algorithm: a registered algorithm's name (looked up with
        :func:`harness.plugins.get_plugin_host`, i.e. through the entry points of installed
        plugins) or an :class:`~harness.algorithm.Algorithm` subclass itself.
    :param config: its ``Config`` fields, as in a suite file (omitted fields: the defaults).
    :param seed: the run seed.
    :param steps: steps of the two runs the ``metrics`` and ``determinism`` checks compare.
    :param train_steps: steps of the run the ``finite`` and ``improves`` checks inspect.
    :param beta: β of the objective J_β that ``improves`` measures.
    :param min_improvement: the fraction of the gap J_β(π*_β) − J_β(π_ref) that ``improves``
        requires the trained policy to close.
    :param task_params: the ``bandit`` task's parameters (default :data:`DEFAULT_TASK_PARAMS`).
    :param num_pairs: simulated preference pairs, for algorithms that need ``"preferences"`` or
        ``"unpaired"``.
    :param metrics: the metric names required at every step (default :func:`required_metrics`).
    """

    def __init__(
        self,
        algorithm: str | type[Algorithm],
        config: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        steps: int = 5,
        train_steps: int = 50,
        beta: float = 0.1,
        min_improvement: float = 0.1,
        task_params: Mapping[str, Any] | None = None,
        num_pairs: int = 2000,
        metrics: Collection[str] | None = None,
    ) -> None:
        if steps < 1 or train_steps < 1:
            raise ValueError(f"steps and train_steps must be >= 1, got {steps}, {train_steps}")
        if not 0.0 < min_improvement <= 1.0:
            raise ValueError(f"min_improvement must be in (0, 1], got {min_improvement}")
        self.algorithm = algorithm
        self.config = dict(config or {})
        self.seed = seed
        self.steps = steps
        self.train_steps = train_steps
        self.beta = beta
        self.min_improvement = min_improvement
        self.task_params = dict(DEFAULT_TASK_PARAMS if task_params is None else task_params)
        self.num_pairs = num_pairs
        self.metrics = None if metrics is None else frozenset(metrics)
        self._cls: type[Algorithm] | None = None
        self._traces: dict[tuple[int, int], _Trace] = {}
        self._preferences: Any = None

    # --- public ----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The algorithm's name, as messages give it."""
        if isinstance(self.algorithm, str):
            return self.algorithm
        return getattr(self.algorithm, "name", "") or getattr(
            self.algorithm, "__name__", repr(self.algorithm)
        )

    def check(self, check: str) -> None:
        """Run one check (one of :data:`CHECKS`); raise :class:`ConformanceError` if it fails."""
        __tracebackhide__ = True
        if check not in CHECKS:
            raise ValueError(f"unknown conformance check '{check}'; checks: {', '.join(CHECKS)}")
        detail = self._detail(check)
        if detail is not None:
            raise ConformanceError(self.name, check, detail)

    def failures(self, checks: Collection[str] | None = None) -> dict[str, ConformanceError]:
        """Every failed check among ``checks`` (default: all), by check name."""
        found: dict[str, ConformanceError] = {}
        for check in CHECKS if checks is None else checks:
            try:
                self.check(check)
            except ConformanceError as exc:
                found[check] = exc
        return found

    def check_all(self, checks: Collection[str] | None = None) -> None:
        """Run ``checks`` (default: all); raise one :class:`ConformanceError` listing every
        failure, one line each."""
        __tracebackhide__ = True
        found = self.failures(checks)
        if found:
            first = next(iter(found.values()))
            error = ConformanceError(first.algorithm, first.check, first.detail)
            error.args = ("\n".join(str(e) for e in found.values()),)
            error.failures = found  # type: ignore[attr-defined]
            raise error

    def build(self, *, device: str = "cpu", config: Mapping[str, Any] | None = None,
              policy_options: dict[str, Any] | None = None) -> Algorithm:
        """A fresh instance of the algorithm, set up as the checks set it up: on the ``bandit``
        task (on ``device``), with the gold reward as r̂ and/or simulated preference pairs, for
        the seed; with ``config`` in place of the kit's config if given, ``policy_options`` as a
        suite's ``policy`` section.

        For an author's own tests of the algorithm's behaviour; raises what building raises.
        """
        from harness.reward import GoldRewardModel
        from harness.runner import build_context, make_algorithm

        try:
            cls = self._resolve()
        except _Unusable as exc:
            raise ConformanceError(self.name, "setup", str(exc)) from None
        task = self._task(device)
        offline = {"preferences", "unpaired"} & cls.needs
        preferences = self._simulated_preferences(task) if offline else None
        context = build_context(
            task, cls, seed=self.seed, preferences=preferences, label_noise=0.0,
            reward_model=GoldRewardModel(task) if "reward" in cls.needs else None,
            policy_options=policy_options,
        )
        return make_algorithm(cls, dict(self.config if config is None else config), context)

    # --- the checks: each returns None (pass) or one line saying what is wrong --------------------

    def _detail(self, check: str) -> str | None:
        try:
            cls = self._resolve()
        except _Unusable as exc:
            return str(exc)
        return getattr(self, f"_check_{check}")(cls)

    def _check_config(self, cls: type[Algorithm]) -> str | None:
        config_cls = getattr(cls, "Config", None)
        if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
            return (f"{cls.__name__}.Config must be a dataclass (decorate it with "
                    f"@dataclasses.dataclass), got {config_cls!r}")
        fields = dataclasses.fields(config_cls)
        no_default = [
            f.name for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if no_default:
            return (f"Config field(s) {_names(no_default)} have no default: every "
                    f"hyperparameter needs one, so that a suite may omit it")
        try:
            docs = field_docstrings(config_cls)
        except OSError:
            return (f"cannot read the source of {config_cls.__qualname__} to find its field "
                    f"docstrings (define it in a module file, not with exec or in a REPL)")
        undocumented = [f.name for f in fields if f.name not in docs]
        if undocumented:
            return (f"Config field(s) {_names(undocumented)} have no docstring: write a string "
                    f"literal on the line after each field saying what it is and where its "
                    f"default comes from")
        try:
            build_config(config_cls, {}, where="its defaults")
        except HarnessError as exc:
            return f"Config's defaults do not validate: {exc}"
        return self._settings_problem(cls, config_cls)

    def _settings_problem(self, cls: type[Algorithm], config_cls: type) -> str | None:
        """The first setting that the Config accepts (so ``rlhf-harness validate`` says ok)
        and building the algorithm rejects: each numeric field of the kit's config set in
        turn to each of :data:`SETTING_PROBES` (and ``None`` where the field allows it)."""
        import typing

        try:
            hints = typing.get_type_hints(config_cls)
        except Exception:  # unresolvable annotations: nothing to probe
            return None
        for f in dataclasses.fields(config_cls):
            for value in _probes(hints.get(f.name)):
                values = {**self.config, f.name: value}
                try:
                    build_config(config_cls, values)
                except Exception:
                    continue  # refused where validate sees it: as it should be
                with _global_rng(_GLOBAL_SEEDS[0]), _one_thread():
                    try:
                        self.build(config=values)
                    except Exception as exc:
                        return (f"Config accepts {f.name}={value!r} (rlhf-harness validate "
                                f"says ok) but building the algorithm with it {_raised(exc)}: "
                                f"check the setting in Config.__post_init__ (raise "
                                f"ValueError), where validate sees it")
        return None

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
        from harness.runner import build_context, make_algorithm
        from harness.tasks.bandit import BanditParams, BanditTask

        params = {**self.task_params, "num_prompts": 1, "num_eval_prompts": None}
        task = BanditTask(build_config(BanditParams, params), seed=self.seed, device="cpu")
        preferences = None
        if {"preferences", "unpaired"} & cls.needs:
            from harness.annotator import simulate_preferences
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
        from harness.policy import ResponseBatch
        from harness.reward import GoldRewardModel
        from harness.runner import build_context, make_algorithm
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

    def _check_determinism(self, cls: type[Algorithm]) -> str | None:
        first = self._trace(self.steps, _GLOBAL_SEEDS[0])
        second = self._trace(self.steps, _GLOBAL_SEEDS[1])
        for trace in (first, second):
            if trace.error:
                return trace.error
        advice = (f"between two runs with seed {self.seed}: randomness must come only from "
                  f"ctx.generator (or generators seeded from ctx.seed), never from the global "
                  f"generators (torch.rand, torch.randn, random, numpy.random)")
        if len(first.records) != len(second.records):
            return (f"one run stopped after {len(first.records)} steps, the other after "
                    f"{len(second.records)}, {advice}")
        for number, (a, b) in enumerate(zip(first.records, second.records, strict=True), 1):
            if not (isinstance(a, dict) and isinstance(b, dict)):
                return f"step {number}: step() returned no dict of metrics"
            if set(a) != set(b):
                return (f"step {number} reported metrics {sorted(map(str, a))} in one run and "
                        f"{sorted(map(str, b))} in the other, {advice}")
            for key in a:
                if not _same_bits(a[key], b[key]):
                    return (f"metric '{key}' at step {number} is {a[key]!r} in one run and "
                            f"{b[key]!r} in the other, {advice}")
        for which, params in first.parameters.items():
            other = second.parameters.get(which, {})
            for pname, tensor in params.items():
                twin = other.get(pname)
                if twin is None or tensor.dtype != twin.dtype or not torch.equal(tensor, twin):
                    return (f"{which} parameter '{pname}' differs after {len(first.records)} "
                            f"steps {advice}")
        return None

    def _check_finite(self, cls: type[Algorithm]) -> str | None:
        trace = self._trace(self.train_steps, _GLOBAL_SEEDS[0])
        for number, metrics in enumerate(trace.records, 1):
            if not isinstance(metrics, dict):
                return f"step {number}: step() returned {type(metrics).__name__}, not a dict"
            bad = [f"{k}={_show(v)}" for k, v in metrics.items() if not _finite(v)]
            if bad:
                return f"step {number} returned non-finite {', '.join(bad)}"
        if trace.error:
            return trace.error
        for which, params in trace.parameters.items():
            for pname, tensor in params.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return (f"{which} parameter '{pname}' holds NaN or inf after "
                            f"{len(trace.records)} steps")
        return None

    def _check_improves(self, cls: type[Algorithm]) -> str | None:
        from harness.exact import ExactProblem

        trace = self._trace(self.train_steps, _GLOBAL_SEEDS[0])
        if trace.error:
            return trace.error
        assert trace.algo is not None
        task = trace.algo.ctx.task
        try:
            exact = ExactProblem.from_task(task)
            logp = exact.policy_logprobs(trace.algo.eval_policy())
        except Exception as exc:
            return f"measuring eval_policy() {_raised(exc)}"
        beta = self.beta
        start = exact.objective(exact.ref_logp, beta)
        best = exact.optimal_objective(beta)
        reached = exact.objective(logp, beta)
        gap = best - start
        closed = (reached - start) / gap if gap > 0 else 0.0
        steps = len(trace.records)
        if not math.isfinite(reached) or not closed >= self.min_improvement:
            return (f"J_β (β = {beta:g}, exact, gold reward) went from {start:.4f} (π_ref) to "
                    f"{reached:.4f} after {steps} steps on the bandit, {closed:.1%} of the gap "
                    f"to the optimum {best:.4f}; at least {self.min_improvement:.0%} is "
                    f"required. Pass a config suited to a table of logits (e.g. a learning "
                    f"rate of 0.05-0.1), or more train_steps")
        return None

    def _check_lora(self, cls: type[Algorithm]) -> str | None:
        from harness.reward import GoldRewardModel
        from harness.runner import build_context, make_algorithm

        task = _kit_lm_task()
        preferences = None
        config = dict(self.config)
        if any(f.name == "learning_rate" for f in dataclasses.fields(cls.Config)):
            config["learning_rate"] = 1e-3
        with _global_rng(_GLOBAL_SEEDS[0]), _one_thread():
            try:
                if {"preferences", "unpaired"} & cls.needs:
                    from harness.annotator import simulate_preferences
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

    # --- running ---------------------------------------------------------------------------------

    def _check_devices(self, cls: type[Algorithm]) -> str | None:
        from harness.device_trace import stand_in_device

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
        from harness.device_trace import STAND_IN
        from harness.evaluators import EvalContext, register_evaluators
        from harness.exact import ExactProblem
        from harness.reward import GoldRewardModel
        from harness.runner import build_context, make_algorithm, precision_context

        evaluators: list[tuple[str, Any]] = []
        register_evaluators(lambda name, ev: evaluators.append((name, ev)))
        autocast = precision_context(STAND_IN, precision)
        with autocast:
            try:
                if lm:
                    task = _kit_lm_task(STAND_IN)
                    preferences = None
                    if {"preferences", "unpaired"} & cls.needs:
                        from harness.annotator import simulate_preferences
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
        """One run of a one-run suite through :func:`harness.runner.run_one` (the store, the
        memory counters, bf16 autocast, r̂ fitted on the device): what failed."""
        import tempfile
        from pathlib import Path

        import yaml

        from harness.plugins import get_plugin_host
        from harness.runner import run_one
        from harness.store import RunStore
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

    def _resolve(self) -> type[Algorithm]:
        if self._cls is not None:
            return self._cls
        algorithm = self.algorithm
        if isinstance(algorithm, str):
            from harness.plugins import get_plugin_host

            try:
                host = get_plugin_host()
            except HarnessError as exc:
                raise _Unusable(f"loading the plugins failed: {exc}") from None
            try:
                algorithm = host.algorithm(algorithm)
            except HarnessError as exc:
                failures = "".join(f"; plugin failure: {f.message}" for f in host.failures)
                raise _Unusable(f"cannot find it: {exc}{failures}") from None
        if not (isinstance(algorithm, type) and issubclass(algorithm, Algorithm)):
            raise _Unusable(f"{algorithm!r} is not a subclass of harness.algorithm.Algorithm")
        config_cls = getattr(algorithm, "Config", None)
        if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
            raise _Unusable(f"{algorithm.__name__}.Config must be a dataclass (decorate it with "
                            f"@dataclasses.dataclass), got {config_cls!r}")
        try:
            build_config(algorithm.Config, self.config, where="the config given to the kit")
        except HarnessError as exc:
            raise _Unusable(str(exc)) from None
        except Exception as exc:
            raise _Unusable(f"building its Config {_raised(exc)}") from None
        self._cls = algorithm
        return algorithm

    def _task(self, device: str = "cpu") -> Any:
        from harness.tasks.bandit import BanditParams, BanditTask

        params = build_config(BanditParams, self.task_params, where="task_params (bandit)")
        return BanditTask(params, seed=self.seed, device=device)

    def _trace(self, steps: int, global_seed: int) -> _Trace:
        key = (steps, global_seed)
        if key not in self._traces:
            self._traces[key] = self._run(steps, global_seed)
        return self._traces[key]

    def _run(self, steps: int, global_seed: int) -> _Trace:
        """A fresh run of ``steps`` steps (fewer if the algorithm finishes), global RNGs seeded
        with ``global_seed`` and restored afterwards."""
        self._resolve()
        trace = _Trace()
        with _global_rng(global_seed), _one_thread():
            try:
                algo = self.build()
            except Exception as exc:
                trace.error = f"building it {_raised(exc)}"
                return trace
            context = algo.ctx
            trace.algo = algo
            for number in range(1, steps + 1):
                try:
                    trace.records.append(algo.step())
                except Exception as exc:
                    trace.error = f"step {number} {_raised(exc)}"
                    break
                if algo.finished:
                    break
            meter = context.meter
            trace.spent = {
                "samples": float(meter.samples),
                "tokens": float(meter.tokens_generated + meter.tokens_trained),
                "flops": float(meter.flops),
                "seconds": meter.wall_seconds - meter.seconds["eval"],
            }
            policies = {"policy": context.policy}
            try:
                evaluated = algo.eval_policy()
            except Exception as exc:
                trace.error = trace.error or f"eval_policy() {_raised(exc)}"
                evaluated = context.policy
            if evaluated is not context.policy:
                policies["eval_policy"] = evaluated
            try:
                trace.parameters = {
                    which: {k: v.detach().cpu().clone() for k, v in p.state_dict().items()}
                    for which, p in policies.items()
                }
                reference = context.reference.state_dict()
                trace.trains = any(
                    name not in reference or not torch.equal(value, reference[name].cpu())
                    for name, value in trace.parameters["policy"].items()
                )
            except Exception as exc:
                trace.error = trace.error or f"reading the policies' parameters {_raised(exc)}"
        return trace

    def _simulated_preferences(self, task: Any) -> Any:
        if self._preferences is None:
            from harness.annotator import simulate_preferences
            from harness.preference import BradleyTerry

            self._preferences = simulate_preferences(
                task, BradleyTerry(1.0), num_pairs=self.num_pairs, seed=self.seed
            )
        return self._preferences


def _kit_lm_task(device: str = "cpu") -> Any:
    """The ``lora`` check's task (its class defined on first use: it imports transformers), on
    ``device``."""
    from harness.lm import build_causal_lm
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


class _Unusable(Exception):
    """The algorithm cannot be checked at all (not found, not an Algorithm, a bad config)."""


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


def bandit_algorithm(
    algorithm: str | type[Algorithm],
    config: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Algorithm:
    """A fresh instance of ``algorithm``, set up as the conformance checks set it up (see
    :meth:`Conformance.build`), for an author's own tests::

        algo = bandit_algorithm("my-algo", {"learning_rate": 0.1})
        metrics = algo.step()

    ``settings`` as for :class:`Conformance` (``seed``, ``task_params``, ``num_pairs``).
    """
    return Conformance(algorithm, config, **settings).build()


def check_conformance(
    algorithm: str | type[Algorithm],
    config: Mapping[str, Any] | None = None,
    *,
    checks: Collection[str] | None = None,
    **settings: Any,
) -> None:
    """Run the conformance checks (default: all of :data:`CHECKS`) on ``algorithm``.

    Raises :class:`ConformanceError` with one line per failed check. ``settings`` are the
    keyword arguments of :class:`Conformance` (``seed``, ``steps``, ``train_steps``, ``beta``,
    ``min_improvement``, ``task_params``, ``num_pairs``, ``metrics``).
    """
    __tracebackhide__ = True
    Conformance(algorithm, config, **settings).check_all(checks)


def conformance_tests(
    algorithm: str | type[Algorithm],
    config: Mapping[str, Any] | None = None,
    *,
    checks: Collection[str] | None = None,
    **settings: Any,
) -> Callable[[str], None]:
    """A pytest test function running each conformance check as its own test.

    Assign it to a ``test_*`` name in a test module::

        test_conformance = conformance_tests("my-algo", config={"learning_rate": 0.1})

    and pytest collects ``test_conformance[config]``, ``test_conformance[metrics]``, ... The
    checks share their runs, so the set costs about three short runs of the algorithm. Arguments
    as :func:`check_conformance`; nothing runs until the tests do.
    """
    import pytest

    kit = Conformance(algorithm, config, **settings)
    selected = tuple(CHECKS if checks is None else checks)
    unknown = [c for c in selected if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown conformance check(s) {unknown}; checks: {', '.join(CHECKS)}")

    @pytest.mark.parametrize("check", selected)
    def test_conformance(check: str) -> None:
        __tracebackhide__ = True
        try:
            kit.check(check)
        except ConformanceError as exc:
            pytest.fail(str(exc), pytrace=False)

    test_conformance.kit = kit  # type: ignore[attr-defined]
    return test_conformance


# --- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """Seed torch's, ``random``'s and numpy's global generators; restore them afterwards."""
    import numpy as np

    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread, as the runner uses for tabular tasks on the CPU (tiny tensors)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _raised(exc: BaseException) -> str:
    """``raised Type: message (at file:line)``, the innermost frame (the device tracer's own
    frames skipped: the op's line is what matters), on one line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.endswith("device_trace.py")]
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"raised {type(exc).__name__}: {exc}{where}"


def _probes(hint: Any) -> tuple[Any, ...]:
    """:data:`SETTING_PROBES` for a field annotated ``hint`` (``int``, ``float``, or one of them
    or ``None``); nothing for other fields, whose values may depend on the task."""
    import types
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Annotated:
        return _probes(args[0])
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and members[0] in SETTING_PROBES and len(args) == 2:
            return (*SETTING_PROBES[members[0]], None)
        return ()
    return SETTING_PROBES.get(hint, ())


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _show(value: Any) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return repr(value)


def _same_bits(a: Any, b: Any) -> bool:
    """Bit-identical floats (NaN equals a NaN of the same bits); other values with ``==``."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return struct.pack("<d", float(a)) == struct.pack("<d", float(b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False
