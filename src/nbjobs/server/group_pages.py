"""Dashboard pages of job groups: the list of pipeline runs and sweeps, one run, one sweep.

A run's page draws its task graph (server-side SVG, `task_graph`) and a sweep's
page its results table; static/groups.js keeps both live from the group's
event stream (`group_events`) and sorts the table. Like every page, another
user's run or sweep is a 404, worded as for one that does not exist.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from nbjobs.pipelines.runs import REPAIRED_STATES, PipelineService
from nbjobs.pipelines.sweep_table import result_names
from nbjobs.pipelines.sweeps import SweepService
from nbjobs.server.access import PageUser
from nbjobs.server.dashboard import render_page, templates
from nbjobs.server.groups import owner_filter, visible
from nbjobs.server.task_graph import task_graph
from nbjobs.store.groups import no_run, no_sweep

router = APIRouter(include_in_schema=False)
RecordId = Annotated[int, Path(ge=1, le=2**62)]
LIST_LIMIT = 50
SWEEP_ROWS_SHOWN = 5000  # more is a slow page; the CSV has every row


def _service(request: Request) -> Any:
    return request.app.state.service


def _last_event(request: Request) -> int:
    # Read before the store: a change the page misses then has a later event, which the stream replays.
    return int(request.app.state.people.hub.last_id)


@router.get("/ui/pipelines")
def pipelines_page(request: Request, user: PageUser) -> HTMLResponse:
    """The newest pipeline runs and sweeps: the user's own (an admin's: everyone's)."""
    service = _service(request)
    owner = owner_filter(user)
    return render_page(
        request,
        "pipelines.html",
        user,
        runs=PipelineService(service).list(LIST_LIMIT, owner),
        sweeps=SweepService(service).list(LIST_LIMIT, owner),
        limit=LIST_LIMIT,
    )


@router.get("/ui/pipelines/{run_id}")
def run_page(request: Request, user: PageUser, run_id: RecordId) -> HTMLResponse:
    last_event = _last_event(request)
    run = visible(PipelineService(_service(request)).view(run_id), user, no_run(run_id))
    depth = {name: i for i, level in enumerate(run["levels"]) for name in level}
    tasks = sorted(run["tasks"], key=lambda t: depth.get(t["name"], 0))  # stable: definition order within a level
    return render_page(
        request,
        "pipeline_run.html",
        user,
        run=run,
        tasks=tasks,
        graph=task_graph(run),
        repairable=is_repairable(run),
        last_event=last_event,
    )


def is_repairable(run: dict[str, Any]) -> bool:
    """What `PipelineService.repair` accepts: an ended run with a failed, cancelled or skipped task."""
    return run["state"] != "running" and any(t["state"] in REPAIRED_STATES for t in run["tasks"])


@router.get("/ui/sweeps/{sweep_id}")
def sweep_page(request: Request, user: PageUser, sweep_id: RecordId) -> HTMLResponse:
    last_event = _last_event(request)
    sweep = visible(SweepService(_service(request)).view(sweep_id), user, no_sweep(sweep_id))
    elements = sweep["elements"]
    return render_page(
        request,
        "sweep.html",
        user,
        sweep=sweep,
        parameters=list(sweep["axes"]),
        results=result_names(elements),
        elements=elements[:SWEEP_ROWS_SHOWN],
        hidden=max(len(elements) - SWEEP_ROWS_SHOWN, 0),
        last_event=last_event,
    )


def shown_value(value: Any) -> str:
    """A parameter or result in a table cell: text as it is, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


templates.env.filters["shown"] = shown_value
