"""What this host can give to jobs: CPUs, memory, GPUs and custom counts.

Detected from what this process may use (its CPU affinity, its cgroup's memory
limit when lower than the machine's, the GPUs NVML or nvidia-smi report),
plus the custom counts of the host config, minus what the config reserves for
the system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nbjobs.config import Config
from nbjobs.errors import InvalidInput
from nbjobs.resources.cgroups import cgroup2_mount, own_cgroup
from nbjobs.resources.gpus import GpuInfo, detect_gpus
from nbjobs.spec import format_size

UNLIMITED_V1 = 2**62  # cgroup v1 reports "no limit" as a huge page-rounded number


@dataclass(frozen=True)
class HostCapacity:
    cpus: tuple[int, ...]  # CPU ids jobs may be pinned to
    memory: int  # bytes
    gpus: tuple[GpuInfo, ...] = ()
    custom: dict[str, int] = field(default_factory=dict)
    cpu_packages: dict[int, int] = field(default_factory=dict)  # CPU id -> socket, for packing

    def describe(self) -> str:
        """For people: '2 CPUs, 23.4 GiB, 0 GPUs, licenses=2'."""
        parts = [
            f"{len(self.cpus)} CPU{'s' if len(self.cpus) != 1 else ''}",
            format_size(self.memory),
            f"{len(self.gpus)} GPU{'s' if len(self.gpus) != 1 else ''}",
        ]
        parts += [f"{name}={count}" for name, count in sorted(self.custom.items())]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "cpus": list(self.cpus),
            "memory": self.memory,
            "gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name, "memory": g.memory} for g in self.gpus],
            "custom": dict(self.custom),
        }


def detect_capacity(config: Config | None = None, *, gpus: bool = True) -> HostCapacity:
    """This host's capacity under `config` ([resources] custom, reserve_cpus, reserve_memory).

    `gpus=False` skips GPU detection (it may run nvidia-smi, tens of milliseconds or
    more) for callers that know no GPU is wanted.
    """
    settings = (config or Config()).resources
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if settings.reserve_cpus >= len(cpus):
        raise InvalidInput(
            f"Config [resources] reserve_cpus = {settings.reserve_cpus} leaves no CPU for jobs: this process "
            f"may use {len(cpus)} CPU(s). Set reserve_cpus below {len(cpus)}."
        )
    # The lowest ids stay with the system: CPU 0 is where most hosts route their interrupts.
    cpus = cpus[settings.reserve_cpus :]
    memory = host_memory()
    reserve = settings.reserve_memory or 0
    if reserve >= memory:
        raise InvalidInput(
            f"Config [resources] reserve_memory = {format_size(reserve)} leaves no memory for jobs: this host "
            f"has {format_size(memory)}. Set reserve_memory below that."
        )
    return HostCapacity(
        cpus=cpus,
        memory=memory - reserve,
        gpus=detect_gpus() if gpus else (),
        custom=dict(settings.custom),
        cpu_packages=_cpu_packages(cpus),
    )


def host_memory() -> int:
    """Physical memory, or this process's cgroup memory limit when that is lower."""
    total = int(psutil.virtual_memory().total)
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


def cgroup_memory_limit() -> int | None:
    """The lowest memory limit on this process's cgroup and its ancestors (v2, else v1)."""
    limits: list[int] = []
    group, mount = own_cgroup(), cgroup2_mount()
    while group is not None and mount is not None and (group == mount or mount in group.parents):
        value = _read(group / "memory.max")
        if value and value != "max" and value.isdigit():
            limits.append(int(value))
        if group == mount:
            break
        group = group.parent
    v1 = _v1_memory_limit()
    if v1 is not None:
        limits.append(v1)
    return min(limits) if limits else None


def _v1_memory_limit() -> int | None:
    text = _read(Path("/proc/self/cgroup")) or ""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            for candidate in (Path("/sys/fs/cgroup/memory") / path.lstrip("/"), Path("/sys/fs/cgroup/memory")):
                value = _read(candidate / "memory.limit_in_bytes")
                if value and value.isdigit():
                    return int(value) if int(value) < UNLIMITED_V1 else None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_packages(cpus: tuple[int, ...]) -> dict[int, int]:
    packages = {}
    for cpu in cpus:
        value = _read(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"))
        packages[cpu] = int(value) if value and value.lstrip("-").isdigit() else 0
    return packages
