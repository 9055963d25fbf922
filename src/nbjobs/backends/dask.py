"""The dask backend: each attempt is one task on a Dask cluster, run by `backends.worker`.

The server stays the only writer of the store. Workers report on this server's
event topic (Dask's event log; distributed's old Pub/Sub is gone since 2025),
and this backend records what they say: the attempt's row, its states, cell
progress, the kernel's pid. The task's value is the attempt's result, with each
cell's final status, so a progress message lost on the way is mended at the end.

Placement is Dask's: the task asks for the job's resources as Dask worker
resources (`resources.cluster.dask_resources`) and runs on a worker that
advertises them; admission here uses what the workers advertise, refreshed from
the scheduler every second (see `resources.cluster.ClusterAllocator`).

An attempt ends `lost`, for the job's retry policy to decide, when its worker
leaves the cluster (this backend then drops the task, so Dask does not run it
again elsewhere), when Dask gives up on it (KilledWorker) or drops it (the
scheduler lost it), and never is it re-run by Dask itself (retries=0, and the
worker's started token; see `backends.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Event, Future, KilledWorker, Variable
from distributed.client import FutureCancelledError

from nbjobs.attempt import AttemptPaths, AttemptResult
from nbjobs.backends import wire
from nbjobs.backends.base import Backend, FinishedCallback, Launch
from nbjobs.backends.worker import run_attempt_on_worker
from nbjobs.config import Settings
from nbjobs.errors import InvalidInput
from nbjobs.events import CellFinished, CellSkipped, CellStarted, EventSink, fan_out
from nbjobs.events import Event as RunnerEvent
from nbjobs.lifecycle import StoreRecorder, state_recorder
from nbjobs.notebook.runner import RunOutcome
from nbjobs.resources.cluster import ClusterAllocator, dask_resources
from nbjobs.spec import JobSpec, JobState
from nbjobs.storage import Storage
from nbjobs.store import Store

log = logging.getLogger(__name__)
CLUSTER_POLL = 1.0  # seconds between looks at the cluster's workers
CONNECT_TIMEOUT = 10.0
FORGET_LOST_AFTER = 60.0  # a lost attempt's started token outlives any late re-run Dask may still start


@dataclass
class _Running:
    """One attempt handed to Dask, as this server follows it."""

    launch: Launch
    names: wire.LaunchNames
    sink: EventSink
    future: Future | None = None
    task: asyncio.Task[None] | None = None
    worker: str | None = None  # address of the worker that claimed it
    host: str | None = None
    paths: AttemptPaths | None = None
    cells: dict[int, str] = field(default_factory=dict)  # statuses the store has from progress messages
    cancel_reason: str | None = None
    lost_reason: str | None = None
    done: bool = False


class DaskBackend(Backend):
    name = "dask"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        on_finished: FinishedCallback,
        client: Client,
        *,
        storage_url: str,
        events: EventSink | None = None,
        job_events: Callable[[Launch], EventSink] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_finished = on_finished
        self.client = client
        self.events = events
        self.job_events = job_events  # a sink per launch, for the event stream
        self.storage = Storage(storage_url)
        self.allocator = ClusterAllocator(str(client.scheduler.address))
        # One scope per server: servers (and test suites) sharing a scheduler never mix keys or signals.
        self.scope = uuid.uuid4().hex[:12]
        self.topic = f"nbjobs-events-{self.scope}"
        self._launches: dict[int, _Running] = {}
        self._by_key: dict[str, _Running] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._scheduler_id: str | None = None  # the scheduler the topic subscription was sent to

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        store: Store,
        on_finished: FinishedCallback,
        address: str,
        *,
        events: EventSink | None = None,
        job_events: Callable[[Launch], EventSink] | None = None,
    ) -> DaskBackend:
        """Connect to the scheduler at `address`; InvalidInput when it does not answer."""
        storage_url = settings.config.backend.storage_url or str(settings.home)
        Storage(storage_url)  # refuse a bad storage_url before anything runs
        try:
            client = await Client(
                address, asynchronous=True, set_as_default=False, timeout=CONNECT_TIMEOUT, name="nbjobs-server"
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise InvalidInput(
                f"No Dask scheduler answers at {address!r} ({exc}). Start one (`dask scheduler`) and give its "
                "address as --scheduler-address tcp://HOST:PORT or [backend] scheduler_address."
            ) from None
        backend = cls(
            settings, store, on_finished, client, storage_url=storage_url, events=events, job_events=job_events
        )
        await backend._refresh_cluster()  # subscribes to the topic
        backend._watcher = asyncio.create_task(backend._watch_cluster(), name="dask-cluster-watch")
        return backend

    # ------------------------------------------------------------ launching

    async def start(self, launch: Launch) -> None:
        names = wire.LaunchNames.of(launch.job_id, launch.attempt, self.scope)
        job_sink = self.job_events(launch) if self.job_events else None
        sink = fan_out([StoreRecorder(self.store, launch.job_id, launch.attempt), self.events, job_sink])
        running = _Running(launch, names, sink)
        self._launches[launch.job_id] = running
        self._by_key[names.key] = running
        spec = JobSpec.model_validate(launch.spec)
        request = {
            "key": names.key,
            "job_id": launch.job_id,
            "attempt": launch.attempt,
            "spec": launch.spec,
            "notebook": _read_notebook(spec.notebook),
            "storage_url": self.storage.url,
            "topic": self.topic,
            "cancel": names.cancel,
            "started": names.started,
        }
        running.future = self.client.submit(
            run_attempt_on_worker,
            request,
            key=names.key,
            resources=dask_resources(spec.resources),
            priority=spec.priority,
            pure=False,
            retries=0,
        )
        running.task = asyncio.create_task(self._follow(running), name=f"dask-job-{launch.job_id}")

    async def _follow(self, running: _Running) -> None:
        assert running.future is not None
        try:
            value = await running.future
            result, cells = wire.result_from_wire(value)
        except Exception as exc:
            result, cells = AttemptResult(RunOutcome(*self._why_it_ended(running, exc))), {}
        await self._finish(running, result, cells)

    def _why_it_ended(self, running: _Running, exc: Exception) -> tuple[JobState, str]:
        if running.lost_reason:
            return JobState.LOST, running.lost_reason
        if isinstance(exc, FutureCancelledError) and running.cancel_reason:
            return JobState.CANCELLED, f"{running.cancel_reason} before the attempt started"
        if isinstance(exc, KilledWorker):
            return JobState.LOST, f"the Dask workers running it died: {exc}"
        if isinstance(exc, FutureCancelledError):
            return JobState.LOST, f"Dask dropped the task ({exc.reason})"
        return JobState.LOST, f"the Dask task failed: {type(exc).__name__}: {exc}"

    async def _finish(self, running: _Running, result: AttemptResult, cells: dict[int, str]) -> None:
        if running.done:
            return
        running.done = True
        self._launches.pop(running.launch.job_id, None)
        self._by_key.pop(running.names.key, None)
        launch = running.launch
        if running.future is not None:
            running.future.release()
        lost = result.outcome.state is JobState.LOST
        self._forget(running.names, delay=FORGET_LOST_AFTER if lost else 0.0)
        try:
            for index, status in cells.items():  # mend progress messages that never arrived
                if running.cells.get(index, "pending") != status:
                    self.store.update_cell(launch.job_id, launch.attempt, index, status)
        except Exception:  # the end must be recorded even so
            log.exception("could not mend the cells of job %s", launch.job_id)
        try:
            await self.on_finished(launch, result, running.paths)
        except Exception:
            log.exception("recording the end of job %s failed", launch.job_id)

    def _forget(self, names: wire.LaunchNames, delay: float) -> None:
        """Drop the attempt's signals from the scheduler (later for a lost one: a late re-run must still see them)."""

        async def forget() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await Variable(names.cancel, client=self.client).delete()
                await Event(names.cancel, client=self.client).clear()
                await Event(names.started, client=self.client).clear()

        task = asyncio.create_task(forget(), name=f"forget-{names.key}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ progress

    def _on_message(self, event: tuple[float, dict[str, Any]]) -> None:
        """One message from a worker (called in order, on this loop, by the Dask client)."""
        _, message = event
        running = self._by_key.get(str(message.get("key")))
        if running is None or running.done:
            return  # an attempt this server no longer follows
        launch = running.launch
        try:
            kind = message.get("kind")
            if kind == wire.CLAIMED:
                running.worker, running.host = str(message["worker"]), str(message["host"])
            elif kind == wire.BEGIN:
                self.store.begin_attempt(
                    launch.job_id,
                    launch.attempt,
                    host=str(message["host"]),
                    output=str(message["output"]),
                    log=str(message["log"]),
                    cells=[int(i) for i in message["cells"]],
                )
                if self.storage.local_root is not None:
                    running.paths = AttemptPaths(folder=Path(message["folder"]), output=Path(message["output"]))
            elif kind == wire.STATE:
                state_recorder(self.store, launch.job_id)(JobState(message["state"]))
            elif kind == wire.KERNEL:
                pid = message.get("pid")
                self.store.set_attempt_pid(launch.job_id, launch.attempt, int(pid) if pid else None)
            elif kind == wire.EVENT and (decoded := wire.decode_event(message["event"])) is not None:
                _track_cell(running.cells, decoded)
                running.sink(decoded)
        except Exception:  # one bad message must not stop the others
            log.exception("could not record %s of job %s", message.get("kind"), launch.job_id)

    # ------------------------------------------------------------ the cluster

    async def _watch_cluster(self) -> None:
        while True:
            await asyncio.sleep(CLUSTER_POLL)
            try:
                workers = await self._refresh_cluster()
            except Exception:
                log.warning("could not ask the Dask scheduler for its workers", exc_info=True)
                continue
            for running in list(self._launches.values()):
                if running.worker is not None and running.worker not in workers and not running.done:
                    await self._lose(running, f"its Dask worker {running.host or running.worker} left the cluster")

    async def _refresh_cluster(self) -> dict[str, Any]:
        info = await self.client.scheduler.identity(n_workers=-1)
        if info.get("id") != self._scheduler_id:
            # A new scheduler (restarted, reconnected to): it knows nothing of this server's topic.
            if self._scheduler_id is not None:
                log.warning("the Dask scheduler changed (%s): subscribing again", info.get("id"))
                self.client.unsubscribe_topic(self.topic)
            self.client.subscribe_topic(self.topic, self._on_message)
            self._scheduler_id = info.get("id")
        workers: dict[str, Any] = info.get("workers", {})
        self.allocator.update(
            {str(w.get("name") or address): dict(w.get("resources") or {}) for address, w in workers.items()}
        )
        return workers

    async def _lose(self, running: _Running, reason: str) -> None:
        """The attempt's worker is gone: drop the task so that Dask does not run it again elsewhere."""
        running.lost_reason = reason
        if running.future is not None:
            with contextlib.suppress(Exception):
                await self.client.cancel([running.future], reason="nbjobs: worker lost, the retry policy decides")

    # ------------------------------------------------------------ control

    async def cancel(self, job_id: int, reason: str) -> bool:
        running = self._launches.get(job_id)
        if running is None:
            return False
        running.cancel_reason = running.cancel_reason or reason
        if running.worker is None and running.future is not None:
            # Not started on a worker yet: dropping it is quicker than starting a kernel to stop it.
            with contextlib.suppress(Exception):
                await self.client.cancel([running.future], reason="nbjobs: cancelled")
        with contextlib.suppress(Exception):  # the reason first: the worker reads it once the event is set
            await Variable(running.names.cancel, client=self.client).set(running.cancel_reason)
            await Event(running.names.cancel, client=self.client).set()
        return True

    def running(self) -> set[int]:
        return set(self._launches)

    async def close(self) -> None:
        for job_id in list(self._launches):
            await self.cancel(job_id, "server shutting down")
        tasks = [r.task for r in self._launches.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        if self._watcher is not None:
            self._watcher.cancel()
        pending = [t for t in self._background if not t.done()]
        if pending:  # the quick ones (finished attempts) get to clean up; lost ones' tokens stay behind
            await asyncio.wait(pending, timeout=2)
        for task in self._background:
            task.cancel()
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(self.topic)
        await self.client.close()


def _read_notebook(path: str) -> str | None:
    """The notebook's text, to travel with the task; None lets the worker read (and report on) the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _track_cell(cells: dict[int, str], event: RunnerEvent) -> None:
    if isinstance(event, CellStarted):
        cells[event.index] = "running"
    elif isinstance(event, CellFinished):
        cells[event.index] = event.status
    elif isinstance(event, CellSkipped):
        cells[event.index] = "skipped"
