"""``rlhf-harness new-plugin NAME [--offline]``: a ready-to-install algorithm plugin package.

NAME is what suites and ``rlhf-harness plugins`` call the algorithm, e.g. ``my-algo``; the
distribution is ``rlhf-harness-my-algo`` and the module ``rlhf_harness_my_algo`` (hyphens in the
distribution, underscores in the module). :func:`new_plugin` writes ``DIR/rlhf-harness-NAME/``::

    pyproject.toml            the distribution, with the entry point NAME in group rlhf_harness
    rlhf_harness_MODULE.py    the plugin: a documented Config, a working algorithm, the hook
    tests/test_MODULE.py      the conformance kit (harness.testing) on it, and its discovery
    README.md                 how to install, test and run it

The online algorithm (the default) is a plain policy gradient (REINFORCE with the batch's mean
reward as baseline and a KL penalty to π_ref in the reward); the offline one (``--offline``)
learns from the suite's preference pairs with DPO's logistic loss on the policy's log-ratio
margin. Each is small enough to read in a minute and replace, and passes the conformance kit as
written. Nothing else is touched: an existing folder is never overwritten.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from harness.errors import ConfigError

__all__ = [
    "NAME_RE", "check_name", "distribution_name", "module_name", "new_plugin", "plugin_files",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
"""A plugin name: lower-case letters and digits, words joined by single ``-`` or ``_``, starting
with a letter (``my-algo``, ``my_algo``, ``simpo2``). It names the algorithm and the entry point
as written; the module and the class are derived from it."""


def check_name(name: str) -> None:
    """Raise :class:`~harness.errors.ConfigError` unless ``name`` is a valid plugin name."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"invalid plugin name {name!r}: use lower-case letters and digits, words joined by "
            f"single '-' or '_', starting with a letter (e.g. 'my-algo')"
        )


def module_name(name: str) -> str:
    """The Python module of plugin ``name``: ``my-algo`` → ``rlhf_harness_my_algo``."""
    return f"rlhf_harness_{name.replace('-', '_')}"


def distribution_name(name: str) -> str:
    """The distribution (pip) name of plugin ``name``: ``my_algo`` → ``rlhf-harness-my-algo``."""
    return f"rlhf-harness-{name.replace('_', '-')}"


def plugin_files(name: str, *, offline: bool = False) -> dict[str, str]:
    """The files of plugin ``name``: ``{relative path: text}``.

    :param offline: an offline algorithm (it learns from preference pairs, ``needs =
        {"preferences"}``) instead of an online one (it samples and is scored by r̂).
    """
    check_name(name)
    module = module_name(name)
    stem = module.removeprefix("rlhf_harness_")
    values = {
        "__NAME__": name,
        "__MODULE__": module,
        "__STEM__": stem,
        "__DIST__": distribution_name(name),
        "__CLASS__": "".join(part.capitalize() for part in re.split(r"[-_]", name)),
    }

    def fill(template: str) -> str:
        for key, value in values.items():
            template = template.replace(key, value)
        return template

    return {
        "pyproject.toml": fill(_PYPROJECT),
        f"{module}.py": fill(_OFFLINE_MODULE if offline else _MODULE),
        f"tests/test_{stem}.py": fill(_TESTS),
        "README.md": fill(_README),
    }


def new_plugin(
    name: str, parent: str | Path = ".", *, offline: bool = False, check_registered: bool = True
) -> Path:
    """Write plugin ``name``'s package into ``parent/rlhf-harness-NAME``; return that folder.

    :param offline: scaffold an offline algorithm (see :func:`plugin_files`).
    :param check_registered: refuse a name that an installed plugin already registers as an
        algorithm (loading the plugins imports torch; tests of the scaffold turn it off).
    :raises ConfigError: an invalid name, a taken name, or a folder that exists already.
    """
    check_name(name)
    folder = Path(parent) / distribution_name(name)
    if folder.exists():
        raise ConfigError(f"{folder} already exists: not overwriting it (choose another --dir)")
    if check_registered:
        from harness.engine.plugins import get_plugin_host

        host = get_plugin_host()
        if name in host.names("algorithm"):
            owner = host.registration("algorithm", name).plugin.describe()
            raise ConfigError(
                f"an algorithm named '{name}' is already registered by {owner}: choose another "
                f"name (two plugins registering one name stop the harness from loading)"
            )
    files = plugin_files(name, offline=offline)
    folder.mkdir(parents=True)
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


