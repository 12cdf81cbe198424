"""Compute accounting: where a run's time, tokens and FLOPs go.

Algorithms wrap their phases in ``meter.phase("generate" | "score" | "train" | "eval")`` and
report the tokens each model processed; the runner reads the totals after every step. Wall time
on a GPU is measured after synchronising the device, so a phase is charged for its own kernels.

**FLOPs** follow the standard estimate for dense transformers (Kaplan et al. 2020, "Scaling Laws
for Neural Language Models", §2.1): a forward pass costs 2·N FLOPs per token and a forward plus
backward pass 6·N, where N is the number of parameters of the model involved, embeddings
excluded (4·N + 2·N_trainable when only some weights train, as with LoRA: no weight gradient of
the frozen base). Tabular models count their parameters the same way, which overstates them (a
table lookup reads one row), but keeps one formula for all tasks. Attention's quadratic term is
left out: at the sequence lengths of these tasks it is a few percent. Runs of tabular tasks
report no FLOPs (``None`` in their summary): a lookup table's "parameters" are not multiplied by
anything.

**Counted work.** Beside the estimate, the meter counts the work itself, per model *role* —
``policy`` (π being trained), ``reference`` (π_ref), ``reward`` (r̂), ``critic`` (a value model),
``other``: the tokens through forward-only passes (generation included: a sampled token is one
forward token of the model that sampled it) and the tokens through forward-backward passes
(:meth:`ComputeMeter.train`), prompt tokens included, and the samples generated apart from those
read from data (an offline method adds the pairs it reads to ``samples`` directly, as before). The
role of a model is the one given to :meth:`ComputeMeter.assign` (the runner assigns the run
context's policy, π_ref and r̂), else the one its class implies (a ``ValueModel`` is a critic, a
``RewardModel`` r̂, a frozen ``Policy`` π_ref, a trainable one π), so plugins keep calling
``meter.forward(model, tokens)``; a ``role=`` argument overrides both. Plugins report response
tokens; the prompt tokens come from the models: a language model's forward notes the real (unpadded)
prompt tokens it runs (:func:`note_prompt_tokens` — generation's prefill, the prompt part of every
forward over prompt ⧺ response, a prompt shared by several rows once as :mod:`harness.models.lm`
computes
it), and the meter adds those noted since the model's last count to its next one, as forward tokens,
or as backward tokens when that count is :meth:`~ComputeMeter. train` (the backward runs through the
prompt's positions). Only forwards inside the counted phases (generate, score, train) note theirs,
as only those are counted. The counts depend on the spec and the seed (and the device's random
streams), not on the machine's speed or load; the FLOPs are Σ_role (2·N·forward + 6·N·backward)
tokens (LoRA: 4N + 2·N_trainable for backward), prompt tokens included. For a tabular model a token
is one row of its table — the logits of (x, y_<t) for π and π_ref, V(x, y_<t) for a critic — so its
forward tokens are rows read and its backward tokens rows updated (each touch counted). A tabular r̂
keeps one entry per response, read once per scored response; it is counted per token as the
algorithms report it, which is the same on one-token responses (the bandit) and an upper bound on
longer ones. A tabular model notes no prompt tokens (its prompt is a row index, not a token it
runs), so its counts are the rows alone.

**CPU seconds.** Each phase is also charged the process's CPU time (user + system, all threads:
``time.process_time``). It is reported beside wall time, but it is not a machine-independent
measure: the committed bandit runs, re-run on a machine at load average 10–18, gave results
identical to 1e-16 and 3.5–4.5× the CPU seconds of a quiet machine. (Threads that spin while
waiting for work, as OpenMP's do for a short while, are charged for the spin.) The counted work
above is what does not move with load.

**Model state.** :func:`model_state_bytes` counts the bytes of the parameters, buffers, gradients
and optimiser state reachable from the objects given (an algorithm, its context, its task), each
tensor storage once, however many models share it.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.policy import Policy, RewardModel, ValueModel

PHASES = ("generate", "score", "train", "eval")
ROLES = ("policy", "reference", "reward", "critic", "other")
"""The model roles whose work is counted: π, π_ref, r̂, a critic, and any other model."""

_RECORDING: ContextVar[bool] = ContextVar("rlhf_harness_prompt_recording", default=False)
"""True inside a counted phase (generate, score, train): forwards note their prompt tokens."""
_PENDING: weakref.WeakKeyDictionary[nn.Module, torch.Tensor] = weakref.WeakKeyDictionary()
"""Prompt tokens each module's forwards processed since its work was last counted."""


def note_prompt_tokens(module: nn.Module, mask: torch.Tensor) -> None:
    """``module`` (the network a forward runs) just processed the prompt tokens where ``mask``
    is True. Inside a counted phase (generate, score, train) they are kept until the meter next
    counts work of a model that runs ``module`` (:meth:`ComputeMeter.forward`, ``train``,
    ``generated``), which adds them to that count; elsewhere (evaluation, set-up) they are
    dropped. The sum stays on the device: no synchronisation until the meter reads it.
    """
    if not _RECORDING.get():
        return
    tokens = mask.sum()
    pending = _PENDING.get(module)
    _PENDING[module] = tokens if pending is None else pending + tokens


