"""The policy's in-memory queue, kept in step with the store.

The store is the truth; the policy wants a sorted queue that persists between
passes (its reservation is a promise across passes). Each pass reads only the
ids and retry times of queued jobs, parses the spec of a job once when it first
appears, and adds or removes entries so the policy queue holds exactly the
queued jobs whose retry backoff has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from nbjobs.config import SchedulerConfig
from nbjobs.scheduler import Counts, JobQueue, QueuedJob
from nbjobs.spec import JobSpec, Resources
from nbjobs.store import Store


def request_counts(resources: Resources) -> Counts:
    """What the policy counts for a request, as the allocator books it: whole CPUs, one if none asked."""
    cpus = max(1, math.ceil(resources.cpus)) if resources.cpus is not None else 1
    return Counts(cpus=cpus, memory=resources.memory or 0, gpus=resources.gpus, custom=dict(resources.custom))


@dataclass
class QueuedEntry:
    job: QueuedJob
    spec: dict[str, object]  # as stored: what the backend receives
    resources: Resources
    attempt: int  # attempts so far
    not_before: datetime | None


class QueueMirror:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.queue = JobQueue()
        self.entries: dict[int, QueuedEntry] = {}

    def sync(self, store: Store, now: datetime) -> dict[int, str]:
        """Match the store's queue; the reasons of jobs still waiting out a retry backoff."""
        waiting = dict(store.queued_ids())
        for job_id in [i for i in self.entries if i not in waiting]:
            self.forget(job_id)
        new = [i for i in waiting if i not in self.entries]
        for row in store.jobs_by_id(new) if new else []:
            spec = JobSpec.model_validate(row.spec)
            job = QueuedJob(
                id=row.id,
                request=request_counts(spec.resources),
                time_bound=spec.timeout or self.config.default_time_bound,
                priority=row.priority,
                submitted=row.created.timestamp(),
                user=row.owner,
                pool=spec.pool,
            )
            self.entries[row.id] = QueuedEntry(job, row.spec, spec.resources, row.attempt, row.not_before)
        backoff: dict[int, str] = {}
        for job_id, entry in self.entries.items():
            entry.not_before = waiting.get(job_id, entry.not_before)
            eligible = entry.not_before is None or entry.not_before <= now
            if eligible and job_id not in self.queue:
                self.queue.add(entry.job)
            elif not eligible:
                if job_id in self.queue:
                    self.queue.remove(job_id)
                when = entry.not_before.astimezone() if entry.not_before else now
                backoff[job_id] = f"waiting to retry until {when:%H:%M:%S}"
        return backoff

    def forget(self, job_id: int) -> None:
        self.entries.pop(job_id, None)
        if job_id in self.queue:
            self.queue.remove(job_id)
