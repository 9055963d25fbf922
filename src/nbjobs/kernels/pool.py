"""The `pool` provider: plain kernels started and connected ahead of demand.

Kernels wait per key (kernelspec, cwd, env, allocation): a kernel started for one key cannot
serve another, since a plain kernel's cwd and environment are fixed when it starts. The
pool bets that the next job looks like the last one (a sweep, a repeated run): a job's key
gets `ready` kernels started for it in the background, and the `max_keys` most recently used
keys are kept. Each kernel serves one job and is then discarded, never reused.

The variables naming the attempt (NBJOBS_JOB_ID, ...) differ for every job; for Python
kernels they are left out of the key and set in the kernel at hand-out, before any cell.
For other languages they are part of the key, so jobs run by nbjobs get no pooled kernel
(they are started on demand and nothing is kept for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

from nbjobs.kernels.base import ATTEMPT_VARIABLES, KernelHandle, KernelProvider, KernelRequest
from nbjobs.kernels.files import SpareLog
from nbjobs.kernels.plain import PlainProvider
from nbjobs.kernels.ready import wait_for_shell_reply
from nbjobs.kernels.specs import resolve_kernel

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0
SET_ENV_CALL = "__import__('os').environ.update({!r})"  # no name lands in the user's namespace


@dataclass(frozen=True)
class PoolKey:
    kernel_name: str
    cwd: str
    env: tuple[tuple[str, str], ...]
    allocation: str

    @classmethod
    def of(cls, request: KernelRequest, late: frozenset[str]) -> PoolKey:
        allocation = request.allocation
        return cls(
            kernel_name=request.kernel_name,
            cwd=str(request.cwd.resolve()),
            env=tuple(sorted((k, v) for k, v in request.env.items() if k not in late)),
            allocation=json.dumps(allocation.to_dict(), sort_keys=True) if allocation else "",
        )


@cache
def _is_python(kernel_name: str) -> bool:
    return resolve_kernel(kernel_name).language == "python"


class PooledKernel(KernelHandle):
    """A plain kernel started ahead; its log moves to the job's kernel log at hand-out."""

    def __init__(self, inner: KernelHandle, spare_log: SpareLog) -> None:
        self.inner = inner
        self.client = inner.client
        self.spare_log = spare_log

    @property
    def pid(self) -> int | None:
        return self.inner.pid

    async def is_alive(self) -> bool:
        return await self.inner.is_alive()

    async def interrupt(self) -> None:
        await self.inner.interrupt()

    async def exit_status(self) -> int | None:
        return await self.inner.exit_status()

    async def kill(self) -> None:
        try:
            await self.inner.kill()
        finally:
            self.spare_log.finish()


