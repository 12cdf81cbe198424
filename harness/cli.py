"""The ``rlhf-harness`` command line.

Every command imports what it needs inside its body, so ``rlhf-harness --help`` and
``--version`` answer without importing torch. Errors the harness anticipates
(:class:`~harness.errors.HarnessError`) are printed as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

import click

from harness import __version__
from harness.errors import HarnessError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="rlhf-harness")
def cli() -> None:
    """Benchmark preference-based fine-tuning algorithms (PPO, GRPO, DPO, plugins) head to head."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option(
    "--strict", is_flag=True, help="Stop at the first plugin that fails to load (same as "
    "RLHF_HARNESS_STRICT=1)."
)
def plugins(as_json: bool, strict: bool) -> None:
    """List loaded plugins, their versions, what each registers, and load failures.

    Exits with status 1 when a plugin failed to load.
    """
    from harness.engine.plugins import get_plugin_host

    host = get_plugin_host(strict=strict or None)
    rows = []
    for info in host.plugins.values():
        regs = [r for r in host.registrations() if r.plugin.name == info.name]
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution or ("rlhf-harness" if info.core else None),
                "version": info.version or (__version__ if info.core else None),
                "entry_point": info.entry_point,
                "core": info.core,
                "registers": {
                    kind: sorted(r.name for r in regs if r.kind == kind)
                    for kind in dict.fromkeys(r.kind for r in regs)
                },
            }
        )
    failures = [{"name": f.plugin.name, "error": f.message} for f in host.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2))
    else:
        for row in rows:
            origin = "core" if row["core"] else f"{row['distribution']} {row['version']}"
            click.echo(f"{row['name']}  ({origin})")
            for kind, names in row["registers"].items():
                click.echo(f"    {kind.replace('_', ' ')}: {', '.join(names)}")
        for failure in failures:
            click.echo(f"FAILED {failure['name']}: {failure['error']}", err=True)
    if failures:
        sys.exit(1)


@cli.command()
@click.argument("name")
@click.option("--kind", type=click.Choice(["algorithm", "task", "evaluator", "preference_model",
                                           "gold_reward"]),
              default=None, help="The kind, when NAME is registered as more than one.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for tools.")
def show(name: str, kind: str | None, fmt: str) -> None:
    """Show a registered algorithm, task, evaluator, preference model or gold reward.

    Prints the plugin that registered it (and its version), what it needs, every setting
    (Config or Params field) with its type, default and documentation, the settings it
    suggests for tabular and neural policies, and its metrics. Override a setting in a suite
    under the algorithm's config (or per_task), or the task's params.
    """
    from harness.engine.describe import describe, render_text
    from harness.engine.plugins import get_plugin_host

    info = describe(get_plugin_host(), name, kind)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(info))


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder in which to create the plugin's folder.")
@click.option("--offline", is_flag=True,
              help="An offline algorithm, learning from preference pairs (default: online, "
              "sampling and scored by the reward model).")
def new_plugin(name: str, parent: str, offline: bool) -> None:
    """Write a ready-to-install algorithm plugin NAME into DIR/rlhf-harness-NAME.

    NAME is lower-case letters and digits, words joined by '-' or '_' (e.g. my-algo: package
    rlhf-harness-my-algo, module rlhf_harness_my_algo, algorithm my-algo). The package has a
    pyproject.toml with the entry point, the plugin module (a documented Config and a working
    algorithm), tests that run the conformance kit, and a README. An existing folder is never
    overwritten.
    """
    from harness.devkit.scaffold import new_plugin as write_plugin

    folder = write_plugin(name, parent, offline=offline)
    steps = [(f"pip install -e {folder}", "install it (editable)"),
             ("rlhf-harness plugins", f"lists {name}"),
             (f"pytest {folder}", "runs the conformance kit on it")]
    width = max(len(command) for command, _ in steps)
    click.echo(f"wrote {folder}; next:")
    for command, what in steps:
        click.echo(f"  {command.ljust(width)}   # {what}")
    click.echo("then add it to a suite: see docs/writing-a-plugin.md in rlhf-harness.")


ALLOW_LARGE = click.option(
    "--allow-large", is_flag=True,
    help="Accept a suite of more than 10,000 runs (a sweep grid that large is usually a slip).",
)


