"""The conformance kit (harness.testing) and its pytest plugin (harness.testing_plugin).

The built-in algorithms pass it with configs suited to a table of logits; deliberately broken
algorithms, defined here, fail exactly the check they break, with one line naming the algorithm
and the check. Every check runs on a 4 × 8 bandit: a kit costs about a second.
"""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import rl
from harness.algorithm import Algorithm, RunContext
from harness.testing import (
    CHECKS,
    Conformance,
    ConformanceError,
    bandit_algorithm,
    check_conformance,
    conformance_tests,
    field_docstrings,
    required_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example-plugin"
TIMEOUT_S = 120


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text(encoding="utf-8"))

# Configs for the bandit (a table of logits learns at 0.05, where an LM wants 1e-6); otherwise
# the plugins' documented defaults.
TABULAR = {
    "ppo": {"learning_rate": 0.05, "rollout_batch_size": 64, "num_ppo_epochs": 2},
    "grpo": {"learning_rate": 0.05, "prompts_per_step": 4, "num_generations": 8},
    "dpo": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
    "simpo": {"learning_rate": 0.05, "gamma": 0.0},
    "orpo": {"learning_rate": 0.05},
    "kto": {"learning_rate": 0.05},
    "rdpo": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
    "cdpo": {"learning_rate": 0.05, "optimizer": "adam", "warmup_steps": 0},
    "online-dpo": {"learning_rate": 0.05, "label": "btl"},
    "reinforce-pp": {"learning_rate": 0.05, "beta": 0.1},
    "gspo": {"learning_rate": 0.05, "prompts_per_step": 4},
}


@pytest.mark.parametrize("name", sorted(TABULAR))
def test_the_built_in_algorithms_conform(name):
    check_conformance(name, TABULAR[name])


def test_their_lm_defaults_do_not_improve_a_table_in_50_steps():
    failures = Conformance("dpo").failures()
    assert set(failures) == {"improves"}
    message = str(failures["improves"])
    assert message.startswith(
        "rlhf-harness conformance: algorithm 'dpo' fails check 'improves': J_β (β = 0.1"
    )
    assert "learning rate" in message and "\n" not in message


# --- a small working algorithm, and broken variants of it ----------------------------------------


@dataclass
class GoodConfig:
    """Settings of a minimal policy gradient."""

    learning_rate: float = 0.1
    """Adam step size (for a table of logits)."""
    batch_size: int = 32
    """Responses sampled per step."""

    def __post_init__(self) -> None:
        if not self.learning_rate >= 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class Good(Algorithm):
    """REINFORCE with the batch mean as baseline; the broken variants override one piece."""

    name = "good"
    Config = GoodConfig
    needs = frozenset({"reward"})

    def __init__(self, config: GoodConfig, context: RunContext) -> None:
        super().__init__(config, context)
        self.prompts = context.task.train_prompts
        self.optimizer = torch.optim.Adam(context.policy.parameters(), lr=config.learning_rate)
        self.calls = 0

    def rows(self) -> torch.Tensor:
        g = self.ctx.generator
        return torch.randint(len(self.prompts), (self.config.batch_size,), generator=g,
                             device=g.device)

    def score(self, prompts, responses) -> torch.Tensor:
        return self.ctx.reward_model(prompts, responses)

    def count(self, samples: int, tokens: int) -> None:
        self.ctx.meter.generated(self.ctx.policy, samples, tokens)
        self.ctx.meter.train(self.ctx.policy, tokens)

    def step(self) -> dict[str, float]:
        self.calls += 1
        ctx = self.ctx
        prompts = self.prompts.select(self.rows())
        with ctx.meter.phase("train"):
            responses = ctx.policy.sample(prompts, max_new_tokens=1, generator=ctx.generator)
            reward = self.score(prompts, responses)
            logp, entropy = ctx.policy.token_logprobs_and_entropy(prompts, responses)
            logp = logp.sum(-1)
            kl = logp.detach() - ctx.reference.sequence_logprobs(prompts, responses)
            shaped = reward - 0.1 * kl
            loss = -((shaped - shaped.mean()) * logp).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.count(len(prompts), int(responses.mask.sum()))
        return {
            "loss": float(loss.detach()),
            "reward": float(reward.mean()),
            "kl_ref": float(kl.mean()),
            "entropy": float(rl.masked_mean(entropy, responses.mask)),
            "response_length": 1.0,
        }


