"""The `zygote` provider: fresh ipykernels forked from a process that has already imported them.

A zygote server (zygote_server.py, run with the kernelspec's own Python) imports ipykernel
and the configured `preload` modules once; each job gets a kernel forked from it, so a
kernel is ready in well under 0.1 s instead of paying its imports again.

Spare kernels. `ready` kernels are forked and started ahead of demand. A job's cwd, env and
CPUs cannot be known before the job comes, so a spare starts in the zygote's own
environment, and at hand-out, before any cell runs, one silent request in the kernel applies
the job's environment, sys.path (for PYTHONPATH), cwd, cgroup, CPU affinity (every thread:
the running kernel already has several) and RLIMIT_AS backstop. (Memory a spare used before
its job is charged to the zygote's cgroup, not the job's: about 20 MiB.) This is exact for everything a job can
observe, except what ipykernel/IPython read while the kernel started: IPYTHON*/JUPYTER*
variables. A job whose env differs from the zygote's there gets a kernel forked on demand
with its setup applied before the kernel starts. Variables read when the interpreter
starts (PYTHON*, except PYTHONPATH) cannot be changed after a fork at all: such a job gets a
plain kernel.

What a forked kernel shares with its siblings: modules imported by the zygote, including
module state computed at import time from the zygote's environment (e.g. a preloaded
numpy's thread pool size), and the str hash seed. numpy's global random state is reseeded
in each child.

If the zygote dies it is started again on the next request; if it cannot start, jobs get
plain kernels (a warning is logged) and a new zygote is tried a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager

from nbjobs.kernels.base import KernelHandle, KernelProvider, KernelRequest
from nbjobs.kernels.files import SpareLog, connect, new_connection_file, remove_connection_files
from nbjobs.kernels.plain import PlainProvider
from nbjobs.kernels.ready import wait_for_shell_reply, wait_until_ready
from nbjobs.kernels.specs import KernelInfo
from nbjobs.kernels.zygote_process import ForkedProcess, ZygoteGone, ZygoteProcess

log = logging.getLogger(__name__)
ZYGOTE_START_TIMEOUT = 60.0
RETRY_SECONDS = 60.0
KILL_WAIT_SECONDS = 5.0
IPYKERNEL_MODULES = ("ipykernel_launcher", "ipykernel")
# A job never reads past sessions' IPython history; writing its own to the shared
# history.sqlite costs every kernel a synchronous commit, and concurrent kernels queue on
# that file's lock. In memory, `In`, `Out` and `%history` work as usual.
JOB_KERNEL_ARGUMENTS = ("--HistoryManager.hist_file=:memory:",)
ASSIGN_CALL = "__import__('_nbjobs_zygote').assign({!r})"  # no name lands in the user's namespace


def kernel_arguments(argv: tuple[str, ...] | list[str]) -> list[str] | None:
    """The IPKernelApp arguments of a `python -m ipykernel_launcher ...` kernelspec, else None."""
    for i in range(1, len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] in IPYKERNEL_MODULES:
            return list(argv[i + 2 :])
    return None


def is_ipykernel(kernel: KernelInfo) -> bool:
    return kernel.language == "python" and kernel_arguments(kernel.argv) is not None


def interpreter(argv0: str) -> str:
    """The kernelspec's Python, resolved the way jupyter_client resolves it."""
    if argv0 in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        return sys.executable
    return shutil.which(argv0) or argv0


def interpreter_mismatch(env: dict[str, str], zygote_env: dict[str, str]) -> list[str]:
    """Variables read when Python starts, which a forked kernel cannot change (PYTHONPATH it can)."""
    return _differing(env, zygote_env, ("PYTHON",), exempt=frozenset({"PYTHONPATH"}))


def kernel_start_mismatch(env: dict[str, str], zygote_env: dict[str, str]) -> list[str]:
    """Variables read while the kernel starts: a spare started without them cannot serve the job."""
    return _differing(env, zygote_env, ("IPYTHON", "JUPYTER", "IPY_"))


def _differing(
    a: dict[str, str], b: dict[str, str], prefixes: tuple[str, ...], exempt: frozenset[str] = frozenset()
) -> list[str]:
    keys = {k for k in (*a, *b) if k.startswith(prefixes) and k not in exempt}
    return sorted(k for k in keys if a.get(k) != b.get(k))


def kill_group(pid: int) -> None:
    """SIGKILL to the kernel's process group, or to the kernel alone if it has not made one yet."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class ForkedKernelClient(AsyncKernelClient):
    """A client whose liveness comes from the zygote's exit reports rather than heartbeats."""

    process: ForkedProcess | None = None

    async def is_alive(self) -> bool:  # type: ignore[override]
        return self.process is None or not self.process.ended.is_set()