class PoolProvider(KernelProvider):
    name = "pool"

    def __init__(
        self, ready: int = 1, *, max_keys: int = 4, inner: KernelProvider | None = None, refill: bool = True
    ) -> None:
        self.ready = ready
        self.refill = refill  # False: serve what `prefill` started, keep nothing ahead afterwards
        self.max_keys = max_keys
        self.inner = inner or PlainProvider()
        self.waiting: OrderedDict[PoolKey, list[PooledKernel]] = OrderedDict()  # oldest key first
        self._fills: dict[PoolKey, asyncio.Task[None]] = {}
        self._kills: set[asyncio.Task[None]] = set()  # referenced until done, or asyncio may drop them
        self._closed = False
        self._arrived = asyncio.Event()  # a kernel joined `waiting`

    async def warm(self) -> None:
        """Wait for the kernels being started for the keys seen so far."""
        pending = [t for t in self._fills.values() if not t.done()]
        if pending:
            await asyncio.wait(pending)

    async def start(self, request: KernelRequest, *, timeout: float = 60.0) -> KernelHandle:
        late = ATTEMPT_VARIABLES if _is_python(request.kernel_name) else frozenset()
        key = PoolKey.of(request, late)
        poolable = not (set(request.env) & ATTEMPT_VARIABLES - late)
        try:
            while True:
                while kernel := self._take(key):
                    with contextlib.suppress(Exception):
                        return await self._hand_out(kernel, request, late, timeout)
                # A kernel being started for this key is closer to ready than a new one would be.
                fill = self._fills.get(key)
                if fill is None or fill.done() or not await self._kernel_arrives(fill, timeout):
                    return await self.inner.start(request, timeout=timeout)
        finally:
            if poolable and self.refill:
                self._fill(key, request, late)

    async def _kernel_arrives(self, fill: asyncio.Task[None], timeout: float) -> bool:
        """Wait for `fill` to add a kernel (or end); False if neither happens within `timeout`."""
        self._arrived.clear()
        arrived = asyncio.ensure_future(self._arrived.wait())
        try:
            done, _ = await asyncio.wait([fill, arrived], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()
        return bool(done)

    def prefill(self, request: KernelRequest) -> None:
        """Start kernels for requests like this one now, ahead of the request itself."""
        late = ATTEMPT_VARIABLES if _is_python(request.kernel_name) else frozenset()
        self._fill(PoolKey.of(request, late), request, late)

    async def close(self) -> None:
        self._closed = True
        # Fills are never cancelled: one cut off inside a kernel's start could leak the kernel.
        # They see `_closed` once their current start ends, and kill what they started.
        await self.warm()
        if self._kills:
            await asyncio.wait(self._kills)
        for key in list(self.waiting):
            for kernel in self.waiting.pop(key):
                await kernel.kill()
        await self.inner.close()

    def _take(self, key: PoolKey) -> PooledKernel | None:
        kernels = self.waiting.get(key)
        return kernels.pop(0) if kernels else None

    async def _hand_out(
        self, kernel: PooledKernel, request: KernelRequest, late: frozenset[str], timeout: float
    ) -> PooledKernel:
        try:
            if not await kernel.is_alive():
                raise RuntimeError("pooled kernel died while waiting")
            values = {k: v for k, v in request.env.items() if k in late}
            if values:
                client = kernel.client
                msg_id = client.execute(SET_ENV_CALL.format(values), silent=True, store_history=False)
                reply = await wait_for_shell_reply(client, msg_id, kernel.is_alive, timeout)
                if reply["content"].get("status") != "ok":
                    raise RuntimeError(f"setting the attempt's variables failed: {reply['content'].get('evalue')}")
            kernel.spare_log.hand_over(request.kernel_log.resolve())
        except BaseException:
            await asyncio.shield(kernel.kill())
            raise
        return kernel

    def _fill(self, key: PoolKey, request: KernelRequest, late: frozenset[str]) -> None:
        if self._closed or not self.ready:
            return
        self.waiting.setdefault(key, [])
        self.waiting.move_to_end(key)
        while len(self.waiting) > self.max_keys:
            oldest = next(iter(self.waiting))
            for kernel in self.waiting.pop(oldest):  # its fill sees the key gone and stops
                task = asyncio.get_running_loop().create_task(kernel.kill())
                self._kills.add(task)
                task.add_done_callback(self._kills.discard)
        self._fills = {k: t for k, t in self._fills.items() if not t.done()}
        task = self._fills.get(key)
        if task is None or task.done():
            stable_env = {k: v for k, v in request.env.items() if k not in late}
            self._fills[key] = asyncio.get_running_loop().create_task(self._keep_ready(key, request, stable_env))

    async def _keep_ready(self, key: PoolKey, request: KernelRequest, env: dict[str, str]) -> None:
        while key in self.waiting and len(self.waiting[key]) < self.ready:
            spare_log = SpareLog()
            spare = KernelRequest(request.kernel_name, request.cwd, spare_log.path, env, request.allocation)
            try:
                inner = await self.inner.start(spare, timeout=START_TIMEOUT)
            except Exception as exc:  # keep serving jobs with kernels started on demand
                spare_log.finish()
                log.warning("could not start a pooled kernel: %s", exc)
                return
            kernel = PooledKernel(inner, spare_log)
            if self._closed or key not in self.waiting:
                await kernel.kill()
                return
            self.waiting[key].append(kernel)
            self._arrived.set()