class NaNMetric(Good):
    name = "broken-nan"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        if self.calls == 3:
            metrics["loss"] = math.nan
        return metrics


class GlobalRNG(Good):
    name = "broken-global-rng"

    def rows(self) -> torch.Tensor:
        return torch.randint(len(self.prompts), (self.config.batch_size,))  # no generator


class MissingLoss(Good):
    name = "broken-no-loss"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        del metrics["loss"]
        return metrics


class TensorMetric(Good):
    name = "broken-tensor"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        metrics["loss"] = torch.tensor(metrics["loss"])  # type: ignore[assignment]
        return metrics


class Misspelt(Good):
    name = "broken-spelling"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        metrics["KL_ref"] = metrics.pop("kl_ref")
        return metrics


class EntropyInBits(Good):
    name = "broken-entropy-bits"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        metrics["entropy"] /= math.log(2)  # the shared name is in nats
        return metrics


class CentredReward(Good):
    name = "broken-centred-reward"

    def step(self) -> dict[str, float]:
        metrics = super().step()
        metrics["reward"] -= metrics["reward"]  # the shared name is the mean r̂ itself
        return metrics


class Uncounted(Good):
    name = "broken-uncounted"

    def count(self, samples: int, tokens: int) -> None:
        pass


class HostReward(Good):
    name = "broken-host-reward"

    def score(self, prompts, responses) -> torch.Tensor:
        return super().score(prompts, responses).cpu()  # then combined with device tensors


class ChecksInInit(Good):
    """Checks a setting where validate does not see it: in __init__, not Config.__post_init__."""

    name = "broken-checks-in-init"

    def __init__(self, config: GoodConfig, context: RunContext) -> None:
        if config.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {config.batch_size}")
        super().__init__(config, context)


class Raises(Good):
    name = "broken-raises"

    def step(self) -> dict[str, float]:
        if self.calls == 1:
            raise RuntimeError("the second step breaks")
        return super().step()


@dataclass
class UndocumentedConfig(GoodConfig):
    """Inherits documented fields and adds one without a docstring."""

    clip: float = 1.0


class Undocumented(Good):
    name = "broken-undocumented"
    Config = UndocumentedConfig


@dataclass
class NoDefaultConfig:
    """A field without a default."""

    learning_rate: float
    """Adam step size."""
    batch_size: int = 32
    """Responses sampled per step."""


class NoDefault(Good):
    name = "broken-no-default"
    Config = NoDefaultConfig


class PlainConfig:
    learning_rate = 0.1


class NotADataclass(Good):
    name = "broken-plain-config"
    Config = PlainConfig


def test_the_small_algorithm_conforms():
    Conformance(Good).check_all()


BROKEN = [
    # (algorithm, config, the check it fails, a fragment of the message)
    (NaNMetric, None, "finite", "step 3 returned non-finite loss=nan"),
    (GlobalRNG, None, "determinism", "never from the global generators"),
    (MissingLoss, None, "metrics", "step 1: step() did not report 'loss'"),
    (TensorMetric, None, "metrics", "metric 'loss' is a torch.Tensor, not a float"),
    (Misspelt, None, "metrics", "metric 'KL_ref' must be spelt 'kl_ref'"),
    (Uncounted, None, "accounting", "ctx.meter counted no samples, tokens, flops"),
    (EntropyInBits, None, "vocabulary", "metric 'entropy' is "),
    (CentredReward, None, "vocabulary", "metric 'reward' is 0 where the shared name means"),
    (Undocumented, None, "config", "Config field(s) 'clip' have no docstring"),
    (ChecksInInit, None, "config", "Config accepts batch_size=1 (rlhf-harness validate says ok) "
     "but building the algorithm with it raised ValueError: batch_size must be >= 2, got 1"),
    (NoDefault, {"learning_rate": 0.1}, "config", "'learning_rate' have no default"),
    (Good, {"learning_rate": 0.0}, "improves", "0.0% of the gap"),
    (HostReward, None, "devices", "step 1 on a device raised DeviceMixError: "),
]


@pytest.mark.parametrize(
    ("algorithm", "config", "check", "fragment"), BROKEN, ids=[b[0].name for b in BROKEN]
)
def test_a_broken_algorithm_fails_its_check_with_one_clear_line(algorithm, config, check,
                                                               fragment):
    failures = Conformance(algorithm, config).failures()
    assert set(failures) == {check}, failures
    error = failures[check]
    message = str(error)
    assert message.startswith(
        f"rlhf-harness conformance: algorithm '{algorithm.name}' fails check '{check}': "
    )
    assert fragment in message
    assert "\n" not in message
    assert (error.algorithm, error.check) == (algorithm.name, check)


