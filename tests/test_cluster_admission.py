"""Admission on a Dask cluster and what a worker offers: pure logic, no cluster needed."""

from __future__ import annotations

import os

import pytest

from nbjobs.backends.worker_resources import advertised, parse_cpus, parse_custom, worker_capacity, worker_env
from nbjobs.errors import InvalidInput
from nbjobs.resources.cluster import ClusterAllocator, dask_resources
from nbjobs.resources.gpus import GpuInfo
from nbjobs.spec import Resources

GIB = 2**30
WORKERS = {
    "plain": {"CPU": 1.0, "MEMORY": 2.0 * GIB},
    "gpu": {"CPU": 1.0, "MEMORY": 1.0 * GIB, "GPU": 1.0, "licenses": 1.0},
}


def res(**fields: object) -> Resources:
    return Resources.model_validate(fields)


def test_requests_map_to_dask_resources_as_the_local_allocator_counts_them() -> None:
    assert dask_resources(res()) == {"CPU": 1.0}  # no CPUs asked: counts as one
    assert dask_resources(res(cpus=1.5, memory="1GiB", gpus=2, custom={"licenses": 1})) == {
        "CPU": 2.0,
        "MEMORY": float(GIB),
        "GPU": 2.0,
        "licenses": 1.0,
    }


def test_without_workers_nothing_is_refused_and_jobs_wait_for_one() -> None:
    admission = ClusterAllocator("tcp://sched:8786")
    admission.check_fits(res(gpus=8))
    assert admission.shortfall(res()) == "no Dask worker is connected to the scheduler at tcp://sched:8786"
    assert admission.try_allocate(res()) is None


def test_never_fits_is_per_worker_and_bookings_follow_the_totals() -> None:
    admission = ClusterAllocator()
    admission.update(WORKERS)
    assert admission.capacity.describe() == "2 CPUs, 3 GiB, 1 GPU, licenses=1"
    with pytest.raises(InvalidInput, match=r"needs 1 CPU, 1\.5 GiB memory, 1 GPU on one worker"):
        admission.check_fits(res(memory="1.5GiB", gpus=1))  # the totals would cover it, no worker does
    admission.check_fits(res(gpus=1, custom={"licenses": 1}))

    first = admission.try_allocate(res(gpus=1))
    second = admission.try_allocate(res(memory="1GiB"))
    assert first is not None and second is not None and first.cpus == () and first.gpus == ()
    assert admission.shortfall(res()) == "needs 1 CPU, 0 CPUs free"
    assert admission.free().cpu_count == 0 and admission.free().memory == 2 * GIB
    assert admission.release(first) and not admission.release(first)
    assert admission.shortfall(res(gpus=1)) is None

    admission.update({"plain": WORKERS["plain"]})  # the GPU worker left
    assert admission.shortfall(res(gpus=1)) == "no connected Dask worker advertises 1 CPU, 1 GPU"


def test_worker_offers_from_options_and_from_a_plain_dask_worker() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert parse_cpus(None) == tuple(allowed) and parse_cpus("1") == (allowed[0],)
    assert parse_cpus(f"{allowed[-1]}-{allowed[-1]}") == (allowed[-1],)
    for bad in ("0", "x", "0,a", str(len(allowed) + 1)):
        with pytest.raises(InvalidInput, match="--cpus"):
            parse_cpus(bad)
    assert parse_custom((("licenses", "2"),)) == {"licenses": 2}
    for pair in (("CPU", "1"), ("bad name", "1"), ("seats", "0")):
        with pytest.raises(InvalidInput, match="--resource"):
            parse_custom((pair,))

    gpus = (GpuInfo(index=0, uuid="GPU-fake-0", name="fake"),)
    offered = advertised((allowed[0],), GIB, gpus, {"licenses": 1})
    assert offered == {"CPU": 1.0, "MEMORY": float(GIB), "GPU": 1.0, "licenses": 1.0}
    capacity = worker_capacity(offered, worker_env((allowed[0],), gpus))
    assert capacity.cpus == (allowed[0],) and [g.uuid for g in capacity.gpus] == ["GPU-fake-0"]
    assert capacity.memory == GIB and capacity.custom == {"licenses": 1}
    # `dask worker --resources CPU=1,GPU=1` without nbjobs worker's ids: affinity and the GPUs it sees.
    plain = worker_capacity({"CPU": 1.0, "GPU": 1.0}, {"NBJOBS_GPUS": "2"})
    assert plain.cpus == (allowed[0],) and [g.uuid for g in plain.gpus] == ["GPU-fake-0"] and plain.memory > 0
