"""The `plain` provider: launch one kernel per job, as jupyter_client does.

Works for any kernel of any language; it pays the kernel's full start-up time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from nbjobs.kernels.base import KernelHandle, KernelProvider, KernelRequest, runtime_dir
from nbjobs.kernels.files import tune_client
from nbjobs.kernels.ready import wait_until_ready
from nbjobs.resources.enforce import preexec_for

KILL_WAIT_SECONDS = 5.0


class ManagedKernel(KernelHandle):
    """A kernel launched and owned by a jupyter_client kernel manager."""

    def __init__(self, manager: AsyncKernelManager) -> None:
        self.manager = manager
        self.client = manager.client()
        self._pid: int | None = getattr(manager.provisioner, "pid", None)

    @property
    def pid(self) -> int | None:
        return self._pid

    async def is_alive(self) -> bool:
        return bool(await self.manager.is_alive())

    async def interrupt(self) -> None:
        if await self.is_alive():
            await self.manager.interrupt_kernel()

    async def exit_status(self) -> int | None:
        provisioner = self.manager.provisioner
        return None if provisioner is None else await provisioner.poll()

    async def kill(self) -> None:
        self.client.stop_channels()
        if self.manager.has_kernel:
            await self._kill_group()
            # now=True: no polite shutdown request; it finds the kernel ended and cleans up.
            await self.manager.shutdown_kernel(now=True)

    async def _kill_group(self) -> None:
        """SIGKILL to the kernel's process group, watched closely until it ends.

        jupyter_client would check only every 0.1 s whether the killed kernel has ended.
        """
        provisioner = self.manager.provisioner
        pgid = getattr(provisioner, "pgid", None)
        if provisioner is None or not pgid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while await provisioner.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


class PlainProvider(KernelProvider):
    name = "plain"

    async def start(self, request: KernelRequest, *, timeout: float = 60.0) -> KernelHandle:
        # IPC sockets: local only, no open TCP ports, no plain-text traffic on the network.
        manager = AsyncKernelManager(kernel_name=request.kernel_name, transport="ipc")
        manager.connection_file = str(runtime_dir() / f"kernel-{uuid.uuid4().hex[:12]}.json")
        launch: dict[str, Any] = {}
        # Affinity, cgroup and rlimit are set in the child before exec: the kernel never runs unconfined.
        if (preexec := preexec_for(request.allocation, request.cgroup, request.address_space)) is not None:
            launch["preexec_fn"] = preexec
        with request.kernel_log.open("ab") as log:  # the kernel process's own messages
            await manager.start_kernel(
                cwd=str(request.cwd), env=request.environment(), stdout=log, stderr=log, **launch
            )
        handle = ManagedKernel(manager)
        tune_client(handle.client)
        handle.client.start_channels()
        try:
            await wait_until_ready(handle.client, handle.is_alive, timeout)
        except BaseException:
            await handle.kill()
            raise
        return handle
