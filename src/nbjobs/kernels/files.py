"""Connection files, clients and kernel logs for kernels we start ourselves."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import uuid
from pathlib import Path
from typing import Any, TypeVar

import zmq
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from nbjobs.kernels.base import runtime_dir

# ZMQ retries a connect to a socket not yet bound every 100 ms by default; a client made
# before its kernel has bound would idle longer than a forked kernel takes to start.
RECONNECT_MILLISECONDS = 10
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")

ClientT = TypeVar("ClientT", bound=AsyncKernelClient)


def new_connection_file() -> tuple[Path, dict[str, Any]]:
    """A private connection file: IPC sockets in runtime_dir(), a fresh signing key, mode 0600."""
    stem = runtime_dir() / f"kernel-{uuid.uuid4().hex[:12]}"
    key = secrets.token_hex(32).encode("ascii")
    path, info = write_connection_file(f"{stem}.json", ip=str(stem), transport="ipc", key=key)
    return Path(path), dict(info)


def remove_connection_files(path: Path, info: dict[str, Any]) -> None:
    """The file and its IPC socket files: a kernel killed at once cannot remove them itself."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for key in PORT_KEYS:
        if info.get(key):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{info['ip']}-{info[key]}").unlink()


def tune_client(client: AsyncKernelClient) -> None:
    """Call before start_channels: fast reconnects for a kernel that is still binding."""
    client.context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MILLISECONDS)


def connect(client_class: type[ClientT], path: Path) -> ClientT:
    """A started client for the kernel whose connection file is `path` (no heartbeat thread)."""
    client = client_class(connection_file=str(path))
    client.load_connection_file()
    tune_client(client)
    client.start_channels(hb=False)
    return client


class SpareLog:
    """The log of a kernel started ahead of its job, moved to the job's kernel log at hand-out.

    A rename keeps the kernel writing into the job's file. Across file systems it cannot,
    so the spare's log is appended to the job's when the kernel ends.
    """

    def __init__(self) -> None:
        self.path = runtime_dir() / f"spare-{uuid.uuid4().hex[:12]}.log"
        self.target: Path | None = None

    def hand_over(self, target: Path) -> None:
        if self.target is not None:
            return
        self.target = target
        if target.exists() and target.stat().st_size:
            return  # never overwrite what a job already has there
        try:
            self.path.replace(target)
            self.path = target
        except OSError:
            pass

    def finish(self) -> None:
        """After the kernel ended: leave nothing behind in runtime_dir()."""
        if self.path == self.target or not self.path.exists():
            return
        if self.target is not None:
            with contextlib.suppress(OSError), self.path.open("rb") as src, self.target.open("ab") as dst:
                shutil.copyfileobj(src, dst)
        self.path.unlink(missing_ok=True)
