"""What a Dask worker offers to jobs: the resources it advertises and the ids behind them.

A worker advertises Dask resources `CPU`, `MEMORY` (bytes), `GPU` and custom
names; Dask then never runs more attempts on it than those cover. The concrete
CPU and GPU ids behind the counts are the worker's own: `nbjobs worker` passes
them to its worker process in NBJOBS_WORKER_CPUS / NBJOBS_WORKER_GPUS, and the
worker's Allocator pins each attempt to some of them. A worker started another
way (`dask worker --resources CPU=4,GPU=1`, as dask-jobqueue or dask-kubernetes
do) gets ids from what its process may use: its CPU affinity and the GPUs it
sees (CUDA_VISIBLE_DEVICES, NBJOBS_GPUS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from nbjobs.errors import InvalidInput
from nbjobs.resources.capacity import HostCapacity, host_memory
from nbjobs.resources.cluster import BUILTIN, CPU, GPU, MEMORY
from nbjobs.resources.gpus import GpuInfo, detect_gpus

WORKER_CPUS_ENV = "NBJOBS_WORKER_CPUS"
WORKER_GPUS_ENV = "NBJOBS_WORKER_GPUS"
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_cpus(text: str | None) -> tuple[int, ...]:
    """--cpus: a count ("2": the first two CPUs this process may use) or ids ("0,2-3", "5-5")."""
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    if text is None or not text.strip():
        return allowed
    text = text.strip()
    if text.isdigit():  # one number is a count; one id is written as a range ("5-5")
        count = int(text)
        if count == 0:
            raise InvalidInput("--cpus 0: a worker needs at least one CPU.")
        if count > len(allowed):
            raise InvalidInput(
                f"--cpus {count}: this process may use {len(allowed)} CPU(s) ({_ids(allowed)}); give at most that."
            )
        return allowed[:count]
    ids: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise InvalidInput(f"--cpus {text!r}: give a count (4) or CPU ids such as 0,2-3.")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        ids.extend(range(low, high + 1))
    unknown = sorted(set(ids) - set(allowed))
    if unknown:
        raise InvalidInput(f"--cpus {text!r}: CPU(s) {_ids(tuple(unknown))} are not available here ({_ids(allowed)}).")
    return tuple(sorted(set(ids)))


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids)) or "none"


def parse_gpus(text: str | None) -> tuple[GpuInfo, ...]:
    """--gpus: a count (the first N GPUs found) or ids as CUDA_VISIBLE_DEVICES takes them ("0,1", UUIDs)."""
    found = detect_gpus()
    if text is None:
        return found
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if count > len(found):
            raise InvalidInput(
                f"--gpus {count}: {len(found)} GPU(s) found on this host. Give GPU ids (--gpus 0,1), "
                "or set NBJOBS_GPUS to a count to fake GPUs for tests."
            )
        return found[:count]
    ids = [part.strip() for part in text.split(",") if part.strip()]
    known = {str(g.index): g for g in found} | {g.uuid: g for g in found}
    return tuple(known.get(gpu_id) or GpuInfo(index=i, uuid=gpu_id, name="given") for i, gpu_id in enumerate(ids))


def parse_custom(pairs: tuple[tuple[str, str], ...]) -> dict[str, int]:
    """--resource NAME=COUNT pairs."""
    custom: dict[str, int] = {}
    for name, value in pairs:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", name) or name in BUILTIN:
            raise InvalidInput(
                f"--resource {name}={value}: the name must be an identifier other than {', '.join(BUILTIN)} "
                "(use --cpus, --memory, --gpus for those)."
            )
        if not value.isdigit() or int(value) <= 0:
            raise InvalidInput(f"--resource {name}={value}: the count must be a whole number above 0.")
        custom[name] = int(value)
    return custom


def advertised(
    cpus: tuple[int, ...], memory: int, gpus: tuple[GpuInfo, ...], custom: dict[str, int]
) -> dict[str, float]:
    """The Dask resources a worker with these offers advertises."""
    resources: dict[str, float] = {CPU: float(len(cpus)), MEMORY: float(memory)}
    if gpus:
        resources[GPU] = float(len(gpus))
    resources.update({name: float(count) for name, count in custom.items()})
    return resources


def worker_env(cpus: tuple[int, ...], gpus: tuple[GpuInfo, ...]) -> dict[str, str]:
    """What the worker process is told: the ids behind its CPU and GPU counts."""
    return {WORKER_CPUS_ENV: ",".join(map(str, cpus)), WORKER_GPUS_ENV: ",".join(g.uuid for g in gpus)}


def worker_capacity(total: Mapping[str, float], env: Mapping[str, str] | None = None) -> HostCapacity:
    """The capacity behind a worker's advertised resources, for its own Allocator."""
    env = os.environ if env is None else env
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    if env.get(WORKER_CPUS_ENV):
        cpus = tuple(int(c) for c in env[WORKER_CPUS_ENV].split(","))
    else:
        cpus = allowed[: int(total.get(CPU, len(allowed))) or len(allowed)]
    gpu_count = int(total.get(GPU, 0))
    if env.get(WORKER_GPUS_ENV):
        ids = env[WORKER_GPUS_ENV].split(",")
        gpus = tuple(GpuInfo(index=i, uuid=gpu_id, name="worker") for i, gpu_id in enumerate(ids))
    else:
        gpus = detect_gpus(dict(env))
    return HostCapacity(
        cpus=cpus,
        memory=int(total.get(MEMORY) or host_memory()),
        gpus=gpus[:gpu_count],
        custom={name: int(count) for name, count in total.items() if name not in BUILTIN},
    )