class ForkedKernel(KernelHandle):
    """A kernel forked by the zygote: the leader of its own process group."""

    client: ForkedKernelClient

    def __init__(self, process: ForkedProcess, connection_file: Path, info: dict[str, Any], log: SpareLog | None):
        self.process = process
        self.connection_file = connection_file
        self.info = info
        self.spare_log = log
        self.client = connect(ForkedKernelClient, connection_file)
        self.client.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def is_alive(self) -> bool:
        return not self.process.ended.is_set()

    async def interrupt(self) -> None:
        if await self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)

    async def exit_status(self) -> int | None:
        return self.process.status

    async def kill(self) -> None:
        self.client.stop_channels()
        if not self.process.ended.is_set():
            kill_group(self.pid)
            # Reaped by the zygote: once it reports the exit, no process of this kernel remains.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.ended.wait(), KILL_WAIT_SECONDS)
        remove_connection_files(self.connection_file, self.info)
        if self.spare_log is not None:
            self.spare_log.finish()


class ZygoteProvider(KernelProvider):
    name = "zygote"

    def __init__(
        self,
        kernel: KernelInfo,
        *,
        preload: list[str] | tuple[str, ...] = (),
        ready: int = 1,
        fallback: KernelProvider | None = None,
    ) -> None:
        arguments = kernel_arguments(kernel.argv)
        if arguments is None:
            raise ValueError(f"kernel {kernel.name!r} is not started with `python -m ipykernel_launcher`")
        self.kernel = kernel
        self.arguments = arguments
        self.preload = list(preload)
        self.ready = ready
        self.fallback = fallback or PlainProvider()
        self.spares: list[ForkedKernel] = []
        self.zygote: ZygoteProcess | None = None
        self.zygote_env: dict[str, str] = {}
        self._zygote_lock: asyncio.Lock | None = None
        self._refill: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._kills: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- the interface -------------------------------------------------------------------

    async def warm(self) -> None:
        self._start_refill()
        if self._refill is not None:
            await asyncio.shield(self._refill)

    async def start(self, request: KernelRequest, *, timeout: float = 60.0) -> KernelHandle:
        if request.kernel_name != self.kernel.name:
            return await self.fallback.start(request, timeout=timeout)
        for _ in range(2):  # a zygote that died under us is started again once
            zygote = await self._running_zygote()
            if zygote is None:
                return await self.fallback.start(request, timeout=timeout)
            env = request.environment(self.kernel_base_env())
            if mismatch := interpreter_mismatch(env, self.zygote_env):
                log.info("job sets %s, which a forked kernel cannot change: starting a plain kernel", mismatch)
                return await self.fallback.start(request, timeout=timeout)
            setup = self._setup(request, env)
            try:
                spare = self._take_spare(env)
                if spare is not None:
                    with contextlib.suppress(Exception):
                        return await self._assign(spare, request, setup, timeout)
                return await self._fork(zygote, setup, request.kernel_log.resolve(), timeout)
            except ZygoteGone:
                continue
            finally:
                self._start_refill()
        return await self.fallback.start(request, timeout=timeout)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(BaseException):
                await self._refill
        if self._kills:
            await asyncio.wait(self._kills)
        spares, self.spares = self.spares, []
        for spare in spares:
            await spare.kill()
        if self.zygote is not None:
            await self.zygote.stop()
            self.zygote = None
        await self.fallback.close()

    # --- the zygote ------------------------------------------------------------------------

    def kernel_base_env(self) -> dict[str, str]:
        """Our environment plus the kernelspec's own variables, as jupyter_client would build it."""
        return {**os.environ, **self._spec_env}

    @cached_property
    def _spec_env(self) -> dict[str, str]:
        spec = KernelSpecManager().get_kernel_spec(self.kernel.name)
        return {k: str(v) for k, v in (spec.env or {}).items()}

    async def _running_zygote(self) -> ZygoteProcess | None:
        """The zygote, started or restarted as needed; None while it cannot start."""
        if self.zygote is not None and self.zygote.alive:
            return self.zygote
        if self._closed or time.monotonic() < self._retry_at:
            return None
        self._zygote_lock = self._zygote_lock or asyncio.Lock()
        async with self._zygote_lock:
            if self.zygote is not None and self.zygote.alive:
                return self.zygote
            if self.zygote is not None:
                log.warning("zygote %s for kernel %r ended; starting a new one", self.zygote.pid, self.kernel.name)
                for spare in self.spares:  # they died with it: tidy their files
                    await spare.kill()
                self.spares.clear()
            try:
                self.zygote = await self._start_zygote()
            except (OSError, ZygoteGone) as exc:
                self.zygote = None
                self._retry_at = time.monotonic() + RETRY_SECONDS
                log.warning("zygote for kernel %r could not start (%s); using plain kernels", self.kernel.name, exc)
        return self.zygote

    async def _start_zygote(self) -> ZygoteProcess:
        self.zygote_env = self.kernel_base_env()
        python = interpreter(self.kernel.argv[0])
        zygote = await ZygoteProcess.start(python, self.preload, self.zygote_env, ZYGOTE_START_TIMEOUT)
        hello = zygote.hello
        if hello.failed:
            log.warning("zygote could not preload %s", "; ".join(f"{k}: {v}" for k, v in hello.failed.items()))
        if hello.threads > 1:
            # e.g. OpenBLAS (numpy) starts its pool at import and restarts it in a forked child
            log.info("preloaded modules started %d thread(s) in the zygote; forked kernels get none", hello.threads - 1)
        return zygote

    # --- kernels ---------------------------------------------------------------------------

    def _setup(self, request: KernelRequest, env: dict[str, str]) -> dict[str, Any]:
        allocation = request.allocation
        return {
            "cwd": str(request.cwd.resolve()),
            "env": env,
            "cpus": list(allocation.cpus) if allocation else [],
            "cgroup": request.cgroup,
            "address_space": request.address_space,
        }

    def _argv(self, connection_file: Path) -> list[str]:
        arguments = [a.replace("{connection_file}", str(connection_file)) for a in self.arguments]
        return [*JOB_KERNEL_ARGUMENTS, *arguments]  # the kernelspec's own come last and win

    async def _fork(
        self, zygote: ZygoteProcess, setup: dict[str, Any] | None, kernel_log: Path | None, timeout: float
    ) -> ForkedKernel:
        """A kernel forked now: with a job's setup applied before it starts, or a spare (setup None)."""
        path, info = new_connection_file()
        spare_log = SpareLog() if setup is None else None
        kernel_log = spare_log.path if spare_log else kernel_log
        assert kernel_log is not None
        try:
            process = await zygote.fork(self._argv(path), path, kernel_log, setup)
        except BaseException:
            remove_connection_files(path, info)
            raise
        kernel = ForkedKernel(process, path, info, spare_log)
        try:
            await wait_until_ready(kernel.client, kernel.is_alive, timeout)
        except BaseException as exc:
            await asyncio.shield(kernel.kill())
            if isinstance(exc, Exception) and process.status is not None:
                raise RuntimeError(f"{exc} (exit code {process.status})") from None
            raise
        return kernel

    async def _assign(self, spare: ForkedKernel, request: KernelRequest, setup: dict[str, Any], timeout: float):
        """Hand a running spare to the job: its setup applied in the kernel, silently."""
        try:
            code = ASSIGN_CALL.format(json.dumps(setup))
            msg_id = spare.client.execute(code, silent=True, store_history=False, allow_stdin=False)
            reply = await wait_for_shell_reply(spare.client, msg_id, spare.is_alive, timeout)
            content = reply["content"]
            if content.get("status") != "ok":
                raise RuntimeError(f"kernel set-up failed: {content.get('ename')}: {content.get('evalue')}")
            assert spare.spare_log is not None
            spare.spare_log.hand_over(request.kernel_log.resolve())
        except BaseException:
            await asyncio.shield(spare.kill())
            raise
        return spare

    def _take_spare(self, env: dict[str, str]) -> ForkedKernel | None:
        if kernel_start_mismatch(env, self.zygote_env):
            return None
        while self.spares:
            spare = self.spares.pop(0)
            if not spare.process.ended.is_set():
                return spare
            task = asyncio.get_running_loop().create_task(spare.kill())  # tidy its files
            self._kills.add(task)  # referenced until done, or asyncio may drop it
            task.add_done_callback(self._kills.discard)
        return None

    def _start_refill(self) -> None:
        if self.ready and not self._closed and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(self._keep_spares())

    async def _keep_spares(self) -> None:
        while len(self.spares) < self.ready:
            zygote = await self._running_zygote()
            if zygote is None:
                return
            try:
                spare = await self._fork(zygote, None, None, ZYGOTE_START_TIMEOUT)
            except ZygoteGone:
                continue
            except Exception as exc:  # keep serving jobs by forking on demand
                log.warning("could not start a spare kernel: %s", exc)
                return
            if self._closed:
                await spare.kill()
                return
            self.spares.append(spare)