@cli.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="The executor the suite will run under.")
@ALLOW_LARGE
def validate(suite_file: str, executor: str, allow_large: bool) -> None:
    """Check a suite file: keys, types, plugin names, configs and combinations, and what it asks
    of the devices (this host's for the local executor; GPUs requested under Ray).

    Prints the number of runs it expands to; a problem is one line naming the file, the line and
    the key, with exit status 2. Warnings (one line each) go to stderr.
    """
    from harness.engine.plugins import get_plugin_host
    from harness.suite import (
        check_placement,
        check_suite,
        count_runs,
        count_trial_runs,
        load_suite,
        suite_warnings,
        task_units,
    )

    suite = load_suite(suite_file)
    host = get_plugin_host()
    runs = check_suite(suite, suite_file, host, allow_large=allow_large)
    for warning in suite_warnings(suite, host):
        click.echo(f"{suite_file}: warning: {warning}", err=True)
    for warning in check_placement(suite, suite_file, host, executor=executor):
        click.echo(warning, err=True)
    units = task_units(suite)  # a task at several budgets counts once per budget
    cells = [(len(suite.task_instances(t)), suite.task_replicates(t)) for _, t in units]
    per_cell = sum(i * r for i, r in cells)
    if len(set(cells)) == 1:
        what = "task budgets" if len(units) != len(suite.tasks) else "tasks"
        shape = f"{len(units)} {what} × {cells[0][0]} instances × {cells[0][1]} replicates"
    else:
        shape = " + ".join(f"{name} {i} instances × {r} replicates"
                           for (name, _), (i, r) in zip(units, cells, strict=True))
        shape = f"({shape})"
    click.echo(f"{suite_file}: ok: {len(runs)} runs ({shape} × {len(runs) // per_cell} "
               "algorithm configs)")
    if suite.tuning is not None:
        per_task = ", ".join(f"{t.name} {suite.tuning.trials_for(t.name)}"
                             for t in suite.tasks)
        repeats, size = suite.tuning.repeats, len(suite.tuning.instances)
        searches = (f" in {repeats} searches of {size // repeats} instances each"
                    if repeats > 1 else "")
        at_each = " at each budget" if len(units) != len(suite.tasks) else ""
        click.echo(f"  before them, tuning: {count_trial_runs(suite)} trial runs "
                   f"(trials per algorithm: {per_task}{at_each}; × {size} tuning "
                   f"instances{searches})")
        extra = count_runs(suite) - count_trial_runs(suite) - len(runs)
        if extra:
            click.echo(f"  and {extra} more runs: each tuned algorithm runs the choice of each "
                       f"of its {repeats} searches on every instance")


GPU_MEMORY = click.option(
    "--gpu-memory", default=None, metavar="SIZE",
    help="Memory a run may use, e.g. 80GiB or 141GB (default: the visible GPU's, for a suite "
    "on a GPU).",
)


SUITE_SOURCE = "suite-file.txt"
"""In a run store: the path of the suite file last run into it."""


