"""Hands out concrete resources of one host to jobs, never booking anything twice.

Accounting rules:
- CPUs are whole: a request for 1.5 CPUs is pinned to 2 CPU ids. A job that
  asks for no CPUs is not pinned (it may run on any CPU) but counts as one
  CPU, so the CPUs booked never exceed the CPUs there are.
- Memory: the limits booked never exceed the host's memory. A job that asks
  for none is neither limited nor counted.
- GPUs are whole and never shared: each GPU belongs to one job at a time.
- Custom counts (licenses, ...) are plain counters defined by the host config.

CPU ids are packed: a job gets CPUs of one socket when one has room (the
socket with the least room that fits, so big blocks stay free), lowest ids first.
An allocator that cannot see the other jobs (a foreground run) should spread
instead (`spread=True`): it then starts at a random CPU of that socket and a
random free GPU, so two such runs seldom land on the same CPU or GPU.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from nbjobs.errors import InvalidInput
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.capacity import HostCapacity
from nbjobs.spec import Resources, format_size


def cpus_needed(resources: Resources) -> int:
    """Whole CPUs a request is pinned to (0: not pinned)."""
    return math.ceil(resources.cpus) if resources.cpus is not None else 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class FreeResources:
    cpus: tuple[int, ...]  # CPU ids no job is pinned to
    cpu_count: int  # how many more CPUs may be booked (unpinned jobs take one each)
    memory: int
    gpus: tuple[str, ...]
    custom: dict[str, int] = field(default_factory=dict)


class Allocator:
    """Thread-safe bookkeeping of one host's capacity."""

    def __init__(self, capacity: HostCapacity, *, spread: bool = False) -> None:
        self.capacity = capacity
        self.spread = spread
        self._lock = threading.Lock()
        self._pinned: set[int] = set()
        self._unpinned = 0
        self._memory = 0
        self._gpus: set[str] = set()
        self._custom: Counter[str] = Counter()
        # Keyed by identity: two unpinned allocations are equal values but two bookings.
        self._live: dict[int, Allocation] = {}

    # ------------------------------------------------------------ questions

    def check_fits(self, resources: Resources) -> None:
        """InvalidInput when `resources` could never fit this host, even with every job gone."""
        cap = self.capacity
        problems = []
        cpus = cpus_needed(resources)
        if cpus > len(cap.cpus):
            problems.append(
                f"`resources.cpus` = {resources.cpus:g} needs {_plural(cpus, 'CPU')}, "
                f"this host has {len(cap.cpus)} for jobs"
            )
        if resources.memory is not None and resources.memory > cap.memory:
            problems.append(
                f"`resources.memory` = {format_size(resources.memory)} is more than the "
                f"{format_size(cap.memory)} this host has for jobs"
            )
        if resources.gpus > len(cap.gpus):
            problems.append(f"`resources.gpus` = {resources.gpus}, this host has {_plural(len(cap.gpus), 'GPU')}")
        unknown = sorted(set(resources.custom) - set(cap.custom))
        if unknown:
            known = ", ".join(f"{k} ({v})" for k, v in sorted(cap.custom.items())) or "none"
            problems.append(
                f"`resources.custom` names unknown resource(s) {', '.join(unknown)}; this host defines: {known} "
                "(set in the [resources] custom table of its config.toml)"
            )
        for name, count in sorted(resources.custom.items()):
            if name in cap.custom and count > cap.custom[name]:
                problems.append(f"`resources.custom.{name}` = {count}, this host has {cap.custom[name]}")
        if problems:
            raise InvalidInput(
                "The job can never run on this host: " + "; ".join(problems) + f". This host has {cap.describe()}."
            )

    def free(self) -> FreeResources:
        with self._lock:
            return self._free()

    def _free(self) -> FreeResources:
        cap = self.capacity
        cpus = tuple(c for c in cap.cpus if c not in self._pinned)
        return FreeResources(
            cpus=cpus,
            cpu_count=len(cpus) - self._unpinned,
            memory=cap.memory - self._memory,
            gpus=tuple(g.uuid for g in cap.gpus if g.uuid not in self._gpus),
            custom={name: count - self._custom[name] for name, count in cap.custom.items()},
        )

    def shortfall(self, resources: Resources) -> str | None:
        """Why `resources` cannot be allocated now (a queue reason), or None if they can."""
        with self._lock:
            return self._shortfall(resources, self._free())

    def _shortfall(self, resources: Resources, free: FreeResources) -> str | None:
        reasons = []
        cpus = cpus_needed(resources) or 1
        if cpus > free.cpu_count:
            reasons.append(f"needs {_plural(cpus, 'CPU')}, {max(free.cpu_count, 0)} free")
        if resources.memory is not None and resources.memory > free.memory:
            reasons.append(f"needs {format_size(resources.memory)} memory, {format_size(max(free.memory, 0))} free")
        if resources.gpus > len(free.gpus):
            reasons.append(f"needs {_plural(resources.gpus, 'GPU')}, {len(free.gpus)} free")
        for name, count in sorted(resources.custom.items()):
            available = free.custom.get(name, 0)
            if count > available:
                reasons.append(f"needs {count} {name}, {available} free")
        return "; ".join(reasons) or None

    # ------------------------------------------------------------ bookings

    def try_allocate(self, resources: Resources) -> Allocation | None:
        """Concrete resources for `resources`, booked; None when they are not free now."""
        with self._lock:
            free = self._free()
            if self._shortfall(resources, free) is not None:
                return None
            allocation = Allocation(
                cpus=self._pick_cpus(free.cpus, cpus_needed(resources)),
                memory=resources.memory,
                gpus=self._pick_gpus(free.gpus, resources.gpus),
                custom=dict(resources.custom),
            )
            self._book(allocation)
            return allocation

    def adopt(self, allocation: Allocation) -> None:
        """Book an allocation made earlier (e.g. for jobs still running after a restart)."""
        with self._lock:
            taken = set(allocation.cpus) & self._pinned or set(allocation.gpus) & self._gpus
            if taken:
                raise ValueError(f"already booked: {sorted(map(str, taken))}")
            self._book(allocation)

    def release(self, allocation: Allocation) -> bool:
        """Give an allocation back; False if it was not booked (releasing twice is harmless)."""
        with self._lock:
            if self._live.pop(id(allocation), None) is None:
                return False
            if allocation.cpus:
                self._pinned.difference_update(allocation.cpus)
            else:
                self._unpinned -= 1
            self._memory -= allocation.memory or 0
            self._gpus.difference_update(allocation.gpus)
            self._custom.subtract(allocation.custom)
            return True

    def _book(self, allocation: Allocation) -> None:
        self._live[id(allocation)] = allocation
        if allocation.cpus:
            self._pinned.update(allocation.cpus)
        else:
            self._unpinned += 1
        self._memory += allocation.memory or 0
        self._gpus.update(allocation.gpus)
        self._custom.update(allocation.custom)

    def _pick_gpus(self, free: tuple[str, ...], count: int) -> tuple[str, ...]:
        start = random.randrange(len(free)) if self.spread and free else 0
        return (free[start:] + free[:start])[:count]

    def _pick_cpus(self, free: tuple[int, ...], count: int) -> tuple[int, ...]:
        if count == 0:
            return ()
        by_package: dict[int, list[int]] = {}
        for cpu in free:
            by_package.setdefault(self.capacity.cpu_packages.get(cpu, 0), []).append(cpu)
        fitting = [ids for ids in by_package.values() if len(ids) >= count]
        if fitting:
            ids = min(fitting, key=len)
            start = random.randrange(len(ids)) if self.spread else 0
            return tuple(sorted((ids + ids)[start : start + count]))
        # No socket has room: span as few sockets as possible, fullest-free first.
        chosen: list[int] = []
        for ids in sorted(by_package.values(), key=len, reverse=True):
            chosen += ids[: count - len(chosen)]
            if len(chosen) == count:
                break
        return tuple(sorted(chosen))
