"""Item 4 of the algorithm zoo: offline methods that need unpaired or noisy data say so in
``needs`` ("unpaired", "label_noise"), and ``validate`` refuses, in one line naming the file, the
line and the key, a suite that cannot feed them; a suite can feed them, end to end.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.algorithm import NEEDS
from harness.engine.plugins import get_plugin_host
from harness.errors import ConfigError
from harness.suite import check_suite, load_suite

TIMEOUT_S = 120

SUITE = """\
name: noisy
tasks:
  - name: bandit
    params: {num_prompts: 2, num_arms: 4}
preferences: {num_pairs: 200, flip_rate: 0.2}
reward_model: {kind: gold}
algorithms:
  - name: rdpo
    config: {learning_rate: 0.05, optimizer: adam, warmup_steps: 0, batch_size: 32}
  - name: kto
    config: {learning_rate: 0.05, batch_size: 32}
seeds: [0]
budget: {steps: 3}
evaluation: {every: 3}
"""


@pytest.fixture(scope="module")
def host():
    return get_plugin_host()


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def refusal(tmp_path: Path, host, text: str) -> tuple[str, Path]:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        check_suite(load_suite(path), path, host)
    message = str(info.value)
    assert "\n" not in message
    return message, path


def test_the_new_needs_are_declared(host):
    assert {"unpaired", "label_noise"} <= NEEDS
    assert host.algorithm("kto").needs == {"unpaired"}
    assert host.algorithm("rdpo").needs == host.algorithm("cdpo").needs == {
        "preferences", "label_noise"}


def test_a_suite_that_feeds_them_validates(tmp_path, host):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    runs = check_suite(load_suite(path), path, host)
    assert [r.algorithm for r in runs] == ["rdpo", "kto"]
    assert "unpaired" not in runs[0].preferences  # the default leaves run ids unchanged
    unpaired = SUITE.replace("flip_rate: 0.2}", "flip_rate: 0.2, unpaired: true}").replace(
        "  - name: rdpo\n    config: {learning_rate: 0.05, optimizer: adam, warmup_steps: 0, "
        "batch_size: 32}\n", "")
    path.write_text(unpaired)
    (run,) = check_suite(load_suite(path), path, host)
    assert run.preferences["unpaired"] is True


def test_label_noise_from_a_file_is_refused_unless_the_config_sets_it(tmp_path, host):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    text = SUITE.replace("preferences: {num_pairs: 200, flip_rate: 0.2}",
                         f"preferences: {{file: {data}}}")
    message, path = refusal(tmp_path, host, text)
    assert message.startswith(f"{path}:{line_of(text, '- name: rdpo')}: algorithms.0.name: ")
    assert "'rdpo' needs the rate ε at which the labels were flipped" in message
    assert "preferences.file's is unknown" in message and "set config.epsilon" in message
    fixed = text.replace("warmup_steps: 0,", "warmup_steps: 0, epsilon: 0.1,")
    path.write_text(fixed)
    assert len(check_suite(load_suite(path), path, host)) == 2


def test_a_noise_rate_of_one_half_is_refused_where_it_is_set(tmp_path, host):
    text = SUITE.replace("flip_rate: 0.2", "flip_rate: 0.5")
    message, path = refusal(tmp_path, host, text)
    assert message.startswith(f"{path}:{line_of(text, 'flip_rate')}: preferences.flip_rate: ")
    assert "'rdpo' needs a label-noise rate ε below 0.5, got 0.5" in message
    text = SUITE.replace("  - name: kto\n", "    sweep: {epsilon: [0.1, 0.6]}\n  - name: kto\n")
    message, path = refusal(tmp_path, host, text)
    # a value set in the config is refused by rdpo's Config itself, where it is set
    assert message.startswith(f"{path}:{line_of(text, 'sweep')}: algorithms.0.sweep.epsilon "
                              f"(rdpo): ")
    assert "epsilon must be in [0, 0.5), got 0.6" in message


def test_pairs_are_refused_from_data_marked_unpaired(tmp_path, host):
    text = SUITE.replace("flip_rate: 0.2}", "flip_rate: 0.2, unpaired: true}")
    message, path = refusal(tmp_path, host, text)
    assert message.startswith(f"{path}:{line_of(text, 'unpaired')}: preferences.unpaired: ")
    assert "algorithms.0 ('rdpo') needs preference pairs" in message
    text = text.replace("reward_model: {kind: gold}", "reward_model: {kind: fitted}").replace(
        "  - name: rdpo\n    config: {learning_rate: 0.05, optimizer: adam, warmup_steps: 0, "
        "batch_size: 32}\n", "  - name: rloo\n")
    message, path = refusal(tmp_path, host, text)
    assert message.startswith(f"{path}:{line_of(text, 'reward_model')}: reward_model.kind: ")
    assert "a fitted reward model needs preference pairs" in message


def test_validate_says_it_in_one_line(tmp_path, subprocess_env):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("flip_rate: 0.2", "flip_rate: 0.5"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(path)],
                          capture_output=True, text=True, env=subprocess_env(),
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"rlhf-harness: error: {path}:5: preferences.flip_rate: ")


def test_a_run_reads_the_noise_rate_and_the_unpaired_mark_from_its_suite(tmp_path, host):
    import pandas as pd

    from harness.engine.runner import run_one

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    runs = check_suite(load_suite(path), path, host)
    root = str(tmp_path / "runs")
    for spec in runs:
        assert run_one(spec.as_dict(), root) == "done"
    frames = [pd.read_parquet(m) for m in sorted(Path(root).rglob("metrics.parquet"))]
    assert len(frames) == 2
    rows = pd.concat(frames)
    epsilon = rows[rows.metric == "epsilon"].value
    assert len(epsilon) == 3 and (epsilon == 0.2).all()  # rdpo took ε from flip_rate
    assert (rows[rows.metric == "frac_desirable"].value > 0).all()  # kto learnt from examples


def test_kto_runs_on_a_suite_marked_unpaired(tmp_path, host):
    from harness.engine.runner import run_one

    text = SUITE.replace("flip_rate: 0.2}", "flip_rate: 0.2, unpaired: true}").replace(
        "  - name: rdpo\n    config: {learning_rate: 0.05, optimizer: adam, warmup_steps: 0, "
        "batch_size: 32}\n", "")
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    (spec,) = check_suite(load_suite(path), path, host)
    assert run_one(spec.as_dict(), str(tmp_path / "runs")) == "done"


def test_the_replicates_of_an_instance_see_the_same_unpaired_examples(host):
    from harness.engine.annotator import simulate_preferences
    from harness.engine.runner import build_context
    from harness.preference import BradleyTerry
    from harness.tasks.bandit import BanditTask

    task = BanditTask(BanditTask.Params(num_prompts=2, num_arms=4), seed=0)
    data = simulate_preferences(task, BradleyTerry(), num_pairs=100, seed=0)
    kto = host.algorithm("kto")
    a, b = (build_context(task, kto, seed=s, preferences=data, unpaired=True, data_seed=0)
            for s in (1, 2))
    assert a.examples.desirable.tolist() == b.examples.desirable.tolist()
    assert a.examples.responses.tokens.tolist() == b.examples.responses.tokens.tolist()
