"""Measurement of a kernel's process tree while it runs, and advice from it.

`UsageMonitor` samples every `interval` seconds: memory (RSS of a lone
process; PSS summed over a tree of several, so pages a fork shares are counted
once, when reading it costs under a tenth of the interval; RSS otherwise),
CPU time (the cgroup's when there is one, else the processes' own, kept for
processes that ended), and GPU memory per process when the job has real GPUs.
It keeps a series of at most `max_points` points and a summary; it is also the
memory watchdog: over the limit, or an OOM kill in the job's cgroup, it calls
`on_exceeded(peak, limit)` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from nbjobs.resources.cgroups import JobCgroup
from nbjobs.resources.gpus import gpu_memory_by_pid
from nbjobs.spec import Resources, format_size

MAX_POINTS = 500
GPU_SAMPLE_SECONDS = 2.0  # nvidia-smi takes tens of milliseconds: ask it less often
PSS_BUDGET = 0.1  # share of the interval that reading PSS may take

ExceededCallback = Callable[[int, int], None]


@dataclass
class UsageSummary:
    peak_memory: int = 0  # bytes
    mean_cpu: float = 0.0  # cores busy on average
    cpu_time: float = 0.0  # seconds
    wall_time: float = 0.0  # seconds measured
    samples: int = 0
    peak_gpu_memory: int | None = None  # bytes; None when not measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Sample:
    t: float
    memory: int
    cpu: float  # cores, since the previous sample
    gpu: int | None


class Series:
    """Points of (time, memory, CPU, GPU memory), halved in resolution whenever they pass `max_points`."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.points: list[_Sample] = []
        self.stride = 1  # raw samples per point
        self._bucket: list[_Sample] = []

    def add(self, sample: _Sample) -> None:
        self._bucket.append(sample)
        if len(self._bucket) >= self.stride:
            self._flush()
        if len(self.points) > self.max_points:
            self.points = [_merge(self.points[i : i + 2]) for i in range(0, len(self.points), 2)]
            self.stride *= 2

    def _flush(self) -> None:
        if self._bucket:
            self.points.append(_merge(self._bucket))
            self._bucket = []

    def to_dict(self) -> dict[str, list[Any]]:
        points = self.points + ([_merge(self._bucket)] if self._bucket else [])
        series: dict[str, list[Any]] = {
            "t": [round(p.t, 3) for p in points],
            "memory": [p.memory for p in points],
            "cpu": [round(p.cpu, 3) for p in points],
        }
        if any(p.gpu is not None for p in points):
            series["gpu_memory"] = [p.gpu for p in points]
        return series


def _merge(samples: list[_Sample]) -> _Sample:
    """One point for several samples: the first time, the highest memory, the mean CPU."""
    gpus = [s.gpu for s in samples if s.gpu is not None]
    return _Sample(
        t=samples[0].t,
        memory=max(s.memory for s in samples),
        cpu=sum(s.cpu for s in samples) / len(samples),
        gpu=max(gpus) if gpus else None,
    )


