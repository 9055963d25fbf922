"""SQLAlchemy tables. The schema is owned by the alembic migrations beside this file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    notebook: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    host: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str | None] = mapped_column(Text)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(index=True)
    started: Mapped[datetime | None]
    ended: Mapped[datetime | None]
    # Queue bookkeeping (see nbjobs.dispatch): why a job waits, when a retry may start,
    # which server runs it and until when its lease holds, and a pending cancel request.
    queue_reason: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None]
    cancel_requested: Mapped[str | None] = mapped_column(Text)
    # The notebook's repository: commit, branch, remote, dirty files (nbjobs.vcs.RepoState.as_record()).
    vcs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Groups a job may belong to (see nbjobs.pipelines): a pipeline run's task, a sweep's element.
    # `hold` keeps a queued job away from the queue policy until a gate lets it go:
    # "dependencies" until its upstreams have ended, "sweep" while its sweep is at max-parallel.
    run_id: Mapped[int | None] = mapped_column(Integer)
    task: Mapped[str | None] = mapped_column(String(128))
    sweep_id: Mapped[int | None] = mapped_column(Integer)
    sweep_index: Mapped[int | None] = mapped_column(Integer)
    hold: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        Index("ix_jobs_run_state", "run_id", "state"),
        Index("ix_jobs_sweep_state", "sweep_id", "state"),
        Index("ix_jobs_hold", "hold"),
        # Keyset pagination of the jobs list, filtered by owner or state (see nbjobs.server.dashboard).
        Index("ix_jobs_owner_id", "owner", "id"),
        Index("ix_jobs_state_id", "state", "id"),
    )


class JobTag(Base):
    __tablename__ = "job_tags"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)

    __table_args__ = (Index("ix_job_tags_tag", "tag"), Index("ix_job_tags_tag_job_id", "tag", "job_id"))


class StateEvent(Base):
    __tablename__ = "state_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]


class Attempt(Base):
    __tablename__ = "attempts"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    output: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str | None] = mapped_column(Text)
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pid: Mapped[int | None] = mapped_column(Integer)  # the kernel's, to clean up after a crash
    started: Mapped[datetime | None]
    ended: Mapped[datetime | None]


class Cell(Base):
    __tablename__ = "cells"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    started: Mapped[datetime | None]
    ended: Mapped[datetime | None]


class JobDependency(Base):
    """An edge of the job graph: `job_id` waits for `upstream_id` under `run_if`."""

    __tablename__ = "job_dependencies"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    run_if: Mapped[str] = mapped_column(String(20))

    __table_args__ = (Index("ix_job_dependencies_upstream", "upstream_id"),)


class PipelineRun(Base):
    """One execution of a pipeline: its definition as run, its parameters, its own state."""

    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    owner: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(30), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    pipeline: Mapped[dict[str, Any]]  # the validated definition, notebook paths absolute
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str | None] = mapped_column(Text)  # the pipeline file, when there was one
    schedule_id: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    cancel_requested: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime]
    ended: Mapped[datetime | None]


class Sweep(Base):
    """Jobs made from one notebook and a grid (or zip) of parameter values."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    notebook: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(100))
    axes: Mapped[dict[str, Any]]  # parameter name -> its values, in the order given
    mode: Mapped[str] = mapped_column(String(10))  # grid | zip
    size: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime]


class Schedule(Base):
    """A stored definition that creates a job or a pipeline run on a cron expression."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    owner: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # notebook | pipeline
    target: Mapped[dict[str, Any]]  # {"spec": ...} or {"pipeline": ..., "params": ..., "source": ...}
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    overlap: Mapped[str] = mapped_column(String(10))  # skip | queue | allow
    catch_up: Mapped[str] = mapped_column(String(10))  # none | latest | all
    paused: Mapped[bool] = mapped_column(default=False)
    # Compare-and-set on this column is what makes one fire happen once, whatever fires it.
    next_fire_at: Mapped[datetime | None] = mapped_column(index=True)
    last_fire_at: Mapped[datetime | None]
    last_job_id: Mapped[int | None] = mapped_column(Integer)
    last_run_id: Mapped[int | None] = mapped_column(Integer)
    last_note: Mapped[str | None] = mapped_column(Text)  # what the last due time did (fired, skipped, ...)
    created: Mapped[datetime]


from nbjobs.store import people_models as people_models  # noqa: E402  (registers the 0004_people tables)


class Leader(Base):
    """Who schedules among the servers sharing this store: one row per role, held until it lapses."""

    __tablename__ = "leader"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires: Mapped[datetime]
