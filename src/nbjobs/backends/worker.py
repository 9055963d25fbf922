"""The runner on a Dask worker: one attempt of a job is one Dask task.

`run_attempt_on_worker` is the function the server submits. It blocks one worker
thread for the attempt's length while the attempt runs on the worker's own
nbjobs event loop (one per worker, so a kernel provider that keeps kernels
ready serves job after job). The worker needs no store: it reports to the
server on the server's event topic and returns the result as the task's value.

Dask can neither cancel a running task nor be trusted not to run it twice (it
re-runs a task whose worker died), so this runner:
- sets a started token before anything else and refuses to run an attempt whose
  token is already set: the attempt is reported lost, and the job's retry policy
  (on the server) decides, never Dask;
- watches a cancel signal (a `distributed.Event`; a Variable of the same name holds the reason) and
  whether Dask still wants the task (a released task means the server that
  launched it is gone) and stops the attempt: the running cell is interrupted,
  then the kernel killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import nbformat
from distributed import Client, Event, Variable, get_client, get_worker
from distributed.core import Status
from distributed.worker import Worker

from nbjobs.attempt import Attempt, AttemptPaths
from nbjobs.backends import wire
from nbjobs.backends.worker_resources import worker_capacity
from nbjobs.errors import InvalidInput
from nbjobs.kernels import KernelInfo, KernelProvider
from nbjobs.lifecycle import code_cell_indexes
from nbjobs.prepare import PreparedJob, prepare, render_output_path
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import Allocator
from nbjobs.spec import JobSpec, JobState
from nbjobs.storage import Storage

log = logging.getLogger(__name__)
T = TypeVar("T")
WATCH_INTERVAL = 1.0  # seconds between looks at the cancel signal and the task's state
SYNC_INTERVAL = 5.0  # seconds between copies of a running attempt's folder to remote storage
_DROPPED_TASK_STATES = ("cancelled", "released", "forgotten")  # what a running task becomes once Dask lets go

ProviderFactory = Callable[[KernelInfo], KernelProvider]


def _configured(kernel: KernelInfo) -> KernelProvider:
    """The worker host's `[kernels]` config: by default a zygote for Python kernels (long-lived here)."""
    from nbjobs.config import Settings
    from nbjobs.kernels.registry import make_provider

    return make_provider(Settings.from_env().config.kernels, kernel)


_provider_factory: ProviderFactory = _configured


def set_provider_factory(factory: ProviderFactory) -> None:
    """Which kernel provider serves each kernelspec on this worker (default: the host's config).

    Called in the worker process, e.g. from a Dask preload module, before jobs arrive.
    """
    global _provider_factory
    _provider_factory = factory


