"""The scheduler's view of jobs: plain immutable values, no store, no pydantic.

The server's scheduler loop builds these from store rows; the policy only ever
sees counts and times, which is what keeps it testable without kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbjobs.spec import Resources

# CPU requests are fractional; sums of fractions drift by ~1e-15, so compare with slack.
CPU_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Counts:
    """How much of each resource: what a job asks for, or what a host has in all.

    `custom` holds named counts from the host's config (licenses, ...); zero
    entries are dropped so that equal requests compare and hash equal, which is
    what lets one pass of the policy treat identical requests as one.
    `shape` is the same amounts as a plain tuple: the key the policy's per-pass
    memo tables use, hashed and compared in C (a pass does that hundreds of times).
    """

    cpus: float = 0.0
    memory: int = 0  # bytes
    gpus: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)
    shape: tuple[object, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cpus) and self.cpus >= 0) or self.memory < 0 or self.gpus < 0:
            raise ValueError(f"resource counts must be finite and >= 0, got {self!r}")
        if any(count < 0 for count in self.custom.values()):
            raise ValueError(f"custom counts must be >= 0, got {dict(self.custom)!r}")
        custom = MappingProxyType({name: count for name, count in sorted(self.custom.items()) if count})
        object.__setattr__(self, "custom", custom)
        object.__setattr__(self, "shape", (self.cpus, self.memory, self.gpus, tuple(custom.items())))

    def __hash__(self) -> int:
        return hash(self.shape)

    @classmethod
    def from_resources(cls, resources: Resources, *, default_cpus: float = 1.0) -> Counts:
        """A job spec's request as counts.

        A job that names no CPUs still runs a kernel, which keeps at least one
        core busy, hence `default_cpus`; a job that names no memory is not
        accounted for memory (there is nothing honest to count).
        """
        return cls(
            cpus=resources.cpus if resources.cpus is not None else default_cpus,
            memory=resources.memory or 0,
            gpus=resources.gpus,
            custom=dict(resources.custom),
        )


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job waiting to start, as the policy needs it.

    `time_bound` is the most seconds the job may run: its timeout, or the
    configured default for jobs without one (SchedulerConfig.default_time_bound).
    Reservations are only as good as this bound, so the runner must enforce it.
    Order is priority (higher first), then `submitted`, then `id`: store ids grow
    with submission, so they settle ties between jobs submitted in the same instant.
    """

    id: int
    request: Counts
    time_bound: float
    priority: int = 0
    submitted: float = 0.0
    user: str | None = None
    pool: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_bound) and self.time_bound > 0):
            raise ValueError(f"job {self.id}: time_bound must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job that holds resources; `expected_end` = its start + its time bound."""

    id: int
    request: Counts
    expected_end: float
    user: str | None = None
    pool: str | None = None

    @classmethod
    def started(cls, job: QueuedJob, now: float) -> RunningJob:
        return cls(job.id, job.request, now + job.time_bound, job.user, job.pool)


@dataclass(frozen=True, slots=True)
class Limits:
    """Concurrency limits: most running jobs per pool, and per user.

    Jobs without a user are not subject to `per_user_running`; a pool without an
    entry in `pools` has no limit.
    """

    pools: Mapping[str, int] = field(default_factory=dict)
    per_user_running: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        """From an `nbjobs.config.SchedulerConfig` (duck-typed: the scheduler imports no config)."""
        return cls(
            pools={name: pool.limit for name, pool in config.pools.items()},
            per_user_running=config.per_user_running,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """The promise EASY backfill makes to the first job that cannot start.

    `promised` is the start computed when the reservation was made; `start` is
    the current projection, never later than `promised` while every job keeps
    within its time bound (jobs ending early only move it earlier).
    """

    job_id: int
    start: float
    promised: float
    made_at: float
