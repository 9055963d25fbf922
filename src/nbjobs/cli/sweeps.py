"""`nbjobs sweep NOTEBOOK -p NAME V1,V2 ...`, `sweep show ID`, `sweep ls`."""

from __future__ import annotations

import json
from typing import Any

import click

from nbjobs.cli.main import main, server_request
from nbjobs.cli.options import overrides_from_flags, spec_options


class SweepGroup(click.Group):
    """`nbjobs sweep NOTEBOOK ...` creates a sweep; `nbjobs sweep show|ls ...` look at them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["create", *args]
        return super().parse_args(ctx, args)


def sweep_axes(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[Any]]:
    """-p NAME V1,V2,...: each value split on commas and read as YAML, like -p."""
    from nbjobs.errors import InvalidInput
    from nbjobs.notebook.params import parse_cli_value

    axes: dict[str, list[Any]] = {}
    for name, text in pairs:
        if name in axes:
            raise InvalidInput(f"-p {name} is given twice; list all its values once: -p {name} V1,V2,V3.")
        axes[name] = [parse_cli_value(part.strip(), name=name) for part in text.split(",")]
    return axes


@main.group(cls=SweepGroup)
def sweep() -> None:
    """Sweeps: one job per combination of parameter values (`nbjobs sweep NOTEBOOK -p lr 0.1,0.01`)."""


@sweep.command("create")
@click.argument("notebook", type=str)
@spec_options
@click.option("--zip", "zip_", is_flag=True, help="Pair the i-th values of every -p instead of the grid product.")
@click.option("--max-parallel", type=click.IntRange(min=1), help="Most of its jobs running at once.")
@click.option("--json", "as_json", is_flag=True)
def create_sweep(notebook: str, zip_: bool, max_parallel: int | None, as_json: bool, **flags: Any) -> None:
    """Queue one job of NOTEBOOK per combination of the -p values (comma-separated, each read as YAML).

    -r, -f and -y give parameters every job shares; the other spec flags apply to every job.
    """
    from nbjobs.client import Client
    from nbjobs.prepare import load_spec

    axes = sweep_axes(flags.pop("params"))
    spec, _ = load_spec(notebook, spec_file=flags.pop("spec_file"), overrides=overrides_from_flags(flags))
    body = {
        "spec": spec.model_dump(mode="json", exclude_defaults=True),
        "axes": axes,
        "mode": "zip" if zip_ else "grid",
        "max_parallel": max_parallel,
    }
    with Client(timeout=120) as client:
        made = client.request("POST", "/api/sweeps", json=body)
    if as_json:
        click.echo(json.dumps(made, indent=2))
    else:
        first, last = made["jobs"]
        click.echo(f"Sweep {made['id']}: {made['size']} jobs queued ({first}..{last}): nbjobs sweep show {made['id']}")


@sweep.command("show")
@click.argument("sweep_id", type=int)
@click.option("--sort", help="Sort by a parameter or result; prefix - for descending (--sort=-accuracy).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--json", "as_json", is_flag=True)
def show_sweep(sweep_id: int, sort: str | None, as_csv: bool, as_json: bool) -> None:
    """Parameters, state and results of each element of a sweep."""
    from nbjobs.pipelines.sweep_table import sweep_csv, sweep_rows
    from nbjobs.terminal_groups import print_sweep

    view = server_request("GET", f"/api/sweeps/{sweep_id}")
    columns, rows = sweep_rows(view, sort)
    if as_json:
        click.echo(json.dumps(view | {"elements": _sorted(view["elements"], rows)}, indent=2, default=str))
    elif as_csv:
        click.echo(sweep_csv(columns, rows), nl=False)
    else:
        print_sweep(view, columns, rows)


def _sorted(elements: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_index = {e["index"]: e for e in elements}
    return [by_index[r["index"]] for r in rows]


@sweep.command("ls")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def list_sweeps(limit: int, as_json: bool) -> None:
    """Sweeps, newest first."""
    from nbjobs.terminal_groups import print_sweeps

    sweeps = server_request("GET", "/api/sweeps", params={"limit": limit})
    if as_json:
        click.echo(json.dumps(sweeps, indent=2))
    else:
        print_sweeps(sweeps)
