"""Store rows of job groups: pipeline runs and sweeps, and the jobs that make them up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from nbjobs.errors import NotFound
from nbjobs.spec import JobState, RunIf
from nbjobs.store import Store
from nbjobs.store import models as m
from nbjobs.store.repository import utcnow


@dataclass
class MemberJob:
    """A job as its group shows it: one task of a run, or one element of a sweep."""

    id: int
    name: str
    task: str | None
    sweep_index: int | None
    state: JobState
    reason: str | None
    queue_reason: str | None
    attempt: int
    parameters: dict[str, Any]
    results: dict[str, Any]
    started: datetime | None
    ended: datetime | None
    upstreams: list[tuple[int, RunIf]]  # (job id, run-if)

    @property
    def duration(self) -> float | None:
        return (self.ended - self.started).total_seconds() if self.started and self.ended else None


def _members(store: Store, where: Any, order: Any) -> list[MemberJob]:
    with store.session() as s:
        jobs = list(s.scalars(select(m.Job).where(where).order_by(order)))
        ids = [j.id for j in jobs]
        edges: dict[int, list[tuple[int, RunIf]]] = {}
        edge_query = (
            select(m.JobDependency.job_id, m.JobDependency.upstream_id, m.JobDependency.run_if)
            .where(m.JobDependency.job_id.in_(ids))
            .order_by(m.JobDependency.job_id, m.JobDependency.upstream_id)
        )
        for job_id, up, run_if in s.execute(edge_query) if ids else ():
            edges.setdefault(job_id, []).append((up, RunIf(run_if)))
    return [
        MemberJob(
            id=j.id,
            name=j.name,
            task=j.task,
            sweep_index=j.sweep_index,
            state=JobState(j.state),
            reason=j.reason,
            queue_reason=j.queue_reason,
            attempt=j.attempt,
            parameters=j.spec.get("parameters", {}),
            results=j.results or {},
            started=j.started,
            ended=j.ended,
            upstreams=edges.get(j.id, []),
        )
        for j in jobs
    ]


# ---------------------------------------------------------------- pipeline runs


def add_run(
    s: Session,
    *,
    name: str,
    owner: str,
    pipeline: dict[str, Any],
    params: dict[str, Any],
    source: str | None,
    schedule_id: int | None = None,
    idempotency_key: str | None = None,
) -> int:
    run = m.PipelineRun(
        name=name,
        owner=owner,
        state="running",
        pipeline=pipeline,
        params=params,
        source=source,
        schedule_id=schedule_id,
        idempotency_key=idempotency_key,
        created=utcnow(),
    )
    s.add(run)
    s.flush()
    return run.id


def no_run(run_id: int) -> str:
    """What a missing run (and another user's) is answered with: the same words, so they leak nothing."""
    return f"No pipeline run with id {run_id}; `nbjobs pipeline ls` lists the runs there are."


def get_run(store: Store, run_id: int) -> m.PipelineRun:
    with store.session() as s:
        run = s.get(m.PipelineRun, run_id)
    if run is None:
        raise NotFound(no_run(run_id))
    return run


def find_run_by_key(store: Store, key: str) -> int | None:
    with store.session() as s:
        return s.scalar(select(m.PipelineRun.id).where(m.PipelineRun.idempotency_key == key))


def run_tasks(store: Store, run_id: int) -> list[MemberJob]:
    return _members(store, m.Job.run_id == run_id, m.Job.id)


def list_runs(store: Store, limit: int = 50, owner: str | None = None) -> list[tuple[m.PipelineRun, dict[str, int]]]:
    """Newest first (only `owner`'s, when given), each with its tasks counted by state."""
    query = select(m.PipelineRun).order_by(m.PipelineRun.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(m.PipelineRun.owner == owner)
    with store.session() as s:
        runs = list(s.scalars(query))
        counts: dict[int, dict[str, int]] = {}
        if runs:
            rows = s.execute(
                select(m.Job.run_id, m.Job.state, func.count())
                .where(m.Job.run_id.in_([r.id for r in runs]))
                .group_by(m.Job.run_id, m.Job.state)
            )
            for run_id, state, n in rows:
                counts.setdefault(run_id, {})[state] = n
    return [(r, counts.get(r.id, {})) for r in runs]


def set_run_state(
    store: Store, run_id: int, state: str, reason: str | None, *, expect: Sequence[str] | None = None
) -> bool:
    ended = utcnow() if state != "running" else None
    with store.session() as s, s.begin():
        stmt = update(m.PipelineRun).where(m.PipelineRun.id == run_id)
        if expect is not None:
            stmt = stmt.where(m.PipelineRun.state.in_(list(expect)))
        return s.execute(stmt.values(state=state, reason=reason, ended=ended)).rowcount == 1


def request_run_cancel(store: Store, run_id: int, reason: str | None) -> None:
    with store.session() as s, s.begin():
        s.execute(update(m.PipelineRun).where(m.PipelineRun.id == run_id).values(cancel_requested=reason))


# ---------------------------------------------------------------- sweeps


def add_sweep(
    s: Session,
    *,
    name: str,
    notebook: str,
    owner: str,
    axes: dict[str, list[Any]],
    mode: str,
    size: int,
    max_parallel: int | None,
) -> int:
    sweep = m.Sweep(
        name=name,
        notebook=notebook,
        owner=owner,
        axes=axes,
        mode=mode,
        size=size,
        max_parallel=max_parallel,
        created=utcnow(),
    )
    s.add(sweep)
    s.flush()
    return sweep.id


def no_sweep(sweep_id: int) -> str:
    return f"No sweep with id {sweep_id}; `nbjobs sweep ls` lists the sweeps there are."


def get_sweep(store: Store, sweep_id: int) -> m.Sweep:
    with store.session() as s:
        sweep = s.get(m.Sweep, sweep_id)
    if sweep is None:
        raise NotFound(no_sweep(sweep_id))
    return sweep


def sweep_elements(store: Store, sweep_id: int) -> list[MemberJob]:
    return _members(store, m.Job.sweep_id == sweep_id, m.Job.sweep_index)


def list_sweeps(store: Store, limit: int = 50, owner: str | None = None) -> list[tuple[m.Sweep, dict[str, int]]]:
    """Newest first (only `owner`'s, when given), each with its jobs counted by state."""
    query = select(m.Sweep).order_by(m.Sweep.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(m.Sweep.owner == owner)
    with store.session() as s:
        sweeps = list(s.scalars(query))
        counts: dict[int, dict[str, int]] = {}
        if sweeps:
            rows = s.execute(
                select(m.Job.sweep_id, m.Job.state, func.count())
                .where(m.Job.sweep_id.in_([w.id for w in sweeps]))
                .group_by(m.Job.sweep_id, m.Job.state)
            )
            for sweep_id, state, n in rows:
                counts.setdefault(sweep_id, {})[state] = n
    return [(w, counts.get(w.id, {})) for w in sweeps]


# ---------------------------------------------------------------- members


def member_ids(store: Store, membership: ColumnElement[bool]) -> list[int]:
    """The ids of a group's jobs (`membership`: `Job.run_id == 7` or `Job.sweep_id == 3`)."""
    with store.session() as s:
        return list(s.scalars(select(m.Job.id).where(membership)))
