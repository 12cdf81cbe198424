"""What language-model tasks share: a causal LM as π_ref, a tokenizer, prompts as text.

:class:`LMTask` implements the :class:`~harness.tasks.base.Task` methods that only depend on the
model and its tokenizer — prompt batches, π_ref copies, reward and value models initialised
from π_ref's backbone, decoding and encoding — so that a concrete LM task provides just its
assets (:meth:`LMTask.load_assets`), its prompt texts and its gold reward.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from harness.errors import ConfigError
from harness.models.lm import LMPolicy, LMRewardModel, LMValueModel
from harness.policy import Policy, PromptBatch, ResponseBatch, pad_token_lists
from harness.tasks.base import Task


class LMTask(Task):
    """Base of tasks whose policy is a ``transformers`` causal LM (see the module docstring)."""

    kind: ClassVar[str] = "lm"

    def __init__(self, params: Any, *, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed=seed, device=device)
        self._assets: tuple[nn.Module, Any] | None = None
        self._prompt_cache: dict[str, PromptBatch] = {}
        self._train_index: dict[str, int] | None = None

    # --- what a concrete task provides -----------------------------------------------------------

    @abstractmethod
    def load_assets(self) -> tuple[nn.Module, Any]:
        """``(model, tokenizer)``: π_ref's causal LM (not trained in place), in host memory, and
        its tokenizer. The task copies it to its device for the run's models; kept on the CPU,
        it adds nothing to the device's memory."""

    @abstractmethod
    def prompt_texts(self, split: str) -> list[str]:
        """The prompts of ``split`` (``"train"`` or ``"eval"``) as text."""

    def prompt_token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of prompts; by default the tokenizer's, special tokens (e.g. BOS) included."""
        return self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]

    def prompt_key(self, text: str) -> str:
        """How a prompt's text is matched against the train split in :meth:`encode`."""
        return text

    def check_responses(self, texts: list[str], ids: list[list[int]]) -> None:
        """Reject responses π_ref could not have produced (raise ConfigError); default: none."""

    @property
    def suppress_ids(self) -> tuple[int, ...]:
        """Token ids π_ref never emits (e.g. padding); none by default."""
        return ()

    # --- assets ----------------------------------------------------------------------------------

    def _loaded(self) -> tuple[nn.Module, Any]:
        if self._assets is None:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # the harness shows progress of its own
            self._assets = self.load_assets()
        return self._assets

    @property
    def model(self) -> nn.Module:
        """π_ref's causal LM as loaded, in host memory (shared: copy it before training)."""
        return self._loaded()[0]

    @property
    def tokenizer(self) -> Any:
        """The task's tokenizer."""
        return self._loaded()[1]

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)

    @property
    def eos_id(self) -> int | None:
        eos = self.tokenizer.eos_token_id
        return None if eos is None else int(eos)

    # --- data ------------------------------------------------------------------------------------

    def _prompts(self, split: str) -> PromptBatch:
        if split not in self._prompt_cache:
            texts = self.prompt_texts(split)
            ids, mask = pad_token_lists(self.prompt_token_ids(texts), self.pad_id, left=True)
            index = torch.arange(len(texts), dtype=torch.long)
            self._prompt_cache[split] = PromptBatch(index=index, ids=ids, mask=mask)
        return self._prompt_cache[split].to(self.device)

    @property
    def train_prompts(self) -> PromptBatch:
        return self._prompts("train")

    @property
    def eval_prompts(self) -> PromptBatch:
        return self._prompts("eval")

    # --- models ----------------------------------------------------------------------------------

    def reference_policy(self) -> LMPolicy:
        """A fresh, trainable copy of π_ref (the same weights on every call)."""
        model = copy.deepcopy(self.model).requires_grad_(True)
        policy = LMPolicy(
            model, pad_id=self.pad_id, eos_id=self.eos_id, suppress_ids=self.suppress_ids
        )
        return policy.to(self.device)

    def make_reward_model(self) -> LMRewardModel:
        """r̂: a copy of π_ref's backbone and a scalar head seeded by the task's seed."""
        return LMRewardModel(self.model, seed=self.seed).to(self.device)

    def make_value_model(self, policy: Policy) -> LMValueModel:
        """A critic from ``policy``'s backbone (copied) when it is an :class:`LMPolicy`
        without LoRA adapters, else from π_ref's (a LoRA policy starts as π_ref, and its
        adapters do not belong in a critic); V_t is the value before response token t."""
        from harness.models.lora import has_lora

        lm = isinstance(policy, LMPolicy) and not has_lora(policy)
        source = policy if lm else self.model
        return LMValueModel(source, seed=self.seed).to(self.device)

    # --- text ------------------------------------------------------------------------------------

    def decode_prompts(self, prompts: PromptBatch) -> list[str]:
        width, lengths = prompts.ids.shape[1], prompts.mask.sum(-1).tolist()
        kept = [row[width - n :] for row, n in zip(prompts.ids.tolist(), lengths, strict=True)]
        return self.tokenizer.batch_decode(kept, skip_special_tokens=True)

    def decode_responses(self, responses: ResponseBatch) -> list[str]:
        lengths = responses.lengths.tolist()
        kept = [row[:n] for row, n in zip(responses.tokens.tolist(), lengths, strict=True)]
        return self.tokenizer.batch_decode(kept, skip_special_tokens=True)

    def encode(self, prompts: list[str], responses: list[str]) -> tuple[PromptBatch, ResponseBatch]:
        """Tokenise (prompt, response) texts: prompts left-padded, responses right-padded.

        Decoded text carries no EOS, so it is restored by length, as sampling would have
        produced it: a response shorter than ``max_new_tokens`` tokens is taken to be complete
        and gets EOS (``finished``); a longer one is cut at the limit. Prompts not in the train
        split get index -1.
        """
        if len(prompts) != len(responses):
            raise ConfigError(
                f"{self.name} task: {len(prompts)} prompts but {len(responses)} responses to encode"
            )
        if self._train_index is None:
            train = self.prompt_texts("train")
            self._train_index = {self.prompt_key(t): i for i, t in enumerate(train)}
        ids, pmask = pad_token_lists(self.prompt_token_ids(list(prompts)), self.pad_id, left=True)
        index = torch.tensor(
            [self._train_index.get(self.prompt_key(t), -1) for t in prompts], dtype=torch.long
        )
        limit = self.max_new_tokens
        seqs = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        self.check_responses(list(responses), seqs)
        seqs = [s[:limit] for s in seqs]
        finished = [len(s) < limit and self.eos_id is not None for s in seqs]
        seqs = [[*s, self.eos_id] if f else s for s, f in zip(seqs, finished, strict=True)]
        tokens, rmask = pad_token_lists(seqs, self.pad_id, left=False)
        prompt_batch = PromptBatch(index=index, ids=ids, mask=pmask)
        response_batch = ResponseBatch(
            tokens=tokens, mask=rmask, finished=torch.tensor(finished, dtype=torch.bool)
        )
        return prompt_batch.to(self.device), response_batch.to(self.device)
