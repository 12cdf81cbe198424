"""scripts/mutation_report.py: scores from mutmut's result files, equivalents from the doc."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_report",
                                              ROOT / "scripts" / "mutation_report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _write(tmp_path: Path, codes: dict[str, int | None], equivalent: list[str]) -> list[str]:
    meta = tmp_path / "mutants" / "harness" / "rl.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}), encoding="utf-8")
    rows = "".join(f"| `{name}` | `a` → `b` | same as `x_f__mutmut_1` |\n" for name in equivalent)
    doc = tmp_path / "mutation.md"
    doc.write_text(f"# M\n\n## Equivalent mutants\n\n| mutant | change | why |\n|---|---|---|\n"
                   f"{rows}\n## Later\n\n| `harness.rl.x_f__mutmut_9` | not | listed |\n",
                   encoding="utf-8")
    return ["--mutants", str(tmp_path / "mutants"), "--doc", str(doc)]


def test_scores_count_equivalents_out_and_timeouts_as_killed(tmp_path, capsys):
    codes = {f"harness.rl.x_f__mutmut_{i}": 1 for i in range(1, 96)}
    codes |= {"harness.rl.x_f__mutmut_96": 36, "harness.rl.x_f__mutmut_97": 0,
              "harness.rl.x_f__mutmut_98": 0, "harness.rl.x_f__mutmut_99": 33}
    args = _write(tmp_path, codes, ["harness.rl.x_f__mutmut_97"])
    assert report.equivalent_mutants(Path(args[3])) == {"harness.rl.x_f__mutmut_97"}
    assert report.main(args) == 1  # other modules have no mutants here
    out = capsys.readouterr().out
    # 99 mutants, 1 equivalent: 96 killed (one by timeout) of 98 = 98.0 %.
    line = next(x for x in out.splitlines() if x.startswith("harness/rl.py"))
    assert line.split()[1:] == ["99", "96", "1", "2", "98.0%"]
    assert "harness.rl.x_f__mutmut_98" in out and "harness.rl.x_f__mutmut_99" in out
    assert report.main([*args, "--survivors"]) == 0
    assert capsys.readouterr().out.split() == ["harness.rl.x_f__mutmut_98",
                                               "harness.rl.x_f__mutmut_99"]


def test_a_listed_equivalent_that_is_killed_or_gone_is_reported(tmp_path, capsys):
    codes = {"harness.rl.x_f__mutmut_1": 1, "harness.rl.x_f__mutmut_2": None}
    args = _write(tmp_path, codes, ["harness.rl.x_f__mutmut_1", "harness.rl.x_g__mutmut_5"])
    assert report.main(args) == 1
    out = capsys.readouterr().out
    assert "(1 not run)" in out
    stale = out.split("no longer a mutant:", 1)[1].split()
    assert stale == ["harness.rl.x_f__mutmut_1", "harness.rl.x_g__mutmut_5"]


def test_patterns_cover_each_module_of_the_numeric_core(capsys):
    assert report.main(["--patterns"]) == 0
    patterns = capsys.readouterr().out.split()
    for module in ("harness.rl.", "harness.exact.", "harness.preference.", "harness.report.stats.",
                   "plugins.dpo.rlhf_harness_dpo.x_dpo_loss__",
                   "plugins.simpo.rlhf_harness_simpo.x_simpo_loss__",
                   "plugins.kto.rlhf_harness_kto.x_kto_loss__",
                   "plugins.kto.rlhf_harness_kto.x_reference_point__",
                   "plugins.orpo.rlhf_harness_orpo.x_orpo_loss__",
                   "plugins.online_dpo.rlhf_harness_online_dpo.x_label_pairs__",
                   "plugins.online_dpo.rlhf_harness_online_dpo.x_online_dpo_loss__",
                   "plugins.reinforce_pp.rlhf_harness_reinforce_pp.x_token_returns__",
                   "plugins.reinforce_pp.rlhf_harness_reinforce_pp.x_reinforce_pp_loss__",
                   "plugins.gspo.rlhf_harness_gspo.x_sequence_ratio__",
                   "plugins.gspo.rlhf_harness_gspo.x_gspo_loss__",
                   "plugins.rdpo.rlhf_harness_rdpo.x_rdpo_loss__",
                   "plugins.rdpo.rlhf_harness_rdpo.x_cdpo_loss__"):
        assert any(p.startswith(module) for p in patterns), module
