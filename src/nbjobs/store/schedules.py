"""Store rows of schedules, and the compare-and-set that makes each fire happen once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nbjobs.errors import Conflict, NotFound
from nbjobs.store import Store
from nbjobs.store import models as m
from nbjobs.store.repository import utcnow


def no_schedule(name: str) -> str:
    """What a missing schedule (and another user's) is answered with."""
    return f"No schedule named {name!r}; `nbjobs schedule ls` lists the schedules there are."


def add_schedule(store: Store, **fields: Any) -> int:
    try:
        with store.session() as s, s.begin():
            row = m.Schedule(created=utcnow(), paused=False, **fields)
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:
        raise Conflict(
            f"A schedule named {fields['name']!r} exists already; remove it first (`nbjobs schedule rm`)."
        ) from None


def get_schedule(store: Store, name: str) -> m.Schedule:
    with store.session() as s:
        row = s.scalar(select(m.Schedule).where(m.Schedule.name == name))
    if row is None:
        raise NotFound(no_schedule(name))
    return row


def list_schedules(store: Store) -> list[m.Schedule]:
    with store.session() as s:
        return list(s.scalars(select(m.Schedule).order_by(m.Schedule.name)))


def due_schedules(store: Store, now: datetime) -> list[m.Schedule]:
    with store.session() as s:
        query = select(m.Schedule).where(m.Schedule.paused.is_(False), m.Schedule.next_fire_at <= now)
        return list(s.scalars(query.order_by(m.Schedule.next_fire_at)))


def set_paused(store: Store, name: str, paused: bool, next_fire_at: datetime | None) -> None:
    with store.session() as s, s.begin():
        values: dict[str, Any] = {"paused": paused}
        if next_fire_at is not None:
            values["next_fire_at"] = next_fire_at
        if s.execute(update(m.Schedule).where(m.Schedule.name == name).values(**values)).rowcount == 0:
            raise NotFound(f"No schedule named {name!r}.")


def remove_schedule(store: Store, name: str) -> None:
    with store.session() as s, s.begin():
        if s.execute(delete(m.Schedule).where(m.Schedule.name == name)).rowcount == 0:
            raise NotFound(no_schedule(name))


def claim_fire(s: Session, schedule_id: int, expected: datetime, following: datetime, note: str) -> bool:
    """Move the schedule's next fire time on, if it still is `expected`: only one claimer wins.

    Run in the transaction that creates the fire's jobs, so a fire is claimed and
    made together, or neither.
    """
    stmt = (
        update(m.Schedule)
        .where(m.Schedule.id == schedule_id, m.Schedule.next_fire_at == expected)
        .values(next_fire_at=following, last_note=note)
    )
    return s.execute(stmt).rowcount == 1


def record_fire(s: Session, schedule_id: int, at: datetime, *, job_id: int | None, run_id: int | None) -> None:
    s.execute(
        update(m.Schedule)
        .where(m.Schedule.id == schedule_id)
        .values(last_fire_at=at, last_job_id=job_id, last_run_id=run_id)
    )


def set_note(s: Session, schedule_id: int, note: str) -> None:
    s.execute(update(m.Schedule).where(m.Schedule.id == schedule_id).values(last_note=note))


def unfinished_of_previous(s: Session, schedule: m.Schedule) -> list[int]:
    """Ids of the unfinished jobs of the schedule's last fire (its job, or its run's tasks)."""
    unfinished = ("queued", "starting", "running")
    if schedule.last_job_id is not None:
        query = select(m.Job.id).where(m.Job.id == schedule.last_job_id, m.Job.state.in_(unfinished))
    elif schedule.last_run_id is not None:
        query = select(m.Job.id).where(m.Job.run_id == schedule.last_run_id, m.Job.state.in_(unfinished))
    else:
        return []
    return list(s.scalars(query))
