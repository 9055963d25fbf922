"""The kernel provider interface."""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.asynchronous.client import AsyncKernelClient

from nbjobs.resources.allocation import Allocation

# Variables that name the attempt (set by nbjobs.attempt). A kernel started ahead of its job
# cannot know them, so a provider may set them in the kernel after start, before any cell.
ATTEMPT_VARIABLES = frozenset({"NBJOBS_JOB_ID", "NBJOBS_ATTEMPT", "NBJOBS_ARTIFACTS"})


def runtime_dir() -> Path:
    """A short private folder for connection files: IPC socket paths must stay under ~100 bytes."""
    path = Path(tempfile.gettempdir()) / f"nbjobs-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@dataclass(frozen=True)
class KernelRequest:
    """What a job needs from its kernel."""

    kernel_name: str
    cwd: Path
    kernel_log: Path  # the kernel process's own stdout/stderr (not the notebook's output)
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    allocation: Allocation | None = None  # enforced on the kernel process tree when given
    cgroup: str | None = None  # a cgroup v2 directory the kernel process must join (memory limit)
    address_space: int | None = None  # RLIMIT_AS backstop for the kernel process, bytes

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The kernel's full environment: `base` (default: ours), the job's env, then the allocation's."""
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        # Last, so a job's own env cannot widen what it was given (e.g. CUDA_VISIBLE_DEVICES).
        if self.allocation is not None:
            env.update(self.allocation.kernel_env())
        return env


class KernelHandle(ABC):
    """One started kernel, connected and ready, serving one job."""

    client: AsyncKernelClient

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """Process id of the kernel (the leader of its process group)."""

    @abstractmethod
    async def is_alive(self) -> bool: ...

    @abstractmethod
    async def interrupt(self) -> None:
        """SIGINT to the kernel: stops the running cell with KeyboardInterrupt."""

    @abstractmethod
    async def kill(self) -> None:
        """End the kernel's whole process group at once and release its resources."""

    async def exit_status(self) -> int | None:
        """The kernel's exit code (negative: killed by that signal), once it has ended."""
        return None


class KernelProvider(ABC):
    """Hands out fresh, ready kernels."""

    name: str

    @abstractmethod
    async def start(self, request: KernelRequest, *, timeout: float = 60.0) -> KernelHandle:
        """A new kernel for one job, ready to execute (kernel_info answered)."""

    async def warm(self) -> None:  # noqa: B027 - optional hook, nothing kept ahead by default
        """Start what is kept ahead of demand and return once it is ready."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release anything kept ahead of demand.

        A provider belongs to the event loop it first started a kernel in: close it there.
        """
