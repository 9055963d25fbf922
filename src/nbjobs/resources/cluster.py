"""Admission for a Dask cluster: what its workers advertise, and what jobs in flight asked for.

With the dask backend the server does not hand out concrete CPU or GPU ids:
Dask places each attempt on a worker that advertises enough (worker resources
CPU, MEMORY, GPU and custom names), and that worker picks the ids from its own
Allocator. The server still decides *when* a job is handed to Dask, so that
queue order, reasons and limits stay the server's: a job starts when the
cluster's advertised totals, minus what jobs in flight asked for, cover it.
A job that no single worker could ever host is refused at submit.

The request maps to Dask resources with the same rules as the local Allocator:
CPUs are whole (a job that asks none counts as one), memory only when asked.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping

from nbjobs.errors import InvalidInput
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import FreeResources
from nbjobs.resources.capacity import HostCapacity
from nbjobs.resources.gpus import GpuInfo
from nbjobs.spec import Resources, format_size

CPU, MEMORY, GPU = "CPU", "MEMORY", "GPU"
BUILTIN = (CPU, MEMORY, GPU)


def dask_resources(resources: Resources) -> dict[str, float]:
    """The Dask worker resources one attempt of a job with `resources` occupies."""
    wanted: dict[str, float] = {CPU: float(max(math.ceil(resources.cpus or 0), 1))}
    if resources.memory is not None:
        wanted[MEMORY] = float(resources.memory)
    if resources.gpus:
        wanted[GPU] = float(resources.gpus)
    for name, count in resources.custom.items():
        wanted[name] = float(count)
    return wanted


def describe_resources(resources: Mapping[str, float]) -> str:
    """'2 CPUs, 4 GiB, 1 GPU, licenses=2' for people."""
    parts = []
    if CPU in resources:
        parts.append(f"{resources[CPU]:g} CPU{'s' if resources[CPU] != 1 else ''}")
    if MEMORY in resources:
        parts.append(f"{format_size(int(resources[MEMORY]))} memory")
    if GPU in resources:
        parts.append(f"{resources[GPU]:g} GPU{'s' if resources[GPU] != 1 else ''}")
    parts += [f"{name}={count:g}" for name, count in sorted(resources.items()) if name not in BUILTIN]
    return ", ".join(parts) or "no resources"


def _amount(name: str, value: float) -> str:
    if name == MEMORY:
        return format_size(int(max(value, 0)))
    unit = {CPU: " CPU", GPU: " GPU"}.get(name, f" {name}")
    plural = "s" if name in (CPU, GPU) and value != 1 else ""
    return f"{max(value, 0):g}{unit}{plural}"


class ClusterAllocator:
    """Thread-safe admission against the workers of one Dask cluster (see the module doc)."""

    def __init__(self, address: str = "") -> None:
        self.address = address
        self._lock = threading.Lock()
        self._workers: dict[str, dict[str, float]] = {}
        self._booked: Counter[str] = Counter()
        self._live: dict[int, dict[str, float]] = {}  # by identity of the Allocation, as the Allocator does

    # ------------------------------------------------------------ the cluster

    def update(self, workers: Mapping[str, Mapping[str, float]]) -> None:
        """Replace the workers and what each advertises (name -> resources)."""
        with self._lock:
            self._workers = {name: dict(res) for name, res in workers.items()}

    def workers(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: dict(res) for name, res in self._workers.items()}

    def _totals(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for res in self._workers.values():
            totals.update(res)
        return totals

    @property
    def capacity(self) -> HostCapacity:
        """The cluster's totals, shaped as one host's capacity (for the queue view)."""
        with self._lock:
            totals = self._totals()
        return HostCapacity(
            cpus=tuple(range(int(totals[CPU]))),
            memory=int(totals[MEMORY]),
            gpus=tuple(GpuInfo(index=i, uuid=f"cluster-gpu-{i}", name="dask") for i in range(int(totals[GPU]))),
            custom={name: int(count) for name, count in totals.items() if name not in BUILTIN},
        )

    # ------------------------------------------------------------ questions

    def check_fits(self, resources: Resources) -> None:
        """InvalidInput when no worker could ever host `resources`; nothing to say without workers."""
        wanted = dask_resources(resources)
        with self._lock:
            workers = dict(self._workers)
        if not workers or any(_covers(res, wanted) for res in workers.values()):
            return
        listed = "; ".join(f"{name}: {describe_resources(res)}" for name, res in sorted(workers.items()))
        raise InvalidInput(
            f"The job can never run on this Dask cluster: it needs {describe_resources(wanted)} on one worker, "
            f"and no worker advertises that. Workers: {listed}. Ask for less, or start a worker with "
            "`nbjobs worker --cpus/--memory/--gpus/--resource NAME=COUNT`."
        )

    def free(self) -> FreeResources:
        with self._lock:
            free = self._totals()
            free.subtract(self._booked)
        return FreeResources(
            cpus=(),
            cpu_count=int(free[CPU]),
            memory=int(free[MEMORY]),
            gpus=tuple(str(i) for i in range(max(int(free[GPU]), 0))),
            custom={name: int(count) for name, count in free.items() if name not in BUILTIN},
        )

    def shortfall(self, resources: Resources) -> str | None:
        """Why `resources` cannot be handed to Dask now (a queue reason), or None."""
        with self._lock:
            return self._shortfall(dask_resources(resources))

    def _shortfall(self, wanted: dict[str, float]) -> str | None:
        if not self._workers:
            where = f" at {self.address}" if self.address else ""
            return f"no Dask worker is connected to the scheduler{where}"
        if not any(_covers(res, wanted) for res in self._workers.values()):
            return f"no connected Dask worker advertises {describe_resources(wanted)}"
        free = self._totals()
        free.subtract(self._booked)
        reasons = [
            f"needs {_amount(name, count)}, {_amount(name, free[name])} free"
            for name, count in wanted.items()
            if count > free[name]
        ]
        return "; ".join(reasons) or None

    # ------------------------------------------------------------ bookings

    def try_allocate(self, resources: Resources) -> Allocation | None:
        """A booking for `resources` (no concrete ids: the worker picks those), or None if they are not free."""
        wanted = dask_resources(resources)
        with self._lock:
            if self._shortfall(wanted) is not None:
                return None
            allocation = Allocation(memory=resources.memory, custom=dict(resources.custom))
            self._live[id(allocation)] = wanted
            self._booked.update(wanted)
            return allocation

    def release(self, allocation: Allocation) -> bool:
        with self._lock:
            wanted = self._live.pop(id(allocation), None)
            if wanted is None:
                return False
            self._booked.subtract(wanted)
            return True


def _covers(advertised: Mapping[str, float], wanted: Mapping[str, float]) -> bool:
    return all(advertised.get(name, 0) >= count for name, count in wanted.items())