# --- templates: __NAME__, __MODULE__, __STEM__, __DIST__, __CLASS__ are filled in ---------------

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "The __NAME__ algorithm, as an rlhf-harness plugin."
requires-python = ">=3.10"
dependencies = ["rlhf-harness"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The harness discovers the plugin through this entry point: name = "module".
[project.entry-points.rlhf_harness]
__NAME__ = "__MODULE__"

[tool.setuptools]
py-modules = ["__MODULE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

_MODULE = '''\
"""The __NAME__ algorithm, an rlhf-harness plugin.

As generated by ``rlhf-harness new-plugin``, a plain policy gradient (REINFORCE, Williams 1992)
on the KL-shaped reward of RLHF, R(x, y) = r̂(x, y) − β · (log π_θ(y|x) − log π_ref(y|x)), with
the batch's mean R as baseline: one step samples one response for each of B prompts (drawn in
shuffled passes over the train prompts) and takes one optimiser step on
L(θ) = −mean_i (R_i − mean R) · log π_θ(y_i|x_i). Replace it with yours.

Metrics: the shared ``loss``, ``grad_norm``, ``kl_ref`` (mean log π_θ(y|x) − log π_ref(y|x)),
``entropy``, ``response_length`` and ``reward`` (mean r̂).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from harness import hookimpl, rl
from harness.algorithm import Algorithm, RunContext, ShuffledPasses
from harness.hookspecs import Register
from harness.pieces import (
    log_uniform,
    make_optimizer,
    need,
    require_reward_model,
    standard_space,
    trainable_parameters,
)


@dataclass
class Config:
    """__CLASS__ hyperparameters: every field has a default and a docstring."""

    learning_rate: float = 1e-5
    """Step size (a table of logits, as in the bandit task, learns at 0.05-0.1)."""
    optimizer: str = "adam"
    """"adam", "sgd" or "rmsprop" (see harness.pieces.make_optimizer)."""
    batch_size: int = 64
    """Prompts per step, in shuffled passes over the train prompts; one response for each."""
    kl_coef: float = 0.05
    """β, the weight of the KL penalty in the shaped reward."""

    def __post_init__(self) -> None:
        # Checks of values belong here: `rlhf-harness validate` reports them with their line.
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")


class __CLASS__(Algorithm):
    """The __NAME__ algorithm (see the module docstring)."""

    name = "__NAME__"
    Config = Config
    needs = frozenset({"reward"})  # "reward": online, scored by r̂; "preferences": offline
    suggested: ClassVar[dict[str, dict[str, Any]]] = {"tabular": {"learning_rate": 0.1}}
    """Settings that learn on a table of logits (the bandit); `rlhf-harness show` prints them."""

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The learning rate for ``policy_kind`` (harness.pieces.standard_space) and β."""
        return standard_space(policy_kind, kl_coef=log_uniform(0.01, 1.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.reward_model = require_reward_model(context, self.name)
        self.policy = context.policy
        self.prompts = context.task.train_prompts.to(context.device)
        self.params = trainable_parameters(self.policy)
        self.optimizer = make_optimizer(self.params, config.optimizer, config.learning_rate)
        # Prompts in shuffled passes, drawn from ctx.generator: the same seed gives the same run.
        self.rows = ShuffledPasses(len(self.prompts), context.generator, context.device)

    def step(self) -> dict[str, float]:
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g = ctx.generator  # all randomness from here: the same seed gives the same run
        prompts = self.prompts.select(self.rows.take(cfg.batch_size))
        with meter.phase("generate"), torch.no_grad():
            responses = self.policy.sample(
                prompts, max_new_tokens=ctx.task.max_new_tokens, generator=g
            )
        tokens = int(responses.mask.sum())
        meter.generated(self.policy, len(prompts), tokens)

        with meter.phase("score"), torch.no_grad():
            reward = self.reward_model(prompts, responses).float()
            ref_logp = ctx.reference.sequence_logprobs(prompts, responses)
        meter.forward(self.reward_model, tokens)
        meter.forward(ctx.reference, tokens)

        with meter.phase("train"):
            token_logp, entropy = self.policy.token_logprobs_and_entropy(prompts, responses)
            logp = token_logp.sum(-1)
            kl = logp.detach() - ref_logp
            shaped = reward - cfg.kl_coef * kl
            loss = -((shaped - shaped.mean()) * logp).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, None)  # measured, not clipped
            self.optimizer.step()
        meter.train(self.policy, tokens)

        assert entropy is not None
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "kl_ref": float(kl.mean()),
            "entropy": float(rl.masked_mean(entropy, responses.mask)),
            "response_length": float(responses.mask.sum(-1).float().mean()),
            "reward": float(reward.mean()),
        }


@hookimpl
def register_algorithms(register: Register) -> None:
    register(__CLASS__.name, __CLASS__)
'''

_OFFLINE_MODULE = '''\
"""The __NAME__ algorithm, an rlhf-harness plugin (offline: it learns from preference pairs).

As generated by ``rlhf-harness new-plugin --offline``, DPO's loss (Rafailov et al. 2023): for a
minibatch of the suite's pairs (x, y⁺, y⁻), with h = β · (log π_θ(y⁺|x) − log π_ref(y⁺|x)
− log π_θ(y⁻|x) + log π_ref(y⁻|x)), one optimiser step on L(θ) = −mean log σ(h). The reference
log-probs do not change, so each pair's are computed once, the first time a minibatch holds it
(harness.algorithm.LazyRows). Replace it with yours.

Metrics: the shared ``loss``, ``grad_norm``, ``entropy`` (per token, over both responses),
``response_length``, ``logp_chosen`` and ``logp_rejected`` (mean sequence log-probs Σ_t under
π_θ, before the step's update) and ``reward_accuracy`` (fraction of pairs with h > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from harness import hookimpl, rl
from harness.algorithm import Algorithm, LazyRows, RunContext, ShuffledPasses
from harness.hookspecs import Register
from harness.pieces import (
    log_uniform,
    make_optimizer,
    need,
    require_preferences,
    standard_space,
    trainable_parameters,
)
from harness.policy import PromptBatch, ResponseBatch


@dataclass
class Config:
    """__CLASS__ hyperparameters: every field has a default and a docstring."""

    learning_rate: float = 1e-6
    """Step size (a table of logits, as in the bandit task, learns at 0.05-0.1)."""
    optimizer: str = "adam"
    """"adam", "sgd" or "rmsprop" (see harness.pieces.make_optimizer)."""
    batch_size: int = 64
    """Preference pairs per step, in shuffled passes over the data."""
    beta: float = 0.1
    """β, the scale of the log-ratio margin (the strength of the pull towards π_ref)."""

    def __post_init__(self) -> None:
        # Checks of values belong here: `rlhf-harness validate` reports them with their line.
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.beta > 0, f"beta must be > 0, got {self.beta}")


class __CLASS__(Algorithm):
    """The __NAME__ algorithm (see the module docstring)."""

    name = "__NAME__"
    Config = Config
    needs = frozenset({"preferences"})  # offline: ctx.preferences holds the suite's pairs
    suggested: ClassVar[dict[str, dict[str, Any]]] = {"tabular": {"learning_rate": 0.05}}
    """Settings that learn on a table of logits (the bandit); `rlhf-harness show` prints them."""

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The learning rate for ``policy_kind`` (harness.pieces.standard_space) and β."""
        return standard_space(policy_kind, beta=log_uniform(0.02, 2.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        self.data = require_preferences(context, self.name)  # on the run's device
        self.policy = context.policy
        self.params = trainable_parameters(self.policy)
        self.optimizer = make_optimizer(self.params, config.optimizer, config.learning_rate)
        # log π_ref(y⁺|x), log π_ref(y⁻|x) of a pair, computed the first time a batch holds it
        self.ref = LazyRows.reference(self.data, context)
        self.rows = ShuffledPasses(len(self.data), context.generator, context.device)

    def step(self) -> dict[str, float]:
        cfg, meter = self.config, self.ctx.meter
        rows = self.rows.take(cfg.batch_size)  # randomness from ctx.generator only
        batch = self.data.select(rows)
        ref_chosen, ref_rejected = self.ref(rows)
        n = len(batch)
        with meter.phase("train"):
            # One forward over chosen and rejected: the prompt repeats, so it is computed once.
            prompts = PromptBatch.cat([batch.prompts, batch.prompts])
            responses = ResponseBatch.cat([batch.chosen, batch.rejected])
            token_logp, entropy = self.policy.token_logprobs_and_entropy(prompts, responses)
            logp = token_logp.sum(-1)
            ratio = logp - torch.cat([ref_chosen, ref_rejected])
            h = cfg.beta * (ratio[:n] - ratio[n:])
            loss = -F.logsigmoid(h).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = rl.clip_grad_norm(self.params, None)  # measured, not clipped
            self.optimizer.step()
        meter.train(self.policy, int(responses.mask.sum()))
        meter.samples += n  # offline: the pairs read count as the budget's samples

        assert entropy is not None
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "entropy": float(rl.masked_mean(entropy, responses.mask)),
            "response_length": float(responses.mask.sum(-1).float().mean()),
            "logp_chosen": float(logp[:n].detach().mean()),
            "logp_rejected": float(logp[n:].detach().mean()),
            "reward_accuracy": float((h > 0).float().mean()),
        }


@hookimpl
def register_algorithms(register: Register) -> None:
    register(__CLASS__.name, __CLASS__)
'''

_TESTS = '''\
"""Tests of the __NAME__ plugin: rlhf-harness's conformance kit, and discovery once installed."""

from __future__ import annotations

from harness.engine.plugins import get_plugin_host
from harness.testing import conformance_tests

from __MODULE__ import __CLASS__

# The checks run on the bandit task, a table of logits: it wants a larger step than an LM, the
# settings the algorithm suggests for tabular policies.
TABULAR = __CLASS__.suggested["tabular"]

# One test per check: config, metrics, vocabulary, accounting, determinism, finite, improves,
# devices, lora.
test_conformance = conformance_tests(__CLASS__, config=TABULAR)


def test_the_harness_discovers_it_through_its_entry_point():
    """Fails until the package is installed (pip install -e .)."""
    assert get_plugin_host().algorithm("__NAME__") is __CLASS__
'''

_README = """\
# __DIST__

The `__NAME__` algorithm as an rlhf-harness plugin, generated by `rlhf-harness new-plugin
__NAME__`. The algorithm is in `__MODULE__.py`: replace
`__CLASS__.step` (and `Config`) with yours.

```sh
pip install -e .                 # into the environment that has rlhf-harness
rlhf-harness plugins             # lists __NAME__ (__DIST__ 0.1.0)
pytest                           # the conformance kit, and discovery through the entry point
```

`rlhf-harness show __NAME__` prints its settings, their defaults and documentation. Then add it
to a suite file (`algorithms: [{name: __NAME__, config: {...}}]`), run it with
`rlhf-harness run SUITE.yaml` and read `rlhf-harness report runs/SUITE_NAME`. See rlhf-harness's
`docs/writing-a-plugin.md` for a walk-through and `docs/hooks.md` for every extension point.
"""
