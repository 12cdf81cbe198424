"""Executors: where a suite's runs execute — this process, local worker processes, or Ray.

Every executor runs :func:`harness.runner.run_one` on each pending spec and writes to the same
run store, so their results are interchangeable: the same seeds give the same store. A run's own
failures are captured by ``run_one``; an executor only has to handle runs that could not report
(a worker process that died, a Ray task lost with its node), which it marks ``failed``.

- ``local`` with ``workers=1`` (the default): sequentially, in this process, with a progress bar
  for the suite and one for the current run.
- ``local`` with ``workers=N``: a pool of N worker processes (``spawn``): shared preference data
  and reward models are built first, in one child process (so that this process never holds a
  CUDA context of its own), so that workers never duplicate them. When the runs are on CUDA,
  worker i is given GPU i (``CUDA_VISIBLE_DEVICES``) and N may not exceed the visible GPUs:
  runs sharing a GPU would slow each other down, and the report compares their wall times.
- ``ray``: each run is a Ray task requesting ``gpus_per_run`` GPUs (and one CPU); ``address``
  joins an existing cluster, otherwise a local instance is started. The store must be on a
  filesystem every node sees. ``ray.get`` always has a timeout: a task asking for GPUs that no
  node has would otherwise wait forever.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError
from harness.store import RunStore
from harness.suite import RunSpec


@dataclass
class SuiteOutcome:
    """What a suite run did."""

    total: int
    skipped: int
    statuses: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return self.statuses["failed"]


class _Progress:
    """Console progress: the suite (done / failed / diverged, ETA) and the current run."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self.counts: Counter = Counter()
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.bar.start()
        self.suite = self.bar.add_task(title, total=total, counts="")
        self.current = None

    def run_started(self, label: str) -> None:
        if self.bar is not None:
            if self.current is not None:
                self.bar.remove_task(self.current)
            self.current = self.bar.add_task(f"  {label}", total=1.0, counts="")

    def run_step(self, fraction: float) -> None:
        if self.bar is not None and self.current is not None:
            self.bar.update(self.current, completed=fraction)

    def run_finished(self, status: str) -> None:
        self.counts[status] += 1
        if self.bar is not None:
            text = " ".join(f"{k} {self.counts[k]}" for k in ("done", "failed", "diverged"))
            self.bar.update(self.suite, advance=1, counts=text)

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
    progress: bool = True,
    ray_timeout: float = 24 * 3600.0,
) -> SuiteOutcome:
    """Run every spec not already finished in the store; see the module docstring."""
    if not specs:
        return SuiteOutcome(0, 0)
    store = RunStore(root, specs[0].suite)
    pending = [s for s in specs if not store.is_finished(s.run_id, retry_failed=retry_failed)]
    outcome = SuiteOutcome(total=len(specs), skipped=len(specs) - len(pending))
    title = f"{specs[0].suite}: {len(pending)} to run, {outcome.skipped} already finished"
    bar = _Progress(progress, len(pending), title)
    try:
        if executor == "local" and workers <= 1:
            _sequential(pending, root, wandb, bar)
        elif executor == "local":
            _pool(pending, root, wandb, workers, bar)
        elif executor == "ray":
            blind = [s for s in pending if s.device == "cuda" and not s.gpus]
            if blind:
                raise ConfigError(
                    f"{blind[0].suite}: device cuda under the ray executor needs gpus_per_run > 0 "
                    f"(Ray hides the GPUs from a run that requests none)"
                )
            _ray(pending, root, wandb, address, ray_timeout, bar)
        else:
            raise ConfigError(f"unknown executor '{executor}' (use 'local' or 'ray')")
    finally:
        bar.close()
    outcome.statuses = bar.counts
    return outcome


def _sequential(pending: list[RunSpec], root: str, wandb: bool, bar: _Progress) -> None:
    from harness.runner import run_one

    for spec in pending:
        bar.run_started(spec.label + f" · {spec.task} · seed {spec.seed}")
        bar.run_finished(run_one(spec.as_dict(), root, wandb=wandb, on_step=bar.run_step))


def _mark_lost(root: str, spec: RunSpec, error: str) -> str:
    """Record a run whose worker died without reporting as ``failed``."""
    import pandas as pd

    from harness.store import METRIC_COLUMNS

    store = RunStore(root, spec.suite)
    if store.status(spec.run_id) is None:
        store.start(spec.run_id, spec.as_dict())
    store.finish(
        spec.run_id, "failed", metrics=pd.DataFrame(columns=list(METRIC_COLUMNS)),
        summary={"run_id": spec.run_id, "status": "failed", "reason": error, "seed": spec.seed},
        traceback=error, reason=error,
    )
    return "failed"


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
    return gpus


def _assign_gpu(counter: Any, gpus: list[str]) -> None:
    """Pool initializer: the next worker's own GPU, before anything in it touches CUDA."""
    if not gpus:
        return
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]


def _pool(pending: list[RunSpec], root: str, wandb: bool, workers: int, bar: _Progress) -> None:
    from harness.runner import run_one

    gpus = _worker_gpus(pending, workers)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_assign_gpu,
                                initargs=(ctx.Value("i", 0), gpus[:1])) as prepare:
        prepare.submit(_prepare_shared, pending, root).result()
    remaining = list(pending)
    while remaining:
        counter = ctx.Value("i", 0)
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_assign_gpu,
                                    initargs=(counter, gpus)) as pool:
            futures = {pool.submit(run_one, s.as_dict(), root, wandb=wandb): s for s in remaining}
            remaining = []
            broken = False
            for future in cf.as_completed(futures):
                spec = futures[future]
                try:
                    bar.run_finished(future.result())
                except cf.process.BrokenProcessPool:
                    # A worker died (e.g. killed for memory): the runs it held cannot be told
                    # apart from the ones queued behind it, so requeue those not yet finished.
                    broken = True
                    remaining.append(spec)
                except Exception:
                    bar.run_finished(_mark_lost(root, spec, traceback.format_exc()))
            if broken:
                store = RunStore(root, pending[0].suite)
                lost = [s for s in remaining if store.status(s.run_id) == "running"]
                for spec in lost:  # it was running when its worker died: do not retry forever
                    bar.run_finished(_mark_lost(root, spec, "worker process died during the run"))
                remaining = [s for s in remaining if s not in lost]


def _prepare_shared(pending: list[RunSpec], root: str) -> None:
    """Build each (task, seed)'s preference data and reward model once, before the workers (in a
    process of its own: see the module docstring)."""
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
                         need_prefs="preferences" in needs, need_reward=need_reward)


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
    from harness.runner import run_one

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(run_one)
        refs = {}
        for spec in pending:
            task = remote.options(num_cpus=1, num_gpus=spec.gpus)
            refs[task.remote(spec.as_dict(), os.path.abspath(root), wandb=wandb)] = spec
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:
                for ref in waiting:
                    ray.cancel(ref, force=True)
                    bar.run_finished(_mark_lost(root, refs[ref], f"no result after {timeout} s"))
                break
            ref = ready[0]
            try:
                bar.run_finished(ray.get(ref, timeout=timeout))
            except Exception:
                bar.run_finished(_mark_lost(root, refs[ref], traceback.format_exc()))
    finally:
        if started:
            ray.shutdown()

