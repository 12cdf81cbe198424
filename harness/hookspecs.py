"""Extension points of rlhf-harness: the plugin author's reference.

A plugin is a Python module (or a module-level object) that implements one or more of the hooks
below, each marked with :data:`hookimpl`, and that is announced to the harness by an entry point
in the group ``rlhf_harness``::

    # pyproject.toml of your plugin distribution
    [project.entry-points.rlhf_harness]
    my_algo = "my_algo_package.plugin"      # a module, not a class

    # my_algo_package/plugin.py
    from harness import hookimpl

    @hookimpl
    def register_algorithms(register):
        register("my-algo", MyAlgorithm)

Every hook here is a *registration* hook: it receives a ``register`` callback and calls it once
per thing it provides, ``register(name, obj)``. Plugins never return lists. The harness owns the
names: it records which plugin registered what (``rlhf-harness plugins`` lists it), rejects two
plugins registering one name (naming both), and answers an unknown name with the available ones.

Names are lower-case identifiers (letters, digits, ``-``, ``_``, ``.``), as users write them in
suite files. The core's own preference models, tasks and evaluators are registered through these
same hooks, by the modules listed in :data:`harness.engine.plugins.CORE_PLUGINS`.

Set ``RLHF_HARNESS_PLUGINS=a,b`` to load only the entry points named ``a`` and ``b``
(``RLHF_HARNESS_PLUGINS=`` with an empty value loads none besides the core).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "rlhf_harness"
"""The pluggy project name, and the entry-point group plugins are discovered through."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[str, Any], None]
"""The callback a registration hook receives: ``register(name, obj)``."""


# --- what can be run -----------------------------------------------------------------------------


@hookspec
def register_algorithms(register: Register) -> None:
    """Register policy-optimisation algorithms.

    :param register: call ``register(name, cls)`` for each algorithm. ``cls`` is a subclass of
        :class:`harness.algorithm.Algorithm`: it has a nested ``Config`` dataclass whose fields are
        the algorithm's hyperparameters (each documented, defaults citing their source), declares
        what it ``needs`` (``"preferences"`` for offline methods, ``"reward"`` for online ones;
        ``"unpaired"`` for methods that learn from single responses marked desirable or not,
        ``"label_noise"`` for methods that need the data's known label-flip rate: see
        :data:`harness.algorithm.NEEDS`; ``rlhf-harness validate`` refuses a suite that
        cannot feed them), and implements ``step() -> dict[str, float]``. The runner owns the
        loop, the budget, evaluation, compute accounting and failure capture. Optionally it
        declares ``suggested`` settings per policy kind (``{"tabular": {...}, "neural": {...}}``:
        what works on the built-in tasks, where the paper's defaults may train nothing) and the
        meaning of each of its own ``metrics``; ``rlhf-harness show NAME`` prints both, with
        every ``Config`` field. Checks of config values go in ``Config.__post_init__``
        (``rlhf-harness validate`` reports them with the suite file's line).
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks: prompts, a reference policy π_ref and a gold reward r*(x, y).

    :param register: call ``register(name, cls)`` for each task. ``cls`` is a subclass of
        :class:`harness.tasks.Task` built from a parameter dataclass ``cls.Params``.
    """


@hookspec
def register_gold_rewards(register: Register) -> None:
    """Register gold rewards r*(x, y) on text, for tasks that take one by name (e.g. ``hf``).

    :param register: call ``register(name, cls)`` for each gold reward. ``cls`` is a subclass of
        :class:`harness.gold.GoldReward`, constructed with keyword parameters from the suite file;
        its ``score(prompts, responses)`` takes lists of strings and returns a float tensor.
    """


# --- how preferences and rewards are modelled ----------------------------------------------------


@hookspec
def register_preference_models(register: Register) -> None:
    """Register preference models: P(a ≻ b) as a function of the rewards r_a, r_b.

    Used twice in a suite: by the simulated annotator, to label response pairs from the gold reward,
    and by reward learning, as the likelihood the reward model is fitted with (the two may differ).

    :param register: call ``register(name, cls)`` for each model. ``cls`` is a subclass of
        :class:`harness.preference.PreferenceModel`, constructed as ``cls(scale=...)``.
    """


# --- what is measured ----------------------------------------------------------------------------


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators: metrics computed on the policy every k steps of a run.

    :param register: call ``register(name, cls)`` for each evaluator. ``cls`` is a subclass of
        :class:`harness.evaluators.Evaluator`; its ``evaluate(context)`` returns metric values
        under the names of the shared vocabulary (``gold_reward``, ``kl_ref``, ...).
    """
