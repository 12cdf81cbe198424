"""What every check of the conformance kit shares: the list of checks, the metric names they
require and forbid, the default task, the failure (:class:`ConformanceError`), the record of a
run (:class:`_Trace`) and small helpers (seeded global generators, one thread, messages).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import math
import random
import struct
import textwrap
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.algorithm import Algorithm
from harness.metrics import ALGORITHM_METRICS, RUNNER_METRICS

CHECKS: tuple[str, ...] = (
    "config", "metrics", "vocabulary", "accounting", "determinism", "finite", "improves",
    "devices", "lora",
)
"""The checks, in the order they are run and reported."""

ONLINE_METRICS: tuple[str, ...] = ("reward", "kl_ref", "response_length")
"""Shared names every online algorithm (``needs`` has ``"reward"``) reports."""

TRAINING_METRICS: tuple[str, ...] = ("loss",)
"""Shared names every algorithm that updates the policy reports (and ``entropy``, if online)."""

OPTIONAL_METRICS: tuple[str, ...] = tuple(sorted(ALGORITHM_METRICS - {"loss"}))
"""Shared names an algorithm may report; when it does, under exactly these names and with the
meanings of :data:`harness.metrics.VOCABULARY`."""

RESERVED_METRICS: frozenset[str] = RUNNER_METRICS
"""Names the runner writes next to an algorithm's metrics: an algorithm must not use them."""

DEFAULT_TASK_PARAMS: dict[str, Any] = {
    "num_prompts": 4, "num_arms": 8, "reward": "normal", "reference": "softmax",
}
"""The ``bandit`` task the checks run on, unless ``task_params`` says otherwise."""

_GLOBAL_SEEDS = (12345, 67890)
"""Seeds of the global generators in the two runs of the determinism check (they differ)."""


class ConformanceError(AssertionError):
    """A failed conformance check; its message is one line naming the algorithm and the check.

    :func:`check_conformance` raises one whose message has one such line per failed check.
    """

    def __init__(self, algorithm: str, check: str, detail: str) -> None:
        self.algorithm = algorithm
        self.check = check
        self.detail = " ".join(str(detail).split())
        super().__init__(
            f"rlhf-harness conformance: algorithm '{algorithm}' fails check '{check}': "
            f"{self.detail}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across pytest-xdist workers
        return (type(self), (self.algorithm, self.check, self.detail),
                {**self.__dict__, "args": self.args})


def required_metrics(algorithm: type[Algorithm], *, trains: bool = True) -> frozenset[str]:
    """The shared metric names ``algorithm`` must report at every step (module docstring).

    :param trains: whether it updates the policy's parameters (the checks find out by running
        it); an algorithm that does not (best-of-n on top of π_ref) has no ``loss`` to report.
    """
    online = "reward" in getattr(algorithm, "needs", ())
    names: set[str] = set(TRAINING_METRICS) if trains else set()
    if online:
        names.update(ONLINE_METRICS)
        if trains:
            names.add("entropy")
    return frozenset(names)


def field_docstrings(cls: type) -> dict[str, str]:
    """The attribute docstrings of ``cls``'s annotated fields, its bases' included.

    An attribute docstring is the string literal statement right after the field in the class
    body (the convention Sphinx and this harness use)::

        learning_rate: float = 1e-5
        \"\"\"Adam step size.\"\"\"

    Read from the source with :mod:`ast`; raises :class:`OSError` when the source of ``cls``
    itself cannot be read (a class made by ``exec`` or typed into a REPL). A base class's
    unreadable source only loses that base's docstrings.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            if klass is cls:
                raise OSError(f"cannot read the source of {cls.__qualname__}") from None
            continue
        node = next(
            (n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None
        )
        if node is None:
            continue
        body = node.body
        for stmt, nxt in zip(body, [*body[1:], None], strict=True):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
                and nxt.value.value.strip()
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


@dataclass
class _Trace:
    """What one run of an algorithm produced (or how it broke)."""

    records: list[Any] = field(default_factory=list)
    """What each ``step()`` returned, as returned."""
    parameters: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """State dicts after the last step: ``{"policy": ..., "eval_policy": ...}``."""
    error: str | None = None
    """One line: where and how the run broke, if it did."""
    trains: bool = True
    """Whether the run changed the policy's parameters (π_ref's, at the start)."""
    spent: dict[str, float] = field(default_factory=dict)
    """What ``ctx.meter`` counted: samples, tokens, flops and seconds (evaluation excluded)."""
    algo: Algorithm | None = None


class _Unusable(Exception):
    """The algorithm cannot be checked at all (not found, not an Algorithm, a bad config)."""


# --- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """Seed torch's, ``random``'s and numpy's global generators; restore them afterwards."""
    import numpy as np

    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread, as the runner uses for tabular tasks on the CPU (tiny tensors)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _raised(exc: BaseException) -> str:
    """``raised Type: message (at file:line)``, the innermost frame (the device tracer's own
    frames skipped: the op's line is what matters), on one line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.endswith("device_trace.py")]
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"raised {type(exc).__name__}: {exc}{where}"


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _show(value: Any) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return repr(value)


def _same_bits(a: Any, b: Any) -> bool:
    """Bit-identical floats (NaN equals a NaN of the same bits); other values with ``==``."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return struct.pack("<d", float(a)) == struct.pack("<d", float(b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False
