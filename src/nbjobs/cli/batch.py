"""`nbjobs submit --batch FILE.jsonl`: many job specs in one request, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from nbformat import NotebookNode

from nbjobs.cli.options import overrides_from_flags
from nbjobs.errors import InvalidInput


def batch_specs(file: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Each line's spec: notebook metadata < the line < the command line; errors name the line."""
    from nbjobs.notebook.io import load_notebook
    from nbjobs.spec_sources import build_spec, notebook_metadata_layer

    path = Path(file)
    if not path.is_file():
        raise InvalidInput(f"Batch file {file!r} does not exist.")
    base = path.resolve().parent
    notebooks: dict[str, NotebookNode] = {}  # a batch often runs one notebook many times: load it once
    specs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{file} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{where} is not JSON: {exc.msg} at column {exc.colno}.") from None
        if not isinstance(data, dict) or not isinstance(data.get("notebook"), str):
            raise InvalidInput(f"{where} must be a JSON object with a `notebook` (a job spec).")
        for key in ("notebook", "cwd"):
            if isinstance(data.get(key), str):
                data[key] = str((base / Path(data[key]).expanduser()).resolve())
        try:
            if data["notebook"] not in notebooks:
                notebooks[data["notebook"]] = load_notebook(data["notebook"])
            meta = notebook_metadata_layer(notebooks[data["notebook"]].metadata, data["notebook"])
            spec = build_spec([("notebook metadata", meta), (where, data), ("the command line", overrides)])
        except InvalidInput as exc:
            raise InvalidInput(f"Line {number}: {exc}") from None
        specs.append(spec.model_dump(mode="json", exclude_defaults=True))
    return specs


def submit_batch_file(file: str, notebook: str | None, flags: dict[str, Any], as_json: bool) -> None:
    from nbjobs.client import Client

    if notebook is not None or flags.pop("spec_file", None):
        raise InvalidInput("--batch takes the notebooks from its lines: give no NOTEBOOK and no --spec with it.")
    specs = batch_specs(file, overrides_from_flags(flags))
    with Client(timeout=300) as client:
        made = client.request("POST", "/api/jobs/batch", json={"specs": specs})["jobs"]
    if as_json:
        click.echo(json.dumps(made, indent=2))
    else:
        fresh = [j["id"] for j in made if j["created"]]
        span = f" ({fresh[0]}..{fresh[-1]})" if fresh else ""
        click.echo(f"{len(fresh)} jobs queued{span}, {len(made) - len(fresh)} existed already")