class WorkerRuntime:
    """nbjobs' state in one Dask worker: its Allocator, its event loop, its kernel providers."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        _drop_nanny_environ()
        self.allocator = Allocator(worker_capacity(worker.state.total_resources))
        name = str(worker.name)
        self.label = name if name != worker.address else worker.address.split("://")[-1]
        self.host = f"{socket.gethostname()}/{self.label}"
        self.scratch = Path(getattr(worker, "local_directory", None) or tempfile.gettempdir()) / "nbjobs"
        self.providers: dict[str, KernelProvider] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="nbjobs-attempts", daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this worker's nbjobs loop and wait for it (from a Dask task thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def provider(self, kernel: KernelInfo) -> KernelProvider:
        if kernel.name not in self.providers:
            self.providers[kernel.name] = _provider_factory(kernel)
        return self.providers[kernel.name]


def _drop_nanny_environ() -> None:
    """Keep the Dask nanny's settings for its worker out of the kernels this worker starts.

    A nanny starts its worker with MALLOC_TRIM_THRESHOLD_ and single-threaded BLAS
    (distributed.nanny.pre-spawn-environ), which suit a worker holding data. Kernels
    inherit this process's environment: with them a job would run single-threaded
    whatever it asked for, and start slower (trimming malloc). A job's thread count
    comes from its allocation instead, as it does on the local backend.
    """
    import dask

    for name, value in (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).items():
        if os.environ.get(name) == str(value):
            del os.environ[name]


_runtimes: dict[str, WorkerRuntime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(worker: Worker) -> WorkerRuntime:
    with _runtimes_lock:
        if worker.id not in _runtimes:
            _runtimes[worker.id] = WorkerRuntime(worker)
        return _runtimes[worker.id]


class Reporter:
    """Sends one attempt's messages to the server's topic (thread-safe, never blocks)."""

    def __init__(self, worker: Worker, topic: str, key: str) -> None:
        self.worker, self.topic, self.key = worker, topic, key

    def __call__(self, kind: str, **data: Any) -> None:
        with contextlib.suppress(Exception):  # a lost progress message must not end the job
            self.worker.log_event(self.topic, {"key": self.key, "kind": kind, **data})

    def event(self, event: Any) -> None:
        if (encoded := wire.encode_event(event)) is not None:
            self(wire.EVENT, event=encoded)


def run_attempt_on_worker(request: dict[str, Any]) -> dict[str, Any]:
    """One attempt of one job, on this Dask worker; the value is the attempt's result (see `wire`)."""
    worker = get_worker()
    runtime = runtime_for(worker)
    client = get_client()  # in the task's thread: the worker's client, for the signals below
    report = Reporter(worker, request["topic"], request["key"])
    started = Event(request["started"], client=client)
    if started.is_set():
        return wire.ended(
            JobState.LOST,
            f"Dask started attempt {request['attempt']} again on {runtime.label} after the worker running it "
            "was lost; nbjobs does not re-run an attempt behind the retry policy's back",
        )
    started.set()
    report(wire.CLAIMED, host=runtime.host, worker=worker.address)
    spec = JobSpec.model_validate(request["spec"])
    allocation = runtime.allocator.try_allocate(spec.resources)
    if allocation is None:
        shortfall = runtime.allocator.shortfall(spec.resources)
        return wire.ended(JobState.FAILED, f"could not start on Dask worker {runtime.label}: {shortfall}")
    try:
        return runtime.run(_run(runtime, request, spec, allocation, report, client))
    except Exception as exc:  # a bug must end the attempt, not leave the job running
        log.exception("attempt %s failed inside nbjobs", request["key"])
        return wire.ended(JobState.FAILED, f"internal error on {runtime.label}: {type(exc).__name__}: {exc}")
    finally:
        runtime.allocator.release(allocation)


async def _run(
    runtime: WorkerRuntime,
    request: dict[str, Any],
    spec: JobSpec,
    allocation: Allocation,
    report: Reporter,
    client: Client,
) -> dict[str, Any]:
    job_id, number = int(request["job_id"]), int(request["attempt"])
    notebook = nbformat.reads(request["notebook"], as_version=4) if request.get("notebook") else None
    try:
        prepared = with_allocation_env(prepare(spec, notebook), allocation)
    except InvalidInput as exc:  # e.g. the job's cwd does not exist on this worker
        return wire.ended(JobState.FAILED, f"could not start on Dask worker {runtime.label}: {exc}")
    storage = Storage(request["storage_url"])
    location = storage.attempt_location(job_id, number)
    paths = attempt_paths(prepared, storage, location, runtime.scratch, job_id, number)
    paths.folder.mkdir(parents=True, exist_ok=True)
    report(
        wire.BEGIN,
        host=runtime.host,
        folder=location,
        output=_recorded(paths.output, paths, location),
        log=_recorded(paths.log, paths, location),
        cells=code_cell_indexes(prepared),
    )
    attempt = Attempt(
        prepared,
        job_id=job_id,
        number=number,
        paths=paths,
        provider=runtime.provider(prepared.kernel),
        emit=report.event,
        on_state=lambda state: report(wire.STATE, state=state.value),
        on_kernel=lambda pid: report(wire.KERNEL, pid=pid),
        allocation=allocation,
    )
    helpers = [asyncio.create_task(_watch(attempt, runtime.worker, request, client))]
    sent: dict[str, tuple[int, int]] = {}
    if storage.local_root is None:
        helpers.append(asyncio.create_task(_sync_while_running(storage, paths.folder, location, sent)))
    try:
        result = await attempt.run()
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    if storage.local_root is None:
        await asyncio.to_thread(storage.upload, paths.folder, location, sent)
        shutil.rmtree(paths.folder, ignore_errors=True)
    return wire.result_to_wire(result, final_cell_statuses(attempt))


