"""Schedules: stored definitions that create a job or a pipeline run on a cron, and the loop that fires them.

Firing is safe with several schedulers on one store: a fire is claimed with a
compare-and-set on the schedule's `next_fire_at` in the same transaction that
creates its job or run, and each fire carries the idempotency key
`schedule:ID:TIME`, so a fire happens once whoever gets there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nbjobs.errors import InvalidInput
from nbjobs.pipelines.checks import Plan
from nbjobs.pipelines.model import Pipeline
from nbjobs.pipelines.runs import PipelineService
from nbjobs.scheduler.firing import CatchUp, Overlap, fires_due, next_fire, upcoming, valid_cron
from nbjobs.spec import JobSpec, RunIf, Schedule
from nbjobs.store import models as m
from nbjobs.store import schedules as rows
from nbjobs.store.batch import NewJob, insert_jobs
from nbjobs.store.repository import utcnow

if TYPE_CHECKING:
    from nbjobs.service import JobService

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
TICK_SECONDS = 1.0


class ScheduleRequest(BaseModel):
    """A schedule to add: a notebook job spec or a pipeline, a cron, and its policies."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="Five-field cron expression, e.g. '0 6 * * *'")
    timezone: str = "UTC"
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.LATEST
    spec: JobSpec | None = None
    pipeline: Pipeline | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Run parameters of the pipeline")
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ScheduleRequest:
        Schedule(cron=self.cron, timezone=self.timezone)  # zone and field count, with its messages
        if not valid_cron(self.cron):
            raise ValueError(f"{self.cron!r} is not a valid cron expression (e.g. '0 6 * * *': daily at 06:00)")
        if (self.spec is None) == (self.pipeline is None):
            raise ValueError("give exactly one of `spec` (a notebook job) and `pipeline`")
        return self


