"""The Python API: what the CLI (and later the server) call.

`run_prepared` runs a job in the foreground, in this process: it is recorded in
the store like any other job, with every attempt, state change and cell.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nbjobs.attempt import Attempt
from nbjobs.config import Settings
from nbjobs.events import EventSink, fan_out
from nbjobs.kernels import KernelProvider
from nbjobs.kernels.registry import make_provider
from nbjobs.lifecycle import StoreRecorder, begin_attempt, code_cell_indexes, conclude_attempt, state_recorder
from nbjobs.prepare import PreparedJob, load_spec, prepare
from nbjobs.rerun import rerun_spec
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.foreground import allocate_here
from nbjobs.spec import JobState
from nbjobs.store import JobRecord, Store
from nbjobs.store.repository import utcnow
from nbjobs.vcs import snapshot_store

__all__ = [
    "JobRecord",
    "Settings",
    "allocate_here",
    "code_cell_indexes",
    "compare",
    "gc_snapshots",
    "load_spec",
    "prepare",
    "rerun",
    "run",
    "run_prepared",
    "run_prepared_async",
]


def run(
    notebook: str,
    output: str | Path | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    **fields: Any,
) -> JobRecord:
    """Run `notebook` now with `parameters` (and any JobSpec field); return its record."""
    settings = settings or Settings.from_env()
    spec, nb = load_spec(notebook, overrides={**fields, "parameters": dict(parameters or {})}, settings=settings)
    return run_prepared(prepare(spec, nb, output, settings=settings), settings=settings)


def rerun(job_id: int, *, settings: Settings | None = None, sinks: Iterable[EventSink] = ()) -> JobRecord:
    """Run job `job_id` again: same parameters, and at the same commit if it was in a repository."""
    settings = settings or Settings.from_env()
    with Store(settings.db_url) as store:
        spec = rerun_spec(store.get(job_id))
    return run_prepared(prepare(spec, settings=settings), settings=settings, sinks=sinks)


def compare(job_a: int, job_b: int, *, settings: Settings | None = None) -> dict[str, Any]:
    """How two jobs differ: commits (and the commits between), parameters, results, usage, cells."""
    from nbjobs.compare import compare_jobs

    settings = settings or Settings.from_env()
    with Store(settings.db_url) as store:
        a, b = store.get(job_a), store.get(job_b)
    return compare_jobs(a, b, home=settings.home)


def gc_snapshots(*, settings: Settings | None = None) -> list[str]:
    """Remove snapshots no live job holds; the commits whose snapshots were removed."""
    return snapshot_store((settings or Settings.from_env()).home).gc()


def run_prepared(
    prepared: PreparedJob,
    *,
    settings: Settings | None = None,
    provider: KernelProvider | None = None,
    sinks: Iterable[EventSink] = (),
    store: Store | None = None,
    allocation: Allocation | None = None,
) -> JobRecord:
    """Record and run a prepared job in the foreground, with its retry policy.

    The prepared job's snapshot lease (if any) is released when the job ends.
    """
    return asyncio.run(
        run_prepared_async(
            prepared, settings=settings, provider=provider, sinks=sinks, store=store, allocation=allocation
        )
    )


async def run_prepared_async(
    prepared: PreparedJob,
    *,
    settings: Settings | None = None,
    provider: KernelProvider | None = None,
    sinks: Iterable[EventSink] = (),
    store: Store | None = None,
    allocation: Allocation | None = None,
) -> JobRecord:
    """`run_prepared` in a running event loop (where a kernel may already be starting for it)."""
    settings = settings or Settings.from_env()
    own_store = store is None
    try:
        store = store or Store(settings.db_url)
        key = prepared.spec.idempotency_key
        if key and (existing := store.find_by_idempotency_key(key)) is not None:
            return store.get(existing)
        if allocation is None:  # before the job row: an impossible request leaves nothing behind
            allocation = allocate_here(prepared, settings)
        job_id = store.create_job(prepared.spec, owner=getpass.getuser(), host=socket.gethostname(), vcs=prepared.git)
        await _run_job(prepared, job_id, settings, store, provider, list(sinks), allocation)
        return store.get(job_id)
    finally:
        if prepared.snapshot is not None:
            prepared.snapshot.release()  # the job is over: its snapshot goes when nobody else holds it
        if own_store and store is not None:
            store.close()


async def _run_job(
    prepared: PreparedJob,
    job_id: int,
    settings: Settings,
    store: Store,
    provider: KernelProvider | None,
    sinks: list[EventSink],
    allocation: Allocation,
) -> None:
    """The attempts, with the configured provider unless one is given (then the caller closes it)."""
    own = provider is None
    provider = provider or make_provider(settings.config.kernels, prepared.kernel, single_job=True)
    try:
        await _run_attempts(prepared, job_id, settings, store, provider, sinks, allocation)
    finally:
        if own:
            await asyncio.shield(provider.close())


async def _run_attempts(
    prepared: PreparedJob,
    job_id: int,
    settings: Settings,
    store: Store,
    provider: KernelProvider,
    sinks: list[EventSink],
    allocation: Allocation,
) -> None:
    """Attempts one after another in this process; a retry waits out its backoff here."""
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
    host = socket.gethostname()
    try:
        for number in range(1, prepared.spec.retry.attempts + 1):
            paths = begin_attempt(store, settings, prepared, job_id, number, host)
            attempt = Attempt(
                prepared,
                job_id=job_id,
                number=number,
                paths=paths,
                provider=provider,
                emit=fan_out([StoreRecorder(store, job_id, number), *sinks]),
                on_state=state_recorder(store, job_id),
                allocation=allocation,
                sample_interval=settings.config.resources.sample_interval,
            )
            current[:] = [attempt]
            conclusion = conclude_attempt(store, prepared.spec, job_id, number, await attempt.run(), paths)
            if conclusion.retry_at is None:
                return
            current.clear()
            await asyncio.sleep(max(0.0, (conclusion.retry_at - utcnow()).total_seconds()))
    except asyncio.CancelledError:
        store.transition(job_id, JobState.CANCELLED, "cancelled while waiting to retry")
    except BaseException as exc:
        store.transition(job_id, JobState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
