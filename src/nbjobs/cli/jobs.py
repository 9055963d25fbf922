"""Commands on jobs: run, inspect, schema, ls, show, logs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from nbjobs.cli.main import main
from nbjobs.cli.options import overrides_from_flags, spec_options
from nbjobs.errors import InvalidInput
from nbjobs.spec import EXIT_CODES, JobState


@main.command()
@click.argument("notebook", type=str)
@click.argument("output", required=False, type=str)
@spec_options
@click.option("--log-output", is_flag=True, help="Stream the notebook's stdout/stderr to this terminal.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
@click.option(
    "--local/--server",
    "local",
    default=None,
    help="Run in this process, or on the running server (default: the server if one answers, else here).",
)
def run(
    notebook: str,
    output: str | None,
    log_output: bool,
    no_progress: bool,
    as_json: bool,
    local: bool | None,
    **flags: Any,
) -> None:
    """Run NOTEBOOK now and record it as a job; OUTPUT is where the executed notebook goes.

    When a local server is running, the job runs there (its warm kernels start in
    milliseconds) and this terminal follows it; --local runs it in this process.
    With --git-ref or --repo, NOTEBOOK runs as it is at that commit, from a snapshot.
    """
    from nbjobs.prepare import load_spec, prepare

    spec, nb = load_spec(notebook, spec_file=flags.pop("spec_file"), overrides=overrides_from_flags(flags))
    prepared = prepare(spec, nb, output)
    options = {"log_output": log_output, "no_progress": no_progress, "as_json": as_json}
    if not local and server_may_run():
        from nbjobs.cli.remote_run import run_on_server, running_server

        client = running_server()
        if client is not None:
            if prepared.snapshot is not None:
                prepared.snapshot.release()  # the server takes its own
            with client:
                run_on_server(client, prepared, **options)
    if local is False:
        raise InvalidInput("--server: no nbjobs server answers; start one with `nbjobs server`, or drop --server.")
    run_in_foreground(prepared, **options)


def server_may_run() -> bool:
    """Cheap: is there an address to try? (No connection is made here.)"""
    import os

    from nbjobs.config import Settings

    return bool(os.environ.get("NBJOBS_URL")) or (Settings.from_env().home / "server.json").exists()


def run_in_foreground(prepared: Any, *, log_output: bool, no_progress: bool, as_json: bool) -> None:
    """Run a prepared job here with progress and live output; exit with its end state's code."""
    import asyncio

    from nbjobs.resources.foreground import allocate_here

    allocation = allocate_here(prepared)  # an impossible request stops here, before any progress bar
    record = asyncio.run(
        _foreground(prepared, allocation, log_output=log_output, no_progress=no_progress, as_json=as_json)
    )
    from nbjobs.terminal import print_job

    if as_json:
        click.echo(record.model_dump_json(indent=2))
    else:
        print_job(record, brief=True)
    sys.exit(EXIT_CODES[record.state])


async def _foreground(prepared: Any, allocation: Any, *, log_output: bool, no_progress: bool, as_json: bool) -> Any:
    """The kernel starts first; the store and the runner load while it boots (it is another process)."""
    import asyncio

    provider = early_kernel(prepared, allocation)
    if provider is not None:
        await asyncio.sleep(0.05)  # let the kernel's launch happen before the imports below hold the loop
    from nbjobs import api
    from nbjobs.terminal import LogStreamer, ProgressBar

    sinks: list[Any] = []
    progress = None
    if not no_progress and not as_json:
        progress = ProgressBar(total=len(api.code_cell_indexes(prepared)), title=prepared.spec.display_name)
        sinks.append(progress)
    if log_output:
        sinks.append(LogStreamer())
    try:
        return await api.run_prepared_async(prepared, sinks=sinks, allocation=allocation, provider=provider)
    finally:
        if progress is not None:
            progress.close()
        if provider is not None:
            await asyncio.shield(provider.close())


