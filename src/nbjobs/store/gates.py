"""Store queries of the queue gates: held jobs, their upstreams, sweep slots, run ends.

Each pass reads only held jobs and their edges (small rows, no specs), so its
cost follows the number of waiting dependents, not the size of the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from nbjobs.spec import JobState, RunIf
from nbjobs.store import Store
from nbjobs.store import models as m
from nbjobs.store.batch import HOLD_DEPENDENCIES, HOLD_SWEEP

UNFINISHED = (JobState.QUEUED.value, JobState.STARTING.value, JobState.RUNNING.value)


@dataclass
class UpstreamRow:
    job_id: int
    name: str
    state: JobState
    reason: str | None


@dataclass
class HeldJob:
    """A job held for its dependencies, with its upstreams grouped by run-if."""

    id: int
    queue_reason: str | None
    run_id: int | None
    task: str | None
    sweep_id: int | None
    groups: dict[RunIf, list[UpstreamRow]] = field(default_factory=dict)


def last_event_id(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.max(m.StateEvent.id))) or 0


def events_since(store: Store, after: int) -> list[tuple[int, int, JobState, str | None]]:
    """State changes (event id, job id, state, reason) recorded after event `after`, in order."""
    query = (
        select(m.StateEvent.id, m.StateEvent.job_id, m.StateEvent.state, m.StateEvent.reason)
        .where(m.StateEvent.id > after)
        .order_by(m.StateEvent.id)
    )
    with store.session() as s:
        return [(i, job, JobState(state), reason) for i, job, state, reason in s.execute(query)]


def held_for_dependencies(store: Store, only: list[int] | None = None) -> dict[int, HeldJob]:
    """Queued jobs held for their dependencies (all, or those in `only`), with how their upstreams stand."""
    job, up = aliased(m.Job), aliased(m.Job)
    query = (
        select(
            job.id,
            job.queue_reason,
            job.run_id,
            job.task,
            job.sweep_id,
            m.JobDependency.run_if,
            up.id,
            func.coalesce(up.task, up.name),
            up.state,
            up.reason,
        )
        .join(m.JobDependency, m.JobDependency.job_id == job.id)
        .join(up, up.id == m.JobDependency.upstream_id)
        .where(job.hold == HOLD_DEPENDENCIES, job.state == JobState.QUEUED.value)
        .order_by(job.id, up.id)
    )
    if only is not None:
        query = query.where(job.id.in_(only))
    held: dict[int, HeldJob] = {}
    with store.session() as s:
        for jid, qreason, run_id, task, sweep_id, run_if, uid, uname, ustate, ureason in s.execute(query):
            entry = held.get(jid)
            if entry is None:
                entry = held[jid] = HeldJob(jid, qreason, run_id, task, sweep_id)
            entry.groups.setdefault(RunIf(run_if), []).append(UpstreamRow(uid, uname, JobState(ustate), ureason))
        # A job held for dependencies but without edges (its upstreams were deleted): nothing to wait for.
        orphan_query = select(m.Job.id).where(
            m.Job.hold == HOLD_DEPENDENCIES,
            m.Job.state == JobState.QUEUED.value,
            ~exists().where(m.JobDependency.job_id == m.Job.id),
        )
        if only is not None:
            orphan_query = orphan_query.where(m.Job.id.in_(only))
        orphans = s.scalars(orphan_query)
        for jid in orphans:
            held[jid] = HeldJob(jid, None, None, None, None)
    return held


def release(store: Store, job_id: int, *, hold: str | None, reason: str | None, spec: dict[str, Any] | None) -> bool:
    """Let a held job go (to the queue, or to its sweep's hold); False if it changed meanwhile."""
    values: dict[str, Any] = {"hold": hold, "queue_reason": reason}
    if spec is not None:
        values["spec"] = spec
    with store.session() as s, s.begin():
        stmt = update(m.Job).where(
            m.Job.id == job_id, m.Job.state == JobState.QUEUED.value, m.Job.hold == HOLD_DEPENDENCIES
        )
        return s.execute(stmt.values(**values)).rowcount == 1


def task_results(store: Store, run_id: int, tasks: list[str]) -> dict[str, tuple[JobState, dict[str, Any]]]:
    """State and results of some tasks of a run (only the columns needed)."""
    query = select(m.Job.task, m.Job.state, m.Job.results).where(m.Job.run_id == run_id, m.Job.task.in_(tasks))
    with store.session() as s:
        return {task: (JobState(state), results or {}) for task, state, results in s.execute(query)}


def job_spec(store: Store, job_id: int) -> dict[str, Any]:
    with store.session() as s:
        return s.scalar(select(m.Job.spec).where(m.Job.id == job_id)) or {}


def set_reasons(store: Store, reasons: Mapping[int, str]) -> None:
    """Write changed wait reasons of held jobs (the caller knows which changed)."""
    if not reasons:
        return
    with store.session() as s, s.begin():
        for job_id, reason in reasons.items():
            s.execute(
                update(m.Job)
                .where(m.Job.id == job_id, m.Job.state == JobState.QUEUED.value)
                .values(queue_reason=reason)
            )


# ---------------------------------------------------------------- sweeps


def sweep_slots(store: Store) -> list[tuple[int, int]]:
    """(sweep id, free slots) for each sweep that holds jobs and has room under its max-parallel."""
    admitted = (
        select(func.count())
        .where(
            m.Job.sweep_id == m.Sweep.id,
            or_(
                m.Job.state.in_([JobState.STARTING.value, JobState.RUNNING.value]),
                and_(m.Job.state == JobState.QUEUED.value, m.Job.hold.is_(None)),
            ),
        )
        .scalar_subquery()
    )
    holding = select(m.Job.sweep_id).where(m.Job.hold == HOLD_SWEEP, m.Job.state == JobState.QUEUED.value).distinct()
    query = select(m.Sweep.id, m.Sweep.max_parallel - admitted).where(m.Sweep.id.in_(holding))
    with store.session() as s:
        return [(sid, int(free or 0)) for sid, free in s.execute(query) if (free or 0) > 0]


def admit_from_sweep(store: Store, sweep_id: int, count: int) -> list[int]:
    """Let the next `count` held jobs of a sweep (lowest index first) go to the queue."""
    with store.session() as s, s.begin():
        ids = list(
            s.scalars(
                select(m.Job.id)
                .where(m.Job.sweep_id == sweep_id, m.Job.hold == HOLD_SWEEP, m.Job.state == JobState.QUEUED.value)
                .order_by(m.Job.sweep_index)
                .limit(count)
            )
        )
        if ids:
            s.execute(
                update(m.Job).where(m.Job.id.in_(ids), m.Job.hold == HOLD_SWEEP).values(hold=None, queue_reason=None)
            )
        return ids


def sweep_limit(store: Store, sweep_id: int) -> int | None:
    with store.session() as s:
        return s.scalar(select(m.Sweep.max_parallel).where(m.Sweep.id == sweep_id))


# ---------------------------------------------------------------- pipeline runs


def runs_to_conclude(store: Store) -> list[int]:
    """Runs still marked running whose tasks have all ended."""
    unfinished = exists().where(m.Job.run_id == m.PipelineRun.id, m.Job.state.in_(UNFINISHED))
    with store.session() as s:
        return list(s.scalars(select(m.PipelineRun.id).where(m.PipelineRun.state == "running", ~unfinished)))
