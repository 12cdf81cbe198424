"""Executors: where a suite's runs execute — supervised local child processes, or Ray.

Every executor runs :func:`harness.engine.runner.run_one` on each pending spec and writes to the
same
run store, so their results are interchangeable, within what the hardware makes reproducible: on
the CPU (tabular runs on one thread; LM runs with the same thread count) the same seeds give the
same store whatever the executor. On a GPU, kernels that accumulate with atomics or pick an
algorithm by timing vary by an ulp from run to run, and an ulp can change a sampled token: only a
suite with ``deterministic: true`` (deterministic kernels, slower) gives the same store again,
and then on the same GPU model with the same library versions. A run's own
failures are captured by ``run_one``; an executor only has to handle runs that could not report
(a worker process that died, a Ray task lost with its node), which it marks ``failed``.

The process that runs a suite holds the store's writer lock for the whole suite (a second one is
refused, or waits) and cleans what killed writers left. A run found ``running`` when the suite
starts was interrupted (the suite was killed from outside): it is redone, however often that
happens (see :mod:`harness.engine.store`).

- ``local`` (``workers=N``, default 1): each run executes in one of N child processes
  (``spawn``) that this process supervises; a child runs one run at a time, many in turn. The
  first child builds the shared preference data and reward models before any run starts (so
  that this process never holds a CUDA context, nor models on GPU 0, and children never
  duplicate them). When the runs are on CUDA, each child is given a GPU of its own
  (``CUDA_VISIBLE_DEVICES``) and N may not exceed the visible GPUs: runs sharing a GPU would
  slow each other down, and the report compares their wall times. This process keeps the
  time limits (``limits.seconds``, and ``limits.stall_seconds`` without a finished step): it
  stops a child past one and records its run ``failed``, so no timer fires inside a run's
  process and a plugin cannot switch the limits off. A child that dies by itself (killed for
  memory, ``os._exit``) takes only its own run with it: the death is counted against the run,
  which is retried in a new child, and marked ``failed`` (crashed) at its second; a child
  stopped from outside (SIGTERM, SIGINT, SIGHUP) is not counted, and its run is redone.
  Children exit when the suite's process dies. A child still ready when the suite ends is
  kept for the next suite this process runs (a tuning's rounds, a session's several suites) if
  nothing it was started with has changed since: the environment, ``sys.path``, the registered
  plugins and the code of the harness and plugins on disk (each request carries the suite's
  working folder).
- ``ray``: each run is a Ray task requesting ``gpus_per_run`` GPUs (and one CPU); ``address``
  joins an existing cluster, otherwise a local instance is started. The store must be on a
  filesystem every node sees. ``ray.get`` always has a timeout: a task asking for GPUs that no
  node has would otherwise wait forever.

**One module, over 600 lines, on purpose.** Most of it is the local executor's supervision of
its children (start, reuse, limits, deaths, retries): one protocol whose parts share the
children's state; the Ray executor and the progress display are short, and share
:func:`run_specs`' bookkeeping of pending, finished and lost runs.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.engine.store import FINISHED, MAX_CRASHES, RunStore
from harness.errors import ConfigError
from harness.suite import RunSpec

CRASHED = "crashed: its process died during the run ({how}), twice"


@dataclass
class SuiteOutcome:
    """What a suite run did."""

    total: int
    skipped: int
    statuses: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return self.statuses["failed"]


PROGRESS_MODES = ("bars", "lines", "off")
"""How a suite shows progress: rich ``bars`` on a terminal, one ``lines`` per finished run (logs,
CI, ``make quickstart > log``), or nothing."""


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: compact, for progress lines."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Progress:
    """Console progress of a suite, on stderr.

    ``bars``: a rich bar for the suite (done / failed / diverged, time left) and one for the
    current run, narrow enough for an 80-column terminal. ``lines``: when stderr is not a
    terminal, one line per finished run — its place, status, label, seconds, the runs left and
    the time left. ``off``: nothing.

    The time left is estimated per task (``groups``: the task of each run to come): the suite's
    pace so far (wall seconds per finished run, which accounts for parallel workers), times
    each task's runs left, weighted by how long that task's runs took relative to the mean run
    (a task none of whose runs has finished yet counts as a mean run). A suite of fast bandit
    runs and slow language-model runs is then not estimated at the bandit's pace; with more
    than one task left, the lines give each task's share.
    """

    def __init__(self, mode: bool | str, total: int, title: str, *, console: Any = None,
                 stream: Any = None, clock: Any = time.monotonic,
                 groups: Sequence[str] | None = None) -> None:
        if isinstance(mode, bool):
            mode = "bars" if mode else "off"
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode '{mode}'; modes: {', '.join(PROGRESS_MODES)}")
        self.mode = mode
        self.total = total
        self.counts: Counter = Counter()
        self.pending: Counter = Counter(groups or ())
        """Runs to come per task, as given (emptied as they finish)."""
        self.durations: dict[str | None, list[float]] = {}
        """Seconds of the finished runs whose time is known, per task."""
        self._group: str | None = None
        self.bar = None
        self.current = None
        self.clock = clock
        self.started = clock()
        self._run_started: float | None = None
        self._label: str | None = None
        self.stream = stream
        if mode == "lines":
            self._print(f"{title}")
        if mode != "bars":
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.table import Column

        console = console or Console(stderr=True)
        console.print(title, overflow="ellipsis", no_wrap=True, highlight=False, markup=False)
        self.bar = Progress(
            TextColumn("{task.description}",
                       table_column=Column(max_width=26, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}", table_column=Column(no_wrap=True)),
            TextColumn("ETA {task.fields[eta]}", table_column=Column(no_wrap=True)),
            console=console,
        )
        self.bar.start()
        self.suite = self.bar.add_task("suite", total=total, counts="", eta="-")

    def _print(self, text: str) -> None:
        import sys

        print(text, file=self.stream or sys.stderr, flush=True)

    def run_started(self, label: str, group: str | None = None) -> None:
        self._run_started, self._label, self._group = self.clock(), label, group
        if self.bar is not None:
            if self.current is not None:
                self.bar.remove_task(self.current)
            from rich.markup import escape  # a sweep label's [k=v] is text, not markup

            self.current = self.bar.add_task(f"  {escape(label)}", total=1.0, counts="", eta="")

    def run_step(self, fraction: float) -> None:
        if self.bar is not None and self.current is not None:
            self.bar.update(self.current, completed=fraction)

    def run_finished(self, status: str, label: str | None = None,
                     seconds: float | None = None, group: str | None = None) -> None:
        """A run ended with ``status``; ``label``, ``seconds`` and ``group`` (its task) default
        to those of the run :meth:`run_started` announced (executors that run several at once
        pass their own)."""
        self.counts[status] += 1
        now = self.clock()
        if seconds is None and label is None and self._run_started is not None:
            seconds, label, group = now - self._run_started, self._label, self._group
        self._run_started = None
        if self.pending[group] > 0:
            self.pending[group] -= 1
        if seconds is not None:
            self.durations.setdefault(group, []).append(seconds)
        finished = sum(self.counts.values())
        left = max(self.total - finished, 0)
        total, shares = self.eta((now - self.started) / finished, left)
        if self.bar is not None:
            text = " ".join(f"{k} {self.counts[k]}" for k in ("done", "failed", "diverged")
                            if k == "done" or self.counts[k])
            self.bar.update(self.suite, advance=1, counts=text,
                            eta=_duration(total) if left else "0 s")
        elif self.mode == "lines":
            took = f" in {_duration(seconds)}" if seconds is not None else ""
            eta = f", ETA {_duration(total)}" if left else ""
            if left and len(shares) > 1:
                eta += " (" + ", ".join(f"{g} {_duration(s)}" for g, s in shares.items()) + ")"
            self._print(f"[{finished}/{self.total}] {status}{took}: {label or 'a run'}; "
                        f"{left} left{eta}")

    def eta(self, pace: float, left: int) -> tuple[float, dict[str, float]]:
        """Seconds left in all, and per task with runs left (see the class docstring), at
        ``pace`` wall seconds per run so far, with ``left`` runs to come."""
        known = [s for runs in self.durations.values() for s in runs]
        remaining = {g: n for g, n in self.pending.items() if n > 0 and g is not None}
        if not known or not remaining or sum(remaining.values()) != left:
            return pace * left, {}
        mean = sum(known) / len(known)
        shares = {}
        for group, n in remaining.items():
            own = self.durations.get(group)
            weight = (sum(own) / len(own)) / mean if own and mean > 0 else 1.0
            shares[group] = pace * n * weight
        return sum(shares.values()), shares

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_specs(
    specs: list[RunSpec],
    root: str,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    retry_failed: bool = False,
    wandb: bool = True,
    progress: bool | str = True,
    ray_timeout: float = 24 * 3600.0,
    wait: bool = False,
    redo_other_versions: bool = False,
    stage: str = "",
) -> SuiteOutcome:
    """Run every spec not already finished in the store; see the module docstring.

    ``stage`` follows the suite's name in the progress title (e.g. ``tuning trial 3/16``).

    Holds the store's lock throughout; another process holding it raises
    :class:`~harness.errors.StoreError` naming its PID, unless ``wait``. With
    ``redo_other_versions``, a finished run made by another version of the harness (or its
    source) or of torch is run again.
    """
    if workers < 1:
        raise ConfigError(f"workers: {workers}; give 1 (sequential) or more worker processes")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}' (use 'local' or 'ray')")
    blind = [s for s in specs if executor == "ray" and s.device == "cuda" and not s.gpus]
    if blind:
        raise ConfigError(
            f"{blind[0].suite}: device cuda under the ray executor needs gpus_per_run > 0 (Ray "
            f"hides the GPUs from a run that requests none)"
        )
    if not specs:
        return SuiteOutcome(0, 0)
    root = os.path.abspath(root)  # a run that changes folders must not move the store
    store = RunStore(root, specs[0].suite)
    with store.lock(wait=wait):
        store.clean_temporaries()
        pending = []
        crashed = Counter()
        current = None
        if redo_other_versions:
            from harness.suite import CORE_VERSION_KEYS, core_versions

            current = core_versions()
        for s in specs:
            if store.is_finished(s.run_id, retry_failed=retry_failed):
                if current is None:
                    continue
                record = store.record(s.run_id)
                made = ((record.summary if record is not None else None) or {}).get("versions")
                if isinstance(made, dict) and all(made.get(k) == current[k]
                                                  for k in CORE_VERSION_KEYS):
                    continue
            if store.crashes(s.run_id) >= MAX_CRASHES:  # its last crash seen, not yet marked
                how = str((store.read_status(s.run_id) or {}).get("crash") or "no exit status")
                store.mark_failed(s.run_id, s.as_dict(), CRASHED.format(how=how))
                crashed["failed"] += 1
                continue
            pending.append(s)
        outcome = SuiteOutcome(total=len(specs), skipped=len(specs) - len(pending))
        outcome.skipped -= crashed["failed"]
        title = (f"{specs[0].suite}{': ' + stage if stage else ''}: {len(pending)} to run, "
                 f"{outcome.skipped} already finished")
        bar = _Progress(progress, len(pending), title, groups=[s.task for s in pending])
        try:
            if not pending:
                pass
            elif executor == "local":
                _supervised(pending, root, wandb, workers, bar)
            else:
                _ray(pending, root, wandb, address, ray_timeout, bar)
        finally:
            bar.close()
        outcome.statuses = bar.counts + crashed
        return outcome


def _label(spec: RunSpec) -> str:
    return f"{spec.label} · {spec.task} · seed {spec.seed}"


def _mark_lost(root: str, spec: RunSpec, error: str) -> str:
    """Record a run whose worker died without reporting as ``failed``."""
    RunStore(root, spec.suite).mark_failed(spec.run_id, spec.as_dict(), error.splitlines()[-1]
                                           if error.strip() else error, traceback=error)
    return "failed"


# --- worker processes ----------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """In a worker: exit as soon as the suite's process is gone (SIGKILLed, say), so that no
    orphan goes on writing into the store. Linux's parent-death signal where it exists, and a
    watcher thread everywhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _visible_gpus() -> list[str]:
    """The CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` or all), as that variable
    names them; no CUDA context is created."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _worker_gpus(pending: list[RunSpec], workers: int) -> list[str]:
    """The GPUs to hand to the workers, one each; [] when the runs are not on CUDA."""
    gpus = _visible_gpus()
    if not gpus or not any(s.device in ("cuda", "auto") for s in pending):
        return []
    if workers > len(gpus):
        raise ConfigError(
            f"--workers {workers} with {len(gpus)} visible GPU(s): runs would share a GPU and "
            f"slow each other down, and the report compares their wall times; use --workers "
            f"{len(gpus)} or fewer"
        )
    return gpus[:workers]


def _use_gpu(gpu: str | None) -> None:
    """In a worker, before anything touches CUDA: see only ``gpu`` (None: leave as is)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _worker(conn: Any, parent: int, gpu: str | None = None) -> None:
    """A worker's loop: receive a request, do it, answer; stop at ``None``/EOF.

    ``("run", (spec, root, wandb, threads), folder)`` runs one spec in the suite's working
    ``folder`` on ``threads`` CPU threads (:func:`~harness.engine.runner.set_run_threads`),
    sending ``("step", fraction)`` after each step (the supervisor's sign of progress) and
    ``("status", status)`` at its end; ``("prepare", (specs, root), folder)`` builds their
    shared data and answers ``("prepared", None)``.
    A run's failures are its own (:func:`~harness.engine.runner.run_one` records them); a store that
    cannot be written is the suite's: ``("stop", message)``. After each request the worker
    goes back to the suite's folder, so a run that changed folders moves no other.
    """
    _use_gpu(gpu)
    from harness.engine.runner import run_one, set_run_threads
    from harness.errors import StoreError

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the suite's process's to handle
    _warm_up()
    conn.send(("ready", None))  # a run's clock starts after this child's own start-up
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        kind, payload, home = request
        try:
            os.chdir(home)  # the suite's folder: relative paths in a spec are read from there
            if kind == "prepare":
                specs, root = payload
                _prepare_shared([RunSpec(**spec) for spec in specs], root)
                answer: tuple[str, Any] = ("prepared", None)
            else:
                spec, root, wandb, threads = payload
                set_run_threads(threads)
                answer = ("status", run_one(spec, root, wandb=wandb,
                                            on_step=lambda f: conn.send(("step", f))))
        except StoreError as exc:
            answer = ("stop", str(exc))
        except BaseException:  # run_one reports its run's failures itself; this is the store
            answer = ("error", traceback.format_exc())
        finally:
            try:
                os.chdir(home)
            except OSError:
                pass
        conn.send(answer)


