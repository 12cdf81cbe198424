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
    With the task on a GPU — a stand-in on the CPU
    (:func:`harness.models.device_trace.stand_in_device`)
    — building the algorithm, two steps, and every built-in evaluator on its ``eval_policy()``
    keep the run's tensors on that device: an op that combines a tensor on the device with one
    on the CPU (a ``.cpu()`` result, a tensor made without ``device=``, an index on the other
    side of a ``gather``), or a draw from a device generator into a CPU tensor, fails the check,
    naming the line, as it would fail on a GPU. So do the policy options: on the ``bandit``
    task with ``offload_frozen``, and on the ``lora`` check's language model under bf16
    autocast with ``offload_frozen``, and with ``lora`` and ``activation_checkpointing`` (unless
    the algorithm declares ``supports_lora = False``). An algorithm checked by its registered
    name also runs once through :func:`harness.engine.runner.run_one` on the device (bf16, a fitted
    r̂, ``offload_frozen``), and must end ``done``.
``lora``
    With a LoRA policy (a suite's ``policy.lora``, :mod:`harness.models.lora`) on a tiny untrained
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
prompts × 8 arms, r* ~ N(0, 1), a softmax π_ref), the context
:func:`harness.engine.runner.build_context`
builds, with the gold reward as r̂ (:class:`harness.reward.GoldRewardModel`) for algorithms that
need ``"reward"`` and ``num_pairs`` preference pairs simulated from the gold reward
(:func:`harness.engine.annotator.simulate_preferences`, Bradley-Terry at scale 1, no flipped labels:
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

The kit is a package, its modules grouped by what the checks check:
:mod:`~harness.testing.config_checks` (``config``), :mod:`~harness.testing.metric_checks`
(``metrics``, ``vocabulary``, ``accounting``), :mod:`~harness.testing.training_checks`
(``determinism``, ``finite``, ``improves``), :mod:`~harness.testing.device_checks` (``devices``,
``lora``), what they share in :mod:`~harness.testing.common`, and the entry points in
:mod:`~harness.testing.kit`. Import from ``harness.testing``: every public name is here.
"""

from __future__ import annotations

from harness.testing.common import (
    CHECKS,
    DEFAULT_TASK_PARAMS,
    OPTIONAL_METRICS,
    RESERVED_METRICS,
    ConformanceError,
    field_docstrings,
    required_metrics,
)
from harness.testing.common import ONLINE_METRICS as ONLINE_METRICS
from harness.testing.common import TRAINING_METRICS as TRAINING_METRICS
from harness.testing.config_checks import SETTING_PROBES
from harness.testing.device_checks import LM_SMALL as LM_SMALL
from harness.testing.device_checks import LORA_SETTINGS as LORA_SETTINGS
from harness.testing.device_checks import LORA_STEPS as LORA_STEPS
from harness.testing.device_checks import _kit_lm_task as _kit_lm_task
from harness.testing.kit import Conformance, bandit_algorithm, check_conformance, conformance_tests
from harness.testing.metric_checks import CONSTANT_REWARD as CONSTANT_REWARD

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
