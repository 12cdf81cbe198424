"""Memory: the bytes a run's models hold, counted from tensors or planned before a run.

Two views of the same quantities:

- :func:`measure_state` counts what is there, by kind: the models' parameters, the gradients
  they hold, and the tensors in the optimisers' state (a run's summary holds the total, with
  buffers, from :func:`harness.compute.model_state_bytes`).
- :func:`plan_run` predicts, for one run spec of a suite and without loading any weight (the
  task's model is built on PyTorch's ``meta`` device from its config), the bytes of every model
  the run keeps resident — parameters, gradients, optimiser state — plus the KV cache of its
  largest generation and an estimate of its training activations. ``rlhf-harness plan SUITE``
  prints it; ``rlhf-harness run`` refuses, before starting, a suite with a run that cannot fit.

**What a run keeps resident** (see :func:`harness.engine.runner.build_context`): the task's model as
loaded (π_ref, kept by the task for the run); the policy, a trainable copy of it; π_ref — a frozen
copy, or nothing with LoRA (the policy's own model with adapters off); r̂ (a copy of the backbone
with a scalar head) when the algorithm needs a reward or the ``proxy_reward`` evaluator runs, and
the suite fits it; a critic, of r̂'s shape and trainable, for an algorithm that declares one
(:attr:`~harness.algorithm.Algorithm.trains_critic`); the gold reward model (``hf``'s
``classifier``).

**Model state is exact.** Gradients: one per trainable parameter, in its dtype (their peak, during
a backward pass). Optimiser state: Adam keeps two tensors per trainable parameter and RMSprop one,
in its dtype, plus a float32 step count each; SGD without momentum keeps none. The algorithm's
``optimizer`` config field says which (Adam when it has none); an algorithm whose config has no
``learning_rate`` trains nothing (best-of-n) and holds neither. The test suite checks these
numbers against the tensors of real runs on the CPU.

**Rows.** A step's batches come from the algorithm's config and class (:func:`_batches`): a
rollout of ``rollout_batch_size`` rows, or ``prompts_per_step`` prompts times the responses per
prompt (the config's group size, best-of-n's ``n``, or the class's ``samples_per_prompt``:
online DPO's pair), trained in ``num_mini_batches`` minibatches; offline, ``batch_size`` pairs
(chosen and rejected share a prompt) or, for unpaired data (KTO), examples. An algorithm that
trains nothing is evaluated as it answers: best-of-n samples and ranks n candidates for each
evaluation response.

**KV cache and activations are estimates.** The KV cache: 2 × layers × KV heads × head width ×
rows × (prompt + response) tokens, in the model's dtype, for the most rows generated at once (a
training rollout or an evaluation). Activations of a training forward (Korthikanti et al. 2022,
arXiv:2205.05198, §4.1, per layer ≈ 34·s·b·h + 5·a·s²·b bytes at 16 bits, i.e. 17 and 2.5
values), scaled to the dtype; with activation checkpointing each layer keeps its input only (s·b·h
values) and one layer is recomputed at a time. Plus the logits of the response tokens in float32
and their gradient. A forward without gradient (scoring, log-prob passes) holds one layer's
transient at a time (:func:`layer_forward_bytes`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError

__all__ = [
    "ModelPlan",
    "RunPlan",
    "format_bytes",
    "measure_state",
    "optimizer_slots",
    "parse_bytes",
    "plan_run",
    "tensor_bytes",
]

OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "rmsprop": 1, "sgd": 0}
"""Tensors of a parameter's shape an optimiser keeps per trainable parameter."""


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct tensors among ``tensors`` (a tensor met twice counted once)."""
    seen: set[tuple[int, int, int]] = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        size = t.numel() * t.element_size()
        key = (t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t),
               t.storage_offset(), size)
        if key in seen:
            continue
        seen.add(key)
        total += size
    return total


def measure_state(
    models: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer] = ()
) -> dict[str, int]:
    """Bytes held now: ``parameters`` (distinct, of every model), ``gradients`` (those set) and
    ``optimizer`` (every tensor in the optimisers' state)."""
    params = [p for m in models for p in m.parameters()]
    state = [v for opt in optimizers for s in opt.state.values() for v in s.values()
             if isinstance(v, torch.Tensor)]
    return {
        "parameters": tensor_bytes(params),
        "gradients": tensor_bytes(p.grad for p in params if p.grad is not None),
        "optimizer": tensor_bytes(state),
    }


def optimizer_slots(config: Any) -> int:
    """Tensors of each trainable parameter's shape that the algorithm's optimiser keeps."""
    name = str(getattr(config, "optimizer", "adam")).lower()
    if name == "sgd" and float(getattr(config, "momentum", 0.0) or 0.0) > 0:
        return 1
    return OPTIMIZER_SLOTS.get(name, 2)


@dataclasses.dataclass
class ModelPlan:
    """The bytes one resident model needs."""

    name: str
    parameters: int = 0
    gradients: int = 0
    optimizer: int = 0
    kv_cache: int = 0
    activations: int = 0
    host: int = 0
    """Bytes kept in host memory (an offloaded model's weights), not counted on the device."""

    @property
    def model_state(self) -> int:
        return self.parameters + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.model_state + self.kv_cache + self.activations


HEADROOM_BYTES = 2**30
"""Device memory a run cannot use whatever its plan: the CUDA context and its libraries'
workspaces (≈ 0.5 GiB on an H100, outside ``max_memory_allocated``), and a margin."""

HEADROOM_FRACTION = 0.10
"""Of the planned peak, also kept free: the caching allocator's fragmentation (blocks rounded to
512 B, segments to 2 MiB, freed blocks that do not fit the next request)."""


@dataclasses.dataclass
class RunPlan:
    """The memory plan of one run: its models, and the device's bytes at the peak of each phase."""

    run_id: str
    label: str
    task: str
    models: list[ModelPlan]
    notes: list[str] = dataclasses.field(default_factory=list)
    phases: dict[str, int] = dataclasses.field(default_factory=dict)
    """Planned device bytes at the peak of each phase (``prepare``: r̂'s fit before the run;
    ``generate``, ``score``, ``train``, ``evaluate``), what ``torch.cuda.max_memory_allocated``
    would read."""

    @property
    def model_state(self) -> int:
        return sum(m.model_state for m in self.models)

    @property
    def total(self) -> int:
        """The planned peak of device bytes: the largest phase."""
        if self.phases:
            return max(self.phases.values())
        return sum(m.total for m in self.models) + max((m.host for m in self.models), default=0)

    @property
    def headroom(self) -> int:
        """Bytes kept free beside :attr:`total` (:data:`HEADROOM_BYTES` and
        :data:`HEADROOM_FRACTION` of it); none for a run without a model to plan."""
        if not self.models:
            return 0
        return HEADROOM_BYTES + int(HEADROOM_FRACTION * self.total)

    @property
    def needed(self) -> int:
        """:attr:`total` and :attr:`headroom`: the device memory a run needs."""
        return self.total + self.headroom

    def fits(self, memory: int | None) -> bool | None:
        return None if memory is None else self.needed <= memory


# --- sizes -----------------------------------------------------------------------------------


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


MAX_BYTES = 2**60
"""The largest size ``--gpu-memory`` accepts (1 EiB)."""


def parse_bytes(text: str) -> int:
    """``"80GiB"``, ``"141GB"``, ``"1.5e9"``: a number of bytes (GB = 10⁹, GiB = 2³⁰)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"--gpu-memory: cannot read {text!r} as a size (e.g. 80GiB, 141GB)")
    try:
        size = float(match.group(1)) * _UNITS[unit]
    except ValueError:  # "1.2.3"
        raise ConfigError(f"--gpu-memory: cannot read {text!r} as a size (e.g. 80GiB, 141GB)")\
            from None
    if not math.isfinite(size) or size > MAX_BYTES:
        raise ConfigError(f"--gpu-memory: {text!r} is more than any machine has (at most 1 EiB)")
    return int(size)


def format_bytes(n: int) -> str:
    """Bytes in binary units: ``1.50 GiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# --- the task's model, on the meta device ----------------------------------------------------


def _skeleton(task_cls: type, params: Any) -> tuple[nn.Module, torch.dtype, int, str | None]:
    """``(model on meta, dtype, longest prompt in tokens, gold classifier path)`` of an LM task."""
    from harness.tasks.hf import _DTYPES, HFTask
    from harness.tasks.sentiment import SentimentTask
    from harness.tasks.tiny_lm import TinyLMTask

    if issubclass(task_cls, TinyLMTask | SentimentTask):
        from harness.models.lm import build_causal_lm

        if issubclass(task_cls, TinyLMTask):
            from harness.tasks.tiny_lm import make_corpus, make_tokenizer

            tokenizer = make_tokenizer(make_corpus(params)[0])
        else:
            from harness.tasks import sentiment

            tokenizer = sentiment.make_tokenizer(sentiment.pretraining_sentences(params),
                                                 params.vocab_size)
        with torch.device("meta"):
            model = build_causal_lm(
                params.arch, len(tokenizer), params.hidden_size, params.num_layers,
                params.num_heads, params.intermediate_size, params.max_positions, 0,
                pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
                eos_id=tokenizer.eos_token_id,
            )
        return model, torch.float32, params.prompt_max_words + 1, None
    if issubclass(task_cls, HFTask):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        kwargs = {"trust_remote_code": params.trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(params.model, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(params.model, **kwargs)
        except Exception as exc:
            raise ConfigError(f"hf task: cannot load model '{params.model}': "
                              f"{' '.join(str(exc).split())}") from None
        dtype = _DTYPES[params.dtype]
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
        task = HFTask(params)
        texts = task.prompt_texts("train") + task.prompt_texts("eval")
        longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])
        gold = None
        if params.gold_reward == "classifier":
            gold = params.gold_reward_params.get("path")
        return model, dtype, longest, gold
    raise ConfigError(f"task '{task_cls.name}': no memory plan for this kind of task")


def model_skeleton(task_cls: type, params: Any, *, local_only: bool = False) -> nn.Module | None:
    """The task's causal LM built on the meta device from its config (no weights); None for a
    task without one, or, with ``local_only``, an ``hf`` model that is not in a local folder."""
    from harness.tasks.hf import HFTask
    from harness.tasks.sentiment import SentimentTask
    from harness.tasks.tiny_lm import TinyLMTask

    if not issubclass(task_cls, TinyLMTask | SentimentTask | HFTask):
        return None
    if local_only and issubclass(task_cls, HFTask):
        from transformers import AutoConfig, AutoModelForCausalLM

        if not (Path(params.model) / "config.json").is_file():
            return None
        try:
            config = AutoConfig.from_pretrained(params.model,
                                                trust_remote_code=params.trust_remote_code)
        except Exception:  # an unreadable folder is the run's to report, with its cause
            return None
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    return _skeleton(task_cls, params)[0]


def _bytes(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _backbone_bytes(model: nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """Bytes and tensors of a scalar-head model on ``model``'s backbone (head in float32)."""
    from harness.models.lm import _backbone_of

    backbone, hidden = _backbone_of(model)
    params = list(backbone.parameters())
    head = (hidden + 1) * 4  # nn.Linear(hidden, 1), float32
    return _bytes(params) + head, len(params) + 2


def _classifier_bytes(path: str) -> int:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ConfigError(f"gold reward 'classifier': cannot load '{path}': "
                          f"{' '.join(str(exc).split())}") from None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return _bytes(model.parameters())


@dataclasses.dataclass(frozen=True)
class _Batches:
    """The rows an algorithm's step runs at once, as its config and class declare them."""

    generated: int = 0
    """Responses sampled at once (a training rollout)."""
    trained: int = 0
    """Rows of a training forward (a minibatch)."""
    prompts: int | None = None
    """Distinct prompts among :attr:`trained`'s rows, where rows share them; None when every
    row may have its own."""
    per_prompt: int = 1
    """Responses sampled per prompt (a group; best-of-n's candidates; online DPO's pair)."""


def _batches(algo_cls: type, config: Any) -> _Batches:
    """The rows of one step of ``algo_cls`` under ``config``:

    - a rollout of ``rollout_batch_size`` rows, or ``prompts_per_step`` prompts times the
      responses per prompt: the config's group field (``num_generations``, ``k``,
      ``group_size``, ``n``), else the class's ``samples_per_prompt`` (online DPO's pair), else
      one; ``num_mini_batches`` minibatches train on it — the rollout shuffled into them (as
      GRPO's, GSPO's and REINFORCE++'s are), so that a minibatch's rows may each have their
      own prompt — or, with one minibatch, on whole groups;
    - offline, ``batch_size`` examples: a pair's chosen and rejected responses to one prompt,
      or, for unpaired data (``needs`` has ``"unpaired"``: KTO), one response each;
    - an algorithm without a ``learning_rate`` trains nothing (best-of-n): no training rows.
    """
    get = lambda name, default=0: int(getattr(config, name, default) or default)  # noqa: E731
    minibatches = max(get("num_mini_batches", 1), 1)
    trains = hasattr(config, "learning_rate")
    if hasattr(config, "rollout_batch_size"):
        gen = get("rollout_batch_size")
        return _Batches(gen, math.ceil(gen / minibatches) if trains else 0)
    if hasattr(config, "prompts_per_step"):
        group = next((get(n) for n in ("num_generations", "k", "group_size", "n")
                      if hasattr(config, n)), int(getattr(algo_cls, "samples_per_prompt", 1)))
        group = max(group, 1)
        prompts = get("prompts_per_step")
        gen = prompts * group
        train = math.ceil(gen / minibatches) if trains else 0
        distinct = min(train, prompts) if minibatches > 1 else max(math.ceil(train / group), 1)
        return _Batches(gen, train, distinct if train else None, group)
    if hasattr(config, "batch_size"):
        batch = get("batch_size")
        if "unpaired" in getattr(algo_cls, "needs", ()):
            return _Batches(0, batch, None)
        return _Batches(0, 2 * batch, batch)
    return _Batches()


_SKELETONS: dict[str, tuple[nn.Module, torch.dtype, int, str | None]] = {}
"""The last task's skeleton (:func:`_skeleton`), by a hash of its name and parameters."""


def plan_run(spec: dict[str, Any], host: Any, run_id: str = "") -> RunPlan:
    """The memory plan of one run spec (a :class:`~harness.suite.RunSpec` as a dict), named
    ``run_id`` (the spec's :attr:`~harness.suite.RunSpec.run_id`; the plan does not depend on
    it)."""
    from harness.algorithm import policy_kind
    from harness.config import build_config, config_hash

    task_cls = host.task(spec["task"])
    algo_cls = host.algorithm(spec["algorithm"])
    plan = RunPlan(run_id=run_id, label=spec["label"], task=spec["task"], models=[])
    params = build_config(task_cls.Params, spec["task_params"])
    config = build_config(algo_cls.Config, spec["algorithm_config"])
    if policy_kind(task_cls.kind) != "neural":
        plan.notes.append("tabular policy: a table of logits, no plan needed")
        return plan
    options = spec.get("policy") or {}
    key = config_hash({"task": spec["task"], "params": spec["task_params"]})
    if key not in _SKELETONS:  # once per task of a suite: runs differ in algorithm and seed
        _SKELETONS.clear()
        _SKELETONS[key] = _skeleton(task_cls, params)
    model, dtype, prompt_len, gold_path = _SKELETONS[key]
    model = copy.deepcopy(model)  # LoRA below changes it in place (on the meta device: cheap)
    base_bytes = _bytes(model.parameters())
    head_bytes, head_tensors = _backbone_bytes(model, dtype)
    weights = base_bytes
    trainable = list(model.parameters())
    if options.get("lora"):  # on the skeleton itself: the base's sizes are counted above
        from harness.models.lm import LMPolicy
        from harness.models.lora import apply_lora

        policy = LMPolicy(model, pad_id=0, eos_id=None)
        apply_lora(policy, options["lora"])
        weights = _bytes(policy.parameters())
        trainable = [p for p in policy.parameters() if p.requires_grad]
    batches = _batches(algo_cls, config)
    trains = hasattr(config, "learning_rate")  # best-of-n trains nothing: no optimiser, no grads
    slots = optimizer_slots(config) if trains else 0
    step_bytes = 4 * len(trainable) if slots else 0  # a float32 step count per parameter
    grads = _bytes(trainable) if trains else 0
    cfg = model.config
    layers = int(cfg.num_hidden_layers)
    hidden = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    vocab = int(cfg.vocab_size)
    inter = int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
                or 4 * hidden)
    gated = any(name.endswith("gate_proj") for name, _ in model.named_modules())
    width = torch.tensor([], dtype=dtype).element_size()
    autocast = spec.get("precision") == "bf16"
    compute = 2 if autocast else width  # the width of what the layers compute and keep
    casts = 2 * base_bytes // width if autocast and width > 2 else 0  # bf16 copies of weights
    response_len = int(getattr(config, "max_new_tokens", None) or params.max_new_tokens)
    seq = prompt_len + response_len
    evaluation = spec["evaluation"]
    eval_prompts = int(getattr(params, "num_eval_prompts", 0) or 0)
    gen_rows, train_rows = batches.generated, batches.trained
    eval_rows = eval_prompts * int(evaluation["samples_per_prompt"])
    per_token = layer_activation_bytes(hidden, inter, gated=gated, compute=compute,
                                       residual=width)

    def kv(rows: int) -> int:  # the cache at its longest, in the computed width
        return 2 * layers * kv_heads * head_dim * rows * seq * compute

    def logits(rows: int, tokens: int) -> int:  # float32 logits and their log-softmax
        return 2 * rows * tokens * vocab * 4

    def trained(rows: int, checkpointing: bool, prompts: int | None = None) -> int:
        """Kept for a backward pass over ``rows`` responses to ``prompts`` distinct prompts
        (rows sharing a prompt run it once, :mod:`harness.models.lm`; not under checkpointing)."""
        if checkpointing:  # each layer's input, and one layer recomputed at a time
            tokens = rows * seq
            return layers * tokens * hidden * width + tokens * per_token
        tokens = rows * seq if prompts is None else prompts * prompt_len + rows * response_len
        return layers * tokens * per_token

    checkpointing = bool(options.get("activation_checkpointing"))
    activations = (trained(train_rows, checkpointing, batches.prompts)
                   + logits(train_rows, response_len) + casts if train_rows else 0)
    plan.models.append(ModelPlan("task model (π_ref as loaded, host memory)", host=base_bytes))
    policy_plan = ModelPlan(
        "policy", parameters=weights, gradients=grads, optimizer=slots * grads + step_bytes,
        kv_cache=kv(max(gen_rows, eval_rows)), activations=activations,
    )
    plan.models.append(policy_plan)
    offload = bool(options.get("offload_frozen"))
    visiting: list[int] = []  # offloaded models: on the device while they run, one at a time

    def frozen(name: str, size: int) -> ModelPlan:
        if offload:
            visiting.append(size)
            return ModelPlan(f"{name}, offloaded (host memory)", host=size)
        return ModelPlan(name, parameters=size)

    if options.get("lora"):
        plan.notes.append("π_ref: the policy's base with its LoRA adapters off (no copy)")
    else:
        plan.models.append(frozen("π_ref", base_bytes))
    evaluators = evaluation["evaluators"]
    fitted = spec["reward_model"]["kind"] == "fitted"
    uses_reward = fitted and ("reward" in algo_cls.needs or "proxy_reward" in evaluators)
    if uses_reward:
        plan.models.append(frozen("r̂ (reward model)", head_bytes))
    critic = None
    if getattr(algo_cls, "trains_critic", False):
        critic = ModelPlan(
            "critic", parameters=head_bytes, gradients=head_bytes,
            optimizer=slots * head_bytes + (4 * head_tensors if slots else 0),
            activations=trained(train_rows, False) + casts,
        )
        plan.models.append(critic)
    if offload and visiting:
        plan.notes.append("offloaded models are built in host memory and visit the device one "
                          "at a time, while they run: the score and evaluate phases count the "
                          "largest")
    if gold_path is not None:
        plan.models.append(ModelPlan("gold reward (classifier)",
                                     parameters=_classifier_bytes(gold_path)))
    # --- the phases' peaks ---
    state = sum(m.model_state for m in plan.models)
    without_grads = state - sum(m.gradients for m in plan.models)
    visit = max(visiting, default=0)
    forward = layer_forward_bytes(hidden, inter, gated=gated, compute=compute, residual=width)

    def one_layer(rows: int, prompts: int | None = None) -> int:
        """A no-grad forward's transient over ``rows`` responses; where they share ``prompts``
        distinct prompts (:mod:`harness.models.lm`), the response columns beside the prompts' KV
        cache repeated to every row, and the hidden states of every row's columns, joined for the
        head (two of full width)."""
        if prompts is None or prompts >= rows:
            return rows * seq * forward
        return (rows * response_len * forward + kv(rows) * prompt_len // seq
                + 2 * rows * seq * hidden * width)
    if gen_rows:
        # sampling: the KV cache, the bf16 weight copies decoding keeps for its call, logits
        plan.phases["generate"] = (without_grads + kv(gen_rows) + casts
                                   + 3 * gen_rows * vocab * 4)
        # r̂ on every response; and, for an algorithm that trains, log-probs (π_ref's, the
        # sampling policy's) over the vocabulary. Best-of-n only ranks its candidates by r̂.
        plan.phases["score"] = (without_grads + visit
                                + one_layer(gen_rows, gen_rows // batches.per_prompt)
                                + (logits(gen_rows, response_len) if trains else 0))
    elif train_rows:  # offline: π_ref's log-probs of a batch (KTO's, of its mismatched pairs)
        plan.phases["score"] = (without_grads + visit + one_layer(train_rows)
                                + logits(train_rows, response_len))
    if train_rows:
        # A backward pass frees each layer's activations as it makes that layer's gradients:
        # the peak holds the one or the other, except under checkpointing (small activations,
        # a recomputed layer beside the gradients made so far).
        kept = policy_plan.activations + (critic.activations if critic is not None else 0)
        grads_now = state - without_grads
        plan.phases["train"] = without_grads + (
            kept + grads_now if checkpointing else max(kept, grads_now))
    if eval_rows:
        plan.phases["evaluate"] = (without_grads + max(kv(eval_rows) + casts, visit
                                   + one_layer(eval_rows) + logits(eval_rows, response_len)))
        if not trains and batches.per_prompt > 1:
            # An algorithm that trains nothing is evaluated as it answers (best-of-n: each
            # response the best of its candidates, all sampled at once and ranked by r̂).
            rows = eval_rows * batches.per_prompt
            plan.phases["evaluate"] = max(plan.phases["evaluate"], without_grads + max(
                kv(rows) + casts + 3 * rows * vocab * 4, visit + one_layer(rows, eval_rows)))
    if uses_reward:
        fit = _fit_plan(spec, head_bytes, head_tensors, layers * seq * layer_activation_bytes(
            hidden, inter, gated=gated, compute=width, residual=width))
        plan.phases["prepare"] = fit.total
        plan.notes.append("r̂ is fitted before the run (full weights, AdamW, in float32): the "
                          "prepare phase, alone on the device")
    return plan


def layer_activation_bytes(hidden: int, intermediate: int, *, gated: bool, compute: int,
                           residual: int) -> int:
    """Bytes a transformer block keeps per token for its backward pass (``transformers``'
    Llama/GPT-2 blocks with SDPA attention, which keeps no s×s scores): ≈ 12·h values around
    attention and the norms (inputs of the q/k/v/o projections, rotated q and k, v, the
    attention output, the norms' inputs and outputs) and 4·i in a gated MLP (gate, up, their
    activation and product; 2·i ungated), in the computed width; under bf16 autocast the
    residual stream and the norms stay float32, ≈ 18·h bytes more (measured on the CPU
    stand-in: 12h + 4i values in float32, 42h + 8i bytes under autocast, within 2%)."""
    mlp = (4 if gated else 2) * intermediate
    values = 12 * hidden + mlp
    extra = 18 * hidden if compute < residual else 0
    return compute * values + extra


def layer_forward_bytes(hidden: int, intermediate: int, *, gated: bool, compute: int,
                        residual: int) -> int:
    """Bytes per token a transformer block holds at once in a forward without gradient (r̂
    scoring its responses, a log-prob pass, best-of-n ranking candidates), at the MLP's peak:
    the residual stream and the normed input (in the residual's width: float32 under
    autocast, which adds the normed input's cast), and the MLP's activation, up projection and
    their product (3·i; ungated, 2·i) in the computed width. Nothing is kept from one layer to
    the next (measured on the CPU stand-in: within 10% of the peak of r̂ scoring 1024 rows)."""
    mlp = (3 if gated else 2) * intermediate
    cast = compute * hidden if compute < residual else 0
    return 2 * residual * hidden + cast + compute * mlp


def _fit_plan(spec: dict[str, Any], head_bytes: int, head_tensors: int, per_row: int
              ) -> ModelPlan:
    """r̂'s fit (:func:`harness.reward.fit_reward_model`): full weights with AdamW (two slots and
    a step count per tensor), batches of chosen and rejected responses, in float32."""
    from harness.reward import _DEFAULTS

    rm = spec["reward_model"]
    pairs = int(spec["preferences"].get("num_pairs") or 0)
    holdout = float(rm.get("holdout_fraction") or 0.1)
    batch = int(rm.get("batch_size") or _DEFAULTS["lm"]["batch_size"])
    rows = 2 * max(min(batch, pairs - math.ceil(pairs * holdout)), 1)
    return ModelPlan(
        "r̂'s fit (before the run)", parameters=head_bytes, gradients=head_bytes,
        optimizer=2 * head_bytes + 4 * head_tensors, activations=rows * per_row,
    )