def _warm_up() -> None:
    """What every run of a fresh child would otherwise import on its clock: the plugins, and
    the libraries :func:`~harness.engine.runner.run_one` imports as it starts."""
    import pandas  # noqa: F401
    import psutil  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from harness.engine.plugins import get_plugin_host

    get_plugin_host()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; e.g. the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


INTERRUPTING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})
"""Signals that stop a process from outside (a scheduler, ``timeout``, a logout): a child
they end was interrupted, and its run is redone rather than held against it."""
MAX_INTERRUPTS = 10
"""Interruptions of one run within one suite after which its process is taken to be stopping
itself (a run that signals its own process), and the death counts as a crash."""
GRACE_SECONDS = 5.0
"""How long past ``limits.seconds`` the supervisor waits for a run to stop itself at a step's
end (with its metrics) before it stops the run's process."""


@dataclass
class _Child:
    """A worker process, and the run it is busy with."""

    process: Any
    conn: Any
    gpu: str | None
    spec: RunSpec | None = None
    ready: bool = False
    """Started up (it has said so): runs are sent only to a ready child."""
    preparing: bool = False
    sent: float = 0.0
    """When the current request was sent (monotonic)."""
    progress: float = 0.0
    """When the run last finished a step (or started)."""
    steps: int = 0
    key: tuple = ()
    """What the child was started with (:func:`_start_key`); it is reused only under the same."""


