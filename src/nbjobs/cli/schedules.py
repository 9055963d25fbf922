"""`nbjobs schedule add|ls|pause|resume|rm`: jobs and pipeline runs on a cron, fired by the server."""

from __future__ import annotations

import json
from typing import Any

import click

from nbjobs.cli.main import main, server_request
from nbjobs.cli.options import overrides_from_flags, spec_options


@main.group()
def schedule() -> None:
    """Schedules: a notebook job or a pipeline run on a cron expression, in a time zone."""


@schedule.command("add")
@click.argument("schedule_name", metavar="NAME")
@click.option("--notebook", help="Notebook to run as a job (with the spec flags).")
@click.option("--pipeline", "pipeline_file", help="Pipeline file to run (with -p run parameters).")
@click.option("--cron", required=True, help="Five-field cron expression, e.g. '0 6 * * *' (daily at 06:00).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the cron, e.g. Europe/Paris.")
@click.option(
    "--overlap",
    type=click.Choice(["skip", "queue", "allow"]),
    default="skip",
    show_default=True,
    help="While the previous run still goes: skip this one, queue it after, or allow both.",
)
@click.option(
    "--catch-up",
    type=click.Choice(["none", "latest", "all"]),
    default="latest",
    show_default=True,
    help="Times missed while no server ran: drop them, fire the latest once, or fire each.",
)
@spec_options
@click.option("--json", "as_json", is_flag=True)
def add_schedule(
    schedule_name: str,
    notebook: str | None,
    pipeline_file: str | None,
    cron: str,
    timezone: str,
    overlap: str,
    catch_up: str,
    as_json: bool,
    **flags: Any,
) -> None:
    """Add schedule NAME: --notebook NB [spec flags] or --pipeline FILE [-p NAME VALUE]."""
    from nbjobs.errors import InvalidInput

    body: dict[str, Any] = {
        "name": schedule_name,
        "cron": cron,
        "timezone": timezone,
        "overlap": overlap,
        "catch_up": catch_up,
    }
    if (notebook is None) == (pipeline_file is None):
        raise InvalidInput("Give exactly one of --notebook NOTEBOOK and --pipeline FILE.")
    if pipeline_file is not None:
        from nbjobs.cli.pipelines import pipeline_request

        params = flags.pop("params")
        others = overrides_from_flags({k: v for k, v in flags.items() if k != "spec_file"})
        if others or flags.get("spec_file"):
            raise InvalidInput("With --pipeline only -p applies (run parameters); set task fields in the file.")
        body |= pipeline_request(pipeline_file, params)
    else:
        from nbjobs.prepare import load_spec

        spec, _ = load_spec(notebook, spec_file=flags.pop("spec_file"), overrides=overrides_from_flags(flags))
        body["spec"] = spec.model_dump(mode="json", exclude_defaults=True)
    made = server_request("POST", "/api/schedules", json=body)
    if as_json:
        click.echo(json.dumps(made, indent=2))
    else:
        click.echo(f"Schedule {made['name']!r} added; next fire: {made['next_fire_at']} (UTC)")


@schedule.command("ls")
@click.option("--json", "as_json", is_flag=True)
def list_schedules(as_json: bool) -> None:
    """Schedules with their next fire times and what their last fire did."""
    from nbjobs.terminal_groups import print_schedules

    rows = server_request("GET", "/api/schedules")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_schedules(rows)


@schedule.command("pause")
@click.argument("name")
def pause_schedule(name: str) -> None:
    """Stop firing NAME until resumed."""

    server_request("POST", f"/api/schedules/{name}/pause")
    click.echo(f"Schedule {name!r} paused")


@schedule.command("resume")
@click.argument("name")
def resume_schedule(name: str) -> None:
    """Fire NAME again from now on (times passed while paused are not caught up)."""

    row = server_request("POST", f"/api/schedules/{name}/resume")
    click.echo(f"Schedule {name!r} resumed; next fire: {row['next_fire_at']} (UTC)")


@schedule.command("rm")
@click.argument("name")
def remove_schedule(name: str) -> None:
    """Remove NAME (the jobs and runs it made stay)."""

    server_request("DELETE", f"/api/schedules/{name}")
    click.echo(f"Schedule {name!r} removed")
