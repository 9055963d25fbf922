"""A small repository API over the store's tables.

Every state change is one transaction: a compare-and-set update of the job row
plus a timestamped history row, so two writers (API and scheduler, or two
servers) never overwrite each other's transition.

Writes on the scheduler's hot path (transitions, cells, attempt results) run as
Core statements on a connection, not through an ORM session: the session's unit
of work costs milliseconds per statement, which the pipeline benchmark showed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from nbjobs.errors import NotFound
from nbjobs.spec import END_STATES, JobSpec, JobState
from nbjobs.store import models as m
from nbjobs.store.migrate import upgrade_to_head
from nbjobs.store.records import AttemptRecord, CellRecord, GitRecord, JobRecord, StateChange, UsageRecord


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
        # Told of every state change once it is committed: (job id, state, reason, attempt).
        # The server's event stream, webhooks and metrics subscribe (see nbjobs.server.events).
        self.state_listeners: list[Callable[[int, JobState, str | None, int], None]] = []

    def _announce(self, job_id: int, state: JobState, reason: str | None, attempt: int) -> None:
        for listener in self.state_listeners:
            listener(job_id, state, reason, attempt)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        return self._session()

    # ------------------------------------------------------------------ writes

    def create_job(
        self,
        spec: JobSpec,
        *,
        owner: str,
        host: str,
        state: JobState = JobState.QUEUED,
        vcs: dict[str, Any] | None = None,
    ) -> int:
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
                vcs=vcs,
            )
            s.add(job)
            s.flush()
            s.add_all(m.JobTag(job_id=job.id, tag=tag) for tag in spec.tags)
            s.add(m.StateEvent(job_id=job.id, attempt=0, state=state.value, at=now))
            job_id = job.id
        self._announce(job_id, state, None, 0)
        return job_id

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
        jobs, attempts = m.Job.__table__, m.Attempt.__table__
        # Core statements, not the ORM: this runs several times per job and its cost is the scheduler's.
        with self.engine.begin() as conn:
            stmt = jobs.update().where(jobs.c.id == job_id)
            if expect is not None:
                stmt = stmt.where(jobs.c.state.in_([e.value for e in expect]))
            row = conn.execute(stmt.values(**values).returning(jobs.c.attempt)).first()
            if row is None:
                return False
            attempt = row[0] or 0
            # The attempt row follows its own run and end; queued/starting belong to the job
            # (a retry's claim happens before the new attempt's row exists).
            if attempt and (state is JobState.RUNNING or state.is_final):
                att = {k: v for k, v in values.items() if k in ("state", "reason", "started", "ended")}
                conn.execute(
                    attempts.update().where(attempts.c.job_id == job_id, attempts.c.number == attempt).values(**att)
                )
            conn.execute(
                m.StateEvent.__table__.insert().values(
                    job_id=job_id, attempt=attempt, state=state.value, reason=reason, at=now
                )
            )
        self._announce(job_id, state, reason, attempt)
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
        cells = m.Cell.__table__
        with self.engine.begin() as conn:
            conn.execute(
                cells.update()
                .where(cells.c.job_id == job_id, cells.c.attempt == attempt, cells.c.index == index)
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
        with self.engine.begin() as s:
            # The job row first, then the attempt's, as `transition` does: one lock order, no deadlock.
            s.execute(update(m.Job).where(m.Job.id == job_id).values(results=results))
            s.execute(
                update(m.Attempt)
                .where(m.Attempt.job_id == job_id, m.Attempt.number == attempt)
                .values(artifacts=artifacts, usage=usage or {})
            )

    def set_attempt_output(self, job_id: int, attempt: int, output: str) -> None:
        with self.engine.begin() as s:
            s.execute(
                update(m.Attempt).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt).values(output=output)
            )

    def set_attempt_pid(self, job_id: int, attempt: int, pid: int | None) -> None:
        with self.engine.begin() as s:
            s.execute(update(m.Attempt).where(m.Attempt.job_id == job_id, m.Attempt.number == attempt).values(pid=pid))

    def set_queue_reasons(self, reasons: dict[int, str]) -> None:
        """Record why each waiting job waits (only rows whose reason changed are written)."""
        if not reasons:
            return
        with self.engine.begin() as s:
            current = dict(s.execute(select(m.Job.id, m.Job.queue_reason).where(m.Job.id.in_(list(reasons)))).all())
            for job_id, reason in reasons.items():
                if job_id in current and current[job_id] != reason:
                    s.execute(
                        update(m.Job)
                        .where(m.Job.id == job_id, m.Job.state == JobState.QUEUED.value)
                        .values(queue_reason=reason)
                    )

    def request_cancel(self, job_id: int, reason: str) -> None:
        with self.engine.begin() as s:
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
        with self.engine.begin() as s:
            s.execute(update(m.Job).where(m.Job.lease_owner == owner).values(lease_expires=until))

    def queued(self) -> list[m.Job]:
        """Jobs waiting in the queue, oldest first (detached rows: read-only use)."""
        with self.session() as s:
            # Held jobs (upstreams unfinished, sweep at its max-parallel) wait for a gate, not the policy.
            query = select(m.Job).where(m.Job.state == JobState.QUEUED.value, m.Job.hold.is_(None))
            return list(s.scalars(query.order_by(m.Job.id)))

    def queued_ids(self) -> list[tuple[int, datetime | None]]:
        """(id, not_before) of every queued job: cheap enough to read on every dispatcher pass."""
        with self.session() as s:
            # Held jobs (upstreams unfinished, sweep at its max-parallel) wait for a gate, not the policy.
            query = select(m.Job.id, m.Job.not_before).where(m.Job.state == JobState.QUEUED.value, m.Job.hold.is_(None))
            rows = s.execute(query)
            return [(job_id, not_before) for job_id, not_before in rows]

    def jobs_by_id(self, ids: Sequence[int]) -> list[m.Job]:
        """Job rows (detached, read-only use), in batches to keep each IN list short."""
        rows: list[m.Job] = []
        with self.session() as s:
            for start in range(0, len(ids), 500):
                rows += s.scalars(select(m.Job).where(m.Job.id.in_(ids[start : start + 500])))
        return rows

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
        owner: str | None = None,
        before: int | None = None,
    ) -> list[JobRecord]:
        """Newest first, filtered by any of `states`, a name substring, a tag and an owner.

        `before` pages by id (keyset): jobs with a smaller id, so a page costs the same deep in the list.
        """
        query = select(m.Job).order_by(m.Job.id.desc()).limit(limit).offset(offset)
        if owner is not None:
            query = query.where(m.Job.owner == owner)
        if before is not None:
            query = query.where(m.Job.id < before)
        if states:
            query = query.where(m.Job.state.in_([s.value for s in states]))
        if name:
            query = query.where(m.Job.name.contains(name, autoescape=True))
        if tag:
            query = query.where(m.Job.id.in_(select(m.JobTag.job_id).where(m.JobTag.tag == tag)))
        return self._records(query)

    def usage(self, *, states: Sequence[JobState] = END_STATES, since: datetime | None = None) -> list[UsageRecord]:
        """Requested resources and the last attempt's usage of every job in `states` (finished by default)."""
        chosen = select(m.Job.id).where(m.Job.state.in_([s.value for s in states]))
        if since is not None:
            chosen = chosen.where(m.Job.created >= since)
        query = (
            select(m.Job, m.Attempt.usage)
            .join(m.Attempt, (m.Attempt.job_id == m.Job.id) & (m.Attempt.number == m.Job.attempt))
            .where(m.Job.id.in_(chosen))
            .order_by(m.Job.id)
        )
        with self.session() as s:
            rows = s.execute(query).all()
            # A subquery, not a list of ids: a report may span more jobs than SQLite takes parameters.
            tags = _group(s.execute(select(m.JobTag.job_id, m.JobTag.tag).where(m.JobTag.job_id.in_(chosen))))
        return [
            UsageRecord(
                job_id=job.id,
                name=job.name,
                notebook=job.notebook,
                owner=job.owner,
                tags=sorted(tags.get(job.id, [])),
                state=JobState(job.state),
                requested=job.spec.get("resources", {}),
                usage=usage or {},
            )
            for job, usage in rows
        ]

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
        git=GitRecord.model_validate(job.vcs) if job.vcs else None,
        run_id=job.run_id,
        task=job.task,
        sweep_id=job.sweep_id,
        sweep_index=job.sweep_index,
    )
