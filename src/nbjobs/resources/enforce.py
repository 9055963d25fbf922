"""Enforcement of an allocation on a kernel's process tree.

- CPUs: affinity set in the kernel process before it runs any code; its
  children inherit it. Thread-pool variables say how many CPUs there are.
- GPUs: CUDA_VISIBLE_DEVICES (UUIDs when known) with CUDA_DEVICE_ORDER=PCI_BUS_ID.
- Memory: a cgroup v2 group with memory.max where we may create one (the
  kernel's OOM killer ends the job; memory.events tells us it did); else the
  usage monitor's watchdog kills the whole tree when it goes over. For Python
  kernels without a GPU, a generous RLIMIT_AS backstop also stops one huge
  allocation between two watchdog samples. Address space is not memory: an
  idle ipykernel maps ~800 MiB, CUDA maps terabytes and a JVM reserves a
  quarter of the host's memory up front, so the backstop sits far above the
  limit and is not set for GPU jobs or other languages.

`apply_in_child` runs in the kernel's process before exec (a `preexec_fn`) or in
a child forked by a zygote; it uses only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass

from nbjobs.resources.allocation import Allocation
from nbjobs.resources.cgroups import JobCgroup, memory_parent

GiB = 1024**3
BACKSTOP_FACTOR = 4
BACKSTOP_HEADROOM = 8 * GiB
PER_THREAD_HEADROOM = 128 * 1024**2


def address_space_backstop(allocation: Allocation, language: str = "python") -> int | None:
    """The RLIMIT_AS for a kernel of `language` under this allocation, or None for none."""
    if allocation.memory is None or allocation.gpus or language != "python":
        return None
    # Each thread may reserve a malloc arena and a BLAS buffer: room for one per CPU it may use.
    threads = len(allocation.cpus) or os.cpu_count() or 1
    headroom = BACKSTOP_HEADROOM + threads * PER_THREAD_HEADROOM
    return max(BACKSTOP_FACTOR * allocation.memory, allocation.memory + headroom)


def apply_in_child(
    allocation: Allocation,
    cgroup: str | None = None,
    *,
    address_space: int | None = None,
    set_env: bool = True,
) -> None:
    """Put the calling process under `allocation`: cgroup, affinity, RLIMIT_AS, environment.

    For a `preexec_fn` pass `set_env=False` and give `allocation.kernel_env()` to
    the launcher instead. Joining the cgroup is best effort: the parent checks
    the membership afterwards and falls back to the watchdog.
    """
    if cgroup:
        with contextlib.suppress(OSError), open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write("0")  # "0": the writing process itself
    if allocation.cpus:
        os.sched_setaffinity(0, allocation.cpus)
    if address_space is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or address_space < hard:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, hard))
    if set_env:
        os.environ.update(allocation.kernel_env())


def preexec_for(
    allocation: Allocation | None, cgroup: str | None = None, address_space: int | None = None
) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen applying `allocation`, or None when there is nothing to apply."""
    if allocation is None or (not allocation.cpus and not cgroup and address_space is None):
        return None

    def preexec() -> None:
        apply_in_child(allocation, cgroup, address_space=address_space, set_env=False)

    return preexec


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL the process `pid`, its descendants and its process group, all at once."""
    pids = tree_pids(pid)
    for target in pids:
        with contextlib.suppress(OSError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:  # a kernel leads its own session and group
            os.killpg(pid, signal.SIGKILL)


@dataclass
class Enforcement:
    """How one attempt's allocation is enforced: `mode` is cgroup, watchdog or none (no memory limit)."""

    allocation: Allocation
    group: JobCgroup | None = None
    address_space: int | None = None  # the RLIMIT_AS backstop, when one is set

    @classmethod
    def create(cls, allocation: Allocation | None, name: str, language: str = "python") -> Enforcement:
        """Set up what must exist before the kernel starts (its cgroup, when possible)."""
        allocation = allocation or Allocation()
        group = None
        if allocation.memory is not None and (parent := memory_parent()) is not None:
            group = JobCgroup.create(parent, f"nbjobs-{os.getpid()}-{name}", allocation.memory)
        return cls(allocation, group, address_space_backstop(allocation, language))

    @property
    def mode(self) -> str:
        if self.allocation.memory is None:
            return "none"
        return "cgroup" if self.group is not None else "watchdog"

    @property
    def cgroup(self) -> str | None:
        return str(self.group.path) if self.group is not None else None

    def attach(self, pid: int | None) -> None:
        """After the kernel started: if it did not land in the group, use the watchdog instead."""
        if self.group is not None and (pid is None or not self.group.contains(pid)):
            self.group.remove()
            self.group = None

    def oom_killed(self) -> bool:
        return self.group is not None and self.group.oom_kills() > 0

    def close(self) -> None:
        """Remove the group, killing anything the kernel left in it."""
        if self.group is not None:
            self.group.remove()
