"""Executors: where a suite's runs execute — this process, local worker processes, or Ray.

Every executor runs :func:`harness.runner.run_one` on each pending spec and writes to the same
run store, so their results are interchangeable, within what the hardware makes reproducible: on
the CPU (tabular runs on one thread; LM runs with the same thread count) the same seeds give the
same store whatever the executor. On a GPU, kernels that accumulate with atomics or pick an
algorithm by timing vary by an ulp from run to run, and an ulp can change a sampled token: only a
suite with ``deterministic: true`` (deterministic kernels, slower) gives the same store again,
and then on the same GPU model with the same library versions. A run's own
failures are captured by ``run_one``; an executor only has to handle runs that could not report
(a worker process that died, a Ray task lost with its node), which it marks ``failed``.

The process that runs a suite holds the store's writer lock for the whole suite (a second one is
refused, or waits), cleans what killed writers left, and marks ``failed`` (crashed) a run found
``running`` for the second time: its process died during it twice (see :mod:`harness.store`).

- ``local`` with ``workers=1`` (the default): sequentially, in this process, with a progress bar
  for the suite and one for the current run.
- ``local`` with ``workers=N``: N worker processes (``spawn``), each running one run at a time;
  shared preference data and reward models are built first, in one child process (so that this
  process never holds a CUDA context, nor models on GPU 0), so that workers never duplicate
  them. When the runs are on CUDA, each worker is given a GPU of its own
  (``CUDA_VISIBLE_DEVICES``) and N may not exceed the visible GPUs: runs sharing a GPU would slow
  each other down, and the report compares their wall times. A worker that dies (killed for
  memory, ``os._exit``) takes only its own run with it: the run is retried once in a new worker
  (on the same GPU), then marked ``failed`` (crashed); its neighbours go on. Workers exit when
  the suite's process dies.
- ``ray``: each run is a Ray task requesting ``gpus_per_run`` GPUs (and one CPU); ``address``
  joins an existing cluster, otherwise a local instance is started. The store must be on a
  filesystem every node sees. ``ray.get`` always has a timeout: a task asking for GPUs that no
  node has would otherwise wait forever.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError
from harness.store import MAX_CRASHES, RunStore
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
    the time left at the suite's pace so far. ``off``: nothing.
    """

    def __init__(self, mode: bool | str, total: int, title: str, *, console: Any = None,
                 stream: Any = None, clock: Any = time.monotonic) -> None:
        if isinstance(mode, bool):
            mode = "bars" if mode else "off"
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode '{mode}'; modes: {', '.join(PROGRESS_MODES)}")
        self.mode = mode
        self.total = total
        self.counts: Counter = Counter()
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
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        console = console or Console(stderr=True)
        console.print(title, overflow="ellipsis", no_wrap=True, highlight=False, markup=False)
        self.bar = Progress(
            TextColumn("{task.description}",
                       table_column=Column(max_width=26, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}", table_column=Column(no_wrap=True)),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.bar.start()
        self.suite = self.bar.add_task("suite", total=total, counts="")

    def _print(self, text: str) -> None:
        import sys

        print(text, file=self.stream or sys.stderr, flush=True)

    def run_started(self, label: str) -> None:
        self._run_started, self._label = self.clock(), label
        if self.bar is not None:
            if self.current is not None:
                self.bar.remove_task(self.current)
            from rich.markup import escape  # a sweep label's [k=v] is text, not markup

            self.current = self.bar.add_task(f"  {escape(label)}", total=1.0, counts="")

    def run_step(self, fraction: float) -> None:
        if self.bar is not None and self.current is not None:
            self.bar.update(self.current, completed=fraction)

    def run_finished(self, status: str, label: str | None = None,
                     seconds: float | None = None) -> None:
        """A run ended with ``status``; ``label`` and ``seconds`` default to those of the run
        :meth:`run_started` announced (executors that run several at once pass their own)."""
        self.counts[status] += 1
        now = self.clock()
        if seconds is None and label is None and self._run_started is not None:
            seconds, label = now - self._run_started, self._label
        self._run_started = None
        if self.bar is not None:
            text = " ".join(f"{k} {self.counts[k]}" for k in ("done", "failed", "diverged")
                            if k == "done" or self.counts[k])
            self.bar.update(self.suite, advance=1, counts=text)
        elif self.mode == "lines":
            finished = sum(self.counts.values())
            left = max(self.total - finished, 0)
            pace = (now - self.started) / finished
            took = f" in {_duration(seconds)}" if seconds is not None else ""
            eta = f", ETA {_duration(pace * left)}" if left else ""
            self._print(f"[{finished}/{self.total}] {status}{took}: {label or 'a run'}; "
                        f"{left} left{eta}")

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
) -> SuiteOutcome:
    """Run every spec not already finished in the store; see the module docstring.

    Holds the store's lock throughout; another process holding it raises
    :class:`~harness.errors.StoreError` naming its PID, unless ``wait``.
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
    store = RunStore(root, specs[0].suite)
    with store.lock(wait=wait):
        store.clean_temporaries()
        pending = []
        crashed = Counter()
        for s in specs:
            if store.is_finished(s.run_id, retry_failed=retry_failed):
                continue
            if store.crashes(s.run_id) >= MAX_CRASHES:
                store.mark_failed(s.run_id, s.as_dict(), CRASHED.format(how="found running "
                                  "when the suite started"))
                crashed["failed"] += 1
                continue
            pending.append(s)
        outcome = SuiteOutcome(total=len(specs), skipped=len(specs) - len(pending))
        outcome.skipped -= crashed["failed"]
        title = f"{specs[0].suite}: {len(pending)} to run, {outcome.skipped} already finished"
        bar = _Progress(progress, len(pending), title)
        try:
            if executor == "local" and workers <= 1:
                _sequential(pending, root, wandb, bar)
            elif executor == "local":
                _pool(pending, root, wandb, workers, bar)
            else:
                _ray(pending, root, wandb, address, ray_timeout, bar)
        finally:
            bar.close()
        outcome.statuses = bar.counts + crashed
        return outcome


def _sequential(pending: list[RunSpec], root: str, wandb: bool, bar: _Progress) -> None:
    from harness.runner import run_one

    for spec in pending:
        bar.run_started(_label(spec))
        bar.run_finished(run_one(spec.as_dict(), root, wandb=wandb, on_step=bar.run_step))


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


def _preparer(gpu: str | None, parent: int) -> None:
    """Initializer of the process that prepares the shared artifacts: like a worker, its own
    GPU, and it exits with the suite's process."""
    _use_gpu(gpu)
    _die_with_parent(parent)


def _worker(conn: Any, root: str, wandb: bool, parent: int, gpu: str | None = None) -> None:
    """A worker's loop: receive a spec, run it, send back its status; stop at ``None``/EOF."""
    _use_gpu(gpu)
    from harness.runner import run_one

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the suite's process's to handle
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        try:
            status = run_one(spec, root, wandb=wandb)
        except BaseException:  # run_one reports its run's failures itself; this is the store
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("status", status))


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


