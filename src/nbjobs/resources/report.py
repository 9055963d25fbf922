"""Requested against used, summed over groups of finished jobs (what `nbjobs report` shows).

Pure arithmetic over rows that carry a job's requested resources (the spec's
`resources`) and its last attempt's usage (`summary` from the usage monitor);
the store provides such rows, this module does not know the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

GroupBy = Literal["user", "tag", "notebook"]
NO_TAG = "(no tag)"


class UsageRow(Protocol):
    owner: str
    notebook: str
    tags: list[str]
    requested: dict[str, Any]
    usage: dict[str, Any]


@dataclass
class GroupUsage:
    """One group's totals. Ratios are used / requested over jobs that asked and were measured."""

    group: str
    jobs: int = 0
    measured: int = 0  # jobs with a usage summary
    memory_requested_jobs: int = 0
    memory_requested_sum: int = 0
    memory_requested_avg: float | None = None
    memory_peak_avg: float | None = None  # over measured jobs
    memory_ratio: float | None = None
    cpus_requested_jobs: int = 0
    cpus_requested_sum: float = 0.0
    cpus_requested_avg: float | None = None
    cpu_used_avg: float | None = None  # mean cores busy, over measured jobs
    cpu_ratio: float | None = None
    wall_time_sum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_keys(row: UsageRow, by: GroupBy) -> list[str]:
    if by == "user":
        return [row.owner]
    if by == "notebook":
        return [row.notebook]
    return list(row.tags) or [NO_TAG]  # a job with several tags counts in each


def summarize(rows: Iterable[UsageRow], by: GroupBy = "user") -> list[GroupUsage]:
    """One GroupUsage per group, largest groups first."""
    buckets: dict[str, list[UsageRow]] = {}
    for row in rows:
        for key in group_keys(row, by):
            buckets.setdefault(key, []).append(row)
    groups = [_summarize_group(key, members) for key, members in buckets.items()]
    return sorted(groups, key=lambda g: (-g.jobs, g.group))


def _summary(row: UsageRow) -> Mapping[str, Any] | None:
    summary = (row.usage or {}).get("summary")
    return summary if summary and summary.get("samples") else None


def _avg(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _summarize_group(key: str, rows: list[UsageRow]) -> GroupUsage:
    group = GroupUsage(group=key, jobs=len(rows))
    peaks: list[float] = []
    cores: list[float] = []
    memory_asked: list[int] = []
    cpus_asked: list[float] = []
    memory_pairs: list[tuple[int, int]] = []  # (requested, peak)
    cpu_pairs: list[tuple[float, float]] = []  # (requested, mean used)
    for row in rows:
        summary = _summary(row)
        memory = row.requested.get("memory")
        cpus = row.requested.get("cpus")
        if memory:
            memory_asked.append(int(memory))
        if cpus:
            cpus_asked.append(float(cpus))
        if summary is None:
            continue
        group.measured += 1
        peak = int(summary.get("peak_memory") or 0)
        mean_cpu = float(summary.get("mean_cpu") or 0.0)
        peaks.append(peak)
        cores.append(mean_cpu)
        group.wall_time_sum += float(summary.get("wall_time") or 0.0)
        if memory:
            memory_pairs.append((int(memory), peak))
        if cpus:
            cpu_pairs.append((float(cpus), mean_cpu))
    group.memory_requested_jobs = len(memory_asked)
    group.memory_requested_sum = sum(memory_asked)
    group.memory_requested_avg = _avg(memory_asked)
    group.memory_peak_avg = _avg(peaks)
    if memory_pairs:
        group.memory_ratio = sum(p for _, p in memory_pairs) / sum(r for r, _ in memory_pairs)
    group.cpus_requested_jobs = len(cpus_asked)
    group.cpus_requested_sum = sum(cpus_asked)
    group.cpus_requested_avg = _avg(cpus_asked)
    group.cpu_used_avg = _avg(cores)
    if cpu_pairs:
        group.cpu_ratio = sum(u for _, u in cpu_pairs) / sum(r for r, _ in cpu_pairs)
    group.wall_time_sum = round(group.wall_time_sum, 3)
    return group