_IDLE: list[_Child] = []
"""Ready children that an earlier suite of this process left, at most :data:`MAX_IDLE`."""
MAX_IDLE = 2


def _start_key(gpu: str | None) -> tuple:
    """What a child inherits when it starts and keeps: a reused child must have started under
    the same (its modules are loaded, its environment copied). Code is stamped by each source
    file's size and modification time: an edited plugin or harness gets a fresh child."""
    import sys
    from importlib.metadata import entry_points
    from importlib.util import find_spec
    from pathlib import Path

    from harness.engine.plugins import ENTRY_POINT_GROUP

    files = sorted(Path(__file__).resolve().parents[1].rglob("*.py"))
    plugins = sorted((ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))
    for _, value in plugins:
        with contextlib.suppress(ImportError, ValueError, AttributeError):
            spec = find_spec(value.split(":")[0].strip())
            if spec is not None and spec.origin:
                files.append(Path(spec.origin))
    stamps = []
    for path in files:
        with contextlib.suppress(OSError):
            stat = path.stat()
            stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    return (os.getpid(), gpu, tuple(sys.path), tuple(sorted(os.environ.items())), tuple(plugins),
            tuple(stamps))


def _stop_child(child: _Child) -> None:
    """Ask an idle child to exit, and wait for it (killed if it does not)."""
    with contextlib.suppress(OSError, ValueError):
        child.conn.send(None)
    child.process.join(timeout=5)
    if child.process.is_alive():
        child.process.kill()
        child.process.join()
    with contextlib.suppress(OSError):
        child.conn.close()