def test_a_config_that_is_no_dataclass_fails_every_check():
    failures = Conformance(NotADataclass).failures()
    assert set(failures) == set(CHECKS)
    assert all("NotADataclass.Config must be a dataclass" in str(e) for e in failures.values())


def test_a_step_that_raises_is_named_with_where_it_raised():
    failures = Conformance(Raises).failures()
    # The short runs break at step 2, so every check that steps the algorithm says so (the
    # vocabulary check takes one step).
    assert set(failures) == set(CHECKS) - {"config", "vocabulary"}
    message = str(failures["finite"])
    assert "step 2 raised RuntimeError: the second step breaks (at test_conformance.py:" in message


def test_an_unknown_algorithm_names_the_available_ones():
    failures = Conformance("no-such-algo").failures()
    assert set(failures) == set(CHECKS)
    message = str(failures["config"])
    assert "cannot find it: Unknown algorithm 'no-such-algo'" in message
    assert "Available:" in message and "dpo" in message


def test_a_config_the_algorithm_rejects_is_named():
    message = str(Conformance(Good, {"learning_rat": 0.1}).failures()["metrics"])
    assert "unknown key 'learning_rat' (did you mean 'learning_rate'?)" in message


def test_check_conformance_lists_every_failure_one_line_each():
    with pytest.raises(ConformanceError) as info:
        check_conformance(Undocumented, {"learning_rate": 0.0})
    lines = str(info.value).splitlines()
    assert [line.split("fails check ")[1].split(":")[0] for line in lines] == [
        "'config'", "'improves'"
    ]


def test_the_kit_leaves_the_global_generators_as_it_found_them():
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    Conformance(GlobalRNG).failures()
    assert (torch.rand(1), random.random(), np.random.rand()) == expected


def test_required_metrics_depend_on_what_the_algorithm_needs():
    assert required_metrics(Good) == {"loss", "reward", "kl_ref", "entropy", "response_length"}

    class Offline(Good):
        needs = frozenset({"preferences"})

    assert required_metrics(Offline) == {"loss"}
    assert required_metrics(Good, trains=False) == {"reward", "kl_ref", "response_length"}
    assert required_metrics(Offline, trains=False) == set()
    kit = Conformance(MissingLoss, metrics={"reward"})
    assert "metrics" not in kit.failures(["metrics"])


def test_an_algorithm_that_leaves_the_policy_as_pi_ref_owes_no_loss_nor_entropy():
    """Like best-of-n sampling on top of π_ref (here: a learning rate of 0)."""

    class NoUpdate(MissingLoss):
        def step(self) -> dict[str, float]:
            metrics = super().step()
            del metrics["entropy"]
            return metrics

    assert Conformance(NoUpdate, {"learning_rate": 0.0}).failures(["metrics"]) == {}
    message = str(Conformance(NoUpdate).failures(["metrics"])["metrics"])
    assert "step() did not report 'entropy', 'loss'" in message


def test_field_docstrings_are_read_from_the_source_bases_included():
    assert field_docstrings(UndocumentedConfig) == {
        "learning_rate": "Adam step size (for a table of logits).",
        "batch_size": "Responses sampled per step.",
    }


def test_bandit_algorithm_builds_it_as_the_checks_do():
    algo = bandit_algorithm(Good, {"batch_size": 8}, seed=3)
    assert algo.config.batch_size == 8 and algo.ctx.seed == 3
    assert algo.ctx.reward_model is not None and algo.ctx.preferences is None
    assert set(algo.step()) == required_metrics(Good)
    dpo = bandit_algorithm("dpo", num_pairs=100)
    assert dpo.ctx.preferences is not None and len(dpo.ctx.preferences) == 100


# --- in an author's test module, and through the pytest option -----------------------------------

test_conformance_of_the_small_algorithm = conformance_tests(Good)


def test_conformance_tests_makes_one_test_per_check():
    function = conformance_tests(Good, checks=["config", "metrics"])
    (mark,) = [m for m in function.pytestmark if m.name == "parametrize"]
    assert mark.args == ("check", ("config", "metrics"))
    with pytest.raises(ValueError, match="unknown conformance check"):
        conformance_tests(Good, checks=["speed"])