def store_clash(store_path: Any, suite_file: str) -> str | None:
    """A warning when the store a suite runs into was last written by another suite file
    that gave the same ``name`` (a copied suite): the two share the store, the other's runs
    become stale and ``gc`` would remove them. None for the same file, or a new store."""
    from pathlib import Path

    try:
        other = (Path(store_path) / SUITE_SOURCE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    mine = Path(suite_file).resolve()
    if not other or Path(other) == mine:
        return None
    if Path(other).exists() and Path(other).read_bytes() == mine.read_bytes():
        return None  # a copy with the same content: the same runs, nothing goes stale
    return (f"{suite_file}: warning: name: the store {store_path} holds the runs of the suite "
            f"file {other}, which has the same name; this suite's runs join them, the other's "
            f"become stale and 'rlhf-harness gc' would remove them: give this suite a name "
            f"of its own")


def trial_stage(suite: Any, batch: list) -> str:
    """``tuning trial 3/16`` (``tuning trial 3/16 on bandit, 3/6 on tiny-lm`` for several
    tasks): which trial of each task a batch of tuning runs holds, of how many."""
    trials: dict[str, int] = {}
    for spec in batch:
        number = int((spec.tuning or {}).get("trial", 0)) + 1
        trials[spec.task] = max(trials.get(spec.task, 0), number)
    parts = [f"{n}/{suite.tuning.trials_for(task)}" + (f" on {task}" if len(trials) > 1 else "")
             for task, n in trials.items()]
    return "tuning trial " + ", ".join(parts) if parts else "tuning"


def unequal_spaces(suite: Any, chosen: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """A warning per task whose tuned configurations' search spaces differ in dimensions: the
    same trials then search a larger space less densely (trials^(1/d) values per dimension)."""
    sizes: dict[str, dict[str, int]] = {}
    for (task, label), choice in sorted(chosen.items()):
        sizes.setdefault(task, {})[label] = len(choice["params"])
    out = []
    for task, by_label in sizes.items():
        if len(set(by_label.values())) > 1:
            n = suite.tuning.trials_for(task)
            parts = ", ".join(f"{label} {d} (≈{n ** (1 / d):.2g} values per dimension)"
                              for label, d in by_label.items() if d)
            out.append(f"{suite.name}: warning: tuning on {task}: search spaces of unequal "
                       f"dimension ({parts}): {n} trials each are not equal effort per "
                       f"dimension")
    return out


def _gpu_memory(option: str | None) -> int | None:
    """``--gpu-memory`` in bytes; else the visible CUDA device's total memory; else None."""
    from harness.engine.memory import parse_bytes

    if option is not None:
        return parse_bytes(option)
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


@cli.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@GPU_MEMORY
@ALLOW_LARGE
def plan(suite_file: str, gpu_memory: str | None, allow_large: bool) -> None:
    """Print each run's memory plan: the bytes of every model (parameters, gradients, optimiser
    state, KV cache, activations), the device's peak in each phase of the run (r̂'s fit before
    it included), and whether the largest, with a headroom, fits --gpu-memory.

    No weights are loaded: models are built from their configs on PyTorch's meta device. Model
    state is exact; the KV cache and activations are estimates (see harness.engine.memory). Exits
    with status 1 when a run does not fit.
    """
    from harness.engine.memory import format_bytes, plan_run
    from harness.engine.plugins import get_plugin_host
    from harness.suite import check_suite, load_suite

    suite = load_suite(suite_file)
    host = get_plugin_host()
    specs = check_suite(suite, suite_file, host, allow_large=allow_large)
    memory = _gpu_memory(gpu_memory)
    if memory is None:
        click.echo("no GPU visible: pass --gpu-memory SIZE for a verdict")
    else:
        click.echo(f"memory per run: {format_bytes(memory)}")
    cols = ("parameters", "gradients", "optimizer", "kv_cache", "activations", "host")
    too_big = 0
    plans: dict[str, str] = {}
    for spec in specs:
        run = plan_run(spec.as_dict(), host, spec.run_id)
        key = repr([(m.name, m.total) for m in run.models])
        fits = run.fits(memory)
        too_big += fits is False
        verdict = "" if fits is None else "  fits" if fits else "  DOES NOT FIT"
        headroom = f" + headroom {format_bytes(run.headroom)}" if run.headroom else ""
        click.echo(f"{run.run_id}  ({run.label} on {run.task}): peak {format_bytes(run.total)}"
                   f"{headroom}, model state {format_bytes(run.model_state)}{verdict}")
        if plans.get(run.label + run.task) == key:
            continue  # the same breakdown as the last seed's
        plans[run.label + run.task] = key
        for m in run.models:
            parts = ", ".join(f"{c.replace('_', ' ')} {format_bytes(getattr(m, c))}"
                              for c in cols if getattr(m, c))
            click.echo(f"    {m.name}: {format_bytes(m.total)} on the device ({parts})")
        if run.phases:
            click.echo("    peak by phase: " + ", ".join(
                f"{name} {format_bytes(size)}" for name, size in run.phases.items()))
        for note in run.notes:
            click.echo(f"    {note}")
    if too_big:
        click.echo(f"{too_big} of {len(specs)} runs do not fit in {format_bytes(memory)}",
                   err=True)
        sys.exit(1)


def check_fits(specs: list, host: object, memory: int) -> None:
    """Refuse (ConfigError, one line) the first run whose memory plan exceeds ``memory``."""
    from harness.engine.memory import format_bytes, plan_run
    from harness.errors import ConfigError

    for spec in specs:
        run = plan_run(spec.as_dict(), host, spec.run_id)
        if not run.fits(memory):
            raise ConfigError(
                f"run {run.run_id} needs {format_bytes(run.needed)} by its memory plan, more "
                f"than the {format_bytes(memory)} a run may use; see rlhf-harness plan"
            )


ALLOW_MIXED = click.option(
    "--allow-mixed-versions", is_flag=True,
    help="Report runs made by different versions of the harness (or its source) or of torch "
    "side by side (refused otherwise, naming them).",
)


@cli.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--root", default="runs", show_default=True, help="Run store folder.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes, each a supervised child running one run at a "
              "time.")
@click.option("--address", default=None, help="Ray cluster address to join (ray executor).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs that failed before.")
@click.option("--no-wandb", is_flag=True, help="No wandb logging (as RLHF_HARNESS_WANDB=0).")
@click.option("--no-progress", is_flag=True,
              help="No progress (default: bars on a terminal, else one line per finished run, "
              "on stderr).")
@click.option("--report-dir", default="reports", show_default=True,
              help="Where the report goes (<report-dir>/<suite>/).")
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--wait", is_flag=True,
              help="If another process is running into the same store, wait for it to finish "
              "instead of exiting.")