def _park(child: _Child) -> None:
    """Keep a ready child for the next suite of this process if there is room; else stop it."""
    if len(_IDLE) < MAX_IDLE and child.process.is_alive():
        _IDLE.append(child)
    else:
        _stop_child(child)


def _reusable(gpus: list[str | None], workers: int) -> list[_Child]:
    """The idle children that fit this suite (one per GPU, at most ``workers``); the others
    are stopped."""
    keys = {gpu: _start_key(gpu) for gpu in dict.fromkeys(gpus)} if _IDLE else {}
    taken: list[_Child] = []
    wanted = list(gpus)
    for child in list(_IDLE):
        _IDLE.remove(child)
        fits = (child.gpu in wanted and child.key == keys.get(child.gpu)
                and child.process.is_alive() and len(taken) < workers)
        if fits and not child.conn.poll():
            wanted.remove(child.gpu)
            taken.append(child)
        else:
            _stop_child(child)
    return taken


def _limit_passed(child: _Child, now: float) -> str | None:
    """The reason to stop ``child``'s run now, if it is past one of its time limits."""
    if child.spec is None:
        return None
    limits = child.spec.limits or {}
    seconds = float(limits.get("seconds") or math.inf)
    stall = float(limits.get("stall_seconds") or math.inf)
    if now - child.sent > seconds + min(GRACE_SECONDS, 0.2 * seconds):
        return f"limit: the run took more than limits.seconds = {seconds:g} s"
    if now - child.progress > stall:
        where = f"step {child.steps + 1}" if child.steps else "its first step"
        return (f"limit: {where} took more than limits.stall_seconds = {stall:g} s; the run "
                f"was stopped")
    return None