def _take_prompt_tokens(model: nn.Module) -> int:
    """The prompt tokens noted for ``model``'s network (its ``compute_module``, else itself, and
    their sub-modules) since they were last taken; the notes are cleared."""
    if not _PENDING:
        return 0
    root = getattr(model, "compute_module", model)
    total = 0
    for module in root.modules():
        pending = _PENDING.pop(module, None)
        if pending is not None:
            total += int(pending)
    return total


def flop_parameters(model: nn.Module) -> int:
    """N for the FLOP estimate: parameters outside embedding tables (all, for tabular models).

    A model that runs another module's weights (π_ref as a LoRA policy's base with its adapters
    off, :class:`harness.models.lora.AdapterOffReference`) names it as ``compute_module``.
    """
    model = getattr(model, "compute_module", model)
    total = 0
    embedded = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embedded += module.weight.numel()
    for p in model.parameters():
        total += p.numel()
    return total - embedded if embedded < total else total


@dataclass
class ComputeMeter:
    """Accumulates wall time per phase, token counts and estimated FLOPs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """The device whose work is timed (a CUDA device is synchronised around each phase)."""
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    """Wall seconds per phase: generate, score, train, eval."""
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    """Process CPU seconds (user + system, all threads) per phase."""
    samples: int = 0
    """Prompt-response pairs consumed (generated for online methods, read for offline ones)."""
    tokens_generated: int = 0
    """Response tokens sampled (:meth:`generated`)."""
    tokens_trained: int = 0
    """Response tokens that went through a backward pass (counted once per pass; no prompt
    tokens: ``backward_tokens`` has those)."""
    flops: float = 0.0
    """Estimated FLOPs of every pass counted (2N per token forward, 6N forward-backward)."""
    samples_generated: int = 0
    """Responses sampled from a model (:meth:`generated`); ``samples`` minus these were read
    from data."""
    forward_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    """Tokens through forward-only passes, generation and prompt tokens included, per role (see
    ``ROLES``)."""
    backward_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    """Tokens through forward-backward passes (:meth:`train`), prompt tokens included, per
    role, each pass counted."""
    flops_by_role: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROLES, 0.0))
    """``flops`` split by the role of the model that did the work."""
    parameters_by_role: dict[str, int] = field(default_factory=dict)
    """N of the FLOP estimate of each role's model (the last one counted, where several)."""
    _n_params: dict[int, int] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the wall time and the process CPU time of the block to phase ``name``."""
        if name not in self.seconds:
            raise ValueError(f"unknown compute phase '{name}' (phases: {', '.join(PHASES)})")
        self._sync()
        recording = _RECORDING.set(name != "eval")
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            _RECORDING.reset(recording)
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            self.cpu_seconds[name] += time.process_time() - cpu_start

    def assign(self, model: nn.Module | None, role: str) -> None:
        """Count ``model``'s work under ``role`` (one of ``ROLES``) from now on."""
        if role not in ROLES:
            raise ValueError(f"unknown model role '{role}' (roles: {', '.join(ROLES)})")
        if model is not None:
            self._roles[id(model)] = role

    def role_of(self, model: nn.Module) -> str:
        """The role ``model``'s work is counted under: the one assigned, else its class's."""
        if id(model) in self._roles:
            return self._roles[id(model)]
        if isinstance(model, ValueModel):
            return "critic"
        if isinstance(model, RewardModel):
            return "reward"
        if isinstance(model, Policy):
            trains = any(p.requires_grad for p in model.parameters())
            return "policy" if trains else "reference"
        return "other"

    @property
    def samples_from_data(self) -> int:
        """Samples read from data rather than generated (an offline method's pairs)."""
        return self.samples - self.samples_generated

    def forward(self, model: nn.Module, tokens: int, *, role: str | None = None) -> None:
        """``model`` ran a forward pass over ``tokens`` response tokens: with the prompt tokens
        its forwards noted (:func:`note_prompt_tokens`), 2·N FLOPs per token, counted as
        forward tokens of its role (``role``, else :meth:`role_of`)."""
        tokens = int(tokens) + _take_prompt_tokens(model)
        self._count(model, role, self.forward_tokens, tokens, 2.0 * self._params(model) * tokens)

    def train(self, model: nn.Module, tokens: int, *, count_tokens: bool = True,
              role: str | None = None) -> None:
        """``model`` ran forward and backward over ``tokens`` response tokens and the prompt
        tokens its forwards noted (:func:`note_prompt_tokens`: the backward runs through the
        prompt's positions too): 6·N FLOPs per token when every
        weight trains — 2N forward, 2N for the gradients of the activations, 2N for those of the
        weights — and (4N + 2·N_trainable)·tokens when only some do (LoRA adapters on a frozen
        base: the base's weight gradients are never computed). The tokens count as backward
        tokens of the model's role.

        ``tokens_trained`` counts response tokens through a backward pass once per pass; when a
        second model (e.g. a critic) trains on the same tokens, pass ``count_tokens=False``.
        """
        n = self._params(model)
        trainable = self._trainable(model)
        counted = int(tokens) + _take_prompt_tokens(model)
        flops = (4.0 * n + 2.0 * min(trainable, n)) * counted
        self._count(model, role, self.backward_tokens, counted, flops)
        if count_tokens:
            self.tokens_trained += tokens

    def generated(self, model: nn.Module, samples: int, tokens: int, *,
                  role: str | None = None) -> None:
        """``model`` generated ``samples`` responses, ``tokens`` tokens in all, counted as
        samples generated; those tokens and the prompt tokens its prefill noted
        (:func:`note_prompt_tokens`) count as forward tokens of its role, 2·N FLOPs each."""
        self.samples += samples
        self.samples_generated += samples
        self.tokens_generated += tokens
        counted = int(tokens) + _take_prompt_tokens(model)
        self._count(model, role, self.forward_tokens, counted,
                    2.0 * self._params(model) * counted)

    def counts(self) -> dict[str, object]:
        """The counted work so far, as plain numbers (what a run's summary stores)."""
        return {
            "samples_generated": self.samples_generated,
            "samples_from_data": self.samples_from_data,
            "forward_tokens": dict(self.forward_tokens),
            "backward_tokens": dict(self.backward_tokens),
            "flops_by_role": dict(self.flops_by_role),
            "parameters_by_role": dict(self.parameters_by_role),
        }

    def _count(self, model: nn.Module, role: str | None, tally: dict[str, int], tokens: int,
               flops: float) -> None:
        role = self.role_of(model) if role is None else role
        if role not in ROLES:
            raise ValueError(f"unknown model role '{role}' (roles: {', '.join(ROLES)})")
        tally[role] += int(tokens)
        self.flops += flops
        self.flops_by_role[role] += flops
        self.parameters_by_role[role] = self._params(model)

    @property
    def wall_seconds(self) -> float:
        """The seconds of every phase together."""
        return sum(self.seconds.values())

    def _params(self, model: nn.Module) -> int:
        key = id(model)
        if key not in self._n_params:
            self._n_params[key] = flop_parameters(model)
        return self._n_params[key]

    def _trainable(self, model: nn.Module) -> int:
        key = -id(model)
        if key not in self._n_params:
            model = getattr(model, "compute_module", model)
            self._n_params[key] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return self._n_params[key]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _modules_and_optimizers(roots: Iterable[Any], depth: int = 3,
                            exclude: Iterable[Any] = ()) -> tuple[list[nn.Module], list[Any]]:
    """``nn.Module`` s and optimisers among ``roots`` and their attributes (``depth`` levels,
    through lists, tuples and dicts), each once; ``exclude``: objects not to enter."""
    modules: dict[int, nn.Module] = {}
    optimizers: dict[int, Any] = {}
    seen: set[int] = {id(x) for x in exclude}

    def visit(obj: Any, level: int) -> None:
        if id(obj) in seen or level < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            modules[id(obj)] = obj
            return
        if isinstance(obj, torch.optim.Optimizer):
            optimizers[id(obj)] = obj
            return
        if isinstance(obj, dict):
            children: Iterable[Any] = obj.values()
        elif isinstance(obj, list | tuple):
            children = obj
        elif hasattr(obj, "__dict__") and not isinstance(obj, type | torch.Tensor):
            children = vars(obj).values()
        else:
            return
        for child in children:
            visit(child, level - 1)

    for root in roots:
        visit(root, depth)
    return list(modules.values()), list(optimizers.values())