class UsageMonitor:
    """Samples the process tree of `pid` in an asyncio task between `start()` and `stop()`."""

    def __init__(
        self,
        pid: int,
        *,
        interval: float = 1.0,
        memory_limit: int | None = None,
        watchdog: bool = True,
        cgroup: JobCgroup | None = None,
        gpus: bool = False,
        on_exceeded: ExceededCallback | None = None,
        max_points: int = MAX_POINTS,
    ) -> None:
        self.pid = pid
        self.interval = interval
        self.memory_limit = memory_limit
        self.watchdog = watchdog  # False when a cgroup enforces the limit: then we only watch for its OOM kills
        self.cgroup = cgroup
        self.gpus = gpus
        self.on_exceeded = on_exceeded
        self.series = Series(max_points)
        self.summary = UsageSummary()
        self.exceeded = False
        self._procs: dict[int, psutil.Process] = {}
        self._cpu_by_pid: dict[int, float] = {}  # last CPU seconds seen per process, ended ones included
        self._use_pss = True
        self._started = 0.0
        self._first_cpu: float | None = None
        self._last: tuple[float, float] | None = None  # (time, CPU seconds) of the previous sample
        self._last_gpu_at = -math.inf
        self._gpu: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._reading = threading.Lock()

    def start(self) -> None:
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._loop(), name=f"usage-monitor-{self.pid}")

    async def stop(self) -> UsageSummary:
        """End sampling after one last sample; the summary covers start to now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            with contextlib.suppress(Exception):
                await self._sample_once()
        if self._started:
            self.summary.wall_time = round(time.monotonic() - self._started, 3)
        if self.summary.wall_time > 0:
            self.summary.mean_cpu = round(self.summary.cpu_time / self.summary.wall_time, 3)
        return self.summary

    def usage(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(), "series": self.series.to_dict()}

    async def _loop(self) -> None:
        while True:
            await self._sample_once()
            await asyncio.sleep(self.interval)

    async def _sample_once(self) -> None:
        now = time.monotonic()
        want_gpu = self.gpus and now - self._last_gpu_at >= max(self.interval, GPU_SAMPLE_SECONDS)
        reading = await asyncio.to_thread(self._read, want_gpu)
        if reading is None:  # the tree is gone (an OOM kill, say): nothing to record, still a limit to check
            self._check_limit(0)
            return
        memory, cpu_seconds, gpu = reading
        if want_gpu:
            self._last_gpu_at = now
            self._gpu = gpu
        self._record(now, memory, cpu_seconds)
        self._check_limit(memory)

    def _record(self, now: float, memory: int, cpu_seconds: float) -> None:
        if self._first_cpu is None:
            self._first_cpu = cpu_seconds
        cores = 0.0
        if self._last is not None and now > self._last[0]:
            cores = max(cpu_seconds - self._last[1], 0.0) / (now - self._last[0])
        self._last = (now, cpu_seconds)
        summary = self.summary
        summary.samples += 1
        summary.peak_memory = max(summary.peak_memory, memory)
        summary.cpu_time = round(max(cpu_seconds - self._first_cpu, 0.0), 3)
        if self._gpu is not None:
            summary.peak_gpu_memory = max(summary.peak_gpu_memory or 0, self._gpu)
        self.series.add(_Sample(now - self._started, memory, cores, self._gpu))

    def _check_limit(self, memory: int) -> None:
        if self.exceeded or self.memory_limit is None:
            return
        over = self.watchdog and memory > self.memory_limit
        if self.cgroup is not None and self.cgroup.oom_kills() > 0:
            over = True
        if over:
            self.exceeded = True
            if self.on_exceeded is not None:
                self.on_exceeded(self.peak_memory(), self.memory_limit)

    def peak_memory(self) -> int:
        """The highest memory seen: our samples, or the cgroup's own peak when higher."""
        peak = self.summary.peak_memory
        if self.cgroup is not None:
            peak = max(peak, self.cgroup.memory_peak() or 0)
        return peak

    # ------------------------------------------------------------- reading (in a worker thread)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        # Keep Process objects across samples: psutil checks a reused pid against the start time.
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in procs}
        return list(self._procs.values())

    def _read(self, want_gpu: bool) -> tuple[int, float, int | None] | None:
        # A sample cancelled by stop() may still be reading in its thread while stop() takes the last one.
        with self._reading:
            return self._read_locked(want_gpu)

    def _read_locked(self, want_gpu: bool) -> tuple[int, float, int | None] | None:
        procs = self._tree()
        if not procs:
            return None
        memory = self._memory(procs)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                self._cpu_by_pid[proc.pid] = t.user + t.system + t.children_user + t.children_system
        cpu_seconds = sum(self._cpu_by_pid.values())
        if self.cgroup is not None and (cgroup_cpu := self.cgroup.cpu_seconds()) is not None:
            cpu_seconds = cgroup_cpu  # exact, and counts processes that left the tree
        gpu = gpu_memory_by_pid([p.pid for p in procs]) if want_gpu else None
        return memory, cpu_seconds, gpu

    def _memory(self, procs: list[psutil.Process]) -> int:
        if len(procs) > 1 and self._use_pss:
            started = time.monotonic()
            total = 0
            try:
                for proc in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += proc.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                self._use_pss = False
            else:
                self._use_pss = time.monotonic() - started < PSS_BUDGET * self.interval
                return total
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total


def exceeded_reason(peak: int, limit: int, *, oom_killed: bool = False) -> str:
    """The end reason of a job stopped for memory."""
    if oom_killed:
        return (
            f"memory exceeded the {format_size(limit)} limit: the kernel's OOM killer ended the job "
            f"(peak {format_size(peak)})"
        )
    return f"memory {format_size(peak)} exceeded the {format_size(limit)} limit (peak {format_size(peak)})"


# ------------------------------------------------------------------ advice

NICE_SIZES = [2**i * 2**20 for i in range(8, 11)] + [int(k * 2**30) for k in (1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)]
MEMORY_HEADROOM = 1.25
MIN_WALL_FOR_CPU_ADVICE = 10.0  # seconds: shorter runs are mostly start-up


def suggest_memory(peak: int) -> int:
    """A round size with headroom above `peak`: 310 MiB -> 512 MiB."""
    target = peak * MEMORY_HEADROOM
    for size in NICE_SIZES:
        if size >= target:
            return size
    return 2 ** math.ceil(math.log2(target))


def hoarding_advice(requested: Resources, usage: UsageSummary | Mapping[str, Any]) -> str | None:
    """One line when a job asked for much more than it used, else None."""
    summary = usage.to_dict() if isinstance(usage, UsageSummary) else dict(usage)
    if not summary.get("samples"):
        return None
    tips = []
    peak = int(summary.get("peak_memory") or 0)
    if requested.memory is not None and peak > 0:
        suggestion = suggest_memory(peak)
        if peak < requested.memory / 2 and suggestion < requested.memory:
            tips.append(
                f"asked {format_size(requested.memory)}, peak {format_size(peak)}: consider {format_size(suggestion)}"
            )
    mean_cpu = float(summary.get("mean_cpu") or 0.0)
    wall = float(summary.get("wall_time") or 0.0)
    if requested.cpus is not None and requested.cpus >= 2 and wall >= MIN_WALL_FOR_CPU_ADVICE:
        suggestion_cpus = max(1, math.ceil(mean_cpu * MEMORY_HEADROOM))
        if mean_cpu < requested.cpus / 2 and suggestion_cpus < requested.cpus:
            tips.append(f"asked {requested.cpus:g} CPUs, used {mean_cpu:.1f} on average: consider {suggestion_cpus}")
    gpu_peak = summary.get("peak_gpu_memory")
    if requested.gpus and gpu_peak == 0:
        tips.append(f"asked {requested.gpus} GPU{'s' if requested.gpus > 1 else ''}, used no GPU memory")
    return "; ".join(tips) or None
