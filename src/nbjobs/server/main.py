"""`nbjobs server`: the store, dispatcher, local backend and HTTP API in one process."""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import uvicorn

from nbjobs.backends.local import LocalBackend
from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher
from nbjobs.errors import InvalidInput
from nbjobs.pipelines.schedules import ScheduleLoop, ScheduleService
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import detect_capacity
from nbjobs.server.app import create_app
from nbjobs.server.auth import local_token, token_path
from nbjobs.server.people import People
from nbjobs.service import JobService
from nbjobs.store import Store

log = logging.getLogger("nbjobs.server")
SERVER_FILE = "server.json"  # where a running server says its URL, for the CLI


def lock_home(home: Path) -> IO[str]:
    """One server per NBJOBS_HOME: two would both run the same queued jobs."""
    home.mkdir(parents=True, exist_ok=True)
    handle = (home / "server.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise InvalidInput(
            f"Another nbjobs server already runs on {str(home)!r} (pid {handle.read().strip() or '?'}); "
            "stop it first, or set NBJOBS_HOME to another folder."
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    announce: bool = True,
    on_ready: Callable[[str, JobService, People], Awaitable[None]] | None = None,
) -> None:
    """Run until stopped; `on_ready(url, service, people)` runs once the server listens (e.g. `nbjobs demo`)."""
    lock = lock_home(settings.home)
    store = Store(settings.db_url)
    allocator = Allocator(detect_capacity(settings.config))
    dispatcher: Dispatcher

    async def on_finished(*args):  # type: ignore[no-untyped-def]
        await dispatcher.on_finished(*args)

    people = People.create(store, settings.home)  # users, event stream, secrets, webhooks, metrics
    backend = LocalBackend(settings, store, on_finished, job_events=people.hub.job_sink, secrets=people.vault.for_job)
    dispatcher = Dispatcher(settings, store, allocator, backend)
    service = JobService(settings, store, allocator, dispatcher)
    token = local_token(settings.home)
    app = create_app(service, token, people)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    config.timeout_graceful_shutdown = 3  # open event streams never end by themselves
    server = uvicorn.Server(config)
    await people.start()
    await dispatcher.start()
    schedules = ScheduleLoop(ScheduleService(service))  # fires due schedules into the queue
    await schedules.start()
    serving = asyncio.create_task(server.serve())
    closing = asyncio.create_task(people.close_streams_on_exit(server))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()
            url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
            # Atomically: a client polling for the file must never read it half written.
            announced = settings.home / f".{SERVER_FILE}.{os.getpid()}"
            announced.write_text(json.dumps({"url": url, "pid": os.getpid()}), encoding="utf-8")
            os.replace(announced, settings.home / SERVER_FILE)
            if announce:
                print(f"nbjobs server at {url}  (store: {settings.db_url})", flush=True)
                print(f"capacity: {allocator.capacity.describe()}", flush=True)
                print(f"token: {token_path(settings.home)}", flush=True)
                print(f"dashboard: {url}/ui", flush=True)
                if not is_loopback(host):
                    print(f"WARNING: listening on {host} without TLS: put it behind a TLS proxy.", flush=True)
            if on_ready is not None:
                await on_ready(url, service, people)
        await serving
    finally:
        closing.cancel()
        (settings.home / SERVER_FILE).unlink(missing_ok=True)
        await schedules.stop()
        await dispatcher.stop()
        await people.stop()
        store.close()
        lock.close()
