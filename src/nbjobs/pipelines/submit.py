"""Submitting jobs beyond one plain spec: with dependencies on stored jobs, and in batches.

`nbjobs submit --batch FILE.jsonl` checks every spec first and stores them all
in one transaction, or none: the error names the line at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nbjobs.errors import InvalidInput
from nbjobs.spec import JobSpec, RunIf
from nbjobs.store import Store
from nbjobs.store import models as m
from nbjobs.store.batch import HOLD_DEPENDENCIES, NewJob, insert_jobs
from nbjobs.store.repository import utcnow

if TYPE_CHECKING:
    from nbjobs.service import JobService

MAX_BATCH = 10_000


def upstream_ids(store: Store, spec: JobSpec) -> list[tuple[int, RunIf]]:
    """The stored jobs a spec's `depends_on` names; InvalidInput for a name or an unknown id."""
    wanted: list[tuple[int, RunIf]] = []
    for dep in spec.depends_on:
        job = dep.job
        if isinstance(job, str):
            if not job.strip().isdigit():
                raise InvalidInput(
                    f"`depends_on`: {job!r} is a task name, which only means something inside a pipeline; "
                    "outside one, name upstream jobs by id."
                )
            job = int(job)
        wanted.append((job, dep.run_if))
    if not wanted:
        return []
    with store.session() as s:
        found = set(s.scalars(select(m.Job.id).where(m.Job.id.in_([j for j, _ in wanted]))))
    missing = [str(j) for j, _ in wanted if j not in found]
    if missing:
        raise InvalidInput(f"`depends_on`: no job with id {', '.join(missing)}; `nbjobs ls` lists the jobs.")
    return wanted


def dependent_job(spec: JobSpec, upstreams: list[tuple[int, RunIf]]) -> NewJob:
    """A new job held until its upstreams allow it to start."""
    if not upstreams:
        return NewJob(spec=spec)
    return NewJob(
        spec=spec,
        hold=HOLD_DEPENDENCIES,
        queue_reason="waiting for its upstream jobs",
        upstream_ids=upstreams,
    )


def submit_dependent(jobs: JobService, spec: JobSpec, owner: str) -> int:
    """Store one checked job that has dependencies (they are checked here)."""
    new = dependent_job(spec, upstream_ids(jobs.store, spec))
    with jobs.store.session() as s, s.begin():
        return insert_jobs(s, [new], owner=owner, host=jobs.host, now=utcnow())[0]


def submit_batch(jobs: JobService, specs: Sequence[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
    """Check every spec, then store all in one transaction; (id, created) per spec, in order.

    A spec whose idempotency key names a stored job gives that job (created false).
    """
    if not specs:
        raise InvalidInput("The batch is empty: give one job spec per line.")
    if len(specs) > MAX_BATCH:
        raise InvalidInput(f"The batch has {len(specs)} specs; at most {MAX_BATCH} go in one request.")
    new: list[NewJob | int] = []
    keys: dict[str, int] = {}
    for line, data in enumerate(specs, start=1):
        try:
            spec = jobs.validate(data)
            key = spec.idempotency_key
            if key and key in keys:
                raise InvalidInput(f"idempotency key {key!r} is also used on line {keys[key]}.")
            if key:
                keys[key] = line
            existing = jobs.store.find_by_idempotency_key(key) if key else None
            new.append(existing if existing is not None else dependent_job(spec, upstream_ids(jobs.store, spec)))
        except InvalidInput as exc:
            raise InvalidInput(f"Line {line}: {exc}") from None
    fresh = [job for job in new if isinstance(job, NewJob)]
    with jobs.store.session() as s, s.begin():
        ids = iter(insert_jobs(s, fresh, owner=owner, host=jobs.host, now=utcnow()))
    jobs.dispatcher.wake()
    return [
        {"id": job, "created": False} if isinstance(job, int) else {"id": next(ids), "created": True} for job in new
    ]
