"""Commands for reproducible runs: rerun a job, compare two, clean up snapshots."""

from __future__ import annotations

import json

import click

from nbjobs.cli.jobs import _store, run_in_foreground
from nbjobs.cli.main import main


@main.command()
@click.argument("job_id", type=int)
@click.option("--log-output", is_flag=True, help="Stream the notebook's stdout/stderr to this terminal.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the new job's record as JSON.")
def rerun(job_id: int, log_output: bool, no_progress: bool, as_json: bool) -> None:
    """Run job JOB_ID again, now: same parameters, at the same commit if it had one."""
    from nbjobs import api
    from nbjobs.rerun import rerun_notes, rerun_spec

    with _store() as store:
        record = store.get(job_id)
    for note in rerun_notes(record):
        click.echo(f"Note: {note}.", err=True)
    prepared = api.prepare(rerun_spec(record))
    run_in_foreground(prepared, log_output=log_output, no_progress=no_progress, as_json=as_json)


@main.command()
@click.argument("job_a", type=int)
@click.argument("job_b", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(job_a: int, job_b: int, as_json: bool) -> None:
    """Compare two jobs: commits, parameters, results, duration, resource use, cells."""
    from nbjobs import api
    from nbjobs.terminal import print_comparison

    comparison = api.compare(job_a, job_b)
    if as_json:
        click.echo(json.dumps(comparison, indent=2, default=str))
    else:
        print_comparison(comparison)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the removed snapshots as JSON.")
def gc(as_json: bool) -> None:
    """Remove snapshots no running job holds (left behind by crashed runs)."""
    from nbjobs import api

    removed = api.gc_snapshots()
    if as_json:
        click.echo(json.dumps({"removed_snapshots": removed}))
    elif removed:
        click.echo(f"Removed {len(removed)} snapshot(s): " + ", ".join(c[:12] for c in removed))
    else:
        click.echo("Nothing to remove.")