@click.option("--redo-other-versions", is_flag=True,
              help="Run again the finished runs made by another version of the harness (or "
              "of its source) or of torch.")
@ALLOW_MIXED
@GPU_MEMORY
@ALLOW_LARGE
def run(
    suite_file: str, root: str, executor: str, workers: int, address: str | None,
    retry_failed: bool, no_wandb: bool, no_progress: bool, report_dir: str, no_report: bool,
    wait: bool, redo_other_versions: bool, allow_mixed_versions: bool, gpu_memory: str | None,
    allow_large: bool,
) -> None:
    """Run every algorithm × task × seed of a suite into the run store, then write its report.

    Finished runs are skipped, so a killed suite resumes where it stopped. One process writes
    to a store at a time: a second exits at once naming the first's PID (or waits, --wait).
    Exits with status 1 when some runs failed (diverged runs are results, not failures).
    A run whose memory plan (rlhf-harness plan) exceeds --gpu-memory, or the visible GPU's
    memory for a suite on a GPU, is refused before anything starts.
    """
    from pathlib import Path

    from harness.engine.executors import run_specs
    from harness.engine.plugins import get_plugin_host
    from harness.engine.store import RunStore, atomic_write_bytes
    from harness.engine.tracking import wandb_enabled
    from harness.suite import check_placement, check_suite, load_suite

    suite = load_suite(suite_file)
    host = get_plugin_host()
    specs = check_suite(suite, suite_file, host, allow_large=allow_large)
    for warning in check_placement(suite, suite_file, host, executor=executor):
        click.echo(warning, err=True)
    if suite.deterministic:  # before anything makes a cuBLAS handle; workers inherit it
        from harness.engine.runner import CUBLAS_WORKSPACE

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    device = suite.device
    if executor == "local":
        from harness.engine.runner import resolve_device

        device = resolve_device(suite.device)  # a CUDA suite without a GPU: say so now
    if gpu_memory is not None or device == "cuda":
        memory = _gpu_memory(gpu_memory)
        if memory is not None:  # a run that cannot fit is refused before any starts
            check_fits(specs, host, memory)
    # Absolute from here on: a plugin that changes folders moves neither store nor report.
    root, report_dir = os.path.abspath(root), os.path.abspath(report_dir)
    store = RunStore(root, suite.name)
    options = dict(executor=executor, workers=workers, address=address,
                   retry_failed=retry_failed, wandb=wandb_enabled(not no_wandb),
                   progress="off" if no_progress else "bars" if sys.stderr.isatty() else "lines",
                   redo_other_versions=redo_other_versions)
    with store.lock(wait=wait):
        clash = store_clash(store.path, suite_file)
        if clash:
            click.echo(clash, err=True)
        atomic_write_bytes(store.path / "suite.yaml", Path(suite_file).read_bytes())
        atomic_write_bytes(store.path / SUITE_SOURCE, str(Path(suite_file).resolve()).encode())
        trial_specs: list = []
        if suite.tuning is not None:
            from harness.engine.tuning import run_tuning
            from harness.suite import expand

            tuned: Counter = Counter()
            # Until tuning ends, the manifest keeps the suite's runs as last listed and adds
            # each batch of trials before it runs: gc after a kill mid-tuning deletes no
            # finished trial of this suite (nor a run the last full listing kept).
            keep = set(store.manifest() or ())

            def run_trials(batch: list) -> None:
                keep.update(s.run_id for s in batch)
                store.write_manifest(keep)
                result = run_specs(batch, root, stage=trial_stage(suite, batch), **options)
                tuned.update(result.statuses)
                tuned["runs"] += result.total

            trial_specs, chosen = run_tuning(suite, host, root, run_trials)
            specs = expand(suite, host, allow_large=allow_large, tuned=chosen)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(tuned.items()) if k != "runs")
            per_task = ", ".join(f"{t.name} {suite.tuning.trials_for(t.name)}"
                                 for t in suite.tasks)
            click.echo(f"{suite.name}: tuning: trials per algorithm: {per_task}; "
                       f"{len(trial_specs)} runs ({counts or 'all already finished'})")
            for (task, label), first in sorted(chosen.items()):
                for choice in first.get("repeats") or [first]:
                    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in choice["params"].items())
                    search = f" search {choice['repeat']}" if "repeat" in choice else ""
                    click.echo(f"  {task} · {label}{search}: trial {choice['trial']}, {params} "
                               f"({suite.tuning.objective} {choice['value']:.4g})")
            for warning in unequal_spaces(suite, chosen):
                click.echo(warning, err=True)
        store.write_manifest(s.run_id for s in [*trial_specs, *specs])
        outcome = run_specs(specs, root, **options)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(outcome.statuses.items())) or \
            "nothing run"
        click.echo(f"{suite.name}: {outcome.total} runs: {counts}; {outcome.skipped} already "
                   f"finished; store {store.path}")
        if not no_report:
            from harness.report import write_report

            out = write_report(store.path, Path(report_dir) / suite.name,
                               allow_mixed_versions=allow_mixed_versions)
            click.echo(f"report: {out / 'index.md'}")
    if outcome.failed:
        click.echo(f"{outcome.failed} runs failed: see traceback.txt in their folders", err=True)
        sys.exit(1)