def _deadline(child: _Child) -> float:
    if child.spec is None:
        return math.inf
    limits = child.spec.limits or {}
    seconds = float(limits.get("seconds") or math.inf)
    stall = float(limits.get("stall_seconds") or math.inf)
    return min(child.sent + seconds + min(GRACE_SECONDS, 0.2 * seconds),
               child.progress + stall)


def worker_threads(workers: int) -> int:
    """Each of ``workers`` workers' share of this process's CPU threads (its cores, or
    ``OMP_NUM_THREADS`` where set, as a Ray worker's is): at least one. Two workers on two
    cores, each running a tiny-lm run on both, took 2–4× the wall time of one thread each."""
    from harness.tasks.tiny_lm import available_cores

    cores = available_cores()
    with contextlib.suppress(ValueError):
        cores = int(os.environ.get("OMP_NUM_THREADS", "")) or cores
    return max(1, cores // workers)


def _supervised(pending: list[RunSpec], root: str, wandb: bool, workers: int,
                bar: _Progress) -> None:
    """Run ``pending`` in ``workers`` child processes that this process supervises.

    The first child builds the shared data of every pending run (no clock), then the children
    take runs one at a time. This process keeps each run's time limits and stops (SIGKILL) a
    child past one, recording the run ``failed`` (``limit: ...``); it tells a child stopped
    from outside (:data:`INTERRUPTING`), whose run is redone, from one that died by itself
    (the out-of-memory killer, ``os._exit``, a signal it sent itself), whose death is counted
    against its run (:meth:`RunStore.record_crash`) and fails it at :data:`MAX_CRASHES`. A
    replacement child is started whenever one ends and runs remain.
    """
    from multiprocessing.connection import wait

    from harness.errors import HarnessError, StoreError

    gpus: list[str | None] = list(_worker_gpus(pending, workers))
    ctx = multiprocessing.get_context("spawn")
    store = RunStore(root, pending[0].suite)
    queue = list(pending)
    children: list[_Child] = []
    free = gpus or [None] * workers  # a worker's GPU returns here when it exits
    interrupts: Counter = Counter()
    unborn: list[str] = []  # how the children that died before they were ready ended
    one_at_a_time = workers == 1
    prepared = False
    threads = worker_threads(workers)

    def finished(status: str, child: _Child) -> None:
        spec = child.spec
        assert spec is not None
        child.spec = None
        bar.run_finished(status, _label(spec), time.monotonic() - child.sent, spec.task)

    reused = _reusable(free, workers)
    for child in reused:
        free.remove(child.gpu)

    def start_worker() -> None:
        if reused:
            children.append(reused.pop(0))
            return
        gpu = free.pop(0)
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child_conn, os.getpid(), gpu), daemon=True)
        proc.start()
        child_conn.close()
        children.append(_Child(proc, parent_conn, gpu, key=_start_key(gpu)))

    def retire(child: _Child, *, kill: bool) -> None:
        if kill:
            child.process.kill()
        child.process.join(timeout=5 if not kill else None)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.conn.close()
        children.remove(child)
        free.append(child.gpu)

    def keep(child: _Child) -> None:
        """``child`` has nothing more to do in this suite: keep it for the next, if room."""
        children.remove(child)
        free.append(child.gpu)
        _park(child)

    def died(child: _Child) -> None:
        """``child`` ended by itself (or was killed) while this process lives."""
        retire(child, kill=False)
        spec = child.spec
        if not child.ready:  # it never started: a broken environment, not a run
            unborn.append(_describe_exit(child.process.exitcode))
            if len(unborn) >= MAX_CRASHES + 1:
                raise HarnessError(f"{store.path}: {len(unborn)} child processes died while "
                                   f"starting ({unborn[-1]}); can this Python import the "
                                   f"harness and its plugins?")
            return
        if child.preparing:
            return  # the runs build what is missing themselves, each under its own limits
        if spec is None:
            return
        state = store.status(spec.run_id)
        if store.is_finished(spec.run_id):  # it died after writing its results
            finished(str(state), child)
            return
        code = child.process.exitcode
        how = _describe_exit(code)
        outside = code is not None and code < 0 and -code in INTERRUPTING
        if outside and interrupts[spec.run_id] < MAX_INTERRUPTS:
            interrupts[spec.run_id] += 1
            store.interrupted(spec.run_id)
            queue.insert(0, spec)
            return
        if store.record_crash(spec.run_id, how) >= MAX_CRASHES:
            finished(_mark_lost(root, spec, CRASHED.format(how=how)), child)
        else:
            queue.insert(0, spec)  # once more, in a new worker

    try:
        start_worker()
        children[0].conn.send(("prepare", ([s.as_dict() for s in pending], root), os.getcwd()))
        children[0].preparing = True
        for _ in range(min(workers, len(queue)) - 1):
            start_worker()
        while queue or any(c.spec is not None or c.preparing for c in children):
            now = time.monotonic()
            prepared = prepared or not any(c.preparing for c in children)
            for child in list(children):
                if child.spec is not None or child.preparing or not prepared or \
                        not child.ready:
                    continue
                if queue:
                    spec = queue.pop(0)
                    child.spec, child.sent, child.progress, child.steps = spec, now, now, 0
                    child.conn.send(("run", (spec.as_dict(), root, wandb, threads),
                                     os.getcwd()))
                    if one_at_a_time:
                        bar.run_started(_label(spec), spec.task)
                else:
                    keep(child)
            if not children:
                if queue:
                    start_worker()
                continue
            timeout = min([1.0, *(_deadline(c) - now for c in children)])
            ready = wait([*(c.process.sentinel for c in children), *(c.conn for c in children)],
                         timeout=max(timeout, 0.0))
            for child in list(children):
                dead = child.process.sentinel in ready
                while child.conn in ready:
                    try:
                        if not child.conn.poll():
                            break
                        kind, value = child.conn.recv()
                    except (EOFError, OSError):
                        dead = True
                        break
                    if kind == "ready":
                        child.ready = True
                    elif kind == "step":
                        child.steps += 1
                        child.progress = time.monotonic()
                        if one_at_a_time:
                            bar.run_step(value)
                    elif kind == "prepared" or (kind == "error" and child.preparing):
                        child.preparing = False  # a run meets a preparation error itself
                    elif kind == "status":
                        finished(value, child)
                    elif kind == "error":
                        assert child.spec is not None
                        finished(_mark_lost(root, child.spec, value), child)
                    elif kind == "stop":
                        raise StoreError(value)
                if dead or not child.process.is_alive():
                    died(child)
                    if queue and len(children) < workers:
                        start_worker()
                    continue
                reason = _limit_passed(child, time.monotonic())
                if reason is not None:
                    spec = child.spec
                    assert spec is not None
                    retire(child, kill=True)
                    if not store.is_finished(spec.run_id):
                        store.mark_failed(spec.run_id, spec.as_dict(), reason,
                                          steps=child.steps)
                    finished(str(store.status(spec.run_id)), child)
                    if queue and len(children) < workers:
                        start_worker()
    except BaseException:
        # Ctrl-C, or the store failing: stop every child now; their runs are redone next time.
        for child in list(children):
            if child.spec is not None:
                with contextlib.suppress(OSError):
                    store.interrupted(child.spec.run_id)
            retire(child, kill=True)
        raise
    finally:
        for child in list(children):
            if child.ready and child.spec is None and not child.preparing:
                keep(child)
            else:
                with contextlib.suppress(OSError, ValueError):
                    child.conn.send(None)
                retire(child, kill=False)
        for child in reused:  # taken for this suite but not needed
            _park(child)


