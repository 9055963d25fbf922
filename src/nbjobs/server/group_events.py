"""Event streams of job groups: a pipeline run's tasks, a sweep's elements.

The same events as `/api/jobs/{id}/events` (state, cells, log text, usage), for
every job of the group, from the first (or after `Last-Event-ID` / `?after=`).
A group's jobs are fixed when it is made (repair requeues the same rows), so
their ids are read once per stream; the store is asked by membership instead,
since a sweep may hold 100,000 jobs, more than an SQL `IN` list takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, Select, select

from nbjobs.errors import NotFound
from nbjobs.server.access import CurrentUser
from nbjobs.server.events import StreamEvent, last_event_id, sse_response
from nbjobs.server.users import UserInfo
from nbjobs.store import Store, groups
from nbjobs.store.models import Job
from nbjobs.store.people_models import EventRow

router = APIRouter(tags=["events"])
RecordId = Annotated[int, Path(ge=1, le=2**62, description="A record id")]
After = Annotated[int | None, Query(ge=0, le=2**62, description="Resume after this event id")]
SSE = {200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}}


@dataclass(frozen=True, eq=False)
class GroupFilter:
    """Events of the jobs of one group: `job_ids` for live events, `membership` for stored ones."""

    job_ids: frozenset[int]
    membership: ColumnElement[bool]  # e.g. Job.run_id == 7

    def matches(self, event: StreamEvent) -> bool:
        return event.job_id in self.job_ids

    def where(self, query: Select[Any]) -> Select[Any]:
        return query.where(EventRow.job_id.in_(select(Job.id).where(self.membership)))


def group_filter(store: Store, membership: ColumnElement[bool]) -> GroupFilter:
    return GroupFilter(frozenset(groups.member_ids(store, membership)), membership)


def visible_run_owner(store: Store, run_id: int, user: UserInfo) -> None:
    """404 with the same words for a run that does not exist and for another user's."""
    if not user.can_see(groups.get_run(store, run_id).owner):
        raise NotFound(groups.no_run(run_id))


def visible_sweep_owner(store: Store, sweep_id: int, user: UserInfo) -> None:
    if not user.can_see(groups.get_sweep(store, sweep_id).owner):
        raise NotFound(groups.no_sweep(sweep_id))


@router.get("/api/pipelines/runs/{run_id}/events", response_class=StreamingResponse, responses=SSE)
def run_events(request: Request, user: CurrentUser, run_id: RecordId, after: After = None) -> Response:
    """The events of the run's tasks: state, cells, log text, usage; each carries its task's `job_id`."""
    store = request.app.state.service.store
    visible_run_owner(store, run_id, user)
    flt = group_filter(store, Job.run_id == run_id)
    return sse_response(request, request.app.state.people.hub, flt, after=last_event_id(request, 0))


@router.get("/api/sweeps/{sweep_id}/events", response_class=StreamingResponse, responses=SSE)
def sweep_events(request: Request, user: CurrentUser, sweep_id: RecordId, after: After = None) -> Response:
    """The events of the sweep's jobs, like a run's."""
    store = request.app.state.service.store
    visible_sweep_owner(store, sweep_id, user)
    flt = group_filter(store, Job.sweep_id == sweep_id)
    return sse_response(request, request.app.state.people.hub, flt, after=last_event_id(request, 0))
