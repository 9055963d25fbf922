"""The backend a server runs jobs on, with the allocator that admits jobs to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbjobs.backends.base import Backend, FinishedCallback, Launch
from nbjobs.config import Settings
from nbjobs.errors import InvalidInput
from nbjobs.events import EventSink
from nbjobs.spec import JobSpec
from nbjobs.store import Store


async def open_backend(
    settings: Settings,
    store: Store,
    on_finished: FinishedCallback,
    *,
    kind: str | None = None,
    scheduler_address: str | None = None,
    events: EventSink | None = None,
    job_events: Callable[[Launch], EventSink] | None = None,
    secrets: Callable[[int, JobSpec], dict[str, str]] | None = None,
) -> tuple[Backend, Any]:
    """(backend, allocator) from the arguments, else the config's `[backend]` section.

    local: this host's Allocator hands out concrete CPU and GPU ids. dask: Dask
    places attempts on workers and each worker picks ids itself; the allocator is
    the cluster's admission (`nbjobs.resources.cluster.ClusterAllocator`).
    """
    config = settings.config.backend
    kind = kind or config.kind
    if kind == "local":
        from nbjobs.backends.local import LocalBackend
        from nbjobs.resources.allocator import Allocator
        from nbjobs.resources.capacity import detect_capacity

        backend = LocalBackend(settings, store, on_finished, events=events, job_events=job_events, secrets=secrets)
        return backend, Allocator(detect_capacity(settings.config))
    if kind != "dask":
        raise InvalidInput(f"Unknown backend {kind!r}; use local or dask.")
    address = scheduler_address or config.scheduler_address
    if not address:
        raise InvalidInput(
            "The dask backend needs the scheduler's address: --scheduler-address tcp://HOST:PORT, "
            "or scheduler_address in the [backend] section of config.toml."
        )
    try:
        from nbjobs.backends.dask import DaskBackend
    except ImportError as exc:
        raise InvalidInput(f"The dask backend needs Dask distributed ({exc}): pip install 'nbjobs[dask]'.") from None
    backend = await DaskBackend.connect(settings, store, on_finished, address, events=events, job_events=job_events)
    return backend, backend.allocator