def _tensor_bytes(tensors: Iterable[torch.Tensor], counted: set[tuple[str, int]]) -> int:
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key in counted:
            continue
        counted.add(key)
        total += storage.nbytes()
    return total


def model_state_bytes(*roots: Any, exclude: Iterable[Any] = ()) -> int:
    """Bytes of model state reachable from ``roots`` (not through ``exclude``): parameters,
    buffers and gradients of every ``nn.Module``, and every tensor of every optimiser's state;
    each storage counted once."""
    modules, optimizers = _modules_and_optimizers(roots, exclude=exclude)
    counted: set[tuple[str, int]] = set()
    total = 0
    for m in modules:
        total += _tensor_bytes(m.parameters(), counted)
        total += _tensor_bytes(m.buffers(), counted)
        total += _tensor_bytes((p.grad for p in m.parameters() if p.grad is not None), counted)
    for opt in optimizers:
        for state in opt.state.values():
            total += _tensor_bytes((v for v in state.values() if isinstance(v, torch.Tensor)),
                                   counted)
    return total


def resident_modules(*roots: Any) -> list[nn.Module]:
    """The distinct top-level models reachable from ``roots``: modules found there that are not
    sub-modules of another one found, and share no parameter storage with one counted before."""
    modules, _ = _modules_and_optimizers(roots)
    inside = {id(sub) for m in modules for sub in m.modules() if sub is not m}
    out: list[nn.Module] = []
    storages: set[tuple[str, int]] = set()
    for m in modules:
        if id(m) in inside:
            continue
        keys = {(str(p.device), p.untyped_storage().data_ptr()) for p in m.parameters()}
        if not keys or keys <= storages:
            continue
        storages |= keys
        out.append(m)
    return out
