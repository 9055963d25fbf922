"""The books of one scheduling pass: what is free now, who runs how many, when a job could start.

`Ledger` is built from the running jobs at the start of a pass and updated as
the pass starts jobs; `Plan` is what a reservation commits: the reserved start
(the "shadow time" of EASY backfill) and what will be left over at that time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from nbjobs.scheduler.model import CPU_SLACK, Counts, Limits, QueuedJob, RunningJob


class Free:
    """Mutable resource amounts (what is free, or will be); a job's request is a Counts."""

    __slots__ = ("cpus", "custom", "gpus", "memory")

    def __init__(self, cpus: float, memory: int, gpus: int, custom: dict[str, int]) -> None:
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.custom = custom

    @classmethod
    def of(cls, counts: Counts) -> Free:
        return cls(counts.cpus, counts.memory, counts.gpus, dict(counts.custom))

    def copy(self) -> Free:
        return Free(self.cpus, self.memory, self.gpus, dict(self.custom))

    def covers(self, need: Counts) -> bool:
        # The hot test of every pass: plain attribute compares, custom only when asked for.
        if need.cpus > self.cpus + CPU_SLACK or need.memory > self.memory or need.gpus > self.gpus:
            return False
        if need.custom:
            custom = self.custom
            return all(count <= custom.get(name, 0) for name, count in need.custom.items())
        return True

    def take(self, need: Counts) -> None:
        self.cpus -= need.cpus
        self.memory -= need.memory
        self.gpus -= need.gpus
        for name, count in need.custom.items():
            self.custom[name] = self.custom.get(name, 0) - count

    def give(self, need: Counts) -> None:
        self.cpus += need.cpus
        self.memory += need.memory
        self.gpus += need.gpus
        for name, count in need.custom.items():
            self.custom[name] = self.custom.get(name, 0) + count


class Plan:
    """A reservation being honoured during one pass.

    Another job may start only if it cannot delay the reserved job: it ends by
    `start`, or it fits in what is left over at `start` (`extra`), and, where the
    reserved job's user or pool has a limit, it leaves that job a slot.
    """

    __slots__ = ("extra", "holder", "pool_slots", "start", "user_slots")

    def __init__(
        self, holder: QueuedJob, start: float, extra: Free, user_slots: int | None, pool_slots: int | None
    ) -> None:
        self.holder = holder
        self.start = start
        self.extra = extra
        self.user_slots = user_slots
        self.pool_slots = pool_slots

    def allows(self, job: QueuedJob, now: float) -> bool:
        if now + job.time_bound <= self.start:
            return True
        if self.user_slots is not None and job.user == self.holder.user and self.user_slots < 1:
            return False
        if self.pool_slots is not None and job.pool == self.holder.pool and self.pool_slots < 1:
            return False
        return self.extra.covers(job.request)

    def take(self, job: QueuedJob, now: float) -> None:
        """`job` starts: if it outlives the reserved start, it uses up part of what is left then."""
        if now + job.time_bound <= self.start:
            return
        self.extra.take(job.request)
        if self.user_slots is not None and job.user == self.holder.user:
            self.user_slots -= 1
        if self.pool_slots is not None and job.pool == self.holder.pool:
            self.pool_slots -= 1


class Ledger:
    """Free resources and running counts, from the running jobs, updated as a pass starts jobs.

    Built on every pass, so built lean: counts per user or pool only when such a
    limit exists, and the list of expected ends only when a reservation needs it.
    """

    def __init__(self, now: float, capacity: Counts, running: Iterable[RunningJob], limits: Limits) -> None:
        self.now = now
        self.limits = limits
        self.total = Free.of(capacity)
        self.running = list(running)
        self.started: list[QueuedJob] = []
        # Summed inline: this loop runs over every running job on every pass.
        cpus, memory, gpus, custom = 0.0, 0, 0, dict(capacity.custom)
        for job in self.running:
            request = job.request
            cpus += request.cpus
            memory += request.memory
            gpus += request.gpus
            for name, count in request.custom.items():
                custom[name] = custom.get(name, 0) - count
        self.free = Free(capacity.cpus - cpus, capacity.memory - memory, capacity.gpus - gpus, custom)
        self.user_running: Counter[str | None] = Counter()
        self.pool_running: Counter[str | None] = Counter()
        if limits.per_user_running is not None:
            self.user_running.update(job.user for job in self.running)
        if limits.pools:
            self.pool_running.update(job.pool for job in self.running)

    def user_at_limit(self, user: str | None) -> bool:
        limit = self.limits.per_user_running
        return limit is not None and user is not None and self.user_running[user] >= limit

    def pool_at_limit(self, pool: str | None) -> bool:
        limit = self.limits.pools.get(pool) if pool is not None else None
        return limit is not None and self.pool_running[pool] >= limit

    def fits_host(self, request: Counts) -> bool:
        return self.total.covers(request)

    def start(self, job: QueuedJob) -> None:
        self.free.take(job.request)
        self.user_running[job.user] += 1
        self.pool_running[job.pool] += 1
        self.started.append(job)

    def _expected_ends(self) -> list[tuple[float, Counts, str | None, str | None]]:
        """(expected end, request, user, pool) of everything that holds resources, soonest first."""
        # A job past its bound is being stopped right now; it frees nothing earlier than now.
        now = self.now
        ends = [(max(job.expected_end, now), job.request, job.user, job.pool) for job in self.running]
        ends.extend((now + job.time_bound, job.request, job.user, job.pool) for job in self.started)
        ends.sort(key=lambda end: end[0])
        return ends

    def plan(self, job: QueuedJob) -> Plan | None:
        """The earliest time `job` can start, with what is left over then; None if it never fits.

        Counted from running jobs' expected ends, in every dimension at once, and
        with the job's user and pool limits: free amounts only grow and running
        counts only fall as time passes, so the first time it can start, it stays so.
        """
        need = job.request
        user_limit = self.limits.per_user_running if job.user is not None else None
        pool_limit = self.limits.pools.get(job.pool) if job.pool is not None else None
        avail = self.free.copy()
        holders = self._expected_ends()
        user_alive = sum(1 for _, _, user, _ in holders if user == job.user) if user_limit is not None else 0
        pool_alive = sum(1 for _, _, _, pool in holders if pool == job.pool) if pool_limit is not None else 0

        def can_start() -> bool:
            return (
                (user_limit is None or user_alive < user_limit)
                and (pool_limit is None or pool_alive < pool_limit)
                and avail.covers(need)
            )

        start = self.now if can_start() else math.inf
        index = 0
        while start == math.inf and index < len(holders):
            end = holders[index][0]
            # Everything that ends at the same instant frees its share at once.
            while index < len(holders) and holders[index][0] == end:
                _, request, user, pool = holders[index]
                avail.give(request)
                user_alive -= user == job.user
                pool_alive -= pool == job.pool
                index += 1
            if can_start():
                start = end
        if start == math.inf:
            return None
        avail.take(need)
        user_slots = None if user_limit is None else user_limit - user_alive - 1
        pool_slots = None if pool_limit is None else pool_limit - pool_alive - 1
        return Plan(job, start, avail, user_slots, pool_slots)
