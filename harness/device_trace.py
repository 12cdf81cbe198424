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
  op, as CUDA would (a zero-dimensional CPU tensor may join device tensors, as on CUDA; index
  tensors may be on the CPU, as CUDA allows; ``copy_`` and assigning ``.data`` may cross);
- a random op drawing from a ``torch.Generator(device="cuda")`` must produce a device tensor, and
  a CPU generator a CPU tensor; ``.numpy()`` of a device tensor raises.

Placement is recorded per storage (views share their base's placement, gradients their
parameter's), with :class:`torch.overrides.TorchFunctionMode`; ``torch.Generator`` (so that
``Generator("cuda")`` gives a CPU generator whose ``.device`` reads ``cuda``) and
``torch.cuda.synchronize`` are replaced for the duration. What runs in C++ without passing
through Python (autograd's internal buffers) is invisible to it, which the gradient rule covers.
Every device storage is kept until the block ends (so that no CPU tensor is given its address
meanwhile): the tracer is for short runs, tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["STAND_IN", "DeviceMixError", "DeviceTracer", "stand_in_device"]

STAND_IN = "cuda"
"""The device name the code under trace uses for the stand-in device."""


class DeviceMixError(RuntimeError):
    """An op combined tensors that a GPU run would have on different devices."""


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


_INDEXING = {"__getitem__", "__setitem__", "index_select", "index_put_", "index_put",
             "gather", "take_along_dim"}
_CROSSING = {"copy_", "__set__", "_has_compatible_shallow_copy_type", "set_"}


class DeviceTracer(TorchFunctionMode):
    """The mode behind :func:`stand_in_device` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, torch.UntypedStorage] = {}
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
        if key is not None and key not in self._storages:
            # Kept until the block ends, so that no CPU tensor is given its address meanwhile.
            self._storages[key] = t.untyped_storage()

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
        result = func(*args, **kwargs)
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
        if name in _INDEXING:  # indices may be on the CPU; self and values may not
            if name in ("__setitem__", "index_put_", "index_put"):
                value = args[2] if len(args) > 2 else kwargs.get("values")
                return [t for t in (args[0], value) if isinstance(t, torch.Tensor)]
            return [args[0]] if args and isinstance(args[0], torch.Tensor) else []
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
    with patches:
        _patch(patches, torch, "Generator", _Generator)
        _patch(patches, torch.cuda, "synchronize", lambda device=None: None)
        with tracer:
            yield tracer


def _patch(stack: contextlib.ExitStack, owner: Any, name: str, value: Any) -> None:
    original = getattr(owner, name)
    setattr(owner, name, value)
    stack.callback(setattr, owner, name, original)
