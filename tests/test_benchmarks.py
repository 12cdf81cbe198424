"""The benchmark scripts' own logic, on the CPU: what the memory children hold on the device, MFU
against the measured and the specified peak, the batch sweep. (The benchmarks themselves, with
TRL, are run by hand: benchmarks/README.md.)"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.models.device_trace import STAND_IN, stand_in_device

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def args_for(common, **values):
    args = common.parser("test").parse_args(["--size", "2.7m"])
    for key, value in values.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize("name", ["bench_ppo", "bench_grpo", "bench_dpo"])
def test_our_memory_child_holds_only_the_models_the_algorithm_keeps(bench, name):
    """TRL's child leaves the base model on the host and its trainer holds its models; ours must
    hold exactly the models its algorithm keeps (``models_resident``), not the base model too."""
    from harness.models.lm import LMRewardModel

    module, common = bench(name), bench("common")
    size = common.SIZES["2.7m"]
    tokenizer = common.build_tokenizer(size.vocab)
    model = common.build_model("2.7m", suppress_special=name != "bench_dpo")
    with stand_in_device() as trace:
        if name == "bench_dpo":
            args = args_for(common, batch=4, pairs=8)
            algo = module.ours_for_memory(args, torch.device(STAND_IN), model, tokenizer,
                                          module.make_data(args, tokenizer))
        else:
            args = args_for(common, batch=getattr(module, "GROUP", 4))
            prompts = common.random_words(8, common.PROMPT_LEN, size.vocab, seed=1)
            reward_model = LMRewardModel(model, seed=1).eval()
            algo = module.ours_for_memory(args, torch.device(STAND_IN), model, tokenizer,
                                          prompts, reward_model)
        gc.collect()
        on_device = {trace._key(m.weight) for m in gc.get_objects()
                     if issubclass(type(m), nn.Embedding) and trace.on_device(m.weight)}
    assert not trace.on_device(model.get_input_embeddings().weight)  # the base model: host
    assert len(on_device) == algo.models_resident() >= 2


def test_specified_bf16_peaks_by_device_name(bench):
    mfu = bench("mfu")
    assert mfu.specified_peak_tflops("NVIDIA H100 80GB HBM3") == 989.5
    assert mfu.specified_peak_tflops("NVIDIA H200") == 989.5
    assert mfu.specified_peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert mfu.specified_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert mfu.specified_peak_tflops("NVIDIA L4") == 121.0
    assert mfu.specified_peak_tflops("NVIDIA L40") is None  # not the L4, nor the L40S
    assert mfu.specified_peak_tflops("NVIDIA A10G") is None
    assert mfu.specified_peak_tflops("Tesla V100-SXM2-32GB") is None


def test_mfu_against_the_measured_rate_and_the_specified_peak(bench, monkeypatch):
    common, mfu = bench("common"), bench("mfu")
    model = common.build_model("2.7m", suppress_special=False)
    monkeypatch.setattr(mfu, "matmul_flops_per_second", lambda device, dtype: 600e12)
    times = {"ours": [1.0, 2.0, 3.0], "trl": [4.0]}
    for name, dtype, expect_spec in [("NVIDIA H200", "bf16", True), ("NVIDIA H200", "fp32", False),
                                     ("Some Future GPU", "bf16", False)]:
        monkeypatch.setattr(mfu, "device_name", lambda device, name=name: name)
        extra: dict = {}
        mfu.add_mfu(extra, times, model, args_for(common, dtype=dtype),
                       torch.device("cuda"), flops=100e12)
        # achieved 50 (ours, median 2 s) and 25 TFLOP/s (TRL)
        assert extra["mfu"] == {"ours": round(50 / 600, 4), "trl": round(25 / 600, 4)}
        assert extra["device_name"] == name
        if expect_spec:
            assert extra["specified_peak_tflops"] == 989.5
            assert extra["mfu_specified_peak"] == {"ours": round(50 / 989.5, 4),
                                                   "trl": round(25 / 989.5, 4)}
        else:
            assert "mfu_specified_peak" not in extra and "specified_peak_tflops" not in extra


FAKE_BENCHMARK = """\
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("--size"); p.add_argument("--batch", type=int); p.add_argument("--json")
args = p.parse_args()
rate = {"ours": 10.0 * args.batch, "trl": 5.0 * args.batch}
json.dump({"batch": args.batch, "size": args.size, "argv": sys.argv[1:],
           "samples_per_second": rate, "mfu": {"ours": 0.1, "trl": 0.05}}, open(args.json, "w"))
