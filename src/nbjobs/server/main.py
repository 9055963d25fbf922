"""`nbjobs server`: the store, dispatcher, a backend (local or dask) and HTTP API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import uvicorn
from sqlalchemy import make_url

from nbjobs.backends.factory import open_backend
from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher, owner_is_dead_here, server_identity
from nbjobs.errors import InvalidInput
from nbjobs.pipelines.schedules import ScheduleLoop, ScheduleService
from nbjobs.server.app import create_app
from nbjobs.server.auth import local_token, token_path
from nbjobs.server.people import People
from nbjobs.service import JobService
from nbjobs.store import Store
from nbjobs.store.leader import LeaderLease

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
    backend_kind: str | None = None,
    scheduler_address: str | None = None,
) -> None:
    """Run until stopped; `on_ready(url, service, people)` runs once the server listens (e.g. `nbjobs demo`)."""
    lock = lock_home(settings.home)
    store = Store(settings.db_url)
    dispatcher: Dispatcher

    async def on_finished(*args):  # type: ignore[no-untyped-def]
        await dispatcher.on_finished(*args)

    people = People.create(store, settings.home)  # users, event stream, secrets, webhooks, metrics
    try:
        backend, allocator = await open_backend(
            settings,
            store,
            on_finished,
            kind=backend_kind,
            scheduler_address=scheduler_address,
            job_events=people.hub.job_sink,
            secrets=people.vault.for_job,
        )
    except BaseException:  # e.g. no scheduler answers: leave the home unlocked for the next try
        store.close()
        lock.close()
        raise
    identity = server_identity()
    leader = LeaderLease(store, identity, ttl=settings.config.backend.leader_lease, holder_is_gone=owner_is_dead_here)
    await asyncio.to_thread(leader.try_acquire)  # a lone server leads from its first pass
    dispatcher = Dispatcher(settings, store, allocator, backend, identity=identity, leader=leader)
    leading = asyncio.create_task(leader.keep(lambda held: dispatcher.wake()), name="leader-lease")
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
                store_url = make_url(settings.db_url).render_as_string(hide_password=True)
                print(f"nbjobs server at {url}  (store: {store_url})", flush=True)
                print(f"capacity: {allocator.capacity.describe()}  (backend: {backend.name})", flush=True)
                leading_now = "yes" if dispatcher.is_leader() else f"no, {leader.current_holder()} is"
                print(f"leader: {leading_now}", flush=True)
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
        leading.cancel()
        await dispatcher.stop()
        with contextlib.suppress(Exception):
            leader.release()
        await people.stop()
        store.close()
        lock.close()
