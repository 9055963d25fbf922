"""`nbjobs run` through a running local server: the job joins the server's queue and its
fast kernel provider, and this terminal shows it as if it ran here (progress, live output,
the record at the end, the end state's exit code; Ctrl-C cancels it)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from nbjobs.client import Client, NoServer, job_has_ended
from nbjobs.config import Settings
from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event, StreamText
from nbjobs.prepare import PreparedJob
from nbjobs.spec import EXIT_CODES, JobState


def running_server() -> Client | None:
    """A client of the server this user's NBJOBS_HOME (or NBJOBS_URL) names, if one answers."""
    settings = Settings.from_env()
    if not os.environ.get("NBJOBS_URL") and not (settings.home / "server.json").exists():
        return None  # the common case costs a file test, no connection attempt
    client = Client(settings, timeout=2.0)
    try:
        client.request("GET", "/api/health")
    except NoServer:
        client.close()
        return None
    client.http.timeout = 30.0
    return client


def as_runner_event(event: dict[str, Any]) -> Event | None:
    """A streamed event as the runner's own, for the same progress bar and log streamer."""
    now = datetime.now(UTC)
    match event["kind"]:
        case "cell_started":
            return CellStarted(event["index"], now)
        case "cell_finished":
            return CellFinished(event["index"], event["status"], now, now)
        case "cell_skipped":
            return CellSkipped(event["index"])
        case "log":
            return StreamText(event["index"], event["name"], event["text"])
    return None


def run_on_server(client: Client, prepared: PreparedJob, *, log_output: bool, no_progress: bool, as_json: bool) -> None:
    from nbjobs.lifecycle import code_cell_indexes
    from nbjobs.store import JobRecord
    from nbjobs.terminal import LogStreamer, ProgressBar, print_job

    spec = prepared.spec.model_dump(mode="json", exclude_defaults=True)
    if prepared.output is not None:  # papermill's OUTPUT argument: a fixed path, as a template without fields
        fixed = str(Path(prepared.output)).replace("{", "{{").replace("}", "}}")
        spec.setdefault("outputs", {})["path"] = fixed
    job_id = client.submit(spec)["id"]
    sinks: list[Any] = []
    progress = None
    if not no_progress and not as_json:
        progress = ProgressBar(
            total=len(code_cell_indexes(prepared)), title=f"{prepared.spec.display_name} (job {job_id})"
        )
        sinks.append(progress)
    if log_output:
        sinks.append(LogStreamer())
    try:
        try:
            for event in client.events(f"/api/jobs/{job_id}/events"):
                if (runner_event := as_runner_event(event)) is not None:
                    for sink in sinks:
                        sink(runner_event)
                elif job_has_ended(client, job_id, event):
                    break
        except KeyboardInterrupt:
            client.cancel(job_id)
            while not JobState(client.wait(job_id)["state"]).is_final:
                pass
    finally:
        if progress is not None:
            progress.close()
    record = client.request("GET", f"/api/jobs/{job_id}")
    if as_json:
        click.echo(JobRecord.model_validate(record).model_dump_json(indent=2))
    else:
        print_job(JobRecord.model_validate(record), brief=True)
    sys.exit(EXIT_CODES[JobState(record["state"])])