def _pool(pending: list[RunSpec], root: str, wandb: bool, workers: int, bar: _Progress) -> None:
    from multiprocessing.connection import wait

    gpus: list[str | None] = list(_worker_gpus(pending, workers))
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_preparer,
                                initargs=(gpus[0] if gpus else None, os.getpid())) as prepare:
        prepare.submit(_prepare_shared, pending, root).result()
    store = RunStore(root, pending[0].suite)
    queue = list(pending)
    deaths: Counter = Counter()
    busy: dict[Any, tuple[Any, Any, RunSpec | None]] = {}  # sentinel → (process, conn, spec)
    free = gpus or [None] * workers  # a worker's GPU returns here when it exits
    gpu_of: dict[Any, str | None] = {}
    started: dict[str, float] = {}  # run id → when it was sent to a worker

    def finished(status: str, spec: RunSpec) -> None:
        begun = started.pop(spec.run_id, None)
        bar.run_finished(status, _label(spec), None if begun is None else time.monotonic() - begun)

    def start_worker() -> None:
        gpu = free.pop(0)
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child_conn, root, wandb, os.getpid(), gpu),
                           daemon=True)
        proc.start()
        child_conn.close()
        busy[proc.sentinel] = (proc, parent_conn, None)
        gpu_of[proc.sentinel] = gpu

    try:
        for _ in range(min(workers, len(queue))):
            start_worker()
        while any(entry[2] is not None for entry in busy.values()) or queue:
            for key, (proc, conn, spec) in list(busy.items()):
                if spec is None and queue:
                    nxt = queue.pop(0)
                    conn.send(nxt.as_dict())
                    started[nxt.run_id] = time.monotonic()
                    busy[key] = (proc, conn, nxt)
                elif spec is None:
                    conn.send(None)
                    proc.join(timeout=5)
                    del busy[key]
                    free.append(gpu_of.pop(key))
            if not busy:
                break
            ready = wait([*busy, *(entry[1] for entry in busy.values())], timeout=1.0)
            for key, (proc, conn, spec) in list(busy.items()):
                if conn in ready:
                    try:
                        kind, value = conn.recv()
                    except (EOFError, OSError):
                        kind, value = "dead", None
                    if kind == "status":
                        assert spec is not None
                        finished(value, spec)
                        busy[key] = (proc, conn, None)
                        continue
                    if kind == "error":
                        assert spec is not None
                        finished(_mark_lost(root, spec, value), spec)
                        busy[key] = (proc, conn, None)
                        continue
                if key in ready or (conn in ready and not proc.is_alive()):
                    proc.join(timeout=5)
                    del busy[key]
                    free.append(gpu_of.pop(key))
                    if spec is not None and not store.is_finished(spec.run_id):
                        deaths[spec.run_id] += 1
                        how = _describe_exit(proc.exitcode)
                        if deaths[spec.run_id] >= MAX_CRASHES:
                            finished(_mark_lost(root, spec, CRASHED.format(how=how)), spec)
                        else:
                            queue.insert(0, spec)  # once more, in a new worker
                    if queue:
                        start_worker()
    finally:
        for _proc, conn, _ in busy.values():
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc, _, _ in busy.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def _prepare_shared(pending: list[RunSpec], root: str) -> None:
    """Build each (task, seed)'s preference data and reward model once, before the workers."""
    from harness.config import config_hash
    from harness.plugins import get_plugin_host
    from harness.runner import build_task, resolve_device, shared_artifacts

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
    from harness.cache import CACHE_ENV, cache_dir
    from harness.runner import run_one

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
        remote = ray.remote(run_one)
        refs = {}
        for spec in pending:
            task = remote.options(num_cpus=1, num_gpus=spec.gpus, runtime_env=runtime_env)
            refs[task.remote(spec.as_dict(), os.path.abspath(root), wandb=wandb)] = spec
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:
                for ref in waiting:
                    ray.cancel(ref, force=True)
                    bar.run_finished(_mark_lost(root, refs[ref], f"no result after {timeout} s"),
                                     _label(refs[ref]))
                break
            ref = ready[0]
            try:
                bar.run_finished(ray.get(ref, timeout=timeout), _label(refs[ref]))
            except Exception:
                bar.run_finished(_mark_lost(root, refs[ref], traceback.format_exc()),
                                 _label(refs[ref]))
    finally:
        if started:
            ray.shutdown()