def _prepare_shared(pending: list[RunSpec], root: str) -> None:
    """Build each (task, seed)'s preference data and reward model once, before the runs."""
    from harness.config import config_hash
    from harness.engine.plugins import get_plugin_host
    from harness.engine.runner import build_task, resolve_device, shared_artifacts

    host = get_plugin_host()
    groups: dict[str, list[RunSpec]] = {}
    for spec in pending:
        groups.setdefault(config_hash(spec.shared_key), []).append(spec)
    for group in groups.values():
        first = group[0].as_dict()
        needs = set().union(*(host.algorithm(s.algorithm).needs for s in group))
        need_reward = "reward" in needs or "proxy_reward" in first["evaluation"]["evaluators"]
        task = build_task(host, first, resolve_device(first["device"]))
        shared_artifacts(task, first, RunStore(root, group[0].suite), host,
                         need_prefs=bool({"preferences", "unpaired"} & needs),
                         need_reward=need_reward)


def _leased_run(spec: dict[str, Any], root: str, wandb: bool, token: str | None) -> str:
    """A Ray task: the run in a child process that this one supervises, as the local executor
    does (:func:`_supervised`: this process keeps the run's time limits, a hung step included,
    and stops the child past one), on the lease ``token`` of the driver's lock
    (:func:`harness.engine.store.lease`, which the child inherits; none when the driver holds no
    lock, as when it is called outside a suite). Returns the run's final status."""
    from harness.engine.store import lease

    run = RunSpec(**spec)
    bar = _Progress(False, 1, run.suite)
    with lease(root, run.suite, token) if token else contextlib.nullcontext():
        _supervised([run], root, wandb, 1, bar)
    status = RunStore(root, run.suite).status(run.run_id)
    return status if status in FINISHED else "interrupted"


