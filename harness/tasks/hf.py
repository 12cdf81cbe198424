"""``hf``: any causal LM as π_ref, prompts from a file or a dataset, a gold reward by name.

The path to real models. π_ref is loaded with ``AutoModelForCausalLM.from_pretrained`` from a hub
name or a local folder, its tokenizer with ``AutoTokenizer.from_pretrained``; prompts come from a
JSON-lines, JSON or Parquet file with a ``prompt`` column (TRL's convention; ``chosen`` and
``rejected`` columns, if present, are ignored here), or from a ``datasets`` name; r* is a gold
reward registered by name (see :mod:`harness.gold`), e.g. a sequence-classification reward
model loaded by path::

    task:
      name: hf
      params:
        model: /models/my-sft-model
        prompts: data/prompts.jsonl
        gold_reward: classifier
        gold_reward_params: {path: /models/my-reward-model}

The prompts are shuffled with the task's seed; the last ``num_eval_prompts`` are held out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from harness.errors import ConfigError
from harness.gold import GoldReward
from harness.policy import PromptBatch, ResponseBatch
from harness.tasks.lm_task import LMTask

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class HFParams:
    """Parameters of the ``hf`` task."""

    model: str
    """A hub name or a local folder holding a causal LM and its tokenizer."""
    prompts: str | None = None
    """A ``.jsonl``, ``.json`` or ``.parquet`` file with a ``prompt`` column."""
    dataset: str | None = None
    """Instead of ``prompts``: a ``datasets`` name (needs ``pip install datasets``)."""
    dataset_split: str = "train"
    """The split of ``dataset`` to read."""
    prompt_column: str = "prompt"
    """The column holding the prompts."""
    prompt_words: list[int] | None = None
    """``[min, max]``: take each prompt's first k words (whitespace-separated), k drawn uniformly
    from ``min`` … ``max`` per prompt with the instance's seed, as the DPO paper's and TRL's
    sentiment experiments take a short prefix of each review; None: the whole text."""
    num_eval_prompts: int = 64
    """Prompts held out for evaluation (taken after a seeded shuffle)."""
    max_prompts: int | None = None
    """Use at most this many prompts in all (after the shuffle); None: all."""
    max_new_tokens: int = 64
    """The longest response a policy may generate."""
    gold_reward: str = "classifier"
    """The registered gold reward r* (``rlhf-harness plugins`` lists them)."""
    gold_reward_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the gold reward (e.g. ``path`` of a classifier)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype when loading π_ref."""
    trust_remote_code: bool = False
    """Passed to ``from_pretrained``; only for models whose code you trust."""
    hub_kernels: bool = False
    """Let transformers replace layers of π_ref by kernels fetched from the Hugging Face Hub
    (``from_pretrained(use_kernels=True)``, transformers >= 4.54). Off by default: with it a run
    needs Hub access, and sampling (eval mode) and training may run different kernels for the
    same layer (see :mod:`harness.models.hub`)."""

    def __post_init__(self) -> None:
        if self.prompt_words is not None:
            words = self.prompt_words
            if len(words) != 2 or not 1 <= words[0] <= words[1]:
                raise ValueError(f"prompt_words must be [min, max] with 1 <= min <= max, "
                                 f"got {words}")
        # Local folders are read now (their config.json only), so that ``validate`` names a
        # wrong one; a hub name is left to the run, which loads it.
        archs = _architectures(self.model)
        if archs and not any(a.endswith(_CAUSAL_LM_SUFFIXES) for a in archs):
            raise ValueError(
                f"the model '{self.model}' is not a causal LM (its config names "
                f"{', '.join(archs)}); give a folder saved from an AutoModelForCausalLM"
            )
        path = self.gold_reward_params.get("path")
        if self.gold_reward == "classifier" and isinstance(path, str):
            labels = _num_labels(path)
            label = self.gold_reward_params.get("label", 0)
            if labels is not None and isinstance(label, int) and not 0 <= label < labels:
                raise ValueError(
                    f"label {label} of gold_reward_params is out of range for the classifier "
                    f"'{path}', which has {labels} label{'s' if labels != 1 else ''}"
                )


_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _local_config(path: str) -> dict[str, Any] | None:
    """The ``config.json`` of a local model folder, or None (a hub name, or no such file)."""
    import json

    file = Path(path) / "config.json"
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _architectures(path: str) -> list[str]:
    config = _local_config(path) or {}
    archs = config.get("architectures") or []
    return [str(a) for a in archs] if isinstance(archs, list) else []


