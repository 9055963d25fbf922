"""The Python API: what the CLI (and later the server) call.

`run_prepared` runs a job in the foreground, in this process: it is recorded in
the store like any other job, with every attempt, state change and cell.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import signal
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nbjobs.attempt import Attempt, AttemptPaths
from nbjobs.config import Settings
from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event, EventSink, fan_out
from nbjobs.kernels import KernelProvider, PlainProvider
from nbjobs.prepare import PreparedJob, load_spec, prepare, render_output_path
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import detect_capacity
from nbjobs.spec import JobState
from nbjobs.store import JobRecord, Store

__all__ = ["JobRecord", "Settings", "allocate_here", "load_spec", "prepare", "run", "run_prepared"]


def code_cell_indexes(prepared: PreparedJob) -> list[int]:
    return [i for i, c in enumerate(prepared.nb.cells) if c.cell_type == "code"]


class StoreRecorder:
    """Writes cell progress of one attempt into the store as it happens."""

    def __init__(self, store: Store, job_id: int, attempt: int) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt

    def __call__(self, event: Event) -> None:
        match event:
            case CellStarted(index=i, at=at):
                self.store.update_cell(self.job_id, self.attempt, i, "running", started=at)
            case CellFinished(index=i, status=status, started=started, ended=ended):
                self.store.update_cell(self.job_id, self.attempt, i, status, started=started, ended=ended)
            case CellSkipped(index=i):
                self.store.update_cell(self.job_id, self.attempt, i, "skipped")


def run(
    notebook: str,
    output: str | Path | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    **fields: Any,
) -> JobRecord:
    """Run `notebook` now with `parameters` (and any JobSpec field); return its record."""
    spec, nb = load_spec(notebook, overrides={**fields, "parameters": dict(parameters or {})})
    return run_prepared(prepare(spec, nb, output), settings=settings)


def allocate_here(prepared: PreparedJob, settings: Settings | None = None) -> Allocation:
    """Concrete resources of this host for a foreground run; InvalidInput if they can never fit.

    A foreground run does not queue: it only needs to know that the request is
    possible here, and which CPU ids and GPUs to give it. It cannot see other
    foreground runs, so its CPUs and GPUs are spread rather than packed (two
    runs at once seldom share one); the server's scheduler books across jobs.
    """
    settings = settings or Settings.from_env()
    resources = prepared.spec.resources
    allocator = Allocator(detect_capacity(settings.config, gpus=resources.gpus > 0), spread=True)
    allocator.check_fits(resources)
    allocation = allocator.try_allocate(resources)
    assert allocation is not None, "a request that fits an empty host is always allocated"
    return allocation


def run_prepared(
    prepared: PreparedJob,
    *,
    settings: Settings | None = None,
    provider: KernelProvider | None = None,
    sinks: Iterable[EventSink] = (),
    store: Store | None = None,
    allocation: Allocation | None = None,
) -> JobRecord:
    """Record and run a prepared job in the foreground, with its retry policy."""
    settings = settings or Settings.from_env()
    own_store = store is None
    store = store or Store(settings.db_url)
    try:
        key = prepared.spec.idempotency_key
        if key and (existing := store.find_by_idempotency_key(key)) is not None:
            return store.get(existing)
        if allocation is None:  # before the job row: an impossible request leaves nothing behind
            allocation = allocate_here(prepared, settings)
        job_id = store.create_job(prepared.spec, owner=getpass.getuser(), host=socket.gethostname())
        asyncio.run(
            _run_attempts(prepared, job_id, settings, store, provider or PlainProvider(), list(sinks), allocation)
        )
        return store.get(job_id)
    finally:
        if own_store:
            store.close()


async def _run_attempts(
    prepared: PreparedJob,
    job_id: int,
    settings: Settings,
    store: Store,
    provider: KernelProvider,
    sinks: list[EventSink],
    allocation: Allocation,
) -> None:
    loop = asyncio.get_running_loop()
    current: list[Attempt] = []
    main = asyncio.current_task()

    def on_signal(name: str) -> None:
        if current:
            current[-1].cancel(JobState.CANCELLED, f"cancelled by {name}")
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    retry = prepared.spec.retry
    host = socket.gethostname()
    cells = code_cell_indexes(prepared)
    try:
        for number in range(1, retry.attempts + 1):
            folder = settings.attempt_dir(job_id, number)
            paths = AttemptPaths(
                folder=folder,
                output=render_output_path(prepared, job_id=job_id, attempt=number, default=folder / "output.ipynb"),
            )
            folder.mkdir(parents=True, exist_ok=True)
            store.begin_attempt(job_id, number, host=host, output=str(paths.output), log=str(paths.log), cells=cells)
            attempt = Attempt(
                prepared,
                job_id=job_id,
                number=number,
                paths=paths,
                provider=provider,
                emit=fan_out([StoreRecorder(store, job_id, number), *sinks]),
                on_state=lambda state: store.transition(job_id, state),
                allocation=allocation,
                sample_interval=settings.config.resources.sample_interval,
            )
            current.append(attempt)
            result = await attempt.run()
            outcome = result.outcome
            store.finish_attempt(job_id, number, results=result.results, artifacts=result.artifacts, usage=result.usage)
            will_retry = number < retry.attempts and outcome.state in retry.on
            if not will_retry:
                store.transition(job_id, outcome.state, outcome.reason)
                return
            store.transition(job_id, outcome.state, outcome.reason)
            delay = retry.delay_before(number + 1)
            store.transition(
                job_id,
                JobState.QUEUED,
                f"retry {number + 1}/{retry.attempts} in {delay:g} s after {outcome.state.value}: {outcome.reason}",
            )
            _keep_attempt_output(store, job_id, number, paths, folder)
            current.clear()
            await asyncio.sleep(delay)
    except asyncio.CancelledError:
        store.transition(job_id, JobState.CANCELLED, "cancelled while waiting to retry")
    except BaseException as exc:
        store.transition(job_id, JobState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _keep_attempt_output(store: Store, job_id: int, number: int, paths: AttemptPaths, folder: Path) -> None:
    """An output path shared by all attempts: move this attempt's notebook into its own folder."""
    if paths.output.parent == folder or not paths.output.exists():
        return
    kept = folder / "output.ipynb"
    shutil.move(paths.output, kept)
    store.set_attempt_output(job_id, number, str(kept))
