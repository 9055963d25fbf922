"""Commands that talk to the server: server, submit, wait, cancel, retry, queue."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click

from nbjobs.cli.main import main, server_request
from nbjobs.cli.options import overrides_from_flags, spec_options
from nbjobs.spec import EXIT_CODES, JobState


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--backend",
    type=click.Choice(["local", "dask"]),
    help="Where jobs run: this host, or a Dask cluster (default: [backend] kind of config.toml, else local).",
)
@click.option("--scheduler-address", help="Dask scheduler for --backend dask, e.g. tcp://10.0.0.5:8786.")
def server(host: str, port: int, backend: str | None, scheduler_address: str | None) -> None:
    """Run the scheduler, a backend (local or dask) and the HTTP API until stopped (Ctrl-C)."""
    from nbjobs.config import Settings
    from nbjobs.server.main import serve

    if scheduler_address and backend is None:
        backend = "dask"  # an address only makes sense for the dask backend
    asyncio.run(serve(Settings.from_env(), host, port, backend_kind=backend, scheduler_address=scheduler_address))


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    from nbjobs.store import JobRecord
    from nbjobs.terminal import print_job

    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        print_job(JobRecord.model_validate(record), brief=True)


@main.command()
@click.argument("notebook", type=str, required=False)
@spec_options
@click.option("--batch", "batch_file", help="JSON Lines file, one job spec per line: all are queued, or none.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
def submit(notebook: str | None, batch_file: str | None, as_json: bool, **flags: Any) -> None:
    """Queue NOTEBOOK on the server and print its job id at once (or every spec of --batch FILE)."""
    from nbjobs.client import Client
    from nbjobs.prepare import load_spec

    if batch_file is not None:  # spec flags given with --batch apply to every line
        from nbjobs.cli.batch import submit_batch_file

        submit_batch_file(batch_file, notebook, flags, as_json)
        return

    spec, _ = load_spec(notebook, spec_file=flags.pop("spec_file"), overrides=overrides_from_flags(flags))
    with Client() as client:
        record = client.submit(spec.model_dump(mode="json", exclude_defaults=True))
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(f"Job {record['id']} {record['state']}: nbjobs wait {record['id']}")


@main.command()
@click.argument("job_id", type=int)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True)
def wait(job_id: int, timeout: float | None, as_json: bool) -> None:
    """Wait until job JOB_ID ends; exit with the code of its end state."""
    from nbjobs.client import Client

    deadline = None if timeout is None else time.monotonic() + timeout
    with Client() as client:
        while True:
            remaining = 30.0 if deadline is None else max(0.1, min(30.0, deadline - time.monotonic()))
            record = client.wait(job_id, remaining)
            if JobState(record["state"]).is_final or (deadline is not None and time.monotonic() >= deadline):
                break
    _print_record(record, as_json)
    state = JobState(record["state"])
    sys.exit(EXIT_CODES[state] if state.is_final else 124)


@main.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def cancel(job_id: int, as_json: bool) -> None:
    """Cancel a job: a queued one ends at once, a running one is interrupted then killed."""
    from nbjobs.client import Client

    with Client() as client:
        record = client.cancel(job_id)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(f"Job {job_id}: {record['state']}" + (f" ({record['reason']})" if record.get("reason") else ""))


@main.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def retry(job_id: int, as_json: bool) -> None:
    """Queue an ended job again as a new attempt."""
    from nbjobs.client import Client

    with Client() as client:
        record = client.retry(job_id)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(f"Job {job_id} queued again: nbjobs wait {job_id}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def queue(as_json: bool) -> None:
    """Running and waiting jobs with the reason each waits, and the host's capacity."""
    from nbjobs.terminal import print_queue

    view = server_request("GET", "/api/queue")
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        print_queue(view)
