"""The command line: a thin layer over `nbjobs.api`.

Usage errors print one paragraph and exit 2 without a traceback; a finished job
exits with the code of its end state (see `nbjobs.spec.EXIT_CODES`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nbjobs.errors import InvalidInput, ParameterError
from nbjobs.spec import EXIT_CODES, EXIT_INVALID_INPUT, JobState

F = Callable[..., Any]


class KeyValue(click.ParamType):
    """`KEY=VALUE` pairs for --env and --resource."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key, val


def spec_options(fn: F) -> F:
    """The job spec flags shared by `run` and `submit`."""
    options = [
        click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="YAML or TOML job file."),
        click.option("--name", help="Job name (default: the notebook's stem)."),
        click.option("--tag", "tags", multiple=True, help="Tag (repeatable)."),
        click.option("--kernel", help="Kernelspec name (default: the notebook's own)."),
        click.option("--cwd", help="Working directory of the kernel (default: the notebook's folder)."),
        click.option("--env", "env", multiple=True, type=KeyValue(), help="KEY=VALUE for the kernel (repeatable)."),
        click.option("--cpus", type=str, help="CPU cores."),
        click.option("--memory", help="Memory limit, e.g. 512MiB or 2GB."),
        click.option("--gpus", type=str, help="Number of GPUs."),
        click.option("--resource", "custom", multiple=True, type=KeyValue(), help="NAME=COUNT custom resource."),
        click.option("--timeout", type=str, help="Whole-job timeout, seconds."),
        click.option("--cell-timeout", type=str, help="Per-cell timeout, seconds."),
        click.option("--retries", type=str, help="Extra tries after a retryable failure."),
        click.option("--priority", type=str, help="Higher runs first."),
        click.option("--idempotency-key", help="A second job with this key returns the first."),
        click.option(
            "--format", "formats", multiple=True, type=click.Choice(["ipynb", "html"]), help="Also write HTML."
        ),
        click.option("--allow-errors", is_flag=True, default=None, help="Keep running after a cell raises."),
        click.option("--allow-unknown-params", is_flag=True, default=None, help="Inject undeclared parameters."),
        click.option(
            "-p",
            "--parameter",
            "params",
            multiple=True,
            nargs=2,
            metavar="NAME VALUE",
            help="Parameter, value parsed as YAML.",
        ),
        click.option(
            "-r",
            "--raw-parameter",
            "raw_params",
            multiple=True,
            nargs=2,
            metavar="NAME VALUE",
            help="Parameter, value kept as a string.",
        ),
        click.option(
            "-f",
            "--parameters-file",
            "param_files",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="YAML file of parameters.",
        ),
        click.option("-y", "--parameters-yaml", "param_yaml", multiple=True, help="Parameters as a YAML mapping."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The command-line layer of the spec: only what the user actually passed."""
    from nbjobs.notebook.params import load_yaml_parameters, parse_cli_value

    params: dict[str, Any] = {}
    for file in flags.get("param_files", ()):
        path = Path(file)
        if not path.is_file():
            raise ParameterError(f"Parameters file {file!r} (-f) does not exist.")
        params.update(load_yaml_parameters(path.read_text(encoding="utf-8"), f"parameters file {file!r}"))
    for text in flags.get("param_yaml", ()):
        params.update(load_yaml_parameters(text, "-y"))
    for name, value in flags.get("params", ()):
        params[name] = parse_cli_value(value)
    for name, value in flags.get("raw_params", ()):
        params[name] = value

    out: dict[str, Any] = {}
    if params:
        out["parameters"] = params
    for key in (
        "name",
        "kernel",
        "cwd",
        "timeout",
        "cell_timeout",
        "priority",
        "idempotency_key",
        "allow_errors",
        "allow_unknown_params",
    ):
        if flags.get(key) is not None:
            out[key] = flags[key]
    if flags.get("tags"):
        out["tags"] = list(flags["tags"])
    if flags.get("env"):
        out["env"] = dict(flags["env"])
    resources: dict[str, Any] = {k: flags[k] for k in ("cpus", "memory", "gpus") if flags.get(k) is not None}
    if flags.get("custom"):
        resources["custom"] = dict(flags["custom"])
    if resources:
        out["resources"] = resources
    if flags.get("retries") is not None:
        try:
            retries = int(flags["retries"])
        except ValueError:
            raise InvalidInput(
                f"--retries must be a whole number of extra tries (0 or more), got {flags['retries']!r}."
            ) from None
        out["retry"] = {"attempts": retries + 1}
    if flags.get("formats"):
        out["outputs"] = {"formats": list(flags["formats"])}
    return out


class NbjobsGroup(click.Group):
    """Turns InvalidInput into a one-paragraph message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInput as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_INVALID_INPUT)


@click.group(cls=NbjobsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nbjobs")
def main() -> None:
    """Run Jupyter notebooks as recorded jobs."""


@main.command()
@click.argument("notebook", type=str)
@click.argument("output", required=False, type=str)
@spec_options
@click.option("--log-output", is_flag=True, help="Stream the notebook's stdout/stderr to this terminal.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
def run(notebook: str, output: str | None, log_output: bool, no_progress: bool, as_json: bool, **flags: Any) -> None:
    """Run NOTEBOOK now and record it as a job; OUTPUT is where the executed notebook goes."""
    from nbjobs import api
    from nbjobs.terminal import LogStreamer, ProgressBar, print_job

    spec, nb = api.load_spec(notebook, spec_file=flags.pop("spec_file"), overrides=overrides_from_flags(flags))
    prepared = api.prepare(spec, nb, output)
    sinks = []
    progress = None
    if not no_progress and not as_json:
        progress = ProgressBar(total=len(api.code_cell_indexes(prepared)), title=prepared.spec.display_name)
        sinks.append(progress)
    if log_output:
        sinks.append(LogStreamer())
    try:
        record = api.run_prepared(prepared, sinks=sinks)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        click.echo(record.model_dump_json(indent=2))
    else:
        print_job(record, brief=True)
    sys.exit(EXIT_CODES[record.state])


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
@click.argument("kind", required=False, default="job", type=click.Choice(["job"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of a job spec (for editors and validators)."""
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
def logs(job_id: int, attempt: int | None) -> None:
    """Print a job's stdout/stderr log."""
    with _store() as store:
        record = store.get(job_id)
    chosen = record.attempts[-1] if attempt is None and record.attempts else None
    if attempt is not None:
        chosen = next((a for a in record.attempts if a.number == attempt), None)
        if chosen is None:
            numbers = ", ".join(str(a.number) for a in record.attempts) or "none"
            raise InvalidInput(f"Job {job_id} has no attempt {attempt}; its attempts: {numbers}.")
    if chosen is None or not chosen.log or not Path(chosen.log).exists():
        raise InvalidInput(f"Job {job_id} has no log yet (state: {record.state.value}).")
    click.echo(Path(chosen.log).read_text(encoding="utf-8"), nl=False)


class _store:
    """The store from the environment, closed after use."""

    def __enter__(self) -> Any:
        from nbjobs.config import Settings
        from nbjobs.store import Store

        self.store = Store(Settings.from_env().db_url)
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


if __name__ == "__main__":
    main()
