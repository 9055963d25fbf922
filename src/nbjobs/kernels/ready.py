"""Waiting until a freshly started kernel can run code: a fast, exact readiness check.

jupyter_client's `wait_for_ready` always spends at least 0.2 s listening for stray IOPub
messages; that alone is 4x the whole budget of a forked kernel. Here a kernel is ready when
it has answered `kernel_info` on the shell channel *and* its IOPub status for that very
request has arrived, which proves our IOPub subscription is live (a PUB socket drops what it
sends before the subscription reaches it). IOPub is ordered, so once that status is in,
nothing older is left to arrive later.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from queue import Empty

from jupyter_client.asynchronous.client import AsyncKernelClient

AliveCheck = Callable[[], Awaitable[bool]]
POLL_SECONDS = 0.25  # how often a silent kernel is checked for death
FIRST_IOPUB_PROBE = 0.05


class KernelNotReady(RuntimeError):
    pass


async def wait_until_ready(client: AsyncKernelClient, is_alive: AliveCheck, timeout: float) -> None:
    """Return once the kernel answers on shell and IOPub; KernelNotReady if it died or timed out."""
    deadline = time.monotonic() + timeout
    probe = FIRST_IOPUB_PROBE
    while True:
        msg_id = client.kernel_info()
        await _shell_reply(client, msg_id, is_alive, deadline)
        if await _iopub_idle(client, msg_id, min(probe, _left(deadline))):
            return
        probe = min(probe * 2, 1.0)  # subscription not through yet: ask again, listen longer
        if _left(deadline) <= 0:
            raise KernelNotReady(f"kernel did not connect its IOPub channel within {timeout:g} s")


async def wait_for_shell_reply(client: AsyncKernelClient, msg_id: str, is_alive: AliveCheck, timeout: float) -> dict:
    """The shell reply to `msg_id`, then its IOPub idle status (so no stale message remains)."""
    deadline = time.monotonic() + timeout
    reply = await _shell_reply(client, msg_id, is_alive, deadline)
    await _iopub_idle(client, msg_id, max(_left(deadline), 0.0))
    return reply


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


async def _shell_reply(client: AsyncKernelClient, msg_id: str, is_alive: AliveCheck, deadline: float) -> dict:
    while True:
        left = _left(deadline)
        if left <= 0:
            raise KernelNotReady("kernel did not answer in time")
        try:
            msg = await client.get_shell_msg(timeout=min(left, POLL_SECONDS))
        except Empty:
            if not await is_alive():
                raise KernelNotReady("kernel died before it was ready") from None
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


async def _iopub_idle(client: AsyncKernelClient, msg_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (left := _left(deadline)) > 0:
        try:
            msg = await client.get_iopub_msg(timeout=left)
        except (TimeoutError, Empty):
            return False
        if (
            msg["msg_type"] == "status"
            and msg["parent_header"].get("msg_id") == msg_id
            and msg["content"].get("execution_state") == "idle"
        ):
            return True
    return False
