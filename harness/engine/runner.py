"""One run: build an algorithm's context, then step it and record what happens.

:func:`build_context` gives every algorithm the same starting point: a trainable copy of π_ref,
a frozen π_ref, the run's random stream, a compute meter, and — as the algorithm declares it
needs them — the frozen reward model r̂ or the preference pairs. Algorithms of one comparison get
the *same* r̂ and the *same* pairs: the comparison is of algorithms, not of luck in data.

:func:`train` steps an algorithm a fixed number of times and calls ``evaluate`` every
``eval_every`` steps; each record carries the step, the cumulative samples, tokens, wall time and
FLOPs, so any of them can serve as the x-axis of a comparison.

:func:`run_one` runs one spec of a suite into the run store, as a sequence of stages, each a
function with one job: resolve the spec's device, task, algorithm and evaluators → prepare the
shared preference data and r̂ → build the context and the algorithm → the exact problem and the
algorithm's fixed point → the r̂ evaluation reads → the memory baseline → train, evaluating as it
goes → the measured memory peaks; then, however the run ended (an exception out of any stage is
caught and classified by :func:`_caught`), record it. The stages pass the run along in one
:class:`_Run`.

The summary's ``compute`` holds the seconds per phase (wall and CPU) and the counted work of
:class:`~harness.compute.ComputeMeter` (samples generated and read from data, forward and backward
tokens per model role, FLOPs per role; table rows for tabular policies); ``load_average`` the
mean and max of the 1-minute load average sampled at the start, at each evaluation and at the end,
so a reader sees what load did to the timed part.

**One module, over 600 lines, on purpose.** The stages call the builders defined here
(:func:`build_task`, :func:`build_context`, :func:`make_algorithm`, :func:`shared_artifacts`)
through this module's namespace, so that replacing one (as the tests do:
``monkeypatch.setattr(harness.engine.runner, "build_context", ...)``) replaces it for every stage;
and a run reads as one sequence, stage after stage, each a short function
(``tests/test_run_stages.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from harness.algorithm import NEEDS, Algorithm, RunContext, declared_metrics
from harness.compute import ComputeMeter, model_state_bytes, resident_modules
from harness.config import build_config
from harness.data import PreferenceBatches, PreferenceDataset
from harness.errors import ConfigError
from harness.policy import Policy
from harness.reward import RewardModel
from harness.tasks.base import Task

if TYPE_CHECKING:
    from harness.engine.store import RunStore
    from harness.engine.tracking import Tracker
    from harness.exact import ExactProblem


def build_context(
    task: Task,
    algorithm: type[Algorithm],
    *,
    seed: int,
    preferences: PreferenceDataset | None = None,
    reward_model: RewardModel | None = None,
    label_noise: float | None = None,
    unpaired: bool = False,
    data_seed: int | None = None,
    policy_options: dict[str, Any] | None = None,
) -> RunContext:
    """The context for one run of ``algorithm`` on ``task`` (see the module docstring).

    ``label_noise`` is the known flip rate of ``preferences``' labels (None: unknown), given to
    algorithms that need ``"label_noise"``; ``unpaired`` marks the data as unpaired feedback:
    algorithms that need ``"unpaired"`` then get one example per pair (from a generator seeded
    with ``data_seed``, the instance's seed, default ``seed``: every replicate of an instance
    sees the same examples), and those that need pairs are refused.

    ``policy_options`` is a suite's ``policy`` section (:class:`harness.suite.PolicySpec`):
    with ``lora``, the policy trains LoRA adapters and π_ref is its base with them off (no
    second copy); with ``activation_checkpointing``, the policy recomputes activations in its
    backward passes (see :mod:`harness.models.lora`); with ``offload_frozen``, π_ref and r̂ stay on
    the CPU and visit the device per call (:mod:`harness.models.offload`).
    """
    unknown = set(algorithm.needs) - NEEDS
    if unknown:
        raise ConfigError(
            f"algorithm '{algorithm.name}' declares unknown needs {sorted(unknown)}; "
            f"known: {sorted(NEEDS)}"
        )
    device = torch.device(task.device)
    options = policy_options or {}
    offload = bool(options.get("offload_frozen")) and device.type != "cpu"
    policy, reference = _policy_and_reference(task, algorithm, options, seed=seed,
                                              offload=offload)
    generator = torch.Generator(device=device).manual_seed(seed)
    context = RunContext(
        task=task,
        policy=policy,
        reference=reference,
        generator=generator,
        meter=ComputeMeter(device=device),
        seed=seed,
    )
    if "preferences" in algorithm.needs or "unpaired" in algorithm.needs:
        if preferences is None:
            raise ConfigError(f"algorithm '{algorithm.name}' needs preference data")
        _give_data(context, algorithm, preferences.to_batches(task).to(device),
                   unpaired=unpaired, coin_seed=seed if data_seed is None else data_seed,
                   device=device)
    if "label_noise" in algorithm.needs:
        context.label_noise = label_noise
    if "reward" in algorithm.needs:
        if reward_model is None:
            raise ConfigError(f"algorithm '{algorithm.name}' needs a reward model")
        frozen = copy_to(reward_model, "cpu" if offload else device)
        frozen.requires_grad_(False)
        frozen.eval()
        context.reward_model = frozen
    if options.get("offload_frozen"):
        from harness.models.offload import OffloadedPolicy, OffloadedReward


        if not options.get("lora"):  # with LoRA π_ref is the policy: nothing to offload
            context.reference = OffloadedPolicy(context.reference, device)
        if context.reward_model is not None:
            context.reward_model = OffloadedReward(context.reward_model, device)
    for model, role in ((context.policy, "policy"), (context.reference, "reference"),
                        (context.reward_model, "reward")):
        context.meter.assign(model, role)
    return context


def _policy_and_reference(
    task: Task, algorithm: type[Algorithm], options: dict[str, Any], *, seed: int, offload: bool,
) -> tuple[Policy, Policy]:
    """The trainable policy (a copy of π_ref on the task's device, in training mode) and the
    frozen π_ref beside it, as ``options`` (a suite's ``policy`` section) ask: see
    :func:`build_context`."""
    device = torch.device(task.device)
    if offload and not options.get("lora"):
        # π_ref's frozen copy is made in host memory, before the policy moves to the device
        with built_on(task, "cpu"):
            policy = task.reference_policy()
        reference_copy: Policy | None = policy.frozen_copy()
        policy = policy.to(device)
    else:
        policy = task.reference_policy().to(device)
        reference_copy = None
    if options.get("lora"):
        from harness.models.lora import AdapterOffReference, apply_lora

        if not getattr(algorithm, "supports_lora", True):
            raise ConfigError(f"policy.lora: algorithm '{algorithm.name}' declares that it "
                              f"cannot train LoRA adapters (supports_lora = False)")
        apply_lora(policy, options["lora"], seed=seed)
        reference: Policy = AdapterOffReference(policy)
    else:
        reference = reference_copy if reference_copy is not None else policy.frozen_copy()
    if options.get("activation_checkpointing"):
        from harness.models.lora import enable_activation_checkpointing

        enable_activation_checkpointing(policy)
    policy.train()
    return policy, reference


def _give_data(
    context: RunContext, algorithm: type[Algorithm], batches: PreferenceBatches, *,
    unpaired: bool, coin_seed: int, device: torch.device,
) -> None:
    """Hand ``algorithm`` the preference data it needs: the pairs (refused for data marked
    unpaired) and/or one example per pair (for unpaired data, which of the two from a generator
    seeded with ``coin_seed``)."""
    if "preferences" in algorithm.needs:
        if unpaired:
            raise ConfigError(f"algorithm '{algorithm.name}' needs preference pairs, and the "
                              f"data are marked unpaired")
        context.preferences = batches
    if "unpaired" in algorithm.needs:
        coin = torch.Generator().manual_seed(coin_seed) if unpaired else None
        context.examples = batches.to("cpu").unpaired(coin).to(device)


@contextlib.contextmanager
def built_on(task: Task, device: str | torch.device) -> Any:
    """For the block, ``task`` builds its models (``reference_policy``, ``make_reward_model``)
    on ``device`` instead of its own: how frozen copies meant for host memory are made without
    a first copy on the run's device."""
    own = task.device
    task.device = str(device)
    try:
        yield task
    finally:
        task.device = own


def copy_to(module: torch.nn.Module, device: str | torch.device) -> Any:
    """A deep copy of ``module`` whose parameters and buffers are made on ``device`` directly
    (no copy of the weights where ``module`` is, as ``deepcopy(module).to(device)`` makes)."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().to(device, copy=True),
                                         requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().to(device, copy=True)
    return copy.deepcopy(module, memo)


def known_label_noise(preferences: dict[str, Any]) -> float | None:
    """The flip rate of a suite's preference labels when the harness simulated them (its
    ``flip_rate``), None for data loaded from a file (their noise rate is unknown)."""
    if preferences.get("file"):
        return None
    return float(preferences.get("flip_rate", 0.0))


def make_algorithm(
    algorithm: type[Algorithm],
    config: dict[str, Any] | None,
    context: RunContext,
    *,
    where: str = "",
) -> Algorithm:
    """Validate ``config`` against ``algorithm.Config`` and build the algorithm."""
    cfg = build_config(algorithm.Config, config, where=where or f"algorithm '{algorithm.name}'")
    return algorithm(cfg, context)


def train(
    algo: Algorithm,
    steps: int,
    *,
    evaluate: Callable[[Policy], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> list[dict[str, float]]:
    """Step ``algo`` ``steps`` times; returns one record per step (with evaluations merged in).

    Stops early, marking the last record ``diverged = 1``, when a metric is NaN or infinite.
    """
    meter = algo.ctx.meter
    records: list[dict[str, float]] = []
    for step in range(1, steps + 1):
        metrics = algo.step()
        record = {"step": float(step), **metrics}
        last = step == steps or algo.finished
        if evaluate is not None and eval_every and (step % eval_every == 0 or last):
            with meter.phase("eval"), torch.no_grad():
                record.update(evaluate(algo.eval_policy()))
        record.update(
            samples=float(meter.samples),
            tokens=float(meter.tokens_generated + meter.tokens_trained),
            wall_seconds=meter.wall_seconds,
            flops=meter.flops,
        )
        records.append(record)
        if any(isinstance(v, float) and not math.isfinite(v) for v in record.values()):
            record["diverged"] = 1.0
            break
        if algo.finished:
            break
    return records


# --- one run of a suite ---------------------------------------------------------------------


def precision_context(device: str | torch.device, precision: str) -> Any:
    """The context every computation of a run executes in: bf16 autocast on ``device``'s type
    for ``precision: bf16``, nothing for ``fp32``.

    The autocast weight-cast cache is disabled (``cache_enabled=False``). With it, the bf16 copy
    of each fp32 parameter is made once and reused until the *outermost* autocast region exits;
    a step is one region, so after its first ``optimizer.step()`` every layer would keep
    computing with the weights the step began with (PPO's ratio ρ ≡ 1 within a step, the clip
    never binding, the critic frozen), and a cast cached under ``no_grad`` (the rollout) would
    carry no gradient on torch releases before pytorch#158232. Without the cache each layer
    casts its current weights at every call: a cast per forward, negligible beside the matmul.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ConfigError(f"unknown precision '{precision}' (use 'fp32' or 'bf16')")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


def check_precision(device: str, precision: str) -> None:
    """Raise :class:`ConfigError` when ``device`` (resolved) cannot honour ``precision``.

    bf16 on CUDA needs native bf16 arithmetic (compute capability 8.0 or later); an older card
    would emulate it, far slower, while the run id and the report say bf16.
    """
    if precision != "bf16" or torch.device(device).type != "cuda":
        return
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(torch.device(device))
        raise ConfigError(
            f"precision bf16: the CUDA device ({name}) has no native bf16 arithmetic "
            f"(compute capability 8.0 or later); use precision fp32"
        )


class _Diverged(Exception):
    """A run found diverged where no metric could say so (its parameters are not finite)."""


DEFAULT_THREADS = torch.get_num_threads()
"""torch's CPU threads in this process before any run set them (its cores, or
``OMP_NUM_THREADS``)."""
_run_threads: int | None = None


def set_run_threads(threads: int | None) -> None:
    """The CPU threads each later run of this process uses for a neural policy (None:
    :data:`DEFAULT_THREADS`). A worker of a suite of N workers is given its share of the cores,
    so that N runs do not each spread over all of them; a tabular run uses one thread whatever
    this says (its tensors are too small to split). Set per run, not inherited from the run
    before, so that a run's thread count, recorded in its summary, does not depend on which run
    the same process ran first."""
    global _run_threads
    _run_threads = threads


def run_threads(tabular: bool) -> int:
    """The threads a run uses on the CPU (see :func:`set_run_threads`)."""
    return 1 if tabular else (_run_threads or DEFAULT_THREADS)


CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS (CUDA's documented setting)."""


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Any:
    """With ``enabled``: ``torch.use_deterministic_algorithms(True)`` (an op without a
    deterministic kernel raises) and ``CUBLAS_WORKSPACE_CONFIG`` set, for the block; the previous
    settings are restored after. cuBLAS reads the variable when it makes a handle, so a process
    that used CUDA before the block keeps its handles: the ``run`` command sets it at start for a
    deterministic suite, and worker processes inherit it."""
    import os

    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested, but torch sees no CUDA device")
    return device


def build_task(host: Any, spec: dict[str, Any], device: str) -> Task:
    """The task of a run spec, on ``device``."""
    cls = host.task(spec["task"])
    return cls(build_config(cls.Params, spec["task_params"]), seed=spec["seed"], device=device)


def spent(meter: ComputeMeter, step: int, kind: str) -> float:
    """How much of a budget of ``kind`` a run has used.

    ``seconds`` counts generation, scoring and training time, not evaluation: evaluation is the
    same for every algorithm and is not part of what is compared.
    """
    return {
        "steps": float(step),
        "samples": float(meter.samples),
        "tokens": float(meter.tokens_generated + meter.tokens_trained),
        "flops": meter.flops,
        "seconds": meter.wall_seconds - meter.seconds["eval"],
    }[kind]


def shared_artifacts(
    task: Task, spec: dict[str, Any], store: Any, host: Any, *, need_prefs: bool, need_reward: bool,
    host_memory: bool = False,
) -> tuple[PreferenceDataset | None, RewardModel | None, dict[str, Any] | None]:
    """The preference data and reward model of ``spec``'s (task, params, seed), built once;
    r̂ is loaded in host memory with ``host_memory`` (for a run that offloads it), else on the
    task's device.

    Both are cached in the store's ``shared/<key>/`` folder, built atomically: every algorithm of
    the suite on this task and seed — in this process or another — reads the same files.
    """
    import dataclasses
    import json

    from harness.config import config_hash
    from harness.engine.annotator import simulate_preferences
    from harness.engine.store import shared_data_key
    from harness.models.cache import cached_dir
    from harness.reward import GoldRewardModel, RewardFitConfig, fit_reward_model

    prefs_spec, rm_spec = spec["preferences"], spec["reward_model"]
    key = shared_data_key(spec)
    fitted = rm_spec["kind"] == "fitted"
    data = None
    if need_prefs or (need_reward and fitted):

        def build_prefs(tmp: Any) -> None:
            if prefs_spec.get("file"):
                PreferenceDataset.load(prefs_spec["file"]).save(tmp / "preferences.parquet")
                return
            model = host.preference_model(prefs_spec["preference_model"])(prefs_spec["scale"])
            simulate_preferences(
                task, model, num_pairs=prefs_spec["num_pairs"], seed=spec["seed"],
                flip_rate=prefs_spec["flip_rate"], temperature=prefs_spec["temperature"],
            ).save(tmp / "preferences.parquet")

        path, _ = cached_dir(store.shared_dir(key), build_prefs)
        data = PreferenceDataset.load(path / "preferences.parquet")
    if not need_reward:
        return data, None, None
    if not fitted:
        return data, GoldRewardModel(task), {"kind": "gold"}
    assert data is not None
    fit_config = RewardFitConfig(**{k: v for k, v in rm_spec.items() if k != "kind"})
    rm_key = config_hash({"data": key, "fit": dataclasses.asdict(fit_config)})

    def build_reward(tmp: Any) -> None:
        likelihood = host.preference_model(fit_config.preference_model)(fit_config.scale)
        model, report = fit_reward_model(task, data, likelihood, fit_config, seed=spec["seed"])
        torch.save(model.state_dict(), tmp / "reward_model.pt")
        (tmp / "fit_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))

    path, _ = cached_dir(store.shared_dir(f"{key}-reward-{rm_key}"), build_reward)
    where = "cpu" if host_memory else task.device
    with built_on(task, where):
        model = task.make_reward_model()
    model.load_state_dict(
        # read into host memory and copied into the model's tensors: no second copy on the device
        torch.load(path / "reward_model.pt", map_location="cpu", weights_only=True)
    )
    model.eval()
    return data, model, json.loads((path / "fit_report.json").read_text())


def _planned_memory(spec: dict[str, Any], host: Any) -> dict[str, Any]:
    """The run's memory plan (:func:`harness.engine.memory.plan_run`) for its summary, beside the
    memory it measures (``memory``); the plan's error, if planning failed."""
    from harness.engine.memory import plan_run

    try:
        plan = plan_run(spec, host)
    except Exception as exc:  # a plan is a report: a model it cannot size must not fail the run
        return {"plan_error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
    lora = bool((spec.get("policy") or {}).get("lora"))
    if not plan.models:  # a tabular policy: nothing to plan
        return {"lora": lora}
    return {
        "lora": lora,
        "planned": {"model_state": plan.model_state, "total": plan.total,
                    "headroom": plan.headroom, "phases": dict(plan.phases),
                    "models": {m.name: dataclasses.asdict(m) for m in plan.models}},
    }


class RunLimit(BaseException):
    """Raised inside a run that went past one of its limits (a BaseException, so that a plugin's
    ``except Exception`` cannot swallow it)."""


class _Watch:
    """A run's between-step limits, and the SIGINT it answers while it runs in the main thread.

    No timer runs inside the run's process: a signal raising wherever the run is (inside an
    import, say) would leave half-initialised modules behind. ``limits.seconds`` is checked
    between steps here, and kept by the suite's process, which stops the child process a run
    executes in once it is past its time (:mod:`harness.engine.executors`). SIGINT is tagged, so
    that a user's Ctrl-C stops the suite while a plugin raising ``KeyboardInterrupt`` only fails its
    run; a process that ignores SIGINT (an executor's child) keeps ignoring it.
    """

    def __init__(self, limits: dict[str, Any]) -> None:
        import signal
        import threading
        import time

        self.seconds = float(limits.get("seconds") or math.inf)
        self.steps = int(limits.get("steps") or 2**62)
        self.stall_steps = int(limits.get("stall_steps") or 2**62)
        self.start = time.monotonic()
        self.user_interrupt = False
        self._signal = signal
        self._main = threading.current_thread() is threading.main_thread()
        self._saved: dict[int, Any] = {}
        if not self._main or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return
        self._saved[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.user_interrupt = True
        raise KeyboardInterrupt

    def check(self, step: int, progress_steps: int) -> None:
        """Between steps: the run's limits."""
        import time

        if time.monotonic() - self.start > self.seconds:
            raise RunLimit(f"limit: the run took more than limits.seconds = {self.seconds:g} s")
        if step >= self.steps:
            raise RunLimit(f"limit: the run reached limits.steps = {self.steps} steps before "
                           f"spending its budget")
        if progress_steps >= self.stall_steps:
            raise RunLimit(
                f"limit: {progress_steps} steps in a row spent nothing of the budget "
                f"(limits.stall_steps = {self.stall_steps}); does the algorithm count its "
                f"work in the budget's unit?"
            )

    def close(self) -> None:
        for signum, handler in self._saved.items():
            self._signal.signal(signum, handler)
        self._saved.clear()


def nonfinite_parameters(*models: Any) -> list[str]:
    """Names of the parameters of ``models`` that hold a NaN or an infinity."""
    bad = []
    for model in models:
        if isinstance(model, torch.nn.Module):
            for name, param in model.named_parameters():
                if not bool(torch.isfinite(param.detach()).all()):
                    bad.append(name)
    return bad


def reset_host_peak() -> bool:
    """Start measuring this process's peak resident memory afresh: free heap memory goes back
    to the system (glibc's ``malloc_trim``) and the kernel's high-water mark is reset to the
    current RSS (Linux ``/proc/self/clear_refs``, 5). Without both, a run that follows a larger
    one in the same process reuses memory that process already holds and its peak above the
    baseline reads about 0, and RSS read after each step misses a step's transient tensors.
    Returns whether the mark was reset (False off Linux: then only the per-step RSS counts)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return host_peak() is not None


def host_peak() -> int | None:
    """This process's peak resident memory since :func:`reset_host_peak` (or its start), in
    bytes: ``VmHWM`` of ``/proc/self/status``; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_one(
    spec: dict[str, Any],
    root: str,
    *,
    wandb: bool = False,
    on_step: Callable[[float], None] | None = None,
) -> str:
    """:func:`run_spec`, then the run's objects freed: its models sit in reference cycles
    (modules, hooks, closures) that only the cycle collector frees, and on CUDA they would hold
    device memory into the next run of the process."""
    import gc

    try:
        return run_spec(spec, root, wandb=wandb, on_step=on_step)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_spec(
    spec: dict[str, Any],
    root: str,
    *,
    wandb: bool = False,
    on_step: Callable[[float], None] | None = None,
) -> str:
    """Run one spec of a suite into the store at ``root``; returns its final status.

    Never raises for what happens inside the run: an exception — ``SystemExit`` and a
    ``KeyboardInterrupt`` raised by a plugin included — marks it ``failed`` (traceback saved), so
    does a limit checked between steps (``spec["limits"]``: wall seconds, steps, steps without
    progress; the executor keeps the time limits of a hung step); a NaN/inf
    metric or parameter, or a KL beyond ``divergence.max_kl``, marks it ``diverged``. A user's
    Ctrl-C (SIGINT) and a full disk leave the run pending and propagate (the latter as a
    :class:`~harness.errors.StoreError`), so the suite stops.
    ``on_step`` receives the fraction of the budget spent after every step.

    The run is a sequence of stages, each a function of its own that takes the run's
    :class:`_Run` and fills in its part; whichever stage the run ends in, the last one records
    what the earlier ones measured.
    """
    run = _open_run(spec, root, wandb)
    determinism = contextlib.ExitStack()
    try:
        determinism.enter_context(deterministic_algorithms(bool(spec.get("deterministic"))))
        _resolve_parts(run)
        _prepare_shared(run)
        _build_algorithm(run)
        _fixed_point(run)
        _evaluation_reward(run)
        _memory_baseline(run)
        _train(run, on_step)
        _measured_peaks(run)
    except (Exception, KeyboardInterrupt, SystemExit, RunLimit) as exc:
        _caught(run, exc)
    finally:
        run.watch.close()
        determinism.close()
    _record_run(run)
    return run.status


@dataclasses.dataclass(eq=False)
class _Run:
    """What the stages of one run hand on to each other.

    The first group is made when the run opens; the second is built stage by stage (absent
    until its stage has run); the third is what the summary reports, kept up to date by the
    stages so that a run that ends in any of them is recorded with what it got to.
    """

    spec: dict[str, Any]
    store: RunStore
    run_id: str
    logger: logging.Logger
    handler: logging.Handler
    tracker: Tracker
    watch: _Watch
    process: Any
    """``psutil.Process()`` of this process: its resident memory."""
    start: float
    versions: dict[str, str]

    host: Any = dataclasses.field(init=False)
    task: Task = dataclasses.field(init=False)
    algo_cls: type[Algorithm] = dataclasses.field(init=False)
    evaluators: list[Any] = dataclasses.field(init=False)
    preferences: PreferenceDataset | None = dataclasses.field(init=False)
    reward_model: RewardModel | None = dataclasses.field(init=False)
    """The shared r̂, until the evaluation's is chosen (:func:`_evaluation_reward`)."""
    algo: Algorithm = dataclasses.field(init=False)
    exact: ExactProblem | None = dataclasses.field(init=False)
    eval_reward: Any = dataclasses.field(init=False)

    device: str | None = None
    task_kind: str | None = None
    context: RunContext | None = None
    meter: ComputeMeter | None = None
    status: str = "done"
    reason: str | None = None
    tb: str | None = None
    step: int = 0
    rows: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    final: dict[str, float] = dataclasses.field(default_factory=dict)
    metric_meanings: dict[str, str] = dataclasses.field(default_factory=dict)
    fit_report: dict[str, Any] | None = None
    memory_plan: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    resident_detail: dict[str, int] | None = None
    models_resident: int | None = None
    state_bytes: int | None = None
    total_state_bytes: int | None = None
    baseline: int = 0
    prepare_peak: int = 0
    peak_rss: int = 0
    host_mark: bool = False
    loads: list[float] = dataclasses.field(default_factory=list)
    """The 1-minute load average at the start of training, at each evaluation and at the end."""

    def precision(self) -> Any:
        """The context every computation of the run executes in (:func:`precision_context`)."""
        return precision_context(self.device or "cpu", self.spec["precision"])


def _open_run(spec: dict[str, Any], root: str, wandb: bool) -> _Run:
    """Open the run: its folder in the store (marked running), its log file, its tracker, and
    the watch over its limits (from here on, SIGINT is the watch's)."""
    import time

    import psutil

    from harness.engine.store import RunStore
    from harness.engine.tracking import Tracker
    from harness.suite import RunSpec, core_versions

    store = RunStore(root, spec["suite"])
    run_id = RunSpec(**spec).run_id
    run_dir = store.start(run_id, spec)
    logger = logging.getLogger(f"rlhf_harness.run.{run_id}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    tracker = Tracker(wandb, run_dir, spec, run_id)
    if tracker.error:
        logger.warning(tracker.error)
    versions = core_versions()
    process = psutil.Process()
    start = time.perf_counter()
    return _Run(spec=spec, store=store, run_id=run_id, logger=logger, handler=handler,
                tracker=tracker, watch=_Watch(spec.get("limits") or {}), process=process,
                start=start, versions=versions)


def _resolve_parts(run: _Run) -> None:
    """Resolve what the spec names: the device (checked against the precision), the task on
    it, the algorithm's class (its plugin's version joins the run's versions) and the
    evaluators."""
    from harness.engine.plugins import get_plugin_host

    spec = run.spec
    run.host = host = get_plugin_host()
    run.device = device = resolve_device(spec["device"])
    check_precision(device, spec["precision"])
    if device == "cuda":  # the preparation's peak (r̂'s fit, the models' build) from here
        torch.cuda.reset_peak_memory_stats()
    run.task = build_task(host, spec, device)
    run.task_kind = run.task.kind
    run.algo_cls = host.algorithm(spec["algorithm"])
    run.metric_meanings = declared_metrics(run.algo_cls)
    reg = host.registration("algorithm", spec["algorithm"])
    run.versions[reg.plugin.distribution or reg.plugin.name] = reg.plugin.version or "?"
    if device == "cpu":  # tabular: tiny tensors, where extra threads only add overhead
        torch.set_num_threads(run_threads(run.task.kind == "tabular"))
    run.evaluators = [host.evaluator(n)() for n in spec["evaluation"]["evaluators"]]


def _prepare_shared(run: _Run) -> None:
    """Prepare the artefacts shared by every algorithm on this task instance, as far as this
    run needs them: the preference data, and the reward model r̂ (for the algorithm or the
    ``proxy_reward`` evaluator) with its fit report (:func:`shared_artifacts`)."""
    spec, needs = run.spec, run.algo_cls.needs
    need_reward = "reward" in needs or "proxy_reward" in spec["evaluation"]["evaluators"]
    run.preferences, run.reward_model, run.fit_report = shared_artifacts(
        run.task, spec, run.store, run.host,
        need_prefs=bool({"preferences", "unpaired"} & needs),
        need_reward=need_reward,
        host_memory=bool((spec.get("policy") or {}).get("offload_frozen")),
    )


def _build_algorithm(run: _Run) -> None:
    """Build the algorithm's context (:func:`build_context`) and the algorithm, and plan the
    run's memory (:func:`_planned_memory`)."""
    from harness.suite import algorithm_seed

    spec, algo_cls = run.spec, run.algo_cls
    prefs_spec = spec["preferences"]
    run.context = build_context(
        run.task, algo_cls, seed=algorithm_seed(spec["seed"], spec.get("replicate", 0)),
        preferences=run.preferences,
        reward_model=run.reward_model if "reward" in algo_cls.needs else None,
        label_noise=known_label_noise(prefs_spec),
        unpaired=bool(prefs_spec.get("unpaired", False)),
        data_seed=spec["seed"],
        policy_options=spec.get("policy"),
    )
    # Built in the run's precision: what an algorithm computes once up front (DPO's and
    # IPO's reference log-probs) must match what its steps compute.
    with run.precision():
        run.algo = make_algorithm(algo_cls, spec["algorithm_config"], run.context)
    run.memory_plan = _planned_memory(spec, run.host)
    run.meter = run.context.meter


def _fixed_point(run: _Run) -> None:
    """Where the task's responses can be enumerated, the exact problem the evaluators use, and
    the run's target: where the algorithm's own fixed point is not π*_β, its regret, the part
    of the run's regret that its objective causes (the rest is the optimisation's)."""
    from harness.exact import ExactProblem

    beta = run.spec["evaluation"]["beta"]
    run.exact = exact = (ExactProblem.from_task(run.task, beta=beta)
                         if run.task.enumerate_responses() is not None else None)
    if exact is None:
        return
    point = run.algo.fixed_point(exact)
    if point is not None:
        run.target = {"kind": f"{run.spec['algorithm']} fixed point",
                      "regret": exact.regret(point, beta), "kl_ref": exact.kl_ref(point),
                      "regret_ref": exact.regret(exact.ref_logp, beta)}


def _evaluation_reward(run: _Run) -> None:
    """Choose the r̂ evaluation reads: the algorithm's frozen copy where it has one (the shared
    r̂ is then dropped rather than kept resident beside it), else the shared r̂ — offloaded
    where the run offloads its frozen models, else on the run's device."""
    assert run.context is not None
    reward_model, run.reward_model = run.reward_model, None
    if run.context.reward_model is not None:
        run.eval_reward = run.context.reward_model
    elif reward_model is not None and (run.spec.get("policy") or {}).get("offload_frozen"):
        from harness.models.offload import OffloadedReward

        run.eval_reward = OffloadedReward(reward_model.requires_grad_(False).eval(), run.device)
    else:
        run.eval_reward = reward_model.to(run.device) if reward_model is not None else None


def _memory_baseline(run: _Run) -> None:
    """Count the models resident and take the run's memory baseline: everything built, nothing
    run yet (on CUDA, the preparation's peak too)."""
    context = run.context
    assert context is not None
    # Models resident beyond the algorithm's own count: r̂ held for evaluation only, and
    # models a task keeps (an LM task's base model).
    held = (context.policy, context.reference, context.reward_model)
    own = resident_modules(*held)
    with_eval = resident_modules(*held, run.eval_reward)
    with_task = resident_modules(*held, run.eval_reward, run.task)
    run.resident_detail = {
        "algorithm": run.algo.models_resident(),
        "evaluation_reward_model": len(with_eval) - len(own),
        "task": len(with_task) - len(with_eval),
    }
    run.models_resident = sum(run.resident_detail.values())
    if run.device == "cuda":
        torch.cuda.synchronize()
        run.prepare_peak = int(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        run.baseline = torch.cuda.memory_allocated()
    else:
        run.host_mark = reset_host_peak()
        run.baseline = run.process.memory_info().rss


def _train(run: _Run, on_step: Callable[[float], None] | None) -> None:
    """Step the algorithm until its budget is spent (or it is finished), evaluating before the
    first step, every ``evaluation.every`` steps and after the last; a non-finite metric ends
    the run ``diverged``, and the watch checks the run's limits between steps."""
    spec, meter, algo = run.spec, run.meter, run.algo
    assert meter is not None and run.context is not None
    budget_kind, budget = next(iter(spec["budget"].items()))
    every = spec["evaluation"]["every"]
    run.logger.info("start %s on %s (%s), budget %s=%s", spec["label"], spec["task"],
                    run.device, budget_kind, budget)
    run.step = 0
    _record_metrics(run, "eval", _evaluate(run))
    done = False
    stalled, spent_before = 0, 0.0
    while not done:
        run.step += 1
        with run.precision():
            metrics = algo.step()
        run.peak_rss = max(run.peak_rss, run.process.memory_info().rss)
        if run.step == 1:  # optimiser state exists once a step has run
            # the algorithm's (its models, π_ref, the r̂ it uses, optimisers), and all the
            # run holds (+ r̂ kept for evaluation only, models the task keeps)
            run.state_bytes = model_state_bytes(algo, run.context, exclude=(run.task,))
            run.total_state_bytes = model_state_bytes(algo, run.context, run.task,
                                                      run.eval_reward)
        metrics["models_resident"] = float(run.models_resident or 0)
        _record_metrics(run, "train", metrics)
        run.tracker.log(metrics, run.step)
        used = spent(meter, run.step, budget_kind)
        fraction = used / budget
        done = fraction >= 1.0 or algo.finished
        stalled = 0 if used > spent_before else stalled + 1
        spent_before = used
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            run.status = "diverged"
            run.reason = f"non-finite {', '.join(sorted(bad))} at step {run.step}"
        if done or run.step % every == 0 or bad:
            _evaluation_point(run, spec["divergence"]["max_kl"])
        if on_step is not None:
            on_step(min(fraction, 1.0))
        if run.status == "diverged":
            run.logger.warning("diverged: %s", run.reason)
            break
        if not done:
            run.watch.check(run.step, stalled)
    run.logger.info("finished after %d steps: %s", run.step, run.status)


def _evaluate(run: _Run) -> dict[str, float]:
    """The evaluators' metrics of the algorithm's evaluation policy (in evaluation mode, without
    gradients, in the run's precision); the run diverged where its policy's parameters are
    not finite."""
    from harness.evaluators import EvalContext

    context, spec, meter = run.context, run.spec, run.meter
    assert context is not None and meter is not None
    run.loads.append(load_average())
    bad_params = nonfinite_parameters(context.policy)
    if bad_params:
        raise _Diverged(f"non-finite parameters at step {run.step} "
                        f"({', '.join(bad_params[:3])})")
    policy = run.algo.eval_policy()
    ctx = EvalContext(
        task=run.task, policy=policy, reference=context.reference,
        reward_model=run.eval_reward, beta=spec["evaluation"]["beta"],
        samples_per_prompt=spec["evaluation"]["samples_per_prompt"],
        seed=spec["seed"], exact=run.exact,
    )
    out: dict[str, float] = {}
    with meter.phase("eval"), torch.no_grad(), run.precision():
        was_training = policy.training
        policy.eval()
        for ev in run.evaluators:
            out.update(ev.evaluate(ctx))
        policy.train(was_training)
    return out


def _evaluation_point(run: _Run, max_kl: float | None) -> None:
    """Evaluate during training: the metrics recorded, tracked and kept as the final ones, and
    checked — a non-finite one, or a KL beyond ``max_kl``, marks the run ``diverged``."""
    evaluation = _evaluate(run)
    _record_metrics(run, "eval", evaluation)
    run.tracker.log({f"eval/{k}": v for k, v in evaluation.items()}, run.step)
    run.final = evaluation
    step = run.step
    bad_eval = [k for k, v in evaluation.items() if not math.isfinite(v)]
    if bad_eval and run.status != "diverged":
        run.status, run.reason = "diverged", f"non-finite {', '.join(bad_eval)} at step {step}"
    kl = evaluation.get("kl_ref")
    if run.status != "diverged" and max_kl is not None and kl is not None and kl > max_kl:
        run.status, run.reason = "diverged", f"kl_ref {kl:.4g} > max_kl {max_kl} at step {step}"


def _record_metrics(run: _Run, source: str, metrics: dict[str, float]) -> None:
    """Rows of the run's metrics table for ``metrics`` (``source`` ``train`` or ``eval``), at
    the current step and compute."""
    meter = run.meter
    assert meter is not None
    common = (run.run_id, run.step, meter.samples, meter.tokens_generated + meter.tokens_trained,
              meter.wall_seconds, meter.flops, source)
    run.rows.extend((*common, k, float(v)) for k, v in metrics.items())


def _measured_peaks(run: _Run) -> None:
    """Beside the memory plan, what it estimates: on CUDA the device's peaks (training's, and
    the preparation's), and for a run that offloads its frozen models the bytes they moved."""
    assert run.memory_plan is not None and run.context is not None
    if run.device == "cuda":
        run.memory_plan["peak_device_bytes"] = int(torch.cuda.max_memory_allocated())
        run.memory_plan["peak_prepare_bytes"] = run.prepare_peak
    if (run.spec.get("policy") or {}).get("offload_frozen"):
        from harness.models.offload import offload_totals

        run.memory_plan["offload"] = offload_totals(run.context.reference,
                                                    run.context.reward_model)


def _caught(run: _Run, exc: BaseException) -> None:
    """What an exception out of a stage makes of the run (called while it is handled): a limit
    or an exception fails it, non-finite parameters make it ``diverged``. A user's Ctrl-C and a
    full disk are raised again (a full disk as :class:`~harness.errors.StoreError`) with the
    run left pending: they stop the suite."""
    import errno
    import traceback

    if isinstance(exc, _Diverged):
        run.status, run.reason = "diverged", str(exc)
        run.logger.warning("diverged: %s", run.reason)
    elif isinstance(exc, RunLimit):
        run.status, run.reason, run.tb = "failed", str(exc), traceback.format_exc()
        run.logger.error("failed at step %d: %s", run.step, run.reason)
    elif isinstance(exc, KeyboardInterrupt) and run.watch.user_interrupt:
        # Ctrl-C: stop the suite; the run is pending again
        run.watch.close()
        run.logger.warning("interrupted by the user at step %d", run.step)
        _close_log(run)
        run.store.interrupted(run.run_id)
        raise exc
    elif isinstance(exc, KeyboardInterrupt):
        run.status, run.reason = "failed", "KeyboardInterrupt raised by the run's code"
        run.tb = traceback.format_exc()
        run.logger.error("failed at step %d:\n%s", run.step, run.tb)
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        _disk_full(run, exc)
    elif isinstance(exc, OSError):
        run.status, run.reason = "failed", f"{type(exc).__name__}: {exc}"
        run.tb = traceback.format_exc()
        run.logger.error("failed at step %d:\n%s", run.step, run.tb)
    else:  # any other Exception, and SystemExit
        run.status, run.reason = "failed", f"{type(exc).__name__}: {exc}"
        run.tb = traceback.format_exc()
        context = run.context
        bad_params = nonfinite_parameters(context.policy) if context is not None else []
        if bad_params and not isinstance(exc, SystemExit):  # a NaN weight broke the code
            run.status = "diverged"
            run.reason = (f"non-finite parameters at step {run.step} "
                          f"({', '.join(bad_params[:3])}); then {run.reason}")
        run.logger.error("%s at step %d:\n%s", run.status, run.step, run.tb)


def _disk_full(run: _Run, exc: OSError) -> None:
    """The disk, not the run: leave the run pending and stop the suite with a
    :class:`~harness.errors.StoreError` that says so."""
    from harness.engine.store import describe_os_error
    from harness.errors import StoreError

    run.watch.close()
    _close_log(run)
    with contextlib.suppress(OSError):
        run.store.interrupted(run.run_id)
    raise StoreError(describe_os_error(exc)) from None


def _close_log(run: _Run) -> None:
    """Detach and close the run's log file."""
    run.logger.removeHandler(run.handler)
    run.handler.close()


def _record_run(run: _Run) -> None:
    """Record the run, whichever stage it ended in: its metrics table and summary into the
    store with its final status, the tracker finished, the log closed."""
    import pandas as pd

    from harness.engine.store import METRIC_COLUMNS

    summary = _summary(run)
    frame = pd.DataFrame(run.rows, columns=list(METRIC_COLUMNS))
    run.store.finish(run.run_id, run.status, metrics=frame, summary=summary, traceback=run.tb,
                     reason=run.reason)
    run.tracker.finish(run.status, summary)
    _close_log(run)


def _summary(run: _Run) -> dict[str, Any]:
    """The run's ``summary.json``: its end, final evaluation, compute, memory (measured and
    planned), target, reward model's fit, identity and where it ran."""
    import time

    from harness.config import config_hash
    from harness.suite import RunSpec

    wall = time.perf_counter() - run.start
    meter, on_cuda = run.meter, run.device == "cuda"
    return {
        "run_id": run.run_id,
        "status": run.status,
        "reason": run.reason,
        "steps": run.step,
        "final": run.final,
        "compute": None if meter is None else {
            "seconds": dict(meter.seconds),
            "cpu_seconds": dict(meter.cpu_seconds),
            "samples": meter.samples,
            "tokens_generated": meter.tokens_generated,
            "tokens_trained": meter.tokens_trained,
            "flops": None if run.task_kind == "tabular" else meter.flops,
            **_counted_work(meter, tabular=run.task_kind == "tabular"),
        },
        "load_average": _load_summary([*run.loads, load_average()]),
        "wall_seconds": wall,
        "memory": None if run.state_bytes is None else {
            "model_state_bytes": run.state_bytes,
            "run_state_bytes": run.total_state_bytes,
            "peak_above_baseline_mb": _peak_above_baseline(run) / 2**20,
            "baseline_mb": run.baseline / 2**20,
            "kind": "cuda" if on_cuda else "rss",
        },
        "peak_host_memory_mb": run.peak_rss / 2**20 if run.peak_rss else None,
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
        "models_resident": run.models_resident,
        "memory_plan": run.memory_plan,
        "models_resident_detail": run.resident_detail,
        "target": run.target,
        "metric_meanings": run.metric_meanings,
        "reward_model": run.fit_report,
        "seed": run.spec["seed"],
        "config_hash": config_hash(RunSpec(**run.spec).identity),
        "versions": run.versions,
        # where it ran: what ``rlhf-harness reproduce`` names when numbers differ
        "environment": {"device": str(run.device), "threads": torch.get_num_threads()},
    }


def load_average() -> float:
    """The system's 1-minute load average (NaN where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return math.nan


def _load_summary(loads: list[float]) -> dict[str, Any]:
    """Mean and max of the 1-minute load averages sampled during a run, and how many."""
    finite = [x for x in loads if math.isfinite(x)]
    return {
        "mean_1min": sum(finite) / len(finite) if finite else None,
        "max_1min": max(finite) if finite else None,
        "points": len(finite),
    }


def _counted_work(meter: ComputeMeter, *, tabular: bool) -> dict[str, Any]:
    """The meter's counted work for the summary: samples generated and read from data, tokens
    per role forward and backward, FLOPs per role (neural policies); for tabular policies the
    same token counts as table rows read and updated (:mod:`harness.compute`)."""
    counts = meter.counts()
    if tabular:
        counts["flops_by_role"] = None
        counts["rows_read"] = dict(meter.forward_tokens)
        counts["rows_updated"] = dict(meter.backward_tokens)
    return counts


def _peak_above_baseline(run: _Run) -> int:
    """The run's peak memory above its baseline, whatever stage it ended in (0 where its models
    were never built): the device's on CUDA, else the resident set's."""
    if not run.baseline:
        return 0
    if run.device == "cuda":
        peak_now = torch.cuda.max_memory_allocated()
    else:
        peak_now = max(run.peak_rss, (host_peak() or 0) if run.host_mark else 0)
    return max(peak_now - run.baseline, 0)