class ScheduleService:
    def __init__(self, jobs: JobService, clock: Clock | None = None) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.pipelines = PipelineService(jobs)
        self.clock: Clock = clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------ definitions

    def add(self, request: ScheduleRequest, owner: str) -> dict[str, Any]:
        if request.spec is not None:
            kind, target = "notebook", {"spec": self.jobs.validate(request.spec).model_dump(mode="json")}
        else:
            assert request.pipeline is not None
            self.pipelines.plan(request.pipeline, request.params)  # refuse now what would fail every fire
            kind = "pipeline"
            target = {"pipeline": request.pipeline.to_json(), "params": request.params, "source": request.source}
        rows.add_schedule(
            self.store,
            name=request.name,
            owner=owner,
            kind=kind,
            target=target,
            cron=request.cron,
            timezone=request.timezone,
            overlap=request.overlap.value,
            catch_up=request.catch_up.value,
            next_fire_at=next_fire(request.cron, request.timezone, self.clock()),
        )
        return self.view(rows.get_schedule(self.store, request.name))

    def list(self) -> list[dict[str, Any]]:
        return [self.view(row) for row in rows.list_schedules(self.store)]

    def get(self, name: str) -> dict[str, Any]:
        return self.view(rows.get_schedule(self.store, name))

    def pause(self, name: str) -> dict[str, Any]:
        rows.set_paused(self.store, name, True, None)
        return self.get(name)

    def resume(self, name: str) -> dict[str, Any]:
        """Resume from now on: times passed while paused are not caught up."""
        row = rows.get_schedule(self.store, name)
        rows.set_paused(self.store, name, False, next_fire(row.cron, row.timezone, self.clock()))
        return self.get(name)

    def remove(self, name: str) -> None:
        rows.remove_schedule(self.store, name)

    def view(self, row: m.Schedule) -> dict[str, Any]:
        target = row.target.get("spec", {}).get("notebook") if row.kind == "notebook" else None
        if row.kind == "pipeline":
            target = row.target.get("source") or row.target.get("pipeline", {}).get("name")
        following = upcoming(row.cron, row.timezone, row.next_fire_at, 2) if row.next_fire_at else []
        return {
            "id": row.id,
            "name": row.name,
            "owner": row.owner,
            "kind": row.kind,
            "target": target,
            "cron": row.cron,
            "timezone": row.timezone,
            "overlap": row.overlap,
            "catch_up": row.catch_up,
            "paused": row.paused,
            "next_fire_at": None if row.paused else row.next_fire_at,
            "then": [] if row.paused else following,
            "last_fire_at": row.last_fire_at,
            "last_job_id": row.last_job_id,
            "last_run_id": row.last_run_id,
            "last_note": row.last_note,
        }

    # ------------------------------------------------------------------ firing

    def tick(self, now: datetime | None = None) -> list[tuple[str, datetime, int | None, int | None]]:
        """Fire every due schedule; (name, fire time, job id, run id) per fire made by this call."""
        now = now or self.clock()
        made = []
        for schedule in rows.due_schedules(self.store, now):
            try:
                made.extend(self._fire(schedule, now))
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule %s could not fire", schedule.name)
        if made:
            self.jobs.dispatcher.wake()
        return made

    def _fire(self, schedule: m.Schedule, now: datetime) -> list[tuple[str, datetime, int | None, int | None]]:
        assert schedule.next_fire_at is not None
        times = fires_due(schedule.cron, schedule.timezone, schedule.next_fire_at, now, CatchUp(schedule.catch_up))
        following = next_fire(schedule.cron, schedule.timezone, now)
        try:
            target = self._checked_target(schedule) if times else None
        except InvalidInput as exc:  # e.g. the notebook was deleted: note it, try again next time
            with self.store.session() as s, s.begin():
                rows.claim_fire(s, schedule.id, schedule.next_fire_at, following, f"could not fire: {exc}")
            return []
        made = []
        with self.store.session() as s, s.begin():
            note = f"missed times dropped (catch-up {schedule.catch_up})" if not times else ""
            if not rows.claim_fire(s, schedule.id, schedule.next_fire_at, following, note):
                return []  # another scheduler fired it
            for at in times:
                previous = rows.unfinished_of_previous(s, schedule)
                if previous and schedule.overlap == Overlap.SKIP.value:
                    rows.set_note(s, schedule.id, f"{at.isoformat()} skipped: the previous run is still going")
                    continue
                after = previous if schedule.overlap == Overlap.QUEUE.value else []
                job_id, run_id = self._create(s, schedule, target, at, after)
                rows.record_fire(s, schedule.id, at, job_id=job_id, run_id=run_id)
                rows.set_note(s, schedule.id, f"fired for {at.isoformat()}")
                schedule.last_job_id, schedule.last_run_id = job_id, run_id
                made.append((schedule.name, at, job_id, run_id))
        return made

    def _checked_target(self, schedule: m.Schedule) -> JobSpec | Plan:
        if schedule.kind == "notebook":
            return self.jobs.validate(schedule.target["spec"])
        pipeline = Pipeline.model_validate(schedule.target["pipeline"])
        return self.pipelines.plan(pipeline, schedule.target.get("params") or {})

    def _create(
        self, s: Any, schedule: m.Schedule, target: JobSpec | Plan | None, at: datetime, after: list[int]
    ) -> tuple[int | None, int | None]:
        key = f"schedule:{schedule.id}:{at.isoformat()}"
        if isinstance(target, JobSpec):
            spec = target.model_copy(update={"idempotency_key": key})
            job = NewJob(spec=spec)
            if after:
                job = NewJob(
                    spec=spec,
                    hold="dependencies",
                    queue_reason="waiting for the schedule's previous run",
                    upstream_ids=[(a, RunIf.ALL_DONE) for a in after],
                )
            return insert_jobs(s, [job], owner=schedule.owner, host=self.jobs.host, now=utcnow())[0], None
        assert isinstance(target, Plan)
        source = schedule.target.get("source")
        run_id = self.pipelines.create(
            s, target, schedule.owner, source, schedule_id=schedule.id, idempotency_key=key, after=after
        )
        return None, run_id


class ScheduleLoop:
    """Fires due schedules every TICK_SECONDS, in the server, beside the dispatcher."""

    def __init__(self, service: ScheduleService, interval: float = TICK_SECONDS) -> None:
        self.service = service
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                self.service.tick()
            except Exception:
                log.exception("schedule tick failed")
            await asyncio.sleep(self.interval)
