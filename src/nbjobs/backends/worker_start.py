"""Starting a Dask worker that runs nbjobs attempts (`nbjobs worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

from nbjobs.backends.worker_resources import advertised, worker_env
from nbjobs.resources.cluster import describe_resources
from nbjobs.resources.gpus import GpuInfo


@dataclass(frozen=True)
class WorkerOffer:
    """What one worker offers to jobs: concrete CPU and GPU ids, memory, custom counts."""

    cpus: tuple[int, ...]
    memory: int
    gpus: tuple[GpuInfo, ...]
    custom: dict[str, int]

    @property
    def resources(self) -> dict[str, float]:
        return advertised(self.cpus, self.memory, self.gpus, self.custom)

    def describe(self) -> str:
        ids = f"CPU ids {','.join(map(str, self.cpus))}"
        gpus = f"; GPUs {','.join(g.uuid for g in self.gpus)}" if self.gpus else ""
        return f"{describe_resources(self.resources)} ({ids}{gpus})"


async def run_worker(
    scheduler_address: str, offer: WorkerOffer, *, nthreads: int, name: str | None, nanny: bool
) -> None:
    """Run a Dask worker (under a nanny that restarts it, by default) until SIGTERM or Ctrl-C."""
    from distributed import Nanny, Worker

    env = worker_env(offer.cpus, offer.gpus)
    # memory_limit=0: Dask must not pause or restart the worker over its own memory; each job's
    # memory is limited and measured on its kernel, by nbjobs.
    options = {"nthreads": nthreads, "resources": offer.resources, "name": name, "memory_limit": 0}
    if nanny:
        server = Nanny(scheduler_address, env=env, **options)
    else:
        os.environ.update(env)
        server = Worker(scheduler_address, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close()))
    async with server:
        print(f"nbjobs worker {server.name} at {server.address} for {scheduler_address}", flush=True)
        print(f"offers: {offer.describe()}, {nthreads} thread(s)", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await server.finished()
