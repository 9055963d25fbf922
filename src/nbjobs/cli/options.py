"""Flags shared by the commands that create jobs, and their translation into a spec layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nbjobs.errors import InvalidInput, ParameterError

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
            "--git-ref",
            metavar="REF",
            help="Run the notebook as it is at this branch, tag or commit (from a snapshot, not the working tree).",
        ),
        click.option(
            "--repo",
            metavar="PATH_OR_URL",
            help="Repository to run from (at --git-ref, default HEAD); NOTEBOOK is then a path inside it.",
        ),
        click.option(
            "--require-clean", is_flag=True, default=None, help="Refuse to run from a tree with uncommitted changes."
        ),
        click.option(
            "--clean-input",
            is_flag=True,
            default=None,
            help="Strip front-end metadata (timings, widget state) from the input before running.",
        ),
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
        "git_ref",
        "repo",
        "require_clean",
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
    outputs: dict[str, Any] = {}
    if flags.get("formats"):
        outputs["formats"] = list(flags["formats"])
    if flags.get("clean_input") is not None:
        outputs["clean_input"] = flags["clean_input"]
    if outputs:
        out["outputs"] = outputs
    return out
