"""Many jobs in one transaction: the rows of a pipeline run, a sweep or a batch submit.

Either every job (with its tags, first history row and dependency edges) is
stored, or none is. Rows go in with multi-row INSERTs, so a thousand jobs cost
a handful of statements rather than a few thousand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from nbjobs.spec import JobSpec, JobState, RunIf
from nbjobs.store import models as m

HOLD_DEPENDENCIES = "dependencies"  # waits for its upstreams (see nbjobs.pipelines.gate)
HOLD_SWEEP = "sweep"  # waits for a free slot under its sweep's max-parallel


@dataclass
class NewJob:
    """One job to create, with the groups and edges it belongs to."""

    spec: JobSpec
    spec_json: dict[str, Any] | None = None  # the spec as JSON when the caller has it already
    name: str | None = None  # default: the spec's display name
    run_id: int | None = None
    task: str | None = None
    sweep_id: int | None = None
    sweep_index: int | None = None
    hold: str | None = None
    queue_reason: str | None = None
    upstream_ids: list[tuple[int, RunIf]] = field(default_factory=list)  # jobs stored before
    upstream_positions: list[tuple[int, RunIf]] = field(default_factory=list)  # jobs earlier in this batch


def insert_jobs(s: Session, jobs: Sequence[NewJob], *, owner: str, host: str, now: datetime) -> list[int]:
    """Insert `jobs` (queued) in session `s`; their ids, in order. The caller commits."""
    if not jobs:
        return []
    rows = [
        {
            "name": job.name or job.spec.display_name,
            "notebook": job.spec.notebook,
            "owner": owner,
            "host": host,
            "state": JobState.QUEUED.value,
            "spec": job.spec_json if job.spec_json is not None else job.spec.model_dump(mode="json"),
            "priority": job.spec.priority,
            "idempotency_key": job.spec.idempotency_key,
            "attempt": 0,
            "results": {},
            "created": now,
            "run_id": job.run_id,
            "task": job.task,
            "sweep_id": job.sweep_id,
            "sweep_index": job.sweep_index,
            "hold": job.hold,
            "queue_reason": job.queue_reason,
        }
        for job in jobs
    ]
    result = s.execute(insert(m.Job).returning(m.Job.id, sort_by_parameter_order=True), rows)
    ids = [row[0] for row in result]
    tags = [{"job_id": i, "tag": tag} for i, job in zip(ids, jobs, strict=True) for tag in job.spec.tags]
    if tags:
        s.execute(insert(m.JobTag), tags)
    events = [{"job_id": i, "attempt": 0, "state": JobState.QUEUED.value, "at": now} for i in ids]
    s.execute(insert(m.StateEvent), events)
    edges = [
        {"job_id": i, "upstream_id": up, "run_if": run_if.value}
        for i, job in zip(ids, jobs, strict=True)
        for up, run_if in job.upstream_ids
    ]
    edges += [
        {"job_id": i, "upstream_id": ids[pos], "run_if": run_if.value}
        for i, job in zip(ids, jobs, strict=True)
        for pos, run_if in job.upstream_positions
    ]
    if edges:
        s.execute(insert(m.JobDependency), edges)
    return ids
