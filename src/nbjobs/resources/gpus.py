"""GPUs: which this host has, and how much GPU memory each process uses.

NVML (the `pynvml` module, when installed) is asked first, then `nvidia-smi`.
`NBJOBS_GPUS` replaces detection, for tests and for hosts where detection is
wrong: a count ("2" gives fake ids GPU-fake-0 and GPU-fake-1) or a comma list of
ids as CUDA_VISIBLE_DEVICES takes them; "0" or "" means no GPU.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FAKE_PREFIX = "GPU-fake-"
NVIDIA_SMI_TIMEOUT = 10.0


@dataclass(frozen=True)
class GpuInfo:
    index: int  # as nvidia-smi numbers it (PCI bus order)
    uuid: str  # what CUDA_VISIBLE_DEVICES gets: stable across reboots and device orders
    name: str = ""
    memory: int = 0  # bytes; 0 when unknown

    @property
    def fake(self) -> bool:
        return self.uuid.startswith(FAKE_PREFIX) or self.name == "fake"


def detect_gpus(env: dict[str, str] | None = None) -> tuple[GpuInfo, ...]:
    """The GPUs this process may hand out, in index order."""
    env = dict(os.environ if env is None else env)
    if "NBJOBS_GPUS" in env:
        return fake_gpus(env["NBJOBS_GPUS"])
    gpus = _from_nvml()
    if gpus is None:
        gpus = _from_nvidia_smi()
    # A process that was itself given some GPUs (a batch system, a container) hands out only those.
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and gpus:
        allowed = {v.strip() for v in visible.split(",") if v.strip()}
        gpus = tuple(g for g in gpus if str(g.index) in allowed or g.uuid in allowed)
    return gpus or ()


def fake_gpus(value: str) -> tuple[GpuInfo, ...]:
    """GPUs described by NBJOBS_GPUS: a count or a comma list of ids."""
    value = value.strip()
    if value.isdigit():
        return tuple(GpuInfo(index=i, uuid=f"{FAKE_PREFIX}{i}", name="fake") for i in range(int(value)))
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(GpuInfo(index=i, uuid=gpu_id, name="fake") for i, gpu_id in enumerate(ids))


def _from_nvml() -> tuple[GpuInfo, ...] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVML is installed but there is nothing to ask
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return tuple(gpus)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvidia_smi(*args: str) -> list[list[str]] | None:
    """Rows of a `nvidia-smi --format=csv,noheader,nounits` query, or None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def _from_nvidia_smi() -> tuple[GpuInfo, ...]:
    rows = _nvidia_smi("--query-gpu=index,uuid,name,memory.total")
    gpus = []
    for row in rows or []:
        if len(row) < 4 or not row[0].isdigit():
            continue
        memory = int(float(row[3]) * 2**20) if _is_number(row[3]) else 0  # MiB
        gpus.append(GpuInfo(index=int(row[0]), uuid=row[1], name=row[2], memory=memory))
    return tuple(sorted(gpus, key=lambda g: g.index))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def gpu_memory_by_pid(pids: Iterable[int]) -> int | None:
    """GPU memory (bytes) used by the processes `pids`, over all GPUs; None when it cannot be asked."""
    wanted = set(pids)
    used = _nvml_memory_by_pid(wanted)
    if used is not None:
        return used
    rows = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if rows is None:
        return None
    total = 0
    for row in rows:
        if len(row) >= 2 and row[0].isdigit() and int(row[0]) in wanted and _is_number(row[1]):
            total += int(float(row[1]) * 2**20)  # MiB
    return total


def _nvml_memory_by_pid(wanted: set[int]) -> int | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        total = 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in wanted and proc.usedGpuMemory:
                    total += int(proc.usedGpuMemory)
        return total
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
