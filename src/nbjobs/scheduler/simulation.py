"""Replay a workload through a policy in simulated time (for tests, benchmarks and what-ifs).

Discrete events: arrivals and ends. At each instant, ends are handled first,
then arrivals, then one `decide()` call, as the server's loop would do. Only
the time spent in the queue and the policy counts as scheduler time.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nbjobs.scheduler.model import Counts, QueuedJob, RunningJob
from nbjobs.scheduler.policy import Decision, Policy
from nbjobs.scheduler.queue import JobQueue


@dataclass(frozen=True, slots=True)
class SimJob:
    """A job of a workload: it arrives at `job.submitted` and runs `runtime` seconds once started."""

    job: QueuedJob
    runtime: float

    def __post_init__(self) -> None:
        if not 0 < self.runtime <= self.job.time_bound:
            raise ValueError(f"job {self.job.id}: runtime must be in (0, time_bound]")


@dataclass
class SimResult:
    starts: dict[int, float] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)
    promised: dict[int, float] = field(default_factory=dict)  # reserved start when first reserved
    decisions: int = 0
    scheduler_seconds: float = 0.0  # wall time in queue updates and decide()
    scheduler_cpu_seconds: float = 0.0  # the same in CPU time: steadier on a shared machine
    unstarted: list[int] = field(default_factory=list)  # left waiting when nothing more could happen

    @property
    def makespan(self) -> float:
        return max(self.ends.values(), default=0.0)


Observer = Callable[[float, Decision, JobQueue, dict[int, RunningJob]], None]


def simulate(
    policy: Policy,
    workload: Sequence[SimJob],
    capacity: Counts,
    *,
    aging: float | None = None,
    until: float = math.inf,
    observe: Observer | None = None,
) -> SimResult:
    """Run `workload` on one host of `capacity` under `policy` until it drains (or `until`)."""
    arrivals = sorted(workload, key=lambda sim: (sim.job.submitted, sim.job.id))
    runtimes = {sim.job.id: sim.runtime for sim in arrivals}
    queue = JobQueue(aging=aging)
    running: dict[int, RunningJob] = {}
    end_events: list[tuple[float, int]] = []
    result = SimResult()
    clock, cpu_clock = time.perf_counter, time.process_time
    next_arrival = 0
    while True:
        now = min(
            arrivals[next_arrival].job.submitted if next_arrival < len(arrivals) else math.inf,
            end_events[0][0] if end_events else math.inf,
        )
        if now == math.inf or now > until:
            break
        while end_events and end_events[0][0] <= now:
            _, job_id = heapq.heappop(end_events)
            del running[job_id]
        batch: list[QueuedJob] = []
        while next_arrival < len(arrivals) and arrivals[next_arrival].job.submitted <= now:
            batch.append(arrivals[next_arrival].job)
            next_arrival += 1
        began, cpu_began = clock(), cpu_clock()
        if batch:
            queue.extend(batch)
        decision = policy.decide(now, queue, running.values(), capacity)
        result.scheduler_cpu_seconds += cpu_clock() - cpu_began
        result.scheduler_seconds += clock() - began
        result.decisions += 1
        for job in decision.start:
            result.starts[job.id] = now
            result.ends[job.id] = now + runtimes[job.id]
            running[job.id] = RunningJob.started(job, now)
            heapq.heappush(end_events, (now + runtimes[job.id], job.id))
        if decision.reservation is not None and decision.reservation.job_id not in result.promised:
            result.promised[decision.reservation.job_id] = decision.reservation.promised
        if observe is not None:
            observe(now, decision, queue, running)
    result.unstarted = [job.id for job in queue]
    return result
