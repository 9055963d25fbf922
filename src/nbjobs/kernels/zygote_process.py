"""The provider's side of one zygote server process: start it, ask for forks, learn of exits.

The kernels are the zygote's children, not ours: the zygote reaps them and reports each
exit status, which is how a kernel's `exit_status` can tell "exit code 3" from a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SERVER_SCRIPT = Path(__file__).with_name("zygote_server.py")
STOP_SECONDS = 5.0


class ZygoteGone(RuntimeError):
    """The zygote process ended (or never started)."""


@dataclass(eq=False)
class ForkedProcess:
    """A kernel process forked by the zygote; `ended` is set once it has been reaped."""

    pid: int
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None  # exit code; negative: killed by that signal

    def finish(self, status: int | None) -> None:
        if not self.ended.is_set():
            self.status = status
            self.ended.set()


@dataclass(frozen=True)
class Hello:
    pid: int
    preloaded: list[str]
    failed: dict[str, str]
    threads: int


class ZygoteProcess:
    """A running zygote server speaking JSON lines over its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process, hello: Hello) -> None:
        self.process = process
        self.hello = hello
        self.children: dict[int, ForkedProcess] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read_messages())
        self._stderr = asyncio.create_task(self._log_stderr())

    @classmethod
    async def start(cls, python: str, preload: list[str], env: dict[str, str], timeout: float) -> ZygoteProcess:
        process = await asyncio.create_subprocess_exec(
            python,
            str(SERVER_SCRIPT),
            *preload,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal is for the runner, which then closes us
            limit=1 << 22,  # room for long lines; replies are small, but never cut one in two
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout)
            message = json.loads(line) if line else {}
            if message.get("event") != "hello":
                raise ZygoteGone(await _failure(process))
        except (TimeoutError, ValueError, ZygoteGone) as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            raise ZygoteGone(f"zygote did not start: {reason}") from None
        hello = Hello(message["pid"], message["preloaded"], message["failed"], message["threads"])
        return cls(process, hello)

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def fork(
        self, argv: list[str], connection_file: Path, kernel_log: Path, setup: dict[str, Any] | None
    ) -> ForkedProcess:
        """Ask for one kernel; `setup` None: a spare kernel in the zygote's own environment."""
        if not self.alive:
            raise ZygoteGone("zygote is not running")
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        request = {
            "op": "fork",
            "id": request_id,
            "argv": argv,
            "connection_file": str(connection_file),
            "kernel_log": str(kernel_log),
            "setup": setup,
        }
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            message = await reply
        except (ConnectionError, RuntimeError) as exc:
            raise ZygoteGone(f"zygote is gone: {exc}") from None
        finally:  # if cancelled, the reply still comes: _dispatch kills the unclaimed kernel
            self._replies.pop(request_id, None)
        if "error" in message:
            raise RuntimeError(message["error"])
        return self.children[message["pid"]]

    async def _read_messages(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                self._dispatch(json.loads(line))
        except (ValueError, ConnectionError) as exc:
            log.warning("zygote %s sent something unreadable (%s); restarting it on next use", self.pid, exc)
        finally:
            self._gone()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("event") == "exit":
            child = self.children.pop(message["pid"], None)
            if child is not None:
                child.finish(message["status"])
            return
        if "pid" in message:  # registered here, before any exit event for it can be read
            self.children[message["pid"]] = ForkedProcess(message["pid"])
        future = self._replies.get(message.get("id", -1))
        if future is not None and not future.done():
            future.set_result(message)
        elif "pid" in message:  # its requester was cancelled: nobody will ever kill this kernel
            with contextlib.suppress(ProcessLookupError):
                os.kill(message["pid"], signal.SIGKILL)

    def _gone(self) -> None:
        """The zygote ended: its kernels die with it (parent-death signal); make sure, and say so."""
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ZygoteGone("zygote ended"))
        for child in self.children.values():
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
            child.finish(None)
        self.children.clear()

    async def _log_stderr(self) -> None:
        """What the zygote (and a kernel before it redirects its output) says, in our log."""
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            log.debug("zygote %s: %s", self.pid, line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        """Close stdin: the zygote kills its kernels' groups and exits; killed if it lingers."""
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._stderr):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, STOP_SECONDS)


async def _failure(process: asyncio.subprocess.Process) -> str:
    """Why a zygote died before saying hello: the last line of its stderr."""
    assert process.stderr is not None
    with contextlib.suppress(TimeoutError):
        err = await asyncio.wait_for(process.stderr.read(), STOP_SECONDS)
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "it exited before it was ready"
