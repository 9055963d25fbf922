"""A small repository API over the store's tables.

Every state change is one transaction: a compare-and-set update of the job row
plus a timestamped history row, so two writers (API and scheduler, or two
servers) never overwrite each other's transition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from nbjobs.errors import NotFound
from nbjobs.spec import JobSpec, JobState
from nbjobs.store import models as m
from nbjobs.store.migrate import upgrade_to_head
from nbjobs.store.records import AttemptRecord, CellRecord, JobRecord, StateChange


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (`nbjobs ls`) run while a job writes; wait rather than fail on a lock.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Jobs, attempts, cells and state history, in one SQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        upgrade_to_head(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    # ------------------------------------------------------------------ writes

    def create_job(self, spec: JobSpec, *, owner: str, host: str, state: JobState = JobState.QUEUED) -> int:
        now = utcnow()
        with self.session() as s, s.begin():
            job = m.Job(
                name=spec.display_name,
                notebook=spec.notebook,
                owner=owner,
                host=host,
                state=state.value,
                spec=spec.model_dump(mode="json"),
                priority=spec.priority,
                idempotency_key=spec.idempotency_key,
                results={},
                created=now,
            )
            s.add(job)
            s.flush()
            s.add_all(m.JobTag(job_id=job.id, tag=tag) for tag in spec.tags)
            s.add(m.StateEvent(job_id=job.id, attempt=0, state=state.value, at=now))
            return job.id

    def find_by_idempotency_key(self, key: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(m.Job.id).where(m.Job.idempotency_key == key))

    def begin_attempt(
        self, job_id: int, number: int, *, host: str, output: str, log: str, cells: Iterable[int]
    ) -> None:
        """Register attempt `number` with its paths and its code cells, all pending."""
        with self.session() as s, s.begin():
            s.add(
                m.Attempt(
                    job_id=job_id,
                    number=number,
                    state=JobState.STARTING.value,
                    host=host,
                    output=output,
                    log=log,
                    artifacts=[],
                    usage={},
                )
            )
            s.execute(update(m.Job).where(m.Job.id == job_id).values(attempt=number, output=output, log=log))
            rows = [{"job_id": job_id, "attempt": number, "index": i, "status": "pending"} for i in cells]
            if rows:
                s.execute(insert(m.Cell), rows)

    def transition(
        self,
        job_id: int,
        state: JobState,
        reason: str | None = None,
        *,
        expect: Sequence[JobState] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a job (and its current attempt) to `state`; False if it was not in `expect`.

        `fields` are further job columns to set in the same update (lease, not_before, ...).
        """
        now = utcnow()
        values: dict[str, Any] = {"state": state.value, "reason": reason, **fields}
        if state is JobState.RUNNING:
            values["started"] = now
        if state.is_final:
            values.update(ended=now, lease_owner=None, lease_expires=None, queue_reason=None)
        if state is JobState.QUEUED:
            values.update(lease_owner=None, lease_expires=None)
        with self.session() as s, s.begin():
            stmt = update(m.Job).where(m.Job.id == job_id)
            if expect is not None:
                stmt = stmt.where(m.Job.state.in_([e.value for e in expect]))
            if s.execute(stmt.values(**values)).rowcount == 0:
                return False
            attempt = s.scalar(select(m.Job.attempt).where(m.Job.id == job_id)) or 0
            # The attempt row follows its own run and end; queued/starting belong to the job
            # (a retry's claim happens before the new attempt's row exists).
            if attempt and (state is JobState.RUNNING or state.is_final):
                att = {k: v for k, v in values.items() if k in ("state", "reason", "started", "ended")}
                s.execute(
                    update(m.Attempt).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt).values(**att)
                )
            s.add(m.StateEvent(job_id=job_id, attempt=attempt, state=state.value, reason=reason, at=now))
        return True

    def update_cell(
        self,
        job_id: int,
        attempt: int,
        index: int,
        status: str,
        *,
        started: datetime | None = None,
        ended: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if started is not None:
            values["started"] = started
        if ended is not None:
            values["ended"] = ended
        with self.session() as s, s.begin():
            s.execute(
                update(m.Cell)
                .where(m.Cell.job_id == job_id, m.Cell.attempt == attempt, m.Cell.index == index)
                .values(**values)
            )

    def finish_attempt(
        self,
        job_id: int,
        attempt: int,
        *,
        results: dict[str, Any],
        artifacts: list[str],
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Store what an attempt produced (its end state is set by `transition`)."""
        with self.session() as s, s.begin():
            # The job row first, then the attempt's, as `transition` does: one lock order, no deadlock.
            s.execute(update(m.Job).where(m.Job.id == job_id).values(results=results))
            s.execute(
                update(m.Attempt)
                .where(m.Attempt.job_id == job_id, m.Attempt.number == attempt)
                .values(artifacts=artifacts, usage=usage or {})
            )

    def set_attempt_output(self, job_id: int, attempt: int, output: str) -> None:
        with self.session() as s, s.begin():
            s.execute(
                update(m.Attempt).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt).values(output=output)
            )

    def set_attempt_pid(self, job_id: int, attempt: int, pid: int | None) -> None:
        with self.session() as s, s.begin():
            s.execute(update(m.Attempt).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt).values(pid=pid))

    def set_queue_reasons(self, reasons: dict[int, str]) -> None:
        """Record why each waiting job waits (only rows whose reason changed are written)."""
        if not reasons:
            return
        with self.session() as s, s.begin():
            current = dict(s.execute(select(m.Job.id, m.Job.queue_reason).where(m.Job.id.in_(list(reasons)))).all())
            for job_id, reason in reasons.items():
                if job_id in current and current[job_id] != reason:
                    s.execute(
                        update(m.Job)
                        .where(m.Job.id == job_id, m.Job.state == JobState.QUEUED.value)
                        .values(queue_reason=reason)
                    )

    def request_cancel(self, job_id: int, reason: str) -> None:
        with self.session() as s, s.begin():
            s.execute(update(m.Job).where(m.Job.id == job_id).values(cancel_requested=reason))

    def take_cancel_requests(self, owner: str) -> dict[int, str]:
        """Cancel requests for the jobs `owner` runs (made through another server), cleared as taken."""
        with self.session() as s, s.begin():
            rows = dict(
                s.execute(
                    select(m.Job.id, m.Job.cancel_requested).where(
                        m.Job.lease_owner == owner, m.Job.cancel_requested.is_not(None)
                    )
                ).all()
            )
            if rows:
                s.execute(update(m.Job).where(m.Job.id.in_(list(rows))).values(cancel_requested=None))
        return rows

    def renew_leases(self, owner: str, until: datetime) -> None:
        with self.session() as s, s.begin():
            s.execute(update(m.Job).where(m.Job.lease_owner == owner).values(lease_expires=until))

    def queued(self) -> list[m.Job]:
        """Jobs waiting in the queue, oldest first (detached rows: read-only use)."""
        with self.session() as s:
            return list(s.scalars(select(m.Job).where(m.Job.state == JobState.QUEUED.value).order_by(m.Job.id)))

    def active(self) -> list[m.Job]:
        """Jobs starting or running, on any server."""
        active = [JobState.STARTING.value, JobState.RUNNING.value]
        with self.session() as s:
            return list(s.scalars(select(m.Job).where(m.Job.state.in_(active)).order_by(m.Job.id)))

    def attempt_pid(self, job_id: int, attempt: int) -> int | None:
        with self.session() as s:
            return s.scalar(select(m.Attempt.pid).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt))

    def count_by_state(self) -> dict[str, int]:
        from sqlalchemy import func

        with self.session() as s:
            return dict(s.execute(select(m.Job.state, func.count()).group_by(m.Job.state)).all())

    # ------------------------------------------------------------------- reads

    def get(self, job_id: int) -> JobRecord:
        records = self._records(select(m.Job).where(m.Job.id == job_id))
        if not records:
            raise NotFound(f"No job with id {job_id}; `nbjobs ls` lists the jobs there are.")
        return records[0]

    def list(
        self,
        *,
        states: Sequence[JobState] = (),
        name: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Newest first, filtered by any of `states`, a name substring and a tag."""
        query = select(m.Job).order_by(m.Job.id.desc()).limit(limit).offset(offset)
        if states:
            query = query.where(m.Job.state.in_([s.value for s in states]))
        if name:
            query = query.where(m.Job.name.contains(name, autoescape=True))
        if tag:
            query = query.where(m.Job.id.in_(select(m.JobTag.job_id).where(m.JobTag.tag == tag)))
        return self._records(query)

    def _records(self, query: Any) -> list[JobRecord]:
        with self.session() as s:
            jobs = list(s.scalars(query))
            if not jobs:
                return []
            ids = [j.id for j in jobs]
            tags = _group(s.execute(select(m.JobTag.job_id, m.JobTag.tag).where(m.JobTag.job_id.in_(ids))))
            attempts = _group_rows(
                s.scalars(select(m.Attempt).where(m.Attempt.job_id.in_(ids)).order_by(m.Attempt.number))
            )
            events = _group_rows(
                s.scalars(select(m.StateEvent).where(m.StateEvent.job_id.in_(ids)).order_by(m.StateEvent.id))
            )
            cells = _group_rows(
                s.scalars(
                    select(m.Cell)
                    .join(m.Job, (m.Job.id == m.Cell.job_id) & (m.Job.attempt == m.Cell.attempt))
                    .where(m.Cell.job_id.in_(ids))
                    .order_by(m.Cell.index)
                )
            )
        return [
            _to_record(j, tags.get(j.id, []), attempts.get(j.id, []), events.get(j.id, []), cells.get(j.id, []))
            for j in jobs
        ]


def _group(rows: Iterable[Any]) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = {}
    for job_id, value in rows:
        grouped.setdefault(job_id, []).append(value)
    return grouped


def _group_rows(rows: Iterable[Any]) -> dict[int, list[Any]]:
    return _group((row.job_id, row) for row in rows)


def _to_record(
    job: m.Job, tags: list[str], attempts: list[m.Attempt], events: list[m.StateEvent], cells: list[m.Cell]
) -> JobRecord:
    attempt_records = [
        AttemptRecord(
            number=a.number,
            state=JobState(a.state),
            reason=a.reason,
            host=a.host,
            started=a.started,
            ended=a.ended,
            output=a.output,
            log=a.log,
            artifacts=a.artifacts or [],
            usage=a.usage or {},
            pid=a.pid,
        )
        for a in attempts
    ]
    current = attempt_records[-1] if attempt_records else None
    duration = None
    if current and current.started and current.ended:
        duration = (current.ended - current.started).total_seconds()
    return JobRecord(
        id=job.id,
        name=job.name,
        state=JobState(job.state),
        reason=job.reason,
        notebook=job.notebook,
        owner=job.owner,
        host=job.host,
        priority=job.priority,
        tags=sorted(tags),
        parameters=job.spec.get("parameters", {}),
        output=job.output,
        log=job.log,
        created=job.created,
        started=job.started,
        ended=job.ended,
        duration=duration,
        cells=[CellRecord(index=c.index, status=c.status, started=c.started, ended=c.ended) for c in cells],
        results=job.results or {},
        artifacts=current.artifacts if current else [],
        attempts=attempt_records,
        history=[StateChange(state=JobState(e.state), at=e.at, attempt=e.attempt, reason=e.reason) for e in events],
        spec=job.spec,
        idempotency_key=job.idempotency_key,
        queue_reason=job.queue_reason,
        not_before=job.not_before,
    )
