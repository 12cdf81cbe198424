"""End to end on HF-format models: ``suites/hf-example.yaml`` on assets saved with
``save_pretrained`` and loaded with ``from_pretrained`` — PPO, GRPO, DPO and a LoRA DPO through
the ``hf`` task to a report, on the CPU; and bad input as one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.devkit.hf_example import write_example_assets

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "hf-example.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-example")
    write_example_assets(folder / "hf-example-assets")
    return folder


@pytest.fixture
def workdir(assets, tmp_path, monkeypatch):
    """A folder holding the assets where the example suite names them, as the current one."""
    (tmp_path / "hf-example-assets").symlink_to(assets / "hf-example-assets")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> None:
    main([*args])


def test_the_example_suite_runs_to_a_report(workdir, capsys):
    suite = workdir / "hf-example.yaml"  # the example as shipped, one step instead of two
    suite.write_text(SUITE.read_text().replace("budget: {steps: 2}", "budget: {steps: 1}"))
    cli("run", str(suite), "--no-wandb", "--no-progress")
    out = capsys.readouterr().out
    assert "hf-example: 4 runs: done 4;" in out
    report = (workdir / "reports" / "hf-example" / "index.md").read_text()
    assert "ppo, grpo, dpo and dpo-lora" in report
    summaries = {}
    for path in (workdir / "runs" / "hf-example").glob("*/summary.json"):
        summary = json.loads(path.read_text())
        summaries[summary["run_id"].split("-hf-")[0]] = summary
    assert sorted(summaries) == ["dpo", "dpo-lora", "grpo", "ppo"]
    for summary in summaries.values():
        assert summary["status"] == "done" and "gold_reward" in summary["final"]
    # The plan beside the model state measured: LoRA's is smaller in both.
    lora, full = summaries["dpo-lora"], summaries["dpo"]
    assert lora["memory_plan"]["lora"] and not full["memory_plan"]["lora"]
    planned = [s["memory_plan"]["planned"]["model_state"] for s in (lora, full)]
    measured = [s["memory"]["model_state_bytes"] for s in (lora, full)]
    assert planned[0] < planned[1] and measured[0] < measured[1]


def test_the_example_plans_lora_without_a_reference_copy(workdir, capsys):
    cli("plan", str(SUITE), "--gpu-memory", "80GiB")
    out = capsys.readouterr().out
    assert out.count("  fits") == 4
    assert "gold reward (classifier)" in out
    lora = out[out.index("(dpo-lora on hf)"):]
    assert "π_ref: the policy's base with its LoRA adapters off (no copy)" in lora


def bad_suite(workdir, old: str, new: str) -> Path:
    text = SUITE.read_text()
    assert old in text
    path = workdir / "bad.yaml"
    path.write_text(text.replace(old, new))
    return path


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the suite file that holds ``text`` (errors name it)."""
    lines = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, lines
    return lines[0]


def one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli(*args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_model_that_is_not_a_causal_lm_is_one_line(workdir, capsys):
    path = bad_suite(workdir, "model: hf-example-assets/policy", "model: hf-example-assets/reward")
    err = one_line_error(capsys, "validate", str(path))
    assert f"{path}:29: tasks.0.params (hf): 'model': the model 'hf-example-assets/reward' " \
           f"is not a causal LM (its config names LlamaForSequenceClassification)" in err


def test_a_gold_classifier_with_the_wrong_number_of_labels_is_one_line(workdir, capsys):
    path = bad_suite(workdir, "path: hf-example-assets/reward, label: 0",
                     "path: hf-example-assets/reward, label: 1")
    err = one_line_error(capsys, "validate", str(path))
    assert (f"{path}:34: tasks.0.params (hf): 'gold_reward_params': label 1 of "
            f"gold_reward_params is out of range for the classifier 'hf-example-assets/reward', "
            f"which has 1 label") in err


def test_a_lora_target_missing_from_the_model_is_one_line(workdir, capsys):
    path = bad_suite(workdir, "alpha: 16, target_modules: [q_proj, k_proj, v_proj, o_proj]",
                     "alpha: 16, target_modules: [q_proj, c_attn]")
    err = one_line_error(capsys, "validate", str(path))
    line = line_of(path, "alpha: 16, target_modules: [q_proj, c_attn]")
    assert (f"{path}:{line}: algorithms.3.policy.lora.target_modules: 'c_attn' matches no module "
            f"of LlamaForCausalLM (task 'hf'); its linear layers: q_proj, k_proj, v_proj, "
            f"o_proj, gate_proj, up_proj, down_proj") in err


def test_assets_load_through_from_pretrained(assets):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    folder = assets / "hf-example-assets"
    assert AutoModelForCausalLM.from_pretrained(folder / "policy").config.num_hidden_layers == 2
    reward = AutoModelForSequenceClassification.from_pretrained(folder / "reward")
    assert reward.config.num_labels == 1
    shutil.copy(folder / "pairs.parquet", folder.parent / "copy.parquet")
    import pandas as pd

    frame = pd.read_parquet(folder.parent / "copy.parquet")
    assert list(frame.columns) == ["prompt", "chosen", "rejected"] and len(frame) == 48
