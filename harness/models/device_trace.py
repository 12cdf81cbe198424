"""A stand-in accelerator on the CPU: which tensors are "on the device", and ops that mix them.

Code written for a GPU run keeps its tensors on ``torch.device("cuda")``; on a CPU machine a
mistake there (a ``.cpu()`` result combined with a device tensor, a tensor built without
``device=``) goes unnoticed, because everything is on the CPU anyway. :func:`stand_in_device`
runs code that asks for ``cuda`` on the CPU and remembers which tensors would be on the device:

- a tensor is *on the device* when it was created with ``device="cuda"`` (or moved there with
  ``.to("cuda")``, ``.cuda()``, ``Module.to``), or computed from tensors on the device; its
  ``.device`` reads ``cuda`` and its ``.is_cuda`` ``True``, so code that follows ``x.device``
  behaves as on a GPU. ``.cpu()`` and ``.to("cpu")`` give a copy that is *not* on the device;
- an op whose tensor arguments are on different devices raises :class:`DeviceMixError` at that
  op, as CUDA would (a zero-dimensional CPU tensor may join device tensors, as on CUDA;
  ``copy_`` and assigning ``.data`` may cross). Indexing follows CUDA's rules: a device tensor
  may be indexed (``t[i]``, ``t[i] = v``, ``index_put_``) by CPU indices, but ``gather``,
  ``index_select``, ``take_along_dim`` and the ``scatter`` family need their index on the
  tensor's device, and a CPU tensor cannot be indexed by a device index;
- a random op drawing from a ``torch.Generator(device="cuda")`` must produce a device tensor, and
  a CPU generator a CPU tensor; ``.numpy()`` of a device tensor raises.

- ``torch.autocast("cuda", ...)`` runs as CPU autocast (bf16 casts happen as they would on the
  GPU), and ``torch.cuda``'s memory counters (``memory_allocated``, ``max_memory_allocated``,
  ``reset_peak_memory_stats``) read the stand-in's: the bytes of the storages on the device now
  and at their peak, counted from every op, autocast's weight casts and the backward pass
  included. ``torch.cuda.is_available`` reads True, so ``device: auto`` and ``run_one`` take
  their GPU path.

Placement is recorded per storage (views share their base's placement, gradients their
parameter's), with :class:`torch.overrides.TorchFunctionMode` for what Python code asks (an
explicit device, ``.to``, mixing) and :class:`torch.utils._python_dispatch.TorchDispatchMode`
for every tensor the ops make (autocast's casts and autograd's buffers included): an op's
outputs are on the device when the call that made them runs there. A storage leaves the
device's count when it is freed. ``torch.Generator`` (so that ``Generator("cuda")`` gives a CPU
generator whose ``.device`` reads ``cuda``), ``torch.cuda``'s functions above and its global
generator's state (the CPU's stands for it) are replaced for the duration. The tracer is for
short runs, tests.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["STAND_IN", "DeviceMixError", "DeviceTracer", "stand_in_device"]

STAND_IN = "cuda"
"""The device name the code under trace uses for the stand-in device."""


class DeviceMixError(RuntimeError):
    """An op combined tensors that a GPU run would have on different devices."""


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


_INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put"}
"""Ops whose indices may be on the CPU when the indexed tensor is on the device (not the
reverse)."""
_CROSSING = {"copy_", "__set__", "_has_compatible_shallow_copy_type", "set_"}


class DeviceTracer(TorchFunctionMode):
    """The mode behind :func:`stand_in_device` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, int] = {}
        """Device storages alive now: key → bytes."""
        self.allocated = 0
        """Bytes of the storages on the device now."""
        self.peak = 0
        """The most :attr:`allocated` has been since the start or :meth:`reset_peak`."""
        self._target: bool | None = None
        self.ops = 0
        """Ops traced (a check that the trace saw the code at all)."""
        self.device_ops = 0
        """Ops whose result is on the stand-in device."""

    # --- placement --------------------------------------------------------------------------

    @staticmethod
    def _key(t: torch.Tensor) -> int | None:
        try:
            return int(t.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError):
            return None

    def on_device(self, t: torch.Tensor) -> bool:
        """Whether ``t`` would be on the GPU."""
        key = self._key(t)
        return key is not None and key in self._storages

    def _mark(self, t: torch.Tensor) -> None:
        key = self._key(t)
        if key is None or key in self._storages:
            return
        storage = t.untyped_storage()
        size = storage.nbytes()
        self._storages[key] = size
        self.allocated += size
        self.peak = max(self.peak, self.allocated)
        # When the storage is freed its address may be given to a CPU tensor: forget it then.
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        if self._storages.get(key) == size:
            del self._storages[key]
            self.allocated -= size

    def reset_peak(self) -> None:
        """Start a new peak from the bytes on the device now."""
        self.peak = self.allocated

    # --- the mode ---------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = dict(kwargs or {})
        self.ops += 1
        owner = getattr(func, "__self__", None)
        name = getattr(func, "__name__", "")
        if name == "__get__" and owner is torch.Tensor.device:
            return torch.device(STAND_IN) if self.on_device(args[0]) else torch.device("cpu")
        if name == "__get__" and owner is torch.Tensor.is_cuda:
            return self.on_device(args[0])
        if name == "__get__" and owner is torch.Tensor.grad:
            grad = func(*args, **kwargs)
            if grad is not None and self.on_device(args[0]):
                self._mark(grad)
            return grad
        if name == "__set__" and owner is torch.Tensor.data:  # Module.to: param.data = moved
            func(*args, **kwargs)
            if self.on_device(args[1]):
                self._mark(args[0])
            return None
        if name == "__set__" and owner is torch.Tensor.grad and args[1] is not None:
            self._check_same(func, [args[0], args[1]])
            return func(*args, **kwargs)

        target, func, args, kwargs = self._placement(func, name, args, kwargs)
        if target is None:  # no explicit device: where the inputs are
            tensors = self._tensor_args(name, args, kwargs)
            target = self._check_same(func, tensors)
        if name in ("numpy", "__array__") and target:
            raise DeviceMixError(f"{_name(func)}: a tensor on the device cannot become numpy "
                                 f"(call .cpu() first)")
        gen = kwargs.get("generator")
        if gen is not None and isinstance(gen, _StandInGenerator) != bool(target):
            where = "the device" if isinstance(gen, _StandInGenerator) else "the CPU"
            raise DeviceMixError(
                f"{_name(func)}: a generator on {where} draws a tensor on "
                f"{'the device' if target else 'the CPU'}"
            )
        outer, self._target = self._target, bool(target)
        try:
            result = func(*args, **kwargs)
        finally:
            self._target = outer
        if target:
            self.device_ops += 1
            for t in _tensors(result):
                self._mark(t)
        return result

    def _placement(self, func: Any, name: str, args: tuple, kwargs: dict
                   ) -> tuple[bool | None, Any, tuple, dict]:
        """An explicit destination (``device=``, ``.to``, ``.cuda``, ``.cpu``): whether it is the
        device (None when there is none), and the arguments rewritten to run on the CPU."""
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            return True, torch.Tensor.to, (args[0],), {
                "device": "cpu", "copy": not self.on_device(args[0])}
        if name == "cpu" and args and isinstance(args[0], torch.Tensor):
            if self.on_device(args[0]):
                # a fresh storage, not on the device
                return False, torch.Tensor.to, (args[0],), {"device": "cpu", "copy": True}
            return False, func, args, kwargs
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            source = args[0]
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                device: Any = STAND_IN if self.on_device(args[1]) else "cpu"
                dtype, rest = args[1].dtype, {}
            else:
                with torch._C.DisableTorchFunction():
                    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(
                        *args[1:], **{k: v for k, v in kwargs.items() if k != "copy"})
                rest = {"non_blocking": non_blocking}
                if memory_format is not None:
                    rest["memory_format"] = memory_format
            if device is None:
                return None, func, args, kwargs
            on = torch.device(device).type == STAND_IN
            copy = bool(kwargs.get("copy", False)) or on != self.on_device(source)
            return on, func, (source,), {"device": "cpu", "dtype": dtype, "copy": copy, **rest}
        device = kwargs.get("device")
        if device is not None and not isinstance(device, int):
            on = torch.device(device).type == STAND_IN
            if on:
                kwargs["device"] = "cpu"
            return on, func, args, kwargs
        return None, func, args, kwargs

    def _tensor_args(self, name: str, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        if name in _CROSSING:
            return []
        if name in _INDEXING:  # CPU indices into a device tensor; never the reverse
            indexed = args[0] if args and isinstance(args[0], torch.Tensor) else None
            value = None
            if name in ("__setitem__", "index_put_", "index_put"):
                value = args[2] if len(args) > 2 else kwargs.get("values")
            if indexed is not None and not self.on_device(indexed):
                return list(_tensors((args, kwargs)))
            return [t for t in (indexed, value) if isinstance(t, torch.Tensor)]
        return list(_tensors((args, kwargs)))

    def _check_same(self, func: Any, tensors: list[torch.Tensor]) -> bool:
        """Whether the op runs on the device; raise if its tensors are on both."""
        on = [t for t in tensors if self.on_device(t)]
        if not on:
            return False
        off = [t for t in tensors if not self.on_device(t) and t.dim() > 0]
        if off:
            raise DeviceMixError(
                f"{_name(func)}: a tensor on the device (shape {tuple(on[0].shape)}) meets a "
                f"CPU tensor (shape {tuple(off[0].shape)})"
            )
        return True


class _Allocations(TorchDispatchMode):
    """Marks the outputs of every op (autocast's and autograd's too) that runs on the device:
    inside a traced call whose target is the device, or, outside one (the backward pass), an op
    with an input on the device."""

    def __init__(self, tracer: DeviceTracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        tracer = self.tracer
        target = tracer._target
        if target is None:
            target = any(tracer.on_device(t) for t in _tensors((args, kwargs)))
        if target:
            for t in _tensors(result):
                tracer._mark(t)
        return result


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


_REAL_GENERATOR = torch.Generator


class _StandInGenerator(_REAL_GENERATOR):
    """A CPU generator standing for one on the device: its ``.device`` reads ``cuda``."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device(STAND_IN)


class _GeneratorType(type):
    """``torch.Generator`` under the trace: ``Generator("cuda")`` gives a stand-in generator;
    ``isinstance`` and ``issubclass`` answer for real generators, and ``X | None`` works."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _REAL_GENERATOR)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_GENERATOR)

    def __call__(cls, device: Any = None) -> torch.Generator:  # type: ignore[override]
        if device is not None and torch.device(device).type == STAND_IN:
            return _StandInGenerator("cpu")
        return _REAL_GENERATOR() if device is None else _REAL_GENERATOR(device)


class _Generator(metaclass=_GeneratorType):
    """What ``torch.Generator`` is while :func:`stand_in_device` runs."""


@contextlib.contextmanager
def stand_in_device() -> Iterator[DeviceTracer]:
    """Run the block with ``cuda`` standing for a device on the CPU (see the module docstring);
    yields the tracer (:meth:`DeviceTracer.on_device` tells a tensor's placement)."""
    tracer = DeviceTracer()
    patches = contextlib.ExitStack()
    real_autocast = torch.autocast

    def autocast(device_type: str, *args: Any, **kwargs: Any) -> Any:
        return real_autocast("cpu" if device_type == STAND_IN else device_type, *args, **kwargs)

    with patches:
        _patch(patches, torch, "Generator", _Generator)
        _patch(patches, torch, "autocast", autocast)
        for name in ("is_autocast_enabled", "get_autocast_dtype"):
            real = getattr(torch, name)
            _patch(patches, torch, name,
                   lambda device_type=None, _real=real, **kw: _real(
                       *(() if device_type is None else
                         ("cpu" if device_type == STAND_IN else device_type,)), **kw))
        _patch(patches, torch.cuda, "synchronize", lambda device=None: None)
        _patch(patches, torch.cuda, "empty_cache", lambda: None)
        # the device's global generator: the CPU's stands for it (fork_rng saves and restores it)
        _patch(patches, torch.cuda, "get_rng_state", lambda device="cuda": torch.get_rng_state())
        _patch(patches, torch.cuda, "set_rng_state", lambda state, device="cuda": None)
        _patch(patches, torch.cuda, "is_available", lambda: True)
        _patch(patches, torch.cuda, "device_count", lambda: 1)
        _patch(patches, torch.cuda, "get_device_name", lambda device=None: "stand-in")
        _patch(patches, torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        _patch(patches, torch.cuda, "memory_allocated", lambda device=None: tracer.allocated)
        _patch(patches, torch.cuda, "max_memory_allocated", lambda device=None: tracer.peak)
        _patch(patches, torch.cuda, "reset_peak_memory_stats",
               lambda device=None: tracer.reset_peak())
        with tracer, _Allocations(tracer):
            yield tracer


def _patch(stack: contextlib.ExitStack, owner: Any, name: str, value: Any) -> None:
    original = getattr(owner, name)
    setattr(owner, name, value)
    stack.callback(setattr, owner, name, original)
