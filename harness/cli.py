"""The ``rlhf-harness`` command line.

Every command imports what it needs inside its body, so ``rlhf-harness --help`` and
``--version`` answer without importing torch. Errors the harness anticipates
(:class:`~harness.errors.HarnessError`) are printed as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import json
import sys

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
    from harness.plugins import get_plugin_host

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning harness errors into one line."""
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
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