def early_kernel(prepared: Any, allocation: Any) -> Any:
    """A pool holding one plain kernel already starting for this job, or None where that cannot serve.

    Only Python kernels (the attempt's own variables are set at hand-out) and no memory
    limit (the kernel must start inside the attempt's enforcement); the config may name
    another provider, which then serves as usual.
    """
    from nbjobs.config import Settings

    kernels = Settings.from_env().config.kernels
    if kernels.provider not in ("auto", "plain", "pool") or allocation.memory is not None:
        return None
    if prepared.kernel.language != "python":
        return None
    from nbjobs.kernels.base import KernelRequest, runtime_dir
    from nbjobs.kernels.pool import PoolProvider

    pool = PoolProvider(ready=1, refill=False)
    env = dict(prepared.spec.env)
    pool.prefill(KernelRequest(prepared.kernel.name, prepared.cwd, runtime_dir() / "unused.log", env, allocation))
    return pool


@main.command()
@click.argument("notebook", type=str)
@click.option("--json", "as_json", is_flag=True)
def inspect(notebook: str, as_json: bool) -> None:
    """List the parameters NOTEBOOK declares, with defaults, types and help."""
    from nbjobs.notebook.io import load_notebook
    from nbjobs.notebook.params import declared_parameters, notebook_language
    from nbjobs.terminal import print_parameters

    nb = load_notebook(notebook)
    declared = declared_parameters(nb, notebook_language(nb))
    if as_json:
        items = [] if declared is None else [p.__dict__ for p in declared]
        click.echo(
            json.dumps(
                {"notebook": notebook, "has_parameters_cell": declared is not None, "parameters": items}, indent=2
            )
        )
    else:
        print_parameters(notebook, declared)


@main.command()
@click.argument("kind", required=False, default="job", type=click.Choice(["job", "pipeline"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of a job spec or a pipeline file (for editors and validators)."""
    if kind == "pipeline":
        from nbjobs.pipelines.model import pipeline_schema

        click.echo(json.dumps(pipeline_schema(), indent=2))
        return
    from nbjobs.spec import job_schema

    click.echo(json.dumps(job_schema(), indent=2))


@main.command(name="ls")
@click.option(
    "--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]), help="Filter (repeatable)."
)
@click.option("--name", help="Name contains this text.")
@click.option("--tag", help="Has this tag.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def list_jobs(states: tuple[str, ...], name: str | None, tag: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from nbjobs.terminal import print_job_table

    with _store() as store:
        records = store.list(states=[JobState(s) for s in states], name=name, tag=tag, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
    else:
        print_job_table(records)


@main.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show(job_id: int, as_json: bool) -> None:
    """Show one job: state, reason, cells, results, attempts, paths."""
    from nbjobs.terminal import print_job

    with _store() as store:
        record = store.get(job_id)
    if as_json:
        click.echo(record.model_dump_json(indent=2))
    else:
        print_job(record)


@main.command()
@click.argument("job_id", type=int)
@click.option("--attempt", type=int, help="Attempt number (default: the latest).")
@click.option("-f", "--follow", is_flag=True, help="Follow it live from the server until the job ends.")
def logs(job_id: int, attempt: int | None, follow: bool) -> None:
    """Print a job's stdout/stderr log."""
    if follow:
        from nbjobs.cli.follow import follow_logs

        sys.exit(follow_logs(job_id))
    with _store() as store:
        record = store.get(job_id)
    chosen = record.attempts[-1] if attempt is None and record.attempts else None
    if attempt is not None:
        chosen = next((a for a in record.attempts if a.number == attempt), None)
        if chosen is None:
            numbers = ", ".join(str(a.number) for a in record.attempts) or "none"
            raise InvalidInput(f"Job {job_id} has no attempt {attempt}; its attempts: {numbers}.")
    from nbjobs.storage import read_text

    text = read_text(chosen.log) if chosen is not None and chosen.log else None  # a path, or a storage URL
    if text is None:
        raise InvalidInput(f"Job {job_id} has no log yet (state: {record.state.value}).")
    click.echo(text, nl=False)


class _store:
    """The store from the environment, closed after use."""

    def __enter__(self) -> Any:
        from nbjobs.config import Settings
        from nbjobs.store import Store

        self.store = Store(Settings.from_env().db_url)
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