def _num_labels(path: str) -> int | None:
    """The number of outputs of a local sequence classifier (as transformers reads its config)."""
    config = _local_config(path)
    if config is None:
        return None
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    labels = config.get("num_labels")
    return int(labels) if isinstance(labels, int) else 2  # transformers' default


class HFTask(LMTask):
    """A pre-trained causal LM, prompts from a file or dataset, a gold reward by name."""

    name: ClassVar[str] = "hf"
    Params: ClassVar[type] = HFParams

    def __init__(self, params: HFParams, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        if (params.prompts is None) == (params.dataset is None):
            raise ConfigError("hf task: give exactly one of 'prompts' (a file) and 'dataset'")
        if params.max_new_tokens < 1 or params.num_eval_prompts < 1:
            raise ConfigError("hf task: max_new_tokens and num_eval_prompts must be >= 1")
        texts = self._read_prompts()
        rng = random.Random(seed)
        rng.shuffle(texts)
        if params.max_prompts is not None:
            texts = texts[: params.max_prompts]
        if params.prompt_words is not None:
            low, high = params.prompt_words
            texts = [" ".join(t.split()[: rng.randint(low, high)]) for t in texts]
        if len(texts) <= params.num_eval_prompts:
            raise ConfigError(
                f"hf task: {len(texts)} prompts, not more than num_eval_prompts="
                f"{params.num_eval_prompts}: none would be left to train on"
            )
        self._texts = {
            "train": texts[: -params.num_eval_prompts],
            "eval": texts[-params.num_eval_prompts :],
        }
        self._gold: GoldReward | None = None

    def _read_prompts(self) -> list[str]:
        p: HFParams = self.params
        column = p.prompt_column
        if p.prompts is not None:
            import pandas as pd

            path = Path(p.prompts)
            if not path.exists():
                raise ConfigError(f"{path}: prompt file not found")
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif path.suffix in (".jsonl", ".json"):
                frame = pd.read_json(path, lines=path.suffix == ".jsonl")
            else:
                raise ConfigError(f"{path}: unsupported prompt file type (.jsonl, .json, .parquet)")
            source = str(path)
            if column not in frame.columns:
                raise ConfigError(
                    f"{source}: no column '{column}' (it has {', '.join(map(str, frame.columns))})"
                )
            values = list(frame[column])
        else:
            try:
                import datasets
            except ImportError:
                raise ConfigError(
                    "hf task: 'dataset' needs the datasets package: pip install datasets"
                ) from None
            data = datasets.load_dataset(p.dataset, split=p.dataset_split)
            source = f"dataset '{p.dataset}' ({p.dataset_split})"
            if column not in data.column_names:
                raise ConfigError(
                    f"{source}: no column '{column}' (it has {', '.join(data.column_names)})"
                )
            values = list(data[column])
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{source}: column '{column}' must hold non-empty text in every row")
        return values

    def load_assets(self) -> tuple[nn.Module, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from harness.models.hub import pretrained_kwargs

        p: HFParams = self.params
        kwargs = {"trust_remote_code": p.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(p.model, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                p.model, dtype=_DTYPES[p.dtype], **kwargs,
                **pretrained_kwargs(hub_kernels=p.hub_kernels))
        except Exception as exc:
            raise ConfigError(f"hf task: cannot load model '{p.model}': "
                              f"{' '.join(str(exc).split())}") from None
        model.requires_grad_(False).eval()
        # Kept in host memory: the run's device holds the copies made from it (the policy, r̂,
        # a critic), not this one as well.
        return model, tokenizer

    def prompt_texts(self, split: str) -> list[str]:
        return self._texts[split]

    @property
    def max_new_tokens(self) -> int:
        return int(self.params.max_new_tokens)

    @property
    def gold(self) -> GoldReward:
        """The gold reward, built on first use from the plugin registry."""
        if self._gold is None:
            from harness.engine.plugins import get_plugin_host

            p: HFParams = self.params
            cls = get_plugin_host().gold_reward(p.gold_reward)
            try:
                self._gold = cls(**p.gold_reward_params)
            except TypeError as exc:
                raise ConfigError(f"gold reward '{p.gold_reward}': {exc}") from None
        return self._gold

    def gold_reward(self, prompts: PromptBatch, responses: ResponseBatch) -> torch.Tensor:
        """r*(x, y) from the gold reward, on the decoded texts."""
        scores = self.gold.score(self.decode_prompts(prompts), self.decode_responses(responses))
        return scores.float().to(responses.tokens.device)