@cli.command()
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder.  [default: reports/<suite>]")
@click.option("--x", "x_axis", type=click.Choice(["step", "samples", "wall_seconds", "flops"]),
              default="step", show_default=True, help="x-axis of the learning curves.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.9,
              show_default=True,
              help="Time-to-target: this fraction of the way from π_ref's gold reward to the "
              "best final one.")
@click.option("--include-stale", is_flag=True,
              help="Count runs of older versions of the suite too (listed as stale otherwise).")
@ALLOW_MIXED
def report(store: str, out_dir: str | None, x_axis: str, threshold: float,
           include_stale: bool, allow_mixed_versions: bool) -> None:
    """Write the report of a run store (runs/<suite>): Markdown, HTML, PNG figures, CSV tables.

    Reads the store alone; failed and diverged runs are counted, not dropped. It covers the runs
    of the suite as last run: runs of older versions of the suite (another config, data file or
    plugin version) are listed as stale and left out, unless --include-stale. Run folders whose
    files do not read back are listed as corrupt and skipped (the next run redoes them).
    """
    from harness.report import write_report

    out = write_report(store, out_dir, x=x_axis, threshold=threshold,
                       include_stale=include_stale, allow_mixed_versions=allow_mixed_versions)
    click.echo(f"report: {out / 'index.md'} and {out / 'index.html'}")


@cli.command()
@click.argument("report_dir", type=click.Path(file_okay=False))
@click.option("--sample", default=3, show_default=True, type=int,
              help="How many of the report's runs to run again (drawn with --seed).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the draw.")
@click.option("--rtol", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Relative tolerance (0: bit for bit).")
@click.option("--atol", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Absolute tolerance.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where to keep the re-runs' store.  [default: a temporary folder, removed]")
def reproduce(report_dir: str, sample: int, seed: int, rtol: float, atol: float,
              root: str | None) -> None:
    """Run some of a report's runs again and compare their final numbers with the report's.

    Reads REPORT_DIR/runs.jsonl (every report writes it: each run's recorded spec, versions,
    device and threads, final metrics), re-runs --sample of them with this installation and
    prints per run: identical (bit for bit), within tolerance, or what differs and what changed
    since (harness version or source, torch, the plugin, device, threads). Exit status 1 when a
    run differs beyond the tolerance or fails.
    """
    from harness.engine.reproduce import reproduce as check

    outcomes = check(report_dir, sample=sample, seed=seed, rtol=rtol, atol=atol, root=root,
                     echo=click.echo)
    bad = [o for o in outcomes if o.verdict in ("differs", "failed")]
    click.echo(f"{report_dir}: {len(outcomes) - len(bad)} of {len(outcomes)} runs reproduced")
    if bad:
        sys.exit(1)


@cli.command()
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--wait", is_flag=True, help="Wait for a process writing to the store.")
def gc(store: str, dry_run: bool, wait: bool) -> None:
    """Remove a run store's stale runs: those not in the suite as last run (runs/<suite>).

    Also removes shared data no current run uses and what killed writers left behind. Takes the
    store's lock, so it never races a running suite.
    """
    from pathlib import Path

    from harness.engine.store import RunStore, collect_garbage

    path = Path(store)
    removed = collect_garbage(RunStore(path.parent, path.name), dry_run=dry_run, wait=wait)
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        click.echo(f"{verb} {item}")
    click.echo(f"{path}: {verb} {len(removed)} stale entries")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning harness errors into one line."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # no traffic off the machine
    try:
        code = cli.main(args=argv, prog_name="rlhf-harness", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except HarnessError as exc:
        click.echo(f"rlhf-harness: error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a folder that is a file, a permission: one line
        from harness.engine.store import describe_os_error

        click.echo(f"rlhf-harness: error: {describe_os_error(exc)}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
