"""Gold rewards on text: r*(x, y) for tasks that take one by name (the ``hf`` task).

A gold reward is what the benchmark judges by, so it is never trained by the harness. Built-in:

- ``classifier`` — a sequence-classification model loaded by name or local path with
  ``AutoModelForSequenceClassification.from_pretrained``: r*(x, y) is the logit of class ``label``
  (default 0; for a single-logit reward model, its only output) on the text ``x + y``, scored in
  batches without gradient. This is how public reward models (e.g. OpenAssistant's DeBERTa reward
  model) are used as gold rewards.
- ``length`` — the number of characters of y, scaled: a transparent reward for smoke tests and a
  classic over-optimisation target.

Plugins add gold rewards with the ``register_gold_rewards`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from harness.errors import ConfigError
from harness.hookspecs import Register, hookimpl


class GoldReward(ABC):
    """r*(x, y) on text. Subclasses take keyword parameters and implement :meth:`score`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """[B] float32 rewards of each (prompt, response) pair."""


class ClassifierReward(GoldReward):
    """A sequence classifier's logit on ``prompt + response``, loaded with ``from_pretrained``."""

    name = "classifier"

    def __init__(
        self,
        path: str,
        label: int = 0,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
        **from_pretrained: Any,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from harness.models.hub import pretrained_kwargs

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **from_pretrained)
            # no Hub kernels unless the parameters ask (use_kernels: true); see harness.models.hub
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, **{**pretrained_kwargs(), **from_pretrained})
        except Exception as exc:
            raise ConfigError(f"gold reward 'classifier': cannot load '{path}': "
                              f"{' '.join(str(exc).split())}") from None
        if label < 0 or label >= self.model.config.num_labels:
            raise ConfigError(
                f"gold reward 'classifier': label {label} out of range for '{path}' "
                f"({self.model.config.num_labels} labels)"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval().requires_grad_(False)
        self.label, self.batch_size, self.max_length, self.device = (
            label, batch_size, max_length, device
        )

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                ).to(self.device)
                logits = self.model(**enc).logits.float()
                out.append(logits[:, self.label].cpu())
        return torch.cat(out) if out else torch.zeros(0)


class LengthReward(GoldReward):
    """r*(x, y) = scale · len(y) in characters."""

    name = "length"

    def __init__(self, scale: float = 0.01) -> None:
        self.scale = scale

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return torch.tensor([self.scale * len(r) for r in responses], dtype=torch.float32)


@hookimpl
def register_gold_rewards(register: Register) -> None:
    register(ClassifierReward.name, ClassifierReward)
    register(LengthReward.name, LengthReward)
