"""`nbjobs pipeline ...`: run, validate, show, ls, cancel, repair, wait."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from nbjobs.cli.main import main, server_request

RUN_EXIT_CODES = {"succeeded": 0, "succeeded_with_failures": 0, "failed": 1, "cancelled": 130}

run_params = click.option(
    "-p",
    "--parameter",
    "params",
    multiple=True,
    nargs=2,
    metavar="NAME VALUE",
    help="Run parameter `${params.NAME}`, value parsed as YAML.",
)


def parse_run_params(pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    from nbjobs.notebook.params import parse_cli_value

    return {name: parse_cli_value(value, name=name) for name, value in pairs}


def pipeline_request(file: str, params: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The body of a pipeline request: the file's definition (paths absolute) and the run parameters."""
    from pathlib import Path

    from nbjobs.pipelines.model import load_pipeline_file

    pipeline = load_pipeline_file(file)
    return {"pipeline": pipeline.to_json(), "params": parse_run_params(params), "source": str(Path(file).resolve())}


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@main.group()
def pipeline() -> None:
    """Pipelines: notebooks as tasks with dependencies, passing results down."""


@pipeline.command("run")
@click.argument("file", type=str)
@run_params
@click.option("--wait", "wait_", is_flag=True, help="Wait until the run ends; exit 0 if it succeeded.")
@click.option("--json", "as_json", is_flag=True)
def run_pipeline(file: str, params: tuple[tuple[str, str], ...], wait_: bool, as_json: bool) -> None:
    """Start a run of the pipeline in FILE (YAML or TOML) on the server."""
    from nbjobs.client import Client
    from nbjobs.terminal_groups import print_run

    with Client() as client:
        run = client.request("POST", "/api/pipelines/runs", json=pipeline_request(file, params))
        if wait_:
            run = _wait(client, run["id"], None) | {"warnings": run.get("warnings", [])}
    if as_json:
        _echo_json(run)
    elif wait_:
        print_run(run)
    else:
        for warning in run.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)
        click.echo(
            f"Run {run['id']} of {run['name']}: {len(run['tasks'])} tasks queued: nbjobs pipeline show {run['id']}"
        )
    if wait_:
        sys.exit(RUN_EXIT_CODES.get(run["state"], 124))


@pipeline.command("validate")
@click.argument("file", type=str)
@run_params
@click.option("--json", "as_json", is_flag=True)
def validate_pipeline(file: str, params: tuple[tuple[str, str], ...], as_json: bool) -> None:
    """Check FILE (graph, references, notebooks, parameters) without running anything or a server."""
    from nbjobs.pipelines.checks import plan_pipeline
    from nbjobs.pipelines.model import load_pipeline_file

    plan = plan_pipeline(load_pipeline_file(file), parse_run_params(params))
    if as_json:
        _echo_json({"ok": True, "name": plan.pipeline.name, "levels": plan.levels, "warnings": plan.warnings})
        return
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{file}: pipeline {plan.pipeline.name!r} is valid: {len(plan.tasks)} tasks in {len(plan.levels)} levels"
    )
    for depth, names in enumerate(plan.levels):
        click.echo(f"  level {depth}: {', '.join(names)}")


@pipeline.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_run(run_id: int, as_json: bool) -> None:
    """A run's tasks by level, with states, jobs, results and reasons."""
    from nbjobs.terminal_groups import print_run

    run = server_request("GET", f"/api/pipelines/runs/{run_id}")
    _echo_json(run) if as_json else print_run(run)


@pipeline.command("ls")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def list_runs(limit: int, as_json: bool) -> None:
    """Pipeline runs, newest first."""
    from nbjobs.terminal_groups import print_runs

    runs = server_request("GET", "/api/pipelines/runs", params={"limit": limit})
    _echo_json(runs) if as_json else print_runs(runs)


@pipeline.command("cancel")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def cancel_run(run_id: int, as_json: bool) -> None:
    """Cancel a run's unfinished tasks."""

    run = server_request("POST", f"/api/pipelines/runs/{run_id}/cancel")
    if as_json:
        _echo_json(run)
    else:
        click.echo(f"Run {run_id}: unfinished tasks cancelled")


@pipeline.command("repair")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def repair_run(run_id: int, as_json: bool) -> None:
    """Re-run failed, cancelled and skipped tasks (and those below them) in the same run."""

    run = server_request("POST", f"/api/pipelines/runs/{run_id}/repair")
    if as_json:
        _echo_json(run)
    else:
        click.echo(f"Run {run_id}: requeued {', '.join(run['repaired'])}: nbjobs pipeline show {run_id}")


@pipeline.command("wait")
@click.argument("run_id", type=int)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True)
def wait_run(run_id: int, timeout: float | None, as_json: bool) -> None:
    """Wait until a run ends; exit 0 if it succeeded (or handled its failures), 1 if it failed."""
    from nbjobs.client import Client
    from nbjobs.terminal_groups import print_run

    with Client() as client:
        run = _wait(client, run_id, timeout)
    _echo_json(run) if as_json else print_run(run)
    sys.exit(RUN_EXIT_CODES.get(run["state"], 124))


def _wait(client: Any, run_id: int, timeout: float | None) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.2
    while True:
        run: dict[str, Any] = client.request("GET", f"/api/pipelines/runs/{run_id}")
        if run["state"] != "running" or (deadline is not None and time.monotonic() >= deadline):
            return run
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
