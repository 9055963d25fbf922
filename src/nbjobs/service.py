"""The job service: submit, cancel, retry, wait and look, for the server's routes.

Every request is validated in full before anything is stored (the same checks as
`nbjobs run`, plus: the request fits this host, the pool exists); a refusal is an
`InvalidInput` (HTTP 400), an unknown id `NotFound` (404), a request that
conflicts with the job's state `Conflict` (409).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any

from pydantic import ValidationError

from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher
from nbjobs.errors import Conflict, InvalidInput
from nbjobs.pipelines.submit import submit_dependent
from nbjobs.prepare import prepare
from nbjobs.resources.allocator import Allocator
from nbjobs.spec import JobSpec, JobState
from nbjobs.spec_sources import describe_validation_error
from nbjobs.store import JobRecord, Store


class JobService:
    def __init__(self, settings: Settings, store: Store, allocator: Allocator, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.store = store
        self.allocator = allocator
        self.dispatcher = dispatcher
        self.host = socket.gethostname()

    # ------------------------------------------------------------------ submit

    def validate(self, data: dict[str, Any] | JobSpec) -> JobSpec:
        """A full check of a spec, as at submit: the spec as it will be stored."""
        return self.check(data)[0]

    def check(self, data: dict[str, Any] | JobSpec) -> tuple[JobSpec, dict[str, Any] | None]:
        """A full check of a spec, as at submit: the spec as stored, and its repository's state."""
        try:
            spec = data if isinstance(data, JobSpec) else JobSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc, "the request")) from None
        pools = self.settings.config.scheduler.pools
        if spec.pool is not None and spec.pool not in pools:
            known = ", ".join(sorted(pools)) or "none are configured"
            raise InvalidInput(f"Unknown pool {spec.pool!r} (`pool`); pools on this server: {known}.")
        self.allocator.check_fits(spec.resources)
        if spec.secrets and self.dispatcher.backend.name != "local":
            raise InvalidInput(
                f"`secrets`: the {self.dispatcher.backend.name} backend cannot hand secrets to a remote kernel yet; "
                "run this job on a server with the local backend, or pass the values another way."
            )
        prepared = prepare(spec, settings=self.settings)
        try:
            spec = prepared.spec
            if prepared.snapshot is not None and prepared.git:
                # Pin the commit the ref resolved to now: a branch may move before the job starts.
                spec = spec.model_copy(update={"git_ref": prepared.git["commit"]})
            return spec, prepared.git
        finally:
            if prepared.snapshot is not None:
                prepared.snapshot.release()  # the attempt takes its own lease when it starts

    def submit(self, data: dict[str, Any] | JobSpec, owner: str) -> tuple[JobRecord, bool]:
        """Queue a job; (record, created). An idempotency key seen before returns the first job."""
        spec, git = self.check(data)
        if spec.idempotency_key and (existing := self.store.find_by_idempotency_key(spec.idempotency_key)):
            return self.store.get(existing), False
        if spec.depends_on:  # held until its upstreams allow it (see nbjobs.pipelines.gate)
            job_id = submit_dependent(self, spec, owner)
        else:
            job_id = self.store.create_job(spec, owner=owner, host=self.host, vcs=git)
        self.dispatcher.wake()
        return self.store.get(job_id), True

    # --------------------------------------------------------------- control

    async def cancel(self, job_id: int, reason: str = "cancelled by user") -> JobRecord:
        record = self.store.get(job_id)
        if record.state.is_final:
            raise Conflict(f"Job {job_id} has already ended ({record.state.value}); there is nothing to cancel.")
        if self.store.transition(job_id, JobState.CANCELLED, reason, expect=(JobState.QUEUED,)):
            await self.dispatcher.notify()
            return self.store.get(job_id)
        if not await self.dispatcher.backend.cancel(job_id, reason):
            self.store.request_cancel(job_id, reason)  # it runs on another server: that server's dispatcher acts
        return self.store.get(job_id)

    def retry(self, job_id: int) -> JobRecord:
        record = self.store.get(job_id)
        if not record.state.is_final:
            raise Conflict(
                f"Job {job_id} is {record.state.value}; only a job that has ended can be retried "
                f"(cancel it first with `nbjobs cancel {job_id}`)."
            )
        ended = [s for s in JobState if s.is_final]
        if not self.store.transition(job_id, JobState.QUEUED, "retry requested", expect=ended, not_before=None):
            raise Conflict(f"Job {job_id} changed state meanwhile; try again.")
        self.dispatcher.wake()
        return self.store.get(job_id)

    # ------------------------------------------------------------------- wait

    async def wait(self, job_id: int, timeout: float) -> JobRecord:
        """The job's record once it has ended, or as it is when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.store.get(job_id)
            remaining = deadline - time.monotonic()
            if record.state.is_final or remaining <= 0:
                return record
            await self.dispatcher.wait_changed(min(remaining, 1.0))

    async def run_and_wait(self, data: dict[str, Any] | JobSpec, owner: str, timeout: float) -> JobRecord:
        """Submit and wait: a notebook used as a function, answering with its results."""
        record, _ = self.submit(data, owner)
        record = await self.wait(record.id, timeout)
        if not record.state.is_final:
            await self.cancel(record.id, f"run-and-wait timeout of {timeout:g} s passed")
            record = await self.wait(record.id, 30)
        return record

    # ------------------------------------------------------------------- look

    def queue(self) -> dict[str, Any]:
        """Running and waiting jobs with their queue reasons, capacity and what is in use."""
        running = [
            {
                "id": r.id,
                "name": r.name,
                "owner": r.owner,
                "state": r.state.value,
                "started": r.started,
                "allocation": a.to_dict() if (a := self.dispatcher.allocations.get(r.id)) else None,
            }
            for r in self.store.list(states=[JobState.STARTING, JobState.RUNNING], limit=10_000)
        ]
        waiting = [
            {
                "id": r.id,
                "name": r.name,
                "owner": r.owner,
                "priority": r.priority,
                "reason": self.dispatcher.reason_for(r.id) or r.queue_reason,
            }
            for r in reversed(self.store.list(states=[JobState.QUEUED], limit=10_000))
        ]
        return {
            "leader": self.dispatcher.is_leader(),
            "running": running,
            "waiting": waiting,
            "capacity": self.allocator.capacity.to_dict() | {"text": self.allocator.capacity.describe()},
            "free": dataclasses.asdict(self.allocator.free()),
        }
