"""Equal tuning effort, timed: a 16-trial bandit tuning of five algorithms, and its overhead.

Two suites on the quickstart's bandit (8 prompts × 16 arms, 16384 samples per run), PPO, GRPO,
DPO, IPO and RLOO:

- **tuned** — ``tuning: {trials: 16, instances: [100]}``, then each algorithm's chosen
  configuration on one fresh instance: 80 trial runs and 5 comparison runs, through
  ``rlhf-harness run`` (Optuna's random sampler, studies in the store).
- **swept** — the same 85 runs' worth of work as a plain suite: each algorithm swept over 17
  learning rates on one instance, no tuning.

Both run in child processes of this one invocation, one after the other, each into a fresh
store, tracking off. Printed: the wall time of each, and tuned / swept — the cost of tuning
(proposing, storing the study, reading objectives) on top of the runs themselves.

Run:  .venv/bin/python benchmarks/bench_tuning.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD = """\
name: {name}
tasks:
  - name: bandit
    params: {{num_prompts: 8, num_arms: 16, reward: normal, reference: softmax}}
preferences: {{num_pairs: 4000, preference_model: btl, scale: 0.25}}
reward_model: {{preference_model: btl, scale: 0.25}}
budget: {{samples: 16384}}
evaluation: {{every: 16, beta: 0.1, samples_per_prompt: 2,
             evaluators: [gold_reward, kl_ref, regret]}}
"""
ALGORITHMS = {  # the quickstart's settings; learning rate and KL strength are what is tuned
    "ppo": ("rollout_batch_size: 64, num_ppo_epochs: 2", "kl_coef: 0.1"),
    "grpo": ("prompts_per_step: 8, num_generations: 8, scale_rewards: none", "beta: 0.1"),
    "dpo": ("optimizer: adam, batch_size: 64, warmup_steps: 0", "beta: 0.4"),
    "ipo": ("optimizer: adam, batch_size: 64, warmup_steps: 0", "tau: 0.1"),
    "rloo": ("k: 4, prompts_per_step: 16", "beta: 0.1"),
}
RATES = [round(0.005 * 10 ** (2 * i / 16), 6) for i in range(17)]


def tuned() -> str:
    algs = "".join(f"  - name: {n}\n    config: {{{base}}}\n"
                   for n, (base, _) in ALGORITHMS.items())
    return (HEAD.format(name="tuned5") + "algorithms:\n" + algs + "seeds: [0]\n"
            "tuning: {trials: 16, instances: [100], objective: j_beta}\n")


def swept() -> str:
    algs = "".join(f"  - name: {n}\n    config: {{{base}, {kl}}}\n"
                   f"    sweep: {{learning_rate: {RATES}}}\n"
                   for n, (base, kl) in ALGORITHMS.items())
    return HEAD.format(name="swept5") + "algorithms:\n" + algs + "seeds: [0]\n"


def timed(text: str, folder: Path) -> float:
    path = folder / "suite.yaml"
    path.write_text(text)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--root",
                    str(folder / "runs"), "--no-wandb", "--no-progress", "--no-report"],
                   check=True, cwd=folder, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "tuned", Path(tmp) / "swept"
        a.mkdir()
        b.mkdir()
        t_tuned = timed(tuned(), a)
        t_swept = timed(swept(), b)
    print(f"tuned: 16 trials × 5 algorithms + 5 comparison runs: {t_tuned:.1f} s "
          f"({t_tuned / 60:.2f} min)")
    print(f"swept: 85 runs, no tuning:                           {t_swept:.1f} s")
    print(f"tuned / swept: {t_tuned / t_swept:.3f}")


if __name__ == "__main__":
    main()