"""


def test_the_batch_sweep_runs_each_batch_in_a_fresh_process(bench, tmp_path, capsys):
    common = bench("common")
    script = tmp_path / "fake_bench.py"
    script.write_text(textwrap.dedent(FAKE_BENCHMARK))
    out = tmp_path / "sweep.json"
    argv = ["--size", "21m", "--batch", "8", "--batch-sweep=4,16", "--json", str(out)]
    args = common.parser("test").parse_args(argv)
    assert args.batch_sweep == [4, 16]
    results = common.batch_sweep(str(script), argv, args)
    assert [r["batch"] for r in results] == [4, 16]
    assert all(r["size"] == "21m" and "--batch-sweep=4,16" not in r["argv"] for r in results)
    assert json.loads(out.read_text()) == {"sweep": results}
    table = capsys.readouterr().out
    assert "== batch sweep ==" in table and "   16" in table
    with pytest.raises(SystemExit):
        common.parser("test").parse_args(["--batch-sweep", "8,x"])


@pytest.mark.parametrize("recompute", [True, False])
def test_dpo_timed_steps_of_both_sides_do_the_same_reference_work(bench, recompute):
    """bench_dpo: with one step per epoch (``--batch`` = ``--pairs``, where ours kept its
    reference log-probs after the first step and ran π_ref in no later one), every step of ours
    recomputes them as TRL does, or neither side runs π_ref with ``--trl-precompute-ref``; the
    script's check counts the reference forwards per step and stops on a mismatch."""
    module, common = bench("bench_dpo"), bench("common")
    device = torch.device("cpu")
    args = args_for(common, batch=4, pairs=4, trl_precompute_ref=not recompute)
    tokenizer = common.build_tokenizer(common.SIZES["2.7m"].vocab)
    model = common.build_model("2.7m", suppress_special=False)
    data = module.make_data(args, tokenizer)
    algo, _ = module.build_ours(args, device, model, tokenizer, data)
    if not recompute:
        module.precompute_ours(algo)
    ours = module.ReferenceForwards(algo.ctx.reference.model)
    step = ours.wrap(lambda: common.timed(module.ours_reference_step(algo, recompute), device))
    trainer, _ = module.build_trl(args, device, model, tokenizer, data, max_steps=4)
    stepper = common.TRLStepper(trainer, device, threads=1)
    trl = module.ReferenceForwards(trainer.bench_reference)
    trl_step = trl.wrap(stepper.step)
    for _ in range(4):
        step()
        trl_step()
    stepper.close()
    timed = {"ours": ours.per_step[1:], "trl": trl.per_step[1:]}  # the first step: warm-up
    assert all(len(v) == 3 for v in timed.values())
    for counts in timed.values():
        assert all(c > 0 for c in counts) if recompute else counts == [0, 0, 0], timed
    module.check_reference_work(timed, recompute)
    with pytest.raises(SystemExit, match="unequal reference work"):
        module.check_reference_work(timed, not recompute)
    if recompute:
        # ours as it runs by itself: the pairs' log-probs are kept after the first epoch, so its
        # later steps run no reference forward — the drift the check catches
        plain = module.ReferenceForwards(algo.ctx.reference.model)
        plain_step = plain.wrap(lambda: common.timed(algo.step, device))
        for _ in range(3):
            plain_step()
        assert plain.per_step == [0, 0, 0]
        with pytest.raises(SystemExit, match="timed steps \\[0, 1, 2\\] of ours"):
            module.check_reference_work({"ours": plain.per_step, "trl": timed["trl"]}, True)


def test_ppo_runs_trls_generation_and_scoring_in_our_precision(bench):
    """bench_ppo: TRL's rollout functions (generation, π_ref, r̂ and V_old) run in the context
    given (here bf16 autocast on the CPU), counted; patching twice wraps once; a missing one
    stops the script."""
    import types

    module = bench("bench_ppo")
    seen: list[tuple[str, bool, torch.dtype]] = []

    def record(name):
        def fn(x):
            y = x @ x  # a matmul: bf16 under autocast, fp32 outside it
            seen.append((name, torch.is_autocast_enabled("cpu"), y.dtype))
            return y
        return fn

    trl = types.ModuleType("fake_ppo_trainer")
    for name in module.TRL_ROLLOUT_CALLS:
        setattr(trl, name, record(name))
    context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    module.same_rollout_precision(trl, context)
    calls = module.same_rollout_precision(trl, context)  # a second build in the same process
    x = torch.ones(2, 2)
    for name in module.TRL_ROLLOUT_CALLS:
        getattr(trl, name)(x)
    assert calls == dict.fromkeys(module.TRL_ROLLOUT_CALLS, 1)
    assert seen == [(n, True, torch.bfloat16) for n in module.TRL_ROLLOUT_CALLS]
    assert (x @ x).dtype == torch.float32  # the context is left after each call
    del trl.get_reward
    with pytest.raises(SystemExit, match="no get_reward"):
        module.same_rollout_precision(trl, context)
