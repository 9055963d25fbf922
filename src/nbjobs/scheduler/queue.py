"""The queue of waiting jobs, kept in policy order as jobs come and go.

Jobs are filed by (user, pool) group, each group a list sorted by order key.
A pass walks the groups merged through a small heap, so when a user or a pool
is at its limit the pass drops that whole group in one step instead of
stepping over each of its jobs: a user with a 50,000-job sweep at the per-user
limit costs the next pass one heap pop (per pool), not 50,000 skips.

Adding a job is an append in the usual case (newer jobs go last), else a
bisect insert; removing one is a bisect and a list delete. Nothing here is
ever re-sorted as a whole, not even with aging: see `JobQueue.order_key`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Iterator

from nbjobs.scheduler.model import Counts, QueuedJob, Reservation

Group = tuple[str | None, str | None]  # (user, pool)
Entry = tuple[float, float, int, QueuedJob]  # order key, then the job itself


class JobQueue:
    """Waiting jobs in policy order: priority (higher first), then submit time, then id.

    With `aging` (seconds of waiting worth one priority point) a job's effective
    priority grows as it waits, so no job waits behind higher-priority arrivals
    forever. `reservation` is the standing promise of the backfill policy; it is
    kept here, with the jobs, and dropped when its job leaves the queue.
    """

    def __init__(self, jobs: Iterable[QueuedJob] = (), *, aging: float | None = None) -> None:
        if aging is not None and not aging > 0:
            raise ValueError("aging must be a positive number of seconds per priority point")
        self.aging = aging
        self.reservation: Reservation | None = None
        self._jobs: dict[int, QueuedJob] = {}
        self._groups: dict[Group, list[Entry]] = {}
        self._smallest = (_Minimum(), _Minimum(), _Minimum())  # cpus, memory, gpus
        self._smallest_request = Counts()
        self.extend(jobs)

    def order_key(self, job: QueuedJob) -> tuple[float, float, int]:
        """Smaller goes first.

        Aging adds waited/aging to every job's priority; as `now` is common to
        all jobs, ordering by priority + (now - submitted)/aging is ordering by
        submitted - priority*aging, which never changes: no re-sort as time passes.
        """
        if self.aging is None:
            return (-job.priority, job.submitted, job.id)
        return (job.submitted - job.priority * self.aging, job.submitted, job.id)

    def add(self, job: QueuedJob) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} is already queued")
        self._jobs[job.id] = job
        self._count(job.request, 1)
        entry = (*self.order_key(job), job)
        entries = self._groups.setdefault((job.user, job.pool), [])
        if not entries or entries[-1] < entry:
            entries.append(entry)
        else:
            insort(entries, entry)

    def extend(self, jobs: Iterable[QueuedJob]) -> None:
        for job in jobs:
            self.add(job)

    def remove(self, job_id: int) -> QueuedJob:
        """Take a job out (started, cancelled, or being re-queued); KeyError if it is not here."""
        job = self._jobs.pop(job_id)
        self._count(job.request, -1)
        group = (job.user, job.pool)
        entries = self._groups[group]
        index = bisect_left(entries, self.order_key(job))
        del entries[index]
        if not entries:
            del self._groups[group]
        if self.reservation is not None and self.reservation.job_id == job_id:
            self.reservation = None
        return job

    def _count(self, request: Counts, change: int) -> None:
        cpus, memory, gpus = self._smallest
        cpus.count(request.cpus, change)
        memory.count(request.memory, change)
        gpus.count(request.gpus, change)

    def smallest_request(self) -> Counts:
        """The smallest amount any queued job asks for, per dimension (custom counts left out).

        When even this does not fit what is free, no queued job can start: a
        pass can stop there instead of looking at jobs one by one.
        """
        cpus, memory, gpus = (minimum.value for minimum in self._smallest)
        cached = self._smallest_request
        if (cpus, memory, gpus) != (cached.cpus, cached.memory, cached.gpus):  # rare: built only on change
            self._smallest_request = Counts(cpus=cpus, memory=int(memory), gpus=int(gpus))
        return self._smallest_request

    def get(self, job_id: int) -> QueuedJob | None:
        return self._jobs.get(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[QueuedJob]:
        """Every job in policy order (a full merge: for tests and listings, not for passes)."""
        return iter(QueueScan(self._groups.values()))

    def scan(self) -> QueueScan:
        return QueueScan(self._groups.values())


class _Minimum:
    """The smallest of a multiset of numbers, as numbers come and go.

    Recomputed (over distinct values, which are few: people ask for round
    amounts) only when the last copy of the smallest one leaves.
    """

    def __init__(self) -> None:
        self._counts: Counter[float] = Counter()
        self._smallest: float | None = None  # None: to recompute

    def count(self, value: float, change: int) -> None:
        left = self._counts[value] + change
        if left > 0:
            self._counts[value] = left
            if self._smallest is not None and value < self._smallest:
                self._smallest = value
        else:
            del self._counts[value]
            if value == self._smallest:
                self._smallest = None

    @property
    def value(self) -> float:
        if self._smallest is None:
            if not self._counts:
                return 0
            self._smallest = min(self._counts)
        return self._smallest


class QueueScan:
    """One walk over the queue in policy order that can drop the rest of a (user, pool) group.

    The next job of a group enters the heap only when the walk moves past the
    job before it, so `skip_group()` right after a job was returned drops every
    later job of that group at no cost. The queue must not change during a walk.
    """

    def __init__(self, groups: Iterable[list[Entry]]) -> None:
        self._skip = False
        self._walk = self._steps(list(groups))

    def __iter__(self) -> Iterator[QueuedJob]:
        return self._walk  # one walk: iterating again continues it

    def _steps(self, groups: list[list[Entry]]) -> Iterator[QueuedJob]:
        # A generator rather than __next__: resuming a frame is the cheapest step
        # Python offers, and a pass takes hundreds of steps.
        heap = [(entries[0], number, 0) for number, entries in enumerate(groups)]
        heapq.heapify(heap)
        while heap:
            entry, number, position = heap[0]
            self._skip = False
            yield entry[3]
            entries = groups[number]
            position += 1
            if self._skip or position == len(entries):
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (entries[position], number, position))

    def skip_group(self) -> None:
        """Drop the remaining jobs of the group of the job just returned."""
        self._skip = True