def _ray(
    pending: list[RunSpec],
    root: str,
    wandb: bool,
    address: str | None,
    timeout: float,
    bar: _Progress,
) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'rlhf-harness[ray]'"
        ) from None
    from harness.models.cache import CACHE_ENV, cache_dir

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    # Every run reads the artefacts one task prepared: the preference data and r̂ in the store,
    # and tiny-lm's pre-trained π_ref in the driver's cache folder (on a cluster of several
    # machines, a shared filesystem, as the store root is), so that no run pre-trains a π_ref
    # of its own (on a GPU that pre-training is not bit-for-bit repeatable).
    runtime_env = {"env_vars": {CACHE_ENV: str(cache_dir().resolve())}}
    try:
        if pending:
            prepare = ray.remote(_prepare_shared).options(
                num_cpus=1, num_gpus=max(s.gpus for s in pending), runtime_env=runtime_env)
            ray.get(prepare.remote(pending, os.path.abspath(root)), timeout=timeout)
        remote = ray.remote(_leased_run)
        refs = {}
        for spec in pending:
            # the lease of the lock this process holds: a run that outlives this process (Ray's
            # workers do, when the driver is killed) writes nothing into the store
            token = RunStore(root, spec.suite).lease_token()
            task = remote.options(num_cpus=1, num_gpus=spec.gpus, runtime_env=runtime_env)
            refs[task.remote(spec.as_dict(), os.path.abspath(root), wandb, token)] = spec
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:
                for ref in waiting:
                    ray.cancel(ref, force=True)
                    bar.run_finished(_mark_lost(root, refs[ref], f"no result after {timeout} s"),
                                     _label(refs[ref]), group=refs[ref].task)
                break
            ref = ready[0]
            try:
                bar.run_finished(ray.get(ref, timeout=timeout), _label(refs[ref]),
                                 group=refs[ref].task)
            except Exception:
                bar.run_finished(_mark_lost(root, refs[ref], traceback.format_exc()),
                                 _label(refs[ref]), group=refs[ref].task)
    finally:
        if started:
            ray.shutdown()