def with_allocation_env(prepared: PreparedJob, allocation: Allocation) -> PreparedJob:
    """The allocation's variables (GPUs, thread counts) in the kernel's env, over the job's own.

    Kernel providers that enforce `KernelRequest.allocation` set the same values; this
    keeps GPU pinning on workers whatever the provider.
    """
    env = {**prepared.spec.env, **allocation.kernel_env()}
    return replace(prepared, spec=prepared.spec.model_copy(update={"env": env}))


def attempt_paths(
    prepared: PreparedJob, storage: Storage, location: str, scratch: Path, job_id: int, number: int
) -> AttemptPaths:
    """In place under a local storage root; in the worker's scratch folder for a remote one."""
    local = storage.local_root is not None
    folder = Path(location) if local else scratch / "jobs" / str(job_id) / f"attempt-{number}"
    output = render_output_path(prepared, job_id=job_id, attempt=number, default=folder / "output.ipynb")
    return AttemptPaths(folder=folder, output=output)


def _recorded(path: Path, paths: AttemptPaths, location: str) -> str:
    """What the record holds for a file of the attempt: its path, or its URL once copied up."""
    if path.is_relative_to(paths.folder) and location != str(paths.folder):
        return f"{location}/{path.relative_to(paths.folder).as_posix()}"
    return str(path)


def final_cell_statuses(attempt: Attempt) -> dict[int, str]:
    """Each code cell's status as the output notebook has it: the server's cells end the same."""
    if attempt.runner is None:
        return {}
    statuses = {}
    for cell in attempt.runner.nb.cells:
        meta = cell.get("metadata", {}).get("nbjobs")
        if cell.cell_type == "code" and isinstance(meta, dict) and "index" in meta:
            statuses[int(meta["index"])] = str(meta.get("status", "pending"))
    return statuses


async def _watch(attempt: Attempt, worker: Worker, request: dict[str, Any], client: Client) -> None:
    """Stop the attempt on a cancel request, or when nobody waits for its result any more."""
    cancel = Event(request["cancel"], client=client)
    while True:
        try:
            cancelled = await asyncio.to_thread(cancel.wait, WATCH_INTERVAL)
        except Exception:  # the scheduler is away: the checks below decide
            log.debug("cancel signal of %s unreadable", request["key"], exc_info=True)
            cancelled = False
            await asyncio.sleep(WATCH_INTERVAL)
        if cancelled:
            attempt.cancel(JobState.CANCELLED, await asyncio.to_thread(_cancel_reason, request["cancel"], client))
            return
        if (gone := orphaned(worker, request["key"])) is not None:
            attempt.cancel(JobState.LOST, gone)
            return


def _cancel_reason(name: str, client: Client) -> str:
    """The reason the server gave with its cancel signal (a Variable of the same name)."""
    try:
        return str(Variable(name, client=client).get(timeout=WATCH_INTERVAL))
    except Exception:
        return "cancelled"


def orphaned(worker: Worker, key: str) -> str | None:
    """Why this worker should stop running `key`, or None while Dask still wants it."""
    if worker.status not in (Status.running, Status.paused):
        return f"its Dask worker is shutting down ({worker.status.name})"
    task = worker.state.tasks.get(key)
    if task is None or task.state in _DROPPED_TASK_STATES:
        return "Dask released the task: the nbjobs server that launched it is gone"
    return None


async def _sync_while_running(storage: Storage, folder: Path, location: str, sent: dict[str, tuple[int, int]]) -> None:
    """Copy the partial outputs up now and then: a worker that dies leaves them behind."""
    while True:
        await asyncio.sleep(SYNC_INTERVAL)
        try:
            await asyncio.to_thread(storage.upload, folder, location, sent)
        except Exception:
            log.warning("could not copy %s to %s", folder, location, exc_info=True)
