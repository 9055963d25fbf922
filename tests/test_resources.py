"""Capacity, allocation, measurement and reporting of resources; real kernels through the CLI."""

from __future__ import annotations

import json
import os
import random
import stat
import threading
from pathlib import Path

import psutil
import pytest

from nbjobs.config import Config, ResourceConfig
from nbjobs.errors import InvalidInput
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import HostCapacity, detect_capacity
from nbjobs.resources.gpus import GpuInfo, detect_gpus, fake_gpus, gpu_memory_by_pid
from nbjobs.resources.monitor import Series, UsageSummary, _Sample, hoarding_advice, suggest_memory
from nbjobs.resources.report import summarize
from nbjobs.spec import Resources

from conftest import job_json

GiB = 2**30
MiB = 2**20


@pytest.fixture
def fast_sampling(home: Path) -> Path:
    """Usage sampled every 0.1 s, so short test jobs get several samples."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[resources]\nsample_interval = 0.1\n")
    return home


def big_host(cpus: int = 64, gpus: int = 8, memory: int = 256 * GiB, **custom: int) -> HostCapacity:
    """A made-up host: two sockets of cpus/2 CPUs each."""
    return HostCapacity(
        cpus=tuple(range(cpus)),
        memory=memory,
        gpus=tuple(GpuInfo(index=i, uuid=f"GPU-{i:04d}", name="test", memory=80 * GiB) for i in range(gpus)),
        custom=dict(custom),
        cpu_packages={c: c // (cpus // 2) for c in range(cpus)},
    )


# ------------------------------------------------------------------ capacity


def test_capacity_is_what_this_process_may_use_minus_reserves(monkeypatch):
    monkeypatch.setenv("NBJOBS_GPUS", "0")
    cpus = sorted(os.sched_getaffinity(0))
    whole = detect_capacity(Config())
    assert whole.cpus == tuple(cpus)
    assert 0 < whole.memory <= psutil.virtual_memory().total
    assert whole.gpus == ()
    config = Config(resources=ResourceConfig(custom={"licenses": 2}, reserve_memory="1GiB"))
    reserved = detect_capacity(config)
    assert reserved.memory == whole.memory - GiB
    assert reserved.custom == {"licenses": 2}
    assert reserved.describe().endswith(", 0 GPUs, licenses=2")
    assert reserved.describe().startswith(f"{len(cpus)} CPU")
    if len(cpus) > 1:  # the lowest ids stay with the system
        assert detect_capacity(Config(resources=ResourceConfig(reserve_cpus=1))).cpus == tuple(cpus[1:])


def test_reserves_that_leave_nothing_are_refused(monkeypatch):
    monkeypatch.setenv("NBJOBS_GPUS", "0")
    with pytest.raises(InvalidInput, match="reserve_cpus"):
        detect_capacity(Config(resources=ResourceConfig(reserve_cpus=len(os.sched_getaffinity(0)))))
    with pytest.raises(InvalidInput, match="reserve_memory"):
        detect_capacity(Config(resources=ResourceConfig(reserve_memory="100TiB")))


def test_fake_gpus_from_a_count_or_a_list():
    assert [g.uuid for g in fake_gpus("2")] == ["GPU-fake-0", "GPU-fake-1"]
    assert [(g.index, g.uuid) for g in fake_gpus("GPU-x, GPU-y")] == [(0, "GPU-x"), (1, "GPU-y")]
    assert fake_gpus("0") == () and fake_gpus("") == ()
    assert detect_gpus({"NBJOBS_GPUS": "3"}) == fake_gpus("3")


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` on PATH answering like a two-GPU host where every process uses 100 MiB."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *--query-gpu=index,uuid,name,memory.total*)\n"
        '    echo "0, GPU-aaaa, NVIDIA Test, 81559"; echo "1, GPU-bbbb, NVIDIA Test, 81559";;\n'
        "  *--query-compute-apps=pid,used_memory*)\n"
        '    for p in /proc/[0-9]*; do echo "${p#/proc/}, 100"; done;;\n'
        "  *) exit 9;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("NBJOBS_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return script


def test_gpus_from_nvidia_smi_honour_our_own_cuda_visible_devices(fake_nvidia_smi):
    gpus = detect_gpus(dict(os.environ))
    assert gpus == (
        GpuInfo(0, "GPU-aaaa", "NVIDIA Test", 81559 * MiB),
        GpuInfo(1, "GPU-bbbb", "NVIDIA Test", 81559 * MiB),
    )
    assert [g.uuid for g in detect_gpus({**os.environ, "CUDA_VISIBLE_DEVICES": "1"})] == ["GPU-bbbb"]
    assert [g.uuid for g in detect_gpus({**os.environ, "CUDA_VISIBLE_DEVICES": "GPU-aaaa"})] == ["GPU-aaaa"]
    assert detect_gpus({**os.environ, "CUDA_VISIBLE_DEVICES": ""}) == ()
    assert gpu_memory_by_pid([os.getpid(), 1]) == 200 * MiB


# ------------------------------------------------------------------ allocator


def test_impossible_requests_say_what_exists():
    allocator = Allocator(big_host(cpus=4, gpus=2, memory=8 * GiB, licenses=2))
    allocator.check_fits(Resources(cpus=4, memory="8GiB", gpus=2, custom={"licenses": 2}))
    with pytest.raises(InvalidInput) as caught:
        allocator.check_fits(Resources(cpus=4.5, memory="9GiB", gpus=3))
    message = str(caught.value)
    assert "`resources.cpus` = 4.5 needs 5 CPUs, this host has 4" in message
    assert "`resources.memory` = 9 GiB is more than the 8 GiB" in message
    assert "`resources.gpus` = 3, this host has 2 GPUs" in message
    assert "This host has 4 CPUs, 8 GiB, 2 GPUs, licenses=2." in message
    with pytest.raises(InvalidInput, match=r"unknown resource\(s\) seats; this host defines: licenses \(2\)"):
        allocator.check_fits(Resources(custom={"seats": 1}))
    with pytest.raises(InvalidInput, match=r"`resources\.custom\.licenses` = 3, this host has 2"):
        allocator.check_fits(Resources(custom={"licenses": 3}))


def test_allocations_pack_cpus_and_never_share_gpus():
    allocator = Allocator(big_host(cpus=10, gpus=2, memory=16 * GiB, licenses=1))  # sockets: 0-4, 5-9
    first = allocator.try_allocate(Resources(cpus=1.5, memory="4GiB", gpus=1, custom={"licenses": 1}))
    assert first == Allocation(cpus=(0, 1), memory=4 * GiB, gpus=("GPU-0000",), custom={"licenses": 1})
    assert first.kernel_env()["OMP_NUM_THREADS"] == "2"
    # Best fit: the socket with the least room that fits, so socket 1 stays whole.
    second = allocator.try_allocate(Resources(cpus=2))
    assert second is not None and second.cpus == (2, 3) and second.gpus == ()
    third = allocator.try_allocate(Resources(cpus=4, gpus=1))
    assert third is not None and third.cpus == (5, 6, 7, 8) and third.gpus == ("GPU-0001",)
    spanning = allocator.try_allocate(Resources(cpus=2))
    assert spanning is not None and spanning.cpus == (4, 9)
    assert allocator.try_allocate(Resources(gpus=1)) is None
    assert allocator.shortfall(Resources(gpus=1, custom={"licenses": 1})) == (
        "needs 1 CPU, 0 free; needs 1 GPU, 0 free; needs 1 licenses, 0 free"
    )
    assert allocator.release(second) and not allocator.release(second)  # twice is harmless
    assert allocator.shortfall(Resources(memory="13GiB")) == "needs 13 GiB memory, 12 GiB free"
    free = allocator.free()
    assert free.cpus == (2, 3) and free.cpu_count == 2 and free.memory == 12 * GiB and free.gpus == ()
    # Unpinned jobs are not pinned but each counts as one CPU.
    unpinned = [allocator.try_allocate(Resources()) for _ in range(3)]
    assert unpinned[0] == unpinned[1] == Allocation() and unpinned[2] is None
    assert allocator.shortfall(Resources(cpus=1)) == "needs 1 CPU, 0 free"
    allocator.release(unpinned[0])
    assert allocator.free().cpu_count == 1


def test_spreading_allocator_starts_anywhere_but_never_double_books():
    firsts = set()
    for _ in range(40):
        allocator = Allocator(big_host(cpus=8, gpus=4), spread=True)
        first = allocator.try_allocate(Resources(cpus=2, gpus=1))
        second = allocator.try_allocate(Resources(cpus=2, gpus=1))
        assert first is not None and second is not None
        assert not set(first.cpus) & set(second.cpus) and first.gpus != second.gpus
        assert {c // 4 for c in first.cpus} == {first.cpus[0] // 4}  # still within one socket
        firsts.add(first.cpus)
    assert len(firsts) > 1


def test_shortfall_in_memory_reads_as_a_queue_reason():
    allocator = Allocator(big_host(cpus=4, gpus=0, memory=int(5.2 * GiB)))
    assert allocator.try_allocate(Resources(memory="4GiB")) is not None
    assert allocator.shortfall(Resources(memory="4GiB")) == "needs 4 GiB memory, 1.2 GiB free"
    assert allocator.shortfall(Resources(memory="1GiB")) is None


def test_concurrent_allocations_never_double_book():
    allocator = Allocator(big_host(cpus=32, gpus=4, memory=64 * GiB))
    in_use_cpus: set[int] = set()
    in_use_gpus: set[str] = set()
    memory_in_use = [0]
    check = threading.Lock()
    errors: list[str] = []
    granted = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            request = Resources(
                cpus=rng.choice([None, 1, 2, 3.5, 8]), memory=f"{rng.randint(1, 20)}GiB", gpus=rng.choice([0, 0, 1, 2])
            )
            allocation = allocator.try_allocate(request)
            if allocation is None:
                continue
            with check:
                granted[0] += 1
                if in_use_cpus & set(allocation.cpus) or in_use_gpus & set(allocation.gpus):
                    errors.append(f"double booking: {allocation}")
                in_use_cpus.update(allocation.cpus)
                in_use_gpus.update(allocation.gpus)
                memory_in_use[0] += allocation.memory or 0
                if memory_in_use[0] > 64 * GiB:
                    errors.append(f"memory overbooked: {memory_in_use[0]}")
            with check:
                in_use_cpus.difference_update(allocation.cpus)
                in_use_gpus.difference_update(allocation.gpus)
                memory_in_use[0] -= allocation.memory or 0
            allocator.release(allocation)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert granted[0] > 100
    free = allocator.free()
    assert free.cpu_count == 32 and free.memory == 64 * GiB and len(free.gpus) == 4


# ------------------------------------------------------------------ measurement and advice


def test_series_keeps_at_most_the_points_asked_for():
    series = Series(max_points=500)
    for i in range(5000):
        series.add(_Sample(t=i * 0.1, memory=i, cpu=1.0, gpu=None))
    data = series.to_dict()
    assert 250 <= len(data["t"]) <= 500
    assert data["memory"][-1] == 4999  # the highest memory of a merged stretch survives
    assert set(data["cpu"]) == {1.0} and "gpu_memory" not in data


def test_hoarding_advice():
    summary = UsageSummary(peak_memory=310 * MiB, mean_cpu=0.3, cpu_time=30, wall_time=100, samples=100)
    advice = hoarding_advice(Resources(memory="8GiB", cpus=4), summary)
    assert advice == "asked 8 GiB, peak 310 MiB: consider 512 MiB; asked 4 CPUs, used 0.3 on average: consider 1"
    assert hoarding_advice(Resources(memory="512MiB", cpus=1), summary) is None
    assert hoarding_advice(Resources(), summary) is None
    assert hoarding_advice(Resources(memory="8GiB"), {"samples": 0}) is None
    short = UsageSummary(peak_memory=GiB, mean_cpu=0.1, wall_time=2, samples=20)
    assert hoarding_advice(Resources(cpus=8), short) is None  # too short to judge CPUs
    assert hoarding_advice(Resources(gpus=2), {**summary.to_dict(), "peak_gpu_memory": 0}) == (
        "asked 2 GPUs, used no GPU memory"
    )
    assert suggest_memory(100 * MiB) == 256 * MiB and suggest_memory(3 * GiB) == 4 * GiB


def test_summary_by_group():
    class Row:
        def __init__(self, owner, tags, memory, cpus, peak, mean_cpu):
            self.owner, self.notebook, self.tags = owner, f"/nb/{owner}.ipynb", tags
            self.requested = {"memory": memory, "cpus": cpus}
            self.usage = {"summary": {"samples": 3, "peak_memory": peak, "mean_cpu": mean_cpu, "wall_time": 1.0}}

    rows = [
        Row("ann", ["etl"], 4 * GiB, 4, GiB, 1.0),
        Row("ann", [], 4 * GiB, None, 3 * GiB, 0.5),
        Row("bob", ["etl", "ml"], None, 2, GiB, 2.0),
    ]
    by_user = {g.group: g for g in summarize(rows, "user")}
    assert by_user["ann"].jobs == 2 and by_user["ann"].memory_requested_sum == 8 * GiB
    assert by_user["ann"].memory_ratio == 0.5 and by_user["ann"].memory_peak_avg == 2 * GiB
    assert by_user["ann"].cpu_ratio == 0.25 and by_user["ann"].cpu_used_avg == 0.75
    assert by_user["bob"].memory_ratio is None and by_user["bob"].cpu_ratio == 1.0
    by_tag = {g.group: g.jobs for g in summarize(rows, "tag")}
    assert by_tag == {"etl": 2, "ml": 1, "(no tag)": 1}


# ------------------------------------------------------------------ real kernels


ENV_PROBE = (
    "import os, json\n"
    "print(json.dumps({'affinity': sorted(os.sched_getaffinity(0)),"
    " 'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS',"
    " 'CUDA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER')}}))"
)


def probe(record: dict) -> dict:
    return json.loads(Path(record["log"]).read_text())


def test_gpu_job_sees_only_its_gpu(cli, notebook, monkeypatch):
    monkeypatch.setenv("NBJOBS_GPUS", "2")
    nb = notebook([ENV_PROBE])
    record = job_json(cli("run", nb, "--gpus", "1", "--json"))
    assert record["state"] == "succeeded", record["reason"]
    env = probe(record)["env"]
    assert env["CUDA_VISIBLE_DEVICES"] in ("GPU-fake-0", "GPU-fake-1") and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert record["attempts"][0]["usage"]["allocation"]["gpus"] == [env["CUDA_VISIBLE_DEVICES"]]
    # A job that asks for no GPU sees none, even with one set in its own env.
    record = job_json(cli("run", nb, "--env", "CUDA_VISIBLE_DEVICES=0", "--json"))
    assert probe(record)["env"]["CUDA_VISIBLE_DEVICES"] == ""


def test_gpu_job_gets_uuids_and_its_gpu_memory_is_measured(cli, notebook, fake_nvidia_smi, fast_sampling):
    nb = notebook([ENV_PROBE, "import time; time.sleep(0.5)"])
    record = job_json(cli("run", nb, "--gpus", "1", "--json"))
    assert probe(record)["env"]["CUDA_VISIBLE_DEVICES"] in ("GPU-aaaa", "GPU-bbbb")  # UUIDs, not indexes
    summary = record["attempts"][0]["usage"]["summary"]
    assert summary["peak_gpu_memory"] >= 100 * MiB  # the fake says: 100 MiB per process of the tree


def test_cpus_pin_the_kernel_and_size_thread_pools(cli, notebook):
    nb = notebook([ENV_PROBE])
    record = job_json(cli("run", nb, "--cpus", "1", "--json"))
    seen = probe(record)
    assert len(seen["affinity"]) == 1
    assert seen["env"]["OMP_NUM_THREADS"] == "1" and seen["env"]["MKL_NUM_THREADS"] == "1"
    assert record["attempts"][0]["usage"]["allocation"]["cpus"] == seen["affinity"]
    # Without --cpus: not pinned, thread pools left alone.
    seen = probe(job_json(cli("run", nb, "--json")))
    assert seen["affinity"] == sorted(os.sched_getaffinity(0)) and seen["env"]["OMP_NUM_THREADS"] is None


def test_impossible_request_is_refused_before_a_job_exists(cli, notebook, monkeypatch):
    monkeypatch.setenv("NBJOBS_GPUS", "1")
    nb = notebook(["x = 1"])
    result = cli("run", nb, "--gpus", "2", "--cpus", "4096")
    assert result.exit_code == 2
    assert "`resources.gpus` = 2, this host has 1 GPU" in result.stderr
    assert "`resources.cpus` = 4096" in result.stderr and "Traceback" not in result.stderr
    result = cli("run", nb, "--resource", "licenses=1")
    assert result.exit_code == 2 and "unknown resource(s) licenses; this host defines: none" in result.stderr
    assert job_json(cli("ls", "--json")) == []


def test_usage_is_recorded_shown_with_advice_and_reported(cli, notebook, fast_sampling):
    busy = notebook(["x = sum(i * i for i in range(3_000_000))", "import time; time.sleep(0.5)"], name="busy.ipynb")
    record = job_json(cli("run", busy, "--memory", "4GiB", "--cpus", "1", "--tag", "nightly", "--json"))
    assert record["state"] == "succeeded"
    usage = record["attempts"][0]["usage"]
    summary = usage["summary"]
    assert summary["peak_memory"] > 10 * MiB and summary["samples"] >= 3
    assert summary["cpu_time"] > 0 and 0 < summary["mean_cpu"] <= 1.5 and summary["wall_time"] > 0.4
    assert len(usage["series"]["t"]) == len(usage["series"]["memory"]) == len(usage["series"]["cpu"]) >= 3
    assert usage["requested"]["memory"] == 4 * GiB and usage["allocation"]["memory"] == 4 * GiB
    assert usage["enforcement"] in ("cgroup", "watchdog")

    shown = cli("show", record["id"]).stdout
    assert "requested:  1 CPUs, 4 GiB" in shown
    assert "used:       peak memory" in shown and "mean CPU" in shown and "wall" in shown
    assert "advice:     asked 4 GiB, peak" in shown and "consider 256 MiB" in shown

    other = notebook(["y = 2"], name="other.ipynb")
    job_json(cli("run", other, "--memory", "1GiB", "--json"))
    report = json.loads(cli("report", "--json").stdout)
    assert report["by"] == "user"
    (group,) = report["groups"]
    assert group["jobs"] == 2 and group["measured"] == 2
    assert group["memory_requested_sum"] == 5 * GiB and 0 < group["memory_ratio"] < 0.2
    assert group["cpus_requested_jobs"] == 1
    by_tag = {g["group"]: g["jobs"] for g in json.loads(cli("report", "--by", "tag", "--json").stdout)["groups"]}
    assert by_tag == {"nightly": 1, "(no tag)": 1}
    by_notebook = json.loads(cli("report", "--by", "notebook", "--json").stdout)["groups"]
    assert sorted(Path(g["group"]).name for g in by_notebook) == ["busy.ipynb", "other.ipynb"]
    text = cli("report", "--by", "tag").stdout
    assert "nightly" in text and "memory asked → peak" in text


def test_report_without_jobs(cli):
    result = cli("report")
    assert result.exit_code == 0 and "No finished jobs yet" in result.stdout
