"""The queue policy: which waiting jobs start now, and why every other one waits.

Order: priority (higher first), then submit time (see `JobQueue`, with optional aging).

EASY backfill. The pass walks the queue in order and starts each job that fits.
The first job that does not fit (and is not held back by a limit) gets the one
reservation: the earliest time enough resources will be free for it, counting
every dimension (CPUs, memory, GPUs, custom counts) from the running jobs'
expected ends (start + time bound). Any later job may start now only if it
fits now and cannot delay that reservation: it ends by the reserved start, or
it uses only what will be left over at the reserved start (and, where the
reserved job's user or pool has a limit, leaves it a slot).

The reservation is a promise kept across passes (it lives on the queue): until
the reserved job starts, every start (later arrivals, higher priorities, jobs
whose limit just lifted) must leave it whole. That is why its start can never
be pushed back, so a stream of small jobs cannot starve a big one. A job with
low priority can still wait behind an endless stream of higher-priority jobs
that never reach the head; `JobQueue(aging=...)` bounds that wait too.

Limits. A job whose pool or user is at its limit is skipped: it blocks no one and
does not take the reservation.

FIFO (`Policy(backfill=False)`): the same order and limits, no overtaking: the
first job that does not fit stops the pass.

Cost, and its trade-off. The server calls `decide()` on every arrival and every
end, with up to ~100,000 waiting jobs, and must stay well under 1 ms per job.
So a pass never walks the whole queue:
- the queue stays sorted as jobs come and go (bisect, no re-sort per pass) and
  is grouped by (user, pool), so a limited user or pool is skipped in one step;
- like Slurm's `bf_max_job_test`, a pass looks at no more than `depth` jobs that
  stay waiting (default 100). Jobs past it are not tried in this pass: a hole
  that only a job deep in the queue would fill stays empty until a later pass
  (utilisation traded for a bounded pass: in bench/RESULTS.md, depth 400
  instead of 25 gains under one point of utilisation for ~3-6x the CPU per job);
- a pass stops as soon as not even the smallest queued request fits what is
  free (the queue keeps that minimum as jobs come and go);
- identical requests are tested once per pass: free amounts (and what the
  reservation leaves) only shrink while a pass starts jobs, so a request shape
  (with its time bound, for the reservation test) that failed once fails again;
- the reservation is computed from running jobs only: O(R log R) for R running.
Reasons are explicit for the jobs a pass looked at, and derived on request for
the others (`Decision.reason_for`); sentences are written when first read, so a
pass never formats thousands of strings nobody reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nbjobs.scheduler import reasons
from nbjobs.scheduler.ledger import Ledger, Plan
from nbjobs.scheduler.model import Counts, Limits, QueuedJob, Reservation, RunningJob
from nbjobs.scheduler.queue import JobQueue
from nbjobs.scheduler.reasons import WaitKind, WaitReason

DEFAULT_DEPTH = 100


@dataclass(frozen=True)
class Decision:
    """What one pass decided.

    `start`: the jobs to start now, in order; `decide()` has already taken them
    out of the queue (add one back if it cannot be started after all).
    `reasons`: a reason for every waiting job the pass looked at. For any other
    waiting job use `reason_for(job)`, which is cheap and always answers.
    """

    now: float
    start: tuple[QueuedJob, ...]
    reservation: Reservation | None
    reasons: Mapping[int, WaitReason]
    # The end-of-pass books, from which `reason_for` derives the other reasons.
    _ledger: Ledger = field(repr=False)
    _plan: Plan | None = field(repr=False)
    _head: QueuedJob | None = field(repr=False)  # the first job that waits for resources
    _depth: int = field(repr=False)

    def reason_for(self, job: QueuedJob) -> WaitReason:
        """Why `job` (still queued) waits."""
        explicit = self.reasons.get(job.id)
        if explicit is not None:
            return explicit
        ledger = self._ledger
        if ledger.user_at_limit(job.user):
            return reasons.user_limit(str(job.user), ledger.limits.per_user_running or 0)
        if ledger.pool_at_limit(job.pool):
            return reasons.pool_limit(str(job.pool), ledger.limits.pools[str(job.pool)])
        if not ledger.fits_host(job.request):
            return reasons.never_fits(job.request, ledger.total)
        if not ledger.free.covers(job.request):
            return reasons.shortage(job.request, ledger.free)
        plan = self._plan
        if plan is not None and not plan.allows(job, self.now):
            return reasons.blocked_by_reservation(plan.holder.id, plan.start - self.now)
        if self._head is not None:  # would fit, but the pass stopped before it (FIFO, or depth)
            return reasons.behind(self._head.id, by_priority=self._head.priority > job.priority)
        return reasons.not_reached(self._depth)


class Policy:
    """Decides which queued jobs start: EASY backfill by default, strict FIFO with backfill=False.

    Stateless itself (the standing reservation is kept on the queue), so one
    instance serves every pass.
    """

    def __init__(self, limits: Limits | None = None, *, backfill: bool = True, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.limits = limits or Limits()
        self.backfill = backfill
        self.depth = depth

    def decide(self, now: float, queue: JobQueue, running: Iterable[RunningJob], capacity: Counts) -> Decision:
        """Which queued jobs start now; takes them out of `queue` and updates its reservation.

        `running`: every job that holds resources on this host; `capacity`: all
        the host has (free amounts are derived, so they never drift).
        """
        ledger = Ledger(now, capacity, running, self.limits)
        started: list[QueuedJob] = []
        waiting: dict[int, WaitReason] = {}
        plan: Plan | None = None
        decided: int | None = None  # the reserved job, once _honour_reservation dealt with it
        if self.backfill and queue.reservation is not None:
            decided = queue.reservation.job_id
            plan = self._honour_reservation(queue, ledger, started, waiting)
        head = plan.holder if plan is not None else None
        # Shared by every job the reservation holds back in this pass.
        held_back = reasons.blocked_by_reservation(plan.holder.id, plan.start - now) if plan is not None else None
        limited = bool(self.limits.pools) or self.limits.per_user_running is not None
        smallest = queue.smallest_request()
        # Per-pass memo tables, keyed by request shape: free amounts and what the
        # plan leaves only shrink within a pass, so a request that failed once fails again.
        short: dict[tuple[object, ...], WaitReason] = {}
        delays: set[tuple[tuple[object, ...], float, bool, bool]] = set()
        free = ledger.free
        looked_at = 0
        scan = queue.scan()
        # With a standing reservation and nothing queued fitting what is free, there is nothing to try.
        for job in scan if head is None or free.covers(smallest) else ():
            if job.id == decided:
                continue
            if limited and (ledger.user_at_limit(job.user) or ledger.pool_at_limit(job.pool)):
                scan.skip_group()  # its whole (user, pool) group waits; reason_for() says why
                continue
            request = job.request
            reason = short.get(request.shape)
            if reason is None and not free.covers(request):
                reason = short[request.shape] = (
                    reasons.shortage(request, free)
                    if ledger.fits_host(request)
                    else reasons.never_fits(request, ledger.total)
                )
            if reason is not None:
                if head is None and reason.kind is WaitKind.RESOURCES:
                    # The first job that waits for resources: FIFO stops here; backfill reserves.
                    head = job
                    if not self.backfill:
                        waiting[job.id] = reason
                        break
                    plan = ledger.plan(job)
                    assert plan is not None  # it fits the host, so it fits once everything ends
                    queue.reservation = Reservation(job.id, plan.start, plan.start, now)
                    reason = reasons.reserved_for(reason, plan.start - now)
                    held_back = reasons.blocked_by_reservation(job.id, plan.start - now)
                    if not free.covers(smallest):
                        waiting[job.id] = reason
                        break  # nothing queued fits what is free; reason_for() explains the rest
                waiting[job.id] = reason
            elif plan is not None and (
                # Same user or pool as the reserved job matters: it may have no slot left for them.
                (delay := (request.shape, job.time_bound, job.user == plan.holder.user, job.pool == plan.holder.pool))
                in delays
                or not plan.allows(job, now)
            ):
                delays.add(delay)
                assert held_back is not None
                waiting[job.id] = held_back
            else:
                ledger.start(job)
                if plan is not None:
                    plan.take(job, now)
                started.append(job)
                if head is not None and not free.covers(smallest):
                    break  # as above: free amounts only shrink within a pass
                continue
            looked_at += 1
            if looked_at >= self.depth:
                break
        for job in started:
            queue.remove(job.id)
        return Decision(now, tuple(started), queue.reservation, waiting, ledger, plan, head, self.depth)

    def _honour_reservation(
        self, queue: JobQueue, ledger: Ledger, started: list[QueuedJob], waiting: dict[int, WaitReason]
    ) -> Plan | None:
        """Start the reserved job if it can start now, else renew its plan; None once it is resolved.

        It goes before anything else in the pass: a job ahead of it in order
        (a later, higher-priority arrival) must not take what was promised.
        A limit that holds it back now (its user's short jobs, allowed because
        they end before its start) does not cancel the promise: the plan counts
        limits at the reserved start too.
        """
        reservation = queue.reservation
        assert reservation is not None
        holder = queue.get(reservation.job_id)
        if holder is None:
            queue.reservation = None
            return None
        at_limit = ledger.user_at_limit(holder.user) or ledger.pool_at_limit(holder.pool)
        if not at_limit and ledger.free.covers(holder.request):
            ledger.start(holder)
            started.append(holder)
            queue.reservation = None
            return None
        plan = ledger.plan(holder)
        if plan is None:  # the host shrank below what it needs
            queue.reservation = None
            waiting[holder.id] = reasons.never_fits(holder.request, ledger.total)
            return None
        # The projection only moves earlier while jobs keep within their time bounds.
        queue.reservation = Reservation(holder.id, plan.start, reservation.promised, reservation.made_at)
        if ledger.user_at_limit(holder.user):
            why = reasons.user_limit(str(holder.user), ledger.limits.per_user_running or 0)
        elif ledger.pool_at_limit(holder.pool):
            why = reasons.pool_limit(str(holder.pool), ledger.limits.pools[str(holder.pool)])
        else:
            why = reasons.shortage(holder.request, ledger.free)
        waiting[holder.id] = reasons.reserved_for(why, plan.start - ledger.now)
        return plan
