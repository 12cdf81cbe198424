"""Mutation scores of the numeric core, from the results ``mutmut run`` leaves in ``mutants/``.

    python scripts/mutation_report.py             per-module scores and the unexplained survivors
    python scripts/mutation_report.py --patterns  the mutant names `make mutation` runs (globs)
    python scripts/mutation_report.py --survivors the unexplained survivors' names, one a line

A module's score is killed / (mutants − equivalent): a mutant counts as killed when a test failed
(or timed out) with it switched on; equivalent mutants, which no test can tell from the original,
are the ones listed in docs/mutation.md (the table of its section "Equivalent mutants").
The exit status is 1 when a module scores below the target, when a mutant was not run, or when
docs/mutation.md lists a name that is no longer a surviving mutant (the list must be kept exact).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.97

# The numeric core: module (as reported) -> mutmut names of the functions mutated there. For the
# algorithm plugins only the loss functions (and what turns rewards into their inputs) count.
_PPO = "plugins.ppo.rlhf_harness_ppo"
CORE: dict[str, list[str]] = {
    "harness/rl.py": ["harness.rl.*"],
    "harness/exact.py": ["harness.exact.*"],
    "harness/preference.py": ["harness.preference.*"],
    "harness/report/stats.py": ["harness.report.stats.*"],
    "plugins/dpo (dpo_loss)": ["plugins.dpo.rlhf_harness_dpo.x_dpo_loss__mutmut_*"],
    "plugins/ipo (ipo_loss)": ["plugins.ipo.rlhf_harness_ipo.x_ipo_loss__mutmut_*"],
    "plugins/grpo (grpo_loss)": ["plugins.grpo.rlhf_harness_grpo.x_grpo_loss__mutmut_*"],
    "plugins/ppo (ppo_loss, token_rewards, AdaptiveKLController.update)": [
        f"{_PPO}.x_ppo_loss__mutmut_*",
        f"{_PPO}.x_token_rewards__mutmut_*",
        f"{_PPO}.xǁAdaptiveKLControllerǁupdate__mutmut_*",
    ],
    "plugins/rloo (rloo_advantages, rloo_loss)": [
        "plugins.rloo.rlhf_harness_rloo.x_rloo_advantages__mutmut_*",
        "plugins.rloo.rlhf_harness_rloo.x_rloo_loss__mutmut_*",
    ],
    "plugins/bon (analytic_kl, best_of_n_logprobs)": [
        "plugins.bon.rlhf_harness_bon.x_analytic_kl__mutmut_*",
        "plugins.bon.rlhf_harness_bon.x_best_of_n_logprobs__mutmut_*",
    ],
    "plugins/simpo (simpo_loss)": ["plugins.simpo.rlhf_harness_simpo.x_simpo_loss__mutmut_*"],
    "plugins/kto (kto_loss, reference_point)": [
        "plugins.kto.rlhf_harness_kto.x_kto_loss__mutmut_*",
        "plugins.kto.rlhf_harness_kto.x_reference_point__mutmut_*",
    ],
    "plugins/orpo (log1mexp, orpo_loss)": [
        "plugins.orpo.rlhf_harness_orpo.x_log1mexp__mutmut_*",
        "plugins.orpo.rlhf_harness_orpo.x_orpo_loss__mutmut_*",
    ],
    "plugins/online_dpo (label_pairs, online_dpo_loss)": [
        "plugins.online_dpo.rlhf_harness_online_dpo.x_label_pairs__mutmut_*",
        "plugins.online_dpo.rlhf_harness_online_dpo.x_online_dpo_loss__mutmut_*",
    ],
    "plugins/reinforce_pp (token_returns, reinforce_pp_loss)": [
        "plugins.reinforce_pp.rlhf_harness_reinforce_pp.x_token_returns__mutmut_*",
        "plugins.reinforce_pp.rlhf_harness_reinforce_pp.x_reinforce_pp_loss__mutmut_*",
    ],
    "plugins/gspo (sequence_ratio, gspo_loss)": [
        "plugins.gspo.rlhf_harness_gspo.x_sequence_ratio__mutmut_*",
        "plugins.gspo.rlhf_harness_gspo.x_gspo_loss__mutmut_*",
    ],
    "plugins/rdpo (_dpo_margin, rdpo_loss, cdpo_loss)": [
        "plugins.rdpo.rlhf_harness_rdpo.x__dpo_margin__mutmut_*",
        "plugins.rdpo.rlhf_harness_rdpo.x_rdpo_loss__mutmut_*",
        "plugins.rdpo.rlhf_harness_rdpo.x_cdpo_loss__mutmut_*",
    ],
}

# mutmut's exit codes (mutmut.stats.status_by_exit_code), reduced to what a score needs.
KILLED = {1, 3, 36, 24, -24, 152, 255}  # a test failed, pytest errored, or the run timed out
SURVIVED = {0, 5, 33}  # the tests passed, or no test ran the mutated function


def patterns() -> list[str]:
    return [p for group in CORE.values() for p in group]


def load_results(mutants: Path) -> dict[str, int | None]:
    """Every mutant's exit code (None: not run yet), from mutmut's ``*.meta`` files."""
    results: dict[str, int | None] = {}
    for meta in mutants.rglob("*.py.meta"):
        results.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return results


def equivalent_mutants(doc: Path) -> set[str]:
    """The mutant names that open the table rows of the "Equivalent mutants" section of ``doc``
    (``| `NAME` | change | reason |``)."""
    text = doc.read_text("utf-8")
    match = re.search(r"^## Equivalent mutants\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        return set()
    return set(re.findall(r"^\| `([^`]+__mutmut_\d+)` \|", match.group(1), re.M))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", action="store_true", help="print the mutant name globs")
    parser.add_argument(
        "--survivors", action="store_true", help="print the unexplained survivors' names only"
    )
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "mutation.md")
    args = parser.parse_args(argv)
    if args.patterns:
        print("\n".join(patterns()))
        return 0
    if not args.mutants.is_dir():
        print(f"no {args.mutants}: run `make mutation` first", file=sys.stderr)
        return 1

    results = load_results(args.mutants)
    equivalent = equivalent_mutants(args.doc)
    ok = True
    survivors: list[str] = []
    lines = [f"{'module':<68} {'mutants':>7} {'killed':>6} {'equiv.':>6} {'surv.':>5}  score"]
    for module, globs in CORE.items():
        names = sorted(n for n in results if any(fnmatch.fnmatchcase(n, g) for g in globs))
        counts: Counter[str] = Counter()
        for name in names:
            code = results[name]
            if code is None:
                counts["not run"] += 1
            elif code in KILLED:
                counts["killed"] += 1
            elif name in equivalent and code in SURVIVED:
                counts["equivalent"] += 1
            else:  # survived, no tests, or an outcome mutmut calls suspicious
                counts["survived"] += 1
                survivors.append(name)
        counted = len(names) - counts["equivalent"] - counts["not run"]
        score = counts["killed"] / counted if counted else float("nan")
        note = f"  ({counts['not run']} not run)" if counts["not run"] else ""
        lines.append(
            f"{module:<68} {len(names):>7} {counts['killed']:>6} {counts['equivalent']:>6} "
            f"{counts['survived']:>5}  {score:6.1%}{note}"
        )
        if not names or counts["not run"] or not score >= TARGET:
            ok = False
    if args.survivors:
        print("\n".join(survivors))
        return 0
    print("\n".join(lines))
    if survivors:
        print("\nsurvivors not listed as equivalent (`mutmut show NAME` prints the change):")
        for name in survivors:
            print(f"  {name}")
    stale = sorted(n for n in equivalent if n not in results or results[n] in KILLED)
    if stale:
        ok = False
        print(f"\nlisted as equivalent in {args.doc.name} but killed or no longer a mutant:")
        for name in stale:
            print(f"  {name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
