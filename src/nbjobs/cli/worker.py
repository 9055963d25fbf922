"""`nbjobs worker`: a Dask worker that runs nbjobs jobs, advertising what it offers."""

from __future__ import annotations

import asyncio

import click

from nbjobs.cli.main import main
from nbjobs.cli.options import KeyValue
from nbjobs.errors import InvalidInput


@main.command()
@click.option(
    "--scheduler-address",
    required=True,
    envvar=["NBJOBS_SCHEDULER_ADDRESS", "DASK_SCHEDULER_ADDRESS"],
    help="The Dask scheduler, e.g. tcp://10.0.0.5:8786 (or NBJOBS_SCHEDULER_ADDRESS, DASK_SCHEDULER_ADDRESS).",
)
@click.option("--cpus", help="A count (the first N CPUs this process may use) or ids: 0,2-3. Default: all.")
@click.option("--memory", help="Memory offered to jobs, e.g. 8GiB. Default: this host's (or cgroup's).")
@click.option("--gpus", help="A count, or ids as CUDA_VISIBLE_DEVICES takes them: 0,1. Default: all found.")
@click.option("--resource", "custom", multiple=True, type=KeyValue(), help="NAME=COUNT custom resource (repeatable).")
@click.option("--nthreads", type=click.IntRange(1, 4096), help="Attempts at once (default: one per CPU).")
@click.option("--name", help="Worker name, shown in job records (default: its address).")
@click.option("--nanny/--no-nanny", default=True, show_default=True, help="Run under a Dask nanny that restarts it.")
def worker(
    scheduler_address: str,
    cpus: str | None,
    memory: str | None,
    gpus: str | None,
    custom: tuple[tuple[str, str], ...],
    nthreads: int | None,
    name: str | None,
    nanny: bool,
) -> None:
    """Join a Dask cluster as a worker that runs nbjobs attempts, on kernels of this host."""
    try:
        from nbjobs.backends.worker_resources import parse_cpus, parse_custom, parse_gpus
        from nbjobs.backends.worker_start import WorkerOffer, run_worker
    except ImportError as exc:
        raise InvalidInput(f"`nbjobs worker` needs Dask distributed ({exc}): pip install 'nbjobs[dask]'.") from None
    from nbjobs.resources.capacity import host_memory
    from nbjobs.spec import parse_size

    try:
        memory_bytes = parse_size(memory) if memory is not None else host_memory()
    except ValueError as exc:
        raise InvalidInput(f"--memory: {exc}.") from None
    offer = WorkerOffer(cpus=parse_cpus(cpus), memory=memory_bytes, gpus=parse_gpus(gpus), custom=parse_custom(custom))
    asyncio.run(run_worker(scheduler_address, offer, nthreads=nthreads or len(offer.cpus), name=name, nanny=nanny))
