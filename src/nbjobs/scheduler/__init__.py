"""The scheduler's pure logic: the queue policy (priority, EASY backfill, pools and limits, reasons).

It imports no backend, no store and no server: the server's scheduler loop reads
jobs from the store, turns them into these values, and acts on the decision::

    queue = JobQueue(QueuedJob(...) for row in store_rows)       # once, at start-up
    policy = Policy(Limits.from_config(config.scheduler))
    # on every arrival (queue.add) and every end:
    decision = policy.decide(now, queue, running_jobs, host_capacity)
    for job in decision.start: ...                                # start it (or queue.add it back)
    for job_id, reason in decision.reasons.items(): ...           # show why the others wait
"""

from nbjobs.scheduler.model import Counts, Limits, QueuedJob, Reservation, RunningJob
from nbjobs.scheduler.policy import DEFAULT_DEPTH, Decision, Policy
from nbjobs.scheduler.queue import JobQueue
from nbjobs.scheduler.reasons import WaitKind, WaitReason

__all__ = [
    "DEFAULT_DEPTH",
    "Counts",
    "Decision",
    "JobQueue",
    "Limits",
    "Policy",
    "QueuedJob",
    "Reservation",
    "RunningJob",
    "WaitKind",
    "WaitReason",
]
