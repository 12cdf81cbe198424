"""The kit's entry points: :class:`Conformance` (the checks of one algorithm with one config,
sharing runs between checks, built from the check groups of the sibling modules),
:func:`bandit_algorithm`, :func:`check_conformance` and :func:`conformance_tests`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch

from harness.algorithm import Algorithm
from harness.config import build_config
from harness.errors import HarnessError
from harness.testing.common import (
    CHECKS,
    DEFAULT_TASK_PARAMS,
    ConformanceError,
    _global_rng,
    _one_thread,
    _raised,
    _Trace,
    _Unusable,
)
from harness.testing.config_checks import ConfigChecks
from harness.testing.device_checks import DeviceChecks
from harness.testing.metric_checks import MetricChecks
from harness.testing.training_checks import TrainingChecks


class Conformance(ConfigChecks, MetricChecks, TrainingChecks, DeviceChecks):
    """The conformance checks of one algorithm with one config; runs are shared between checks.

    :param algorithm: a registered algorithm's name (looked up with
        :func:`harness.engine.plugins.get_plugin_host`, i.e. through the entry points of installed
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
        from harness.engine.runner import build_context, make_algorithm
        from harness.reward import GoldRewardModel

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

    def _resolve(self) -> type[Algorithm]:
        if self._cls is not None:
            return self._cls
        algorithm = self.algorithm
        if isinstance(algorithm, str):
            from harness.engine.plugins import get_plugin_host

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
            from harness.engine.annotator import simulate_preferences
            from harness.preference import BradleyTerry

            self._preferences = simulate_preferences(
                task, BradleyTerry(1.0), num_pairs=self.num_pairs, seed=self.seed
            )
        return self._preferences


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