def test_the_pytest_plugin_is_registered_under_pytest11():
    project = read_toml(ROOT / "pyproject.toml")
    entry_points = project["project"]["entry-points"]["pytest11"]
    assert entry_points == {"rlhf_harness": "harness.testing_plugin"}


def pytest11_site(tmp_path, dist_writer) -> Path:
    """A site folder where the pytest plugin is found through a pytest11 entry point (as once
    rlhf-harness is installed), and the example plugin through its rlhf_harness one."""
    site = tmp_path / "site"
    dist_writer(site, "pytest11-shim", "1.0", {}, {})
    (next(site.glob("pytest11_shim-*.dist-info")) / "entry_points.txt").write_text(
        "[pytest11]\nrlhf_harness = harness.testing_plugin\n"
    )
    example = read_toml(EXAMPLE / "pyproject.toml")["project"]
    dist_writer(site, example["name"], example["version"],
                example["entry-points"]["rlhf_harness"], {})
    return site


def test_the_pytest_option_runs_only_the_conformance_tests(tmp_path, dist_writer, subprocess_env):
    """Given a test file and the option, pytest runs the kit on two installed algorithms
    (dpo with its LM defaults, which fail to improve a table) and deselects the rest."""
    site = pytest11_site(tmp_path, dist_writer)
    env = subprocess_env(pythonpath=os.pathsep.join([str(site), str(EXAMPLE)]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf",
         str(EXAMPLE / "tests" / "test_reinforce.py"), "--rlhf-conformance=reinforce,dpo",
         "--rlhf-conformance-config=reinforce={learning_rate: 0.1}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT_S, check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    passed = len(CHECKS) + (len(CHECKS) - 1)
    assert f"1 failed, {passed} passed, {len(CHECKS) + 1} deselected" in out
    assert "FAILED " in out and "rlhf_conformance::dpo[improves]" in out
    assert "rlhf-harness conformance: algorithm 'dpo' fails check 'improves': J_β" in out


def test_the_pytest_option_at_the_repository_root_collects_none_of_its_tests(
    tmp_path, dist_writer, subprocess_env
):
    """As the tutorial says to type it: at rlhf-harness's root, whose testpaths hold hundreds of
    tests, the session is the conformance checks alone. Collected, not run: running them is
    :func:`test_the_pytest_option_runs_only_the_conformance_tests`."""
    site = pytest11_site(tmp_path, dist_writer)
    env = subprocess_env(pythonpath=os.pathsep.join([str(site), str(EXAMPLE)]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "--rlhf-conformance=reinforce",
         "--rlhf-conformance-config=reinforce={learning_rate: 0.1}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=TIMEOUT_S, check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"{len(CHECKS)} tests collected in" in out and "deselected" not in out
    collected = re.findall(r"^(rlhf_conformance::\S+)$", out, re.MULTILINE)
    assert collected == [f"rlhf_conformance::reinforce[{check}]" for check in CHECKS], out
    assert not re.search(r"^tests/", out, re.MULTILINE), out


class _Options:
    def __init__(self, **values: object) -> None:
        self.values = values

    def getoption(self, name: str, default: object = None) -> object:
        return self.values.get(name.lstrip("-").replace("-", "_"), default)


def test_bad_option_values_are_usage_errors():
    from harness.testing_plugin import parse_options

    def parse(**values: object):
        return parse_options(_Options(**values))  # type: ignore[arg-type]

    names, configs, checks = parse(
        rlhf_conformance=["a,b", "c"], rlhf_conformance_config=["a={x: 1}", 'a={"y": 2}'],
        rlhf_conformance_checks="metrics,finite",
    )
    assert (names, configs, checks) == (["a", "b", "c"], {"a": {"x": 1, "y": 2}},
                                        ("metrics", "finite"))
    for values, message in [
        ({"rlhf_conformance_config": ["a"]}, "expects ALGO=MAPPING"),
        ({"rlhf_conformance_config": ["a={x: 1"]}, "for 'a': not YAML"),
        ({"rlhf_conformance_config": ["a=[1]"]}, "expected a mapping"),
        ({"rlhf_conformance_config": ["z={}"]}, "names 'z', which --rlhf-conformance does not"),
        ({"rlhf_conformance_checks": "speed"}, "unknown check(s) speed"),
    ]:
        with pytest.raises(pytest.UsageError, match=message.replace("(", r"\(").replace(
                ")", r"\)").replace("[", r"\[")):
            parse(rlhf_conformance=["a"], **values)
