"""The event stream: every state change, cell start and end, log line and usage
sample of every job, kept in the `events` table and pushed to live subscribers.

Producers (the store's state listener, the runner's event sink) call `publish`
from any thread; nothing is written there. Every `FLUSH_SECONDS` the hub writes
what came in as one batch (log text of one job and stream is merged, so a
chatty notebook costs one row per flush, not one per line), then hands the
stored events, now with their ids, to in-process listeners (webhooks, metrics)
and wakes the Server-Sent Events streams. Since a stream only ever sends stored
events, a client that reconnects with `Last-Event-ID` gets exactly what it missed.

The stream of any set of jobs is one call: `sse_response(request, hub, filter)`
with an `EventFilter` (or any object with `matches` and `where`); e.g. a
pipeline run's stream is the filter of its jobs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, func, insert, select

from nbjobs.backends.base import Launch
from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event, EventSink, StreamText
from nbjobs.spec import JobState
from nbjobs.store import Store
from nbjobs.store.models import Job
from nbjobs.store.people_models import EventRow
from nbjobs.store.repository import utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
KEEP_IN_MEMORY = 20_000  # recent events a stream can catch up from without reading the store
MAX_MERGED_TEXT = 64 * 1024
KEEPALIVE_SECONDS = 15.0
READ_BATCH = 1000


@dataclass(frozen=True)
class StreamEvent:
    id: int
    job_id: int | None
    owner: str | None
    kind: str
    data: dict[str, Any]
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "kind": self.kind, "at": self.at.isoformat(), **self.data}

    def to_sse(self) -> str:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.to_json(), default=str)}\n\n"


class Filter(Protocol):
    def matches(self, event: StreamEvent) -> bool: ...

    def where(self, query: Select[Any]) -> Select[Any]: ...


@dataclass(frozen=True)
class EventFilter:
    """Events of some jobs (None: all) of one owner (None: anyone's, for admins)."""

    job_ids: frozenset[int] | None = None
    owner: str | None = None

    def matches(self, event: StreamEvent) -> bool:
        if self.job_ids is not None and event.job_id not in self.job_ids:
            return False
        return self.owner is None or event.owner == self.owner

    def where(self, query: Select[Any]) -> Select[Any]:
        if self.job_ids is not None:
            query = query.where(EventRow.job_id.in_(self.job_ids))
        if self.owner is not None:
            query = query.where(EventRow.owner == self.owner)
        return query


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def describe_runner_event(event: Event | Any, attempt: int) -> tuple[str, dict[str, Any]]:
    """(kind, data) of one runner event; events added later (usage samples, ...) pass through by class name."""
    match event:
        case CellStarted(index=i, at=at):
            return "cell_started", {"index": i, "attempt": attempt, "started": at.isoformat()}
        case CellFinished(index=i, status=status, started=started, ended=ended):
            duration = round((ended - started).total_seconds(), 3)
            return "cell_finished", {"index": i, "attempt": attempt, "status": status, "duration": duration}
        case CellSkipped(index=i):
            return "cell_skipped", {"index": i, "attempt": attempt}
        case StreamText(index=i, name=name, text=text):
            return "log", {"index": i, "attempt": attempt, "name": name, "text": text}
    data = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {"value": repr(event)}
    kind = _snake(type(event).__name__)
    if kind.startswith("usage"):
        kind = "usage"
    return kind, {"attempt": attempt, **_jsonable(data)}


EventListener = Callable[[StreamEvent], None]


class EventHub:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[EventListener] = []
        self._pending: list[tuple[int | None, str, dict[str, Any], datetime]] = []
        self._lock = threading.Lock()
        self._owners: dict[int, str] = {}
        with store.session() as s:
            self.last_id: int = s.scalar(select(func.max(EventRow.id))) or 0
        self._base = self.last_id  # events after this id are in memory
        self._recent: list[StreamEvent] = []
        self._recent_ids: list[int] = []
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # -------------------------------------------------------------- producers

    def publish(self, job_id: int | None, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the next flush; safe from any thread."""
        with self._lock:
            self._pending.append((job_id, kind, data, utcnow()))

    def on_state(self, job_id: int, state: JobState, reason: str | None, attempt: int) -> None:
        """The store's state listener."""
        self.publish(job_id, "state", {"state": state.value, "reason": reason, "attempt": attempt})

    def job_sink(self, launch: Launch) -> EventSink:
        """The runner events of one attempt, published as this job's events."""

        def emit(event: Event) -> None:
            kind, data = describe_runner_event(event, launch.attempt)
            self.publish(launch.job_id, kind, data)

        return emit

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="event-hub")

    async def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        self._wake()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # a failed write must not stop the stream; the batch is retried
                log.exception("event flush failed")

    async def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            stored = await asyncio.to_thread(self._write, _merge_logs(batch))
        except Exception:
            with self._lock:
                self._pending[:0] = batch
            raise
        self._remember(stored)
        for event in stored:
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed")
        self._wake()

    def _write(self, batch: list[tuple[int | None, str, dict[str, Any], datetime]]) -> list[StreamEvent]:
        unknown = {job_id for job_id, *_ in batch if job_id is not None and job_id not in self._owners}
        rows = []
        with self.store.session() as s, s.begin():
            if unknown:
                self._owners.update(s.execute(select(Job.id, Job.owner).where(Job.id.in_(unknown))).all())
            rows = [
                {
                    "job_id": job_id,
                    "owner": self._owners.get(job_id) if job_id else None,
                    "kind": kind,
                    "data": data,
                    "at": at,
                }
                for job_id, kind, data, at in batch
            ]
            ids = s.scalars(insert(EventRow).returning(EventRow.id, sort_by_parameter_order=True), rows).all()
        if len(self._owners) > 100_000:
            self._owners.clear()
        return [StreamEvent(id=i, **row) for i, row in zip(ids, rows, strict=True)]

    def _remember(self, events: list[StreamEvent]) -> None:
        self._recent.extend(events)
        self._recent_ids.extend(e.id for e in events)
        self.last_id = max(self.last_id, events[-1].id)
        if len(self._recent) > KEEP_IN_MEMORY * 1.5:
            drop = len(self._recent) - KEEP_IN_MEMORY
            self._base = self._recent_ids[drop - 1]
            del self._recent[:drop], self._recent_ids[:drop]

    def close_streams(self) -> None:
        """End every open event stream (at shutdown: they never end by themselves)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        woken, self._new = self._new, asyncio.Event()
        woken.set()

    # -------------------------------------------------------------- consumers

    def recent_after(self, cursor: int) -> list[StreamEvent] | None:
        """Events after `cursor` from memory; None when they are older than what memory holds."""
        if cursor < self._base:
            return None
        return self._recent[bisect.bisect_right(self._recent_ids, cursor) :]

    def read_after(self, cursor: int, flt: Filter, limit: int = READ_BATCH) -> tuple[list[StreamEvent], int]:
        """Stored events after `cursor` that match, and the cursor to go on from."""
        reached = self.last_id  # every event up to here is committed
        query = flt.where(select(EventRow).where(EventRow.id > cursor)).order_by(EventRow.id).limit(limit)
        with self.store.session() as s:
            rows = list(s.scalars(query))
        events = [StreamEvent(r.id, r.job_id, r.owner, r.kind, r.data, r.at) for r in rows]
        if len(events) == limit:
            return events, events[-1].id
        return events, max(reached, events[-1].id if events else cursor)

    async def wait_for_new(self, cursor: int, timeout: float) -> bool:
        """Wait until an event after `cursor` is stored; False on timeout."""
        waiter = self._new
        if self.last_id > cursor:
            return True
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def follow(self, flt: Filter, cursor: int) -> AsyncIterator[StreamEvent | None]:
        """Matching events after `cursor`, forever; None now and then when nothing happens (keep-alive)."""
        while not self.closed:
            recent = self.recent_after(cursor)
            if recent is None:
                events, cursor = await asyncio.to_thread(self.read_after, cursor, flt)
                for event in events:
                    yield event
                continue
            if recent:
                cursor = recent[-1].id
                for event in recent:
                    if flt.matches(event):
                        yield event
                continue
            if not await self.wait_for_new(cursor, KEEPALIVE_SECONDS):
                yield None


def last_event_id(request: Request, default: int) -> int:
    """Where a (re)connecting client resumes: the Last-Event-ID header, else `?after=`, else `default`."""
    for raw in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if raw is not None and raw.strip().isdigit() and len(raw.strip()) < 19:
            return int(raw.strip())
    return default


def sse_response(request: Request, hub: EventHub, flt: Filter, *, after: int) -> StreamingResponse:
    """A text/event-stream of the events that match `flt` after id `after`."""

    start = min(after, hub.last_id)  # an id from the future (another store?) would hide everything

    async def body() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for event in hub.follow(flt, start):
            yield ": keep-alive\n\n" if event is None else event.to_sse()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _merge_logs(
    batch: Iterable[tuple[int | None, str, dict[str, Any], datetime]],
) -> list[tuple[int | None, str, dict[str, Any], datetime]]:
    """Consecutive log text of one job, stream and cell becomes one event (other jobs' events may interleave)."""
    merged: list[tuple[int | None, str, dict[str, Any], datetime]] = []
    open_log: dict[int | None, int] = {}  # job -> position of its last log event, while nothing else came
    for job_id, kind, data, at in batch:
        if kind == "log":
            pos = open_log.get(job_id)
            if pos is not None:
                prev = merged[pos][2]
                same = (prev["name"], prev["index"], prev["attempt"]) == (data["name"], data["index"], data["attempt"])
                if same and len(prev["text"]) + len(data["text"]) <= MAX_MERGED_TEXT:
                    prev["text"] += data["text"]
                    continue
            open_log[job_id] = len(merged)
            merged.append((job_id, kind, dict(data), at))
        else:
            open_log.pop(job_id, None)
            merged.append((job_id, kind, data, at))
    return merged
