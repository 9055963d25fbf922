"""Enforcement on real processes and kernels: memory limits, the process tree, the child-side setup."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from nbjobs.resources.allocation import Allocation
from nbjobs.resources.cgroups import memory_parent
from nbjobs.resources.enforce import Enforcement, address_space_backstop, apply_in_child, preexec_for
from nbjobs.resources.monitor import UsageMonitor

from conftest import job_json

MiB = 2**20
GiB = 2**30

HOG = (
    "import time\n"
    "chunks = []\n"
    "for i in range(20):  # ~1 GB in 50 MB steps\n"
    "    chunks.append(bytearray(50 * 2**20))\n"
    "    time.sleep(0.05)\n"
)


@pytest.fixture
def fast_sampling(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[resources]\nsample_interval = 0.1\n")
    return home


def statuses(record: dict) -> list[str]:
    return [c["status"] for c in record["cells"]]


# "default": a cgroup where the host allows (or NBJOBS_CGROUP names a parent), else the watchdog.
@pytest.mark.parametrize("cgroup", ["default", "off"])
def test_memory_hog_ends_memory_exceeded(cli, notebook, fast_sampling, monkeypatch, cgroup):
    if cgroup == "off":
        monkeypatch.setenv("NBJOBS_CGROUP", "off")
    nb = notebook(["print('before')", HOG, "print('never')"])
    started = time.monotonic()
    result = cli("run", nb, "--memory", "200MiB", "--json")
    assert time.monotonic() - started < 60
    assert result.exit_code == 5, result.output
    record = job_json(result)
    assert record["state"] == "memory_exceeded"
    assert "200 MiB limit" in record["reason"] and "peak" in record["reason"], record["reason"]
    assert statuses(record) == ["completed", "memory_exceeded", "pending"]
    usage = record["attempts"][0]["usage"]
    assert usage["enforcement"] == ("watchdog" if cgroup == "off" or memory_parent() is None else "cgroup")
    assert usage["summary"]["samples"] >= 1 and usage["summary"]["peak_memory"] > 100 * MiB
    saved = nbformat.read(record["output"], as_version=4)  # the partial notebook
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert code[0].outputs[0].text == "before\n"
    assert code[1].metadata["nbjobs"]["status"] == "memory_exceeded"
    assert code[2].metadata["nbjobs"]["status"] == "pending" and code[2].execution_count is None
    assert "memory_exceeded" in saved.cells[0].source  # the banner
    assert saved.metadata["nbjobs_run"]["state"] == "memory_exceeded"


def test_the_whole_process_tree_counts_and_is_killed(cli, notebook, fast_sampling, tmp_path):
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, time; open(os.environ['PID_FILE'], 'w').write(str(os.getpid()));"
        "x = bytearray(400 * 2**20); time.sleep(60)"
    )
    nb = notebook(
        [f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(60)"]
    )
    result = cli("run", nb, "--memory", "200MiB", "--env", f"PID_FILE={pid_file}", "--json")
    record = job_json(result)
    assert record["state"] == "memory_exceeded", record["reason"]
    child_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the kernel's child survived the memory kill")


def test_address_space_backstop_stops_one_huge_allocation(cli, notebook, fast_sampling):
    limit = 100 * MiB
    expected = address_space_backstop(Allocation(cpus=(), memory=limit))
    assert expected is not None and expected > limit + 8 * GiB
    nb = notebook(
        [
            # A normal kernel works under the backstop: threads, imports, a little memory.
            "import resource, json, sqlite3, concurrent.futures as cf\n"
            "with cf.ThreadPoolExecutor(8) as pool: total = sum(pool.map(lambda i: sum(range(i)), range(2000)))\n"
            "print(json.dumps(resource.getrlimit(resource.RLIMIT_AS)))",
            "x = bytearray(16 * 2**30)",
            "print('never')",
        ]
    )
    record = job_json(cli("run", nb, "--memory", "100MiB", "--json"))
    soft, _ = json.loads(Path(record["log"]).read_text().splitlines()[0])
    assert soft == expected
    assert record["state"] == "memory_exceeded", record["reason"]
    assert "raised MemoryError" in record["reason"] and "address-space backstop" in record["reason"]
    assert statuses(record) == ["completed", "memory_exceeded", "pending"]


def test_no_backstop_for_gpu_jobs_or_other_languages():
    assert address_space_backstop(Allocation(memory=GiB, gpus=("GPU-0",))) is None
    assert address_space_backstop(Allocation(memory=GiB), language="java") is None
    assert address_space_backstop(Allocation()) is None
    assert address_space_backstop(Allocation(cpus=(0,), memory=GiB)) == GiB + 8 * GiB + 128 * MiB
    assert address_space_backstop(Allocation(memory=10 * GiB)) == 40 * GiB


def test_apply_in_child_after_fork_uses_only_the_allocation():
    cpu = min(os.sched_getaffinity(0))
    allocation = Allocation(cpus=(cpu,), memory=256 * MiB, gpus=("GPU-fake-1",))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a zygote does after its fork
        try:
            os.close(read_end)
            apply_in_child(allocation, address_space=3 * GiB)
            seen = {
                "affinity": sorted(os.sched_getaffinity(0)),
                "rlimit": resource.getrlimit(resource.RLIMIT_AS)[0],
                "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")},
            }
            os.write(write_end, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        seen = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert seen == {
        "affinity": [cpu],
        "rlimit": 3 * GiB,
        "env": {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "GPU-fake-1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
    }
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != "GPU-fake-1"  # the parent is untouched


def test_enforcement_uses_a_cgroup_only_where_the_host_allows(monkeypatch):
    enforcement = Enforcement.create(Allocation(memory=256 * MiB), f"test-{os.getpid()}")
    try:
        if memory_parent() is None:
            assert enforcement.mode == "watchdog" and enforcement.cgroup is None
        else:
            assert enforcement.mode == "cgroup" and enforcement.group is not None
            assert (enforcement.group.path / "memory.max").read_text().strip() == str(256 * MiB)
            proc = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(30)"],
                preexec_fn=preexec_for(enforcement.allocation, enforcement.cgroup),
            )
            enforcement.attach(proc.pid)
            assert enforcement.mode == "cgroup" and enforcement.group.contains(proc.pid)
    finally:
        path = enforcement.group.path if enforcement.group else None
        enforcement.close()
    if path is not None:
        proc.wait(timeout=10)  # removing the group killed what was in it
        assert not path.exists()
    monkeypatch.setenv("NBJOBS_CGROUP", "off")
    assert memory_parent() is None
    assert Enforcement.create(Allocation(memory=GiB), "off").mode == "watchdog"
    assert Enforcement.create(Allocation(), "none").mode == "none"


def test_usage_monitor_measures_cpu_and_calls_the_watchdog_once():
    script = (
        "import time\n"
        "end = time.monotonic() + 1.0\n"
        "while time.monotonic() < end: pass\n"
        "x = bytearray(300 * 2**20)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    calls: list[tuple[int, int]] = []

    async def watch() -> UsageMonitor:
        monitor = UsageMonitor(
            proc.pid, interval=0.05, memory_limit=200 * MiB, on_exceeded=lambda p, lim: calls.append((p, lim))
        )
        monitor.start()
        deadline = time.monotonic() + 20
        while not calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # more samples over the limit: still one call
        await monitor.stop()
        return monitor

    try:
        monitor = asyncio.run(watch())
    finally:
        proc.kill()
        proc.wait()
    summary = monitor.summary
    assert len(calls) == 1 and calls[0][1] == 200 * MiB and calls[0][0] > 200 * MiB
    assert summary.peak_memory > 200 * MiB and summary.samples > 10
    assert summary.cpu_time > 0.5 and 0.2 < summary.mean_cpu <= 1.2
    series = monitor.series.to_dict()
    assert max(series["cpu"]) > 0.5 and max(series["memory"]) == summary.peak_memory
