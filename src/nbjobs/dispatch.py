"""The dispatcher: the loop that moves jobs from the queue onto a backend.

Each pass reads the queue from the store (the store is the truth, so a restarted
server carries on where the last one stopped), asks the queue policy which jobs
start now and why the others wait, gives each starter concrete resources, claims
it with a lease and hands it to the backend. When an attempt ends, its result is
stored, its resources released, and a retry is queued by the job's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from datetime import timedelta

import psutil

from nbjobs.attempt import AttemptPaths, AttemptResult
from nbjobs.backends.base import Backend, Launch
from nbjobs.config import Settings
from nbjobs.lifecycle import conclude_attempt
from nbjobs.notebook.runner import RunOutcome
from nbjobs.pipelines.gate import QueueGate
from nbjobs.queue_mirror import QueueMirror
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import HostCapacity
from nbjobs.scheduler import Counts, Decision, Limits, Policy, RunningJob
from nbjobs.spec import JobSpec, JobState
from nbjobs.store import Store
from nbjobs.store.leader import LeaderLease
from nbjobs.store.repository import utcnow

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
PASS_INTERVAL = 1.0  # also how soon a retry's backoff is noticed to have passed


def host_counts(capacity: HostCapacity) -> Counts:
    return Counts(
        cpus=len(capacity.cpus), memory=capacity.memory, gpus=len(capacity.gpus), custom=dict(capacity.custom)
    )


def server_identity() -> str:
    """host:pid:random, so a restarted server on this host can tell its predecessor's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        allocator: Allocator,
        backend: Backend,
        *,
        identity: str | None = None,
        leader: LeaderLease | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.allocator = allocator
        self.backend = backend
        self.identity = identity or server_identity()
        self.leader = leader  # servers sharing a store: only the lease holder starts jobs (None: always)
        self.allocations: dict[int, Allocation] = {}
        self.running: dict[int, RunningJob] = {}
        self.mirror = QueueMirror(settings.config.scheduler)
        self.policy = Policy(Limits.from_config(settings.config.scheduler))
        self.last_decision: Decision | None = None
        self.gate = QueueGate(store)  # holds jobs back by dependencies and sweep limits, before the policy
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---------------------------------------------------------------- running

    def wake(self) -> None:
        self._wake.set()

    def is_leader(self) -> bool:
        """Whether this server schedules now (starts queued jobs, recovers lost ones, fires schedules)."""
        return self.leader is None or self.leader.held

    async def start(self) -> None:
        if self.is_leader():
            self.recover()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.backend.close()

    async def _loop(self) -> None:
        renew_every = LEASE_SECONDS / 3
        last_renew = 0.0
        loop = asyncio.get_running_loop()
        # Not `while True`: Python 3.11's wait_for can swallow the cancel from stop() when the
        # wake event is set at the same moment, and the loop would then run on forever.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PASS_INTERVAL)
            self._wake.clear()
            try:
                await self.pass_once()
                if loop.time() - last_renew >= renew_every:
                    self.store.renew_leases(self.identity, utcnow() + timedelta(seconds=LEASE_SECONDS))
                    if self.is_leader():
                        self.recover(only_expired=True)
                    last_renew = loop.time()
            except Exception:  # one bad pass must not stop the queue
                log.exception("dispatcher pass failed")

    async def pass_once(self) -> None:
        if self._stopping:
            return
        for job_id, reason in self.store.take_cancel_requests(self.identity).items():  # made via another server
            await self.backend.cancel(job_id, reason)
        if not self.is_leader():
            return
        if self.gate.pass_once().ended:  # skipped jobs: wake whoever waits on them
            await self.notify()
        now = utcnow()
        reasons = self.mirror.sync(self.store, now)
        capacity = host_counts(self.allocator.capacity)  # a cluster's changes as workers come and go
        decision = self.policy.decide(now.timestamp(), self.mirror.queue, self.running.values(), capacity)
        self.last_decision = decision
        for job in decision.start:
            entry = self.mirror.entries[job.id]
            allocation = self.allocator.try_allocate(entry.resources)
            if allocation is None:  # the policy counts, the allocator books ids: rarely, they disagree
                self.mirror.queue.add(job)
                reasons[job.id] = self.allocator.shortfall(entry.resources) or "waiting for resources"
                continue
            claimed = self.store.transition(
                job.id,
                JobState.STARTING,
                None,
                expect=(JobState.QUEUED,),
                attempt=entry.attempt + 1,
                lease_owner=self.identity,
                lease_expires=now + timedelta(seconds=LEASE_SECONDS),
                queue_reason=None,
                not_before=None,
                cancel_requested=None,
            )
            self.mirror.forget(job.id)
            if not claimed:  # cancelled or taken by another server meanwhile
                self.allocator.release(allocation)
                continue
            self.allocations[job.id] = allocation
            self.running[job.id] = RunningJob.started(job, now.timestamp())
            await self.backend.start(Launch(job.id, entry.attempt + 1, entry.spec, allocation))
        reasons.update((job_id, reason.message) for job_id, reason in decision.reasons.items())
        self.store.set_queue_reasons(reasons)

    def reason_for(self, job_id: int) -> str | None:
        """Why a queued job waits, as of the last pass (computed on demand for jobs it did not look at)."""
        entry = self.mirror.entries.get(job_id)
        if entry is None or self.last_decision is None or job_id not in self.mirror.queue:
            return None
        return self.last_decision.reason_for(entry.job).message

    async def on_finished(self, launch: Launch, result: AttemptResult, paths: AttemptPaths | None) -> None:
        spec = JobSpec.model_validate(launch.spec)
        conclude_attempt(self.store, spec, launch.job_id, launch.attempt, result, paths)
        self.running.pop(launch.job_id, None)
        allocation = self.allocations.pop(launch.job_id, None)
        if allocation is not None:
            self.allocator.release(allocation)
        await self.notify()
        self.wake()

    # ---------------------------------------------------------------- waiting

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, timeout: float) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    # ---------------------------------------------------------------- recovery

    def recover(self, *, only_expired: bool = False) -> list[int]:
        """End or retry jobs whose runner is gone: a dead server on this host, or an expired lease."""
        recovered = []
        now = utcnow()
        for job in self.store.active():
            if job.lease_owner == self.identity:
                continue
            expired = job.lease_expires is None or job.lease_expires < now
            if not (expired or (not only_expired and _owner_is_dead_here(job.lease_owner))):
                continue
            reason = f"its runner ({job.lease_owner or 'unknown'}) is gone"
            self._kill_orphan_kernel(job.id, job.attempt)
            spec = JobSpec.model_validate(job.spec)
            outcome = RunOutcome(JobState.LOST, reason)
            if job.cancel_requested:  # a user cancelled it while nobody ran it: not retried
                outcome = RunOutcome(JobState.CANCELLED, f"{job.cancel_requested} ({reason})")
            result = AttemptResult(outcome)
            conclude_attempt(self.store, spec, job.id, max(job.attempt, 1), result, None)
            recovered.append(job.id)
        if recovered:
            log.warning("recovered jobs whose runner was gone: %s", recovered)
        return recovered

    def _kill_orphan_kernel(self, job_id: int, attempt: int) -> None:
        """Kill a kernel left by a crashed server, if it is still alive and really that job's."""
        pid = self.store.attempt_pid(job_id, attempt) if attempt else None
        if not pid:
            return
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            proc = psutil.Process(pid)
            if proc.environ().get("NBJOBS_JOB_ID") == str(job_id):  # guards against a reused pid
                os.killpg(pid, signal.SIGKILL)


def owner_is_dead_here(owner: str | None) -> bool:
    """Whether `owner` (a server identity) is a process of this host that no longer runs."""
    return _owner_is_dead_here(owner)


def _owner_is_dead_here(owner: str | None) -> bool:
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    return not psutil.pid_exists(int(pid_text)) or int(pid_text) == os.getpid()
