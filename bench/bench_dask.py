"""Per-job overhead of the dask backend against the local backend, side by side.

Both run the same N trivial notebook jobs (one cell) through the real server parts
(store, job service, dispatcher, backend) in this process, with the same number of
job slots: the local backend on this host's CPUs, the dask backend on a LocalCluster
scheduler with one `nbjobs worker` process per slot (one CPU each). Each job's slot
time is from its claim (`starting`) to its end, as recorded in the store; the
per-job overhead is the difference of the mean slot times. The makespan of the
whole batch is printed as well. The jobs are split into rounds that alternate the
backends, so that load drifting on a shared machine hits both alike.

    python bench/bench_dask.py [--jobs 200] [--slots 2] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbjobs.backends.factory import open_backend
from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher
from nbjobs.service import JobService
from nbjobs.spec import JobState
from nbjobs.store import JobRecord, Store

from common import machine

TARGET_MS = 100.0  # the dask backend may add at most this much per job


@dataclass
class Timing:
    backend: str
    jobs: int
    makespan: float  # seconds from the first submit to the last end
    slot_times: list[float]  # per job: claim to end, seconds
    to_running: list[float]  # per job: claim to kernel ready (the attempt's `running`), seconds
    failed: int

    @property
    def mean_slot(self) -> float:
        return statistics.fmean(self.slot_times)


def write_notebook(path: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell("i = 0", metadata={"tags": ["parameters"]}), new_code_cell("x = i * 2")]
    nbformat.write(nb, path)
    return path


def claimed_at(record: JobRecord) -> datetime:
    return next(h.at for h in record.history if h.state is JobState.STARTING)


def slot_time(record: JobRecord) -> float:
    assert record.ended is not None
    return (record.ended - claimed_at(record)).total_seconds()


def time_to_running(record: JobRecord) -> float:
    assert record.started is not None
    return (record.started - claimed_at(record)).total_seconds()


async def run_batch(kind: str, folder: Path, notebook: Path, jobs: int, address: str | None) -> Timing:
    home = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=folder))
    config = folder / "config.toml"  # shared by both runs: the local backend's CPUs
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'nbjobs.db'}", config_path=config)
    store = Store(settings.db_url)
    dispatcher: Dispatcher

    async def on_finished(*args):  # type: ignore[no-untyped-def]
        await dispatcher.on_finished(*args)

    backend, allocator = await open_backend(settings, store, on_finished, kind=kind, scheduler_address=address)
    dispatcher = Dispatcher(settings, store, allocator, backend)
    service = JobService(settings, store, allocator, dispatcher)
    await dispatcher.start()
    try:
        # Warm up: the first job on each slot pays one-off imports and connections.
        warm = [service.submit({"notebook": str(notebook)}, "bench")[0].id for _ in range(2)]
        for job in warm:
            await service.wait(job, 120)
        started = time.perf_counter()
        ids = [service.submit({"notebook": str(notebook), "parameters": {"i": i}}, "bench")[0].id for i in range(jobs)]
        while store.count_by_state().get(JobState.QUEUED.value, 0) + _active(store) > 0:
            await dispatcher.wait_changed(1.0)
        makespan = time.perf_counter() - started
        records = [store.get(job) for job in ids]
    finally:
        await dispatcher.stop()
        store.close()
    ok = [r for r in records if r.state is JobState.SUCCEEDED]
    return Timing(
        kind, jobs, makespan, [slot_time(r) for r in ok], [time_to_running(r) for r in ok], len(records) - len(ok)
    )


def _active(store: Store) -> int:
    counts = store.count_by_state()
    return counts.get(JobState.STARTING.value, 0) + counts.get(JobState.RUNNING.value, 0)


def start_workers(address: str, slots: int, folder: Path) -> list[subprocess.Popen[bytes]]:
    cpus = sorted(os.sched_getaffinity(0))
    workers = []
    for n in range(slots):
        log = folder / f"worker-{n}.log"
        cpu = cpus[n % len(cpus)]
        cmd = [sys.executable, "-m", "nbjobs.cli", "worker", "--scheduler-address", address]
        cmd += ["--name", f"w{n}", "--cpus", f"{cpu}-{cpu}"]
        with log.open("wb") as out:
            workers.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 60
        while "nbjobs worker" not in log.read_text():
            if time.monotonic() > deadline or workers[-1].poll() is not None:
                raise RuntimeError("worker did not start: " + log.read_text())
            time.sleep(0.1)
    return workers


def report(local: Timing, dask: Timing, slots: int) -> None:
    extra_ms = (dask.mean_slot - local.mean_slot) * 1000
    print(f"\n{local.jobs} trivial notebook jobs, {slots} job slots; {machine()}")
    print(f"{'backend':<8} {'makespan s':>11} {'per job s':>10} {'mean slot s':>12} {'to running s':>13} {'failed':>7}")
    for t in (local, dask):
        to_running = statistics.fmean(t.to_running)
        print(
            f"{t.backend:<8} {t.makespan:>11.1f} {t.makespan / t.jobs:>10.3f} {t.mean_slot:>12.3f} "
            f"{to_running:>13.3f} {t.failed:>7}"
        )
    slot_ratio, makespan_ratio = dask.mean_slot / local.mean_slot, dask.makespan / local.makespan
    print(f"dask/local: slot time x{slot_ratio:.3f}, makespan x{makespan_ratio:.3f}")
    verdict = "within" if extra_ms <= TARGET_MS else "OVER"
    print(f"dask adds {extra_ms:+.0f} ms per job (target <= {TARGET_MS:.0f} ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2, help="jobs at once, on both backends")
    parser.add_argument("--rounds", type=int, default=4, help="alternate the backends, so drifting load hits both")
    args = parser.parse_args()
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory(prefix="nbjobs-bench-dask-") as tmp:
        folder = Path(tmp)
        notebook = write_notebook(folder / "trivial.ipynb")
        # The local backend gets exactly `slots` CPUs: every job counts as one CPU.
        reserve = max(len(os.sched_getaffinity(0)) - args.slots, 0)
        (folder / "config.toml").write_text(f"[resources]\nreserve_cpus = {reserve}\n")
        # The cluster runs (idle) during the local rounds too: both backends see the same background.
        cluster = LocalCluster(n_workers=0, processes=True, host="127.0.0.1", scheduler_port=0, dashboard_address=None)
        workers = start_workers(cluster.scheduler_address, args.slots, folder)
        timings: dict[str, list[Timing]] = {"local": [], "dask": []}
        try:
            for round_ in range(args.rounds):
                order = ["local", "dask"] if round_ % 2 == 0 else ["dask", "local"]
                for kind in order:
                    address = cluster.scheduler_address if kind == "dask" else None
                    jobs = args.jobs // args.rounds
                    timing = asyncio.run(run_batch(kind, folder, notebook, jobs, address))
                    timings[kind].append(timing)
                    print(f"round {round_ + 1} {kind:<5}: mean slot {timing.mean_slot:.3f} s", flush=True)
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)
            cluster.close()
    report(combine(timings["local"]), combine(timings["dask"]), args.slots)


def combine(rounds: list[Timing]) -> Timing:
    return Timing(
        rounds[0].backend,
        sum(t.jobs for t in rounds),
        sum(t.makespan for t in rounds),
        [x for t in rounds for x in t.slot_times],
        [x for t in rounds for x in t.to_running],
        sum(t.failed for t in rounds),
    )


if __name__ == "__main__":
    main()
