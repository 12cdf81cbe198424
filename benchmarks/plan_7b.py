"""The memory plan (``rlhf-harness plan``) of 7B-shaped runs, for the README's table.

A Llama-2-7B-shaped config (32 layers of width 4096, MLP 11008, vocabulary 32000) is written to a
temporary folder beside a word-level tokenizer and 64 prompts; the plan builds the model on the
meta device (no weight exists). Runs: DPO and GRPO with LoRA (r = 16 on q/v), PPO with LoRA, and
GRPO full-weight with checkpointing, in bf16 autocast over float32 weights, batches as
``suites/gpu.yaml``'s scaled to one H100.

    python benchmarks/plan_7b.py
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path

LORA = "lora: {r: 16, target_modules: [q_proj, v_proj]}"
GRPO = ("{prompts_per_step: 8, num_generations: 8, num_mini_batches: 8, "
        "learning_rate: 0.00001}")
RUNS = {
    "dpo, LoRA": ("dpo", "{batch_size: 8, learning_rate: 0.00001}", LORA),
    "grpo, LoRA": ("grpo", GRPO, LORA),
    "ppo, LoRA": ("ppo", "{rollout_batch_size: 64, num_mini_batches: 16, "
                  "learning_rate: 0.00001}", LORA),
    "grpo, LoRA, offload": ("grpo", GRPO, LORA + ", offload_frozen: true, "
                            "activation_checkpointing: true"),
}


def main() -> None:
    import transformers

    from harness.engine.memory import format_bytes, plan_run
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite
    from harness.tasks.tiny_lm import TinyLMParams, make_corpus, make_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = transformers.LlamaConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
        config.save_pretrained(root / "model")
        corpus, _ = make_corpus(TinyLMParams(corpus_size=400))
        make_tokenizer(corpus).save_pretrained(root / "model")
        prompts = [" ".join(doc.split()[:4]) for doc in corpus[:64]]
        (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n"
                                                    for p in prompts))
        print(f"{'run':24s} {'model state':>12s} {'prepare':>10s} {'generate':>10s} "
              f"{'train':>10s} {'peak':>10s} {'+headroom':>10s}")
        for label, (algorithm, cfg, policy) in RUNS.items():
            suite = root / "suite.yaml"
            suite.write_text(textwrap.dedent(f"""\
                name: plan-7b
                tasks:
                  - name: hf
                    params: {{model: {root / 'model'}, prompts: {root / 'prompts.jsonl'},
                              num_eval_prompts: 16, max_new_tokens: 128}}
                preferences: {{num_pairs: 2000}}
                reward_model: {{batch_size: 8}}
                algorithms:
                  - name: {algorithm}
                    config: {cfg}
                seeds: [0]
                budget: {{steps: 1}}
                evaluation: {{every: 1, samples_per_prompt: 1, evaluators: [proxy_reward, kl_ref]}}
                device: cuda
                precision: bf16
                policy: {{{policy}}}
                """))
            [spec] = check_suite(load_suite(suite), suite, get_plugin_host(), allow_large=True)
            plan = plan_run(spec.as_dict(), get_plugin_host(), spec.run_id)
            ph = plan.phases
            print(f"{label:24s} {format_bytes(plan.model_state):>12s} "
                  f"{format_bytes(ph.get('prepare', 0)):>10s} "
                  f"{format_bytes(ph.get('generate', 0)):>10s} "
                  f"{format_bytes(ph.get('train', 0)):>10s} {format_bytes(plan.total):>10s} "
                  f"{format_bytes(plan.needed):>10s}")


if __name__ == "__main__":
    main()
