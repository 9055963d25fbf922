"""/metrics in the Prometheus text format, every name prefixed `nbjobs_`.

Gauges are read at scrape time from the store and the allocator (so they are
right after a restart); the wait- and run-time histograms count the jobs that
started or ended since this server started (Prometheus' usual counter semantics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

import psutil
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from nbjobs.server.events import StreamEvent
from nbjobs.service import JobService
from nbjobs.spec import JobState
from nbjobs.store.models import Attempt, Job
from nbjobs.store.repository import utcnow

BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class _StateCollector(Collector):
    def __init__(self, service: JobService) -> None:
        self.service = service
        self._procs: dict[int, psutil.Process] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.service.store.count_by_state()
        jobs = GaugeMetricFamily("nbjobs_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily("nbjobs_queue_length", "Jobs waiting in the queue", value=counts.get("queued", 0))
        running = counts.get("starting", 0) + counts.get("running", 0)
        yield GaugeMetricFamily("nbjobs_running_jobs", "Jobs starting or running", value=running)

        allocator = self.service.allocator
        cap, free = allocator.capacity, allocator.free()
        capacity = GaugeMetricFamily("nbjobs_resource_capacity", "What this host offers jobs", labels=["resource"])
        allocated = GaugeMetricFamily("nbjobs_resource_allocated", "What running jobs were given", labels=["resource"])
        used = GaugeMetricFamily("nbjobs_resource_used", "What running jobs' kernels use now", labels=["resource"])
        capacity.add_metric(["cpus"], len(cap.cpus))
        allocated.add_metric(["cpus"], len(cap.cpus) - free.cpu_count)
        capacity.add_metric(["memory_bytes"], cap.memory)
        allocated.add_metric(["memory_bytes"], cap.memory - free.memory)
        capacity.add_metric(["gpus"], len(cap.gpus))
        allocated.add_metric(["gpus"], len(cap.gpus) - len(free.gpus))
        for name, total in sorted(cap.custom.items()):
            capacity.add_metric([name], total)
            allocated.add_metric([name], total - free.custom.get(name, 0))
        cpu, memory = self._kernel_usage()
        used.add_metric(["cpus"], cpu)
        used.add_metric(["memory_bytes"], memory)
        yield capacity
        yield allocated
        yield used

    def _kernel_usage(self) -> tuple[float, int]:
        """CPU cores busy (since the last scrape) and resident memory of the running kernels' process trees."""
        with self.service.store.session() as s:
            pids = list(
                s.scalars(
                    select(Attempt.pid)
                    .join(Job, (Job.id == Attempt.job_id) & (Job.attempt == Attempt.number))
                    .where(Job.state.in_([JobState.STARTING.value, JobState.RUNNING.value]), Attempt.pid.is_not(None))
                )
            )
        cpu, memory, seen = 0.0, 0, {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                root = self._procs.get(pid) or psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    proc = self._procs.get(proc.pid, proc)
                    seen[proc.pid] = proc
                    with contextlib.suppress(psutil.Error):
                        memory += proc.memory_info().rss
                        cpu += proc.cpu_percent(None) / 100  # since the previous call on this object
        self._procs = seen
        return round(cpu, 3), memory


class Metrics:
    def __init__(self, service: JobService) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StateCollector(service))
        self.wait_seconds = Histogram(
            "nbjobs_job_wait_seconds", "Seconds from submit to running", buckets=BUCKETS, registry=self.registry
        )
        self.run_seconds = Histogram(
            "nbjobs_job_run_seconds",
            "Seconds from running to end, by end state",
            ["state"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def on_event(self, event: StreamEvent) -> None:
        """The hub's listener: observe wait and run times as jobs start and end."""
        if event.kind != "state" or event.job_id is None:
            return
        state = JobState(event.data["state"])
        if state is not JobState.RUNNING and not state.is_final:
            return
        with self.service.store.session() as s:
            row = s.execute(select(Job.created, Job.started).where(Job.id == event.job_id)).first()
        if row is None:
            return
        if state is JobState.RUNNING:
            self.wait_seconds.observe(_seconds(row.created, event.at))
        elif row.started is not None:
            self.run_seconds.labels(state.value).observe(_seconds(row.started, event.at))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _seconds(start: datetime, end: datetime | None) -> float:
    return max(0.0, ((end or utcnow()) - start).total_seconds())
