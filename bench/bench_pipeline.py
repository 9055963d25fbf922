"""Pipeline scheduling overhead per task: wide and deep 1,000-task pipelines, and a small real run.

Method.
- Scheduling overhead (1,000 tasks): the real dispatcher, gate, store (SQLite
  file) and pipeline service run the pipeline on `InstantBackend`, a Backend
  that starts no kernel and concludes each attempt at once through the
  dispatcher's own `on_finished` (results recorded, so `${up.rows}` references
  are filled in at each release). The notebooks take no time, so the wall time
  from the run's creation to its end state, divided by the number of tasks, is
  the scheduler's overhead per task: dispatcher passes, dependency gate, claims,
  state transitions, result storage. The gate's own share is timed separately.
  Creating the run (checking 1,000 tasks, one transaction) is reported apart.
- Real kernels (small): the same with the real local backend (plain kernels),
  N tasks. Overhead = wall time - sum over tasks of (claimed -> ended) / concurrency,
  i.e. the time not explained by the attempts themselves (kernel start included
  in the attempts: it is the kernel provider's cost, not the scheduler's).

Usage: python bench/bench_pipeline.py [--tasks 1000] [--real 20] [--cpus 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from nbjobs.attempt import AttemptResult
from nbjobs.backends.base import Backend, Launch
from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher
from nbjobs.notebook.runner import RunOutcome
from nbjobs.pipelines.model import Pipeline
from nbjobs.pipelines.runs import PipelineService
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import HostCapacity, detect_capacity
from nbjobs.service import JobService
from nbjobs.spec import JobState
from nbjobs.store import Store


class InstantBackend(Backend):
    """Concludes every attempt at once, as succeeded with a result: no kernel, no notebook."""

    name = "instant"

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, launch: Launch) -> None:
        task = asyncio.create_task(self._finish(launch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, launch: Launch) -> None:
        assert self.dispatcher is not None
        store = self.dispatcher.store
        store.transition(launch.job_id, JobState.RUNNING, expect=(JobState.STARTING,))
        result = AttemptResult(RunOutcome(JobState.SUCCEEDED, "ok"), results={"rows": launch.job_id})
        await self.dispatcher.on_finished(launch, result, None)

    async def cancel(self, job_id: int, reason: str) -> bool:
        return False

    def running(self) -> set[int]:
        return set()


def write_notebook(folder: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell("rows = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("import nbjobs\nnbjobs.record('rows', rows + 1)")]
    path = folder / "step.ipynb"
    nbformat.write(nb, path)
    return path


def shape(kind: str, n: int, notebook: Path) -> Pipeline:
    """wide: one root, n-2 tasks below it, one task joining them all; deep: a chain of n."""
    tasks: dict[str, Any] = {"t0": {"notebook": str(notebook)}}
    if kind == "deep":
        for i in range(1, n):
            tasks[f"t{i}"] = {
                "notebook": str(notebook),
                "depends_on": [f"t{i - 1}"],
                "params": {"rows": f"${{t{i - 1}.rows}}"},
            }
    else:
        for i in range(1, n - 1):
            tasks[f"t{i}"] = {"notebook": str(notebook), "depends_on": ["t0"], "params": {"rows": "${t0.rows}"}}
        tasks[f"t{n - 1}"] = {"notebook": str(notebook), "depends_on": [f"t{i}" for i in range(1, n - 1)]}
    return Pipeline.model_validate({"name": f"{kind}-{n}", "tasks": tasks})


async def run_pipeline(kind: str, n: int, home: Path, notebook: Path, backend_kind: str, cpus: int) -> dict[str, float]:
    os.environ["NBJOBS_HOME"] = str(home)
    settings = Settings.from_env()
    store = Store(settings.db_url)
    if backend_kind == "instant":
        real = detect_capacity(settings.config)
        allocator = Allocator(HostCapacity(cpus=tuple(range(cpus)), memory=real.memory))
        backend: Backend = InstantBackend()
    else:
        from nbjobs.backends.local import LocalBackend

        allocator = Allocator(detect_capacity(settings.config))
        dispatcher_ref: list[Dispatcher] = []

        async def on_finished(*args):  # type: ignore[no-untyped-def]
            await dispatcher_ref[0].on_finished(*args)

        backend = LocalBackend(settings, store, on_finished)
    dispatcher = Dispatcher(settings, store, allocator, backend)
    if isinstance(backend, InstantBackend):
        backend.dispatcher = dispatcher
    else:
        dispatcher_ref.append(dispatcher)
    service = PipelineService(JobService(settings, store, allocator, dispatcher))
    pipeline = shape(kind, n, notebook)

    t0 = time.perf_counter()
    run = service.start(pipeline, {}, "bench")
    created = time.perf_counter() - t0
    await dispatcher.start()
    t1 = time.perf_counter()
    while service.view(run["id"])["state"] == "running" if n < 200 else _running(store, run["id"]):
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t1
    view = service.view(run["id"])
    await dispatcher.stop()
    assert view["state"] == "succeeded", (view["state"], view["reason"])
    busy = 0.0
    for task in view["tasks"]:
        record = store.get(task["job_id"])
        claimed = next(h.at for h in record.history if h.state is JobState.STARTING)
        busy += (record.ended - claimed).total_seconds()
    store.close()
    concurrency = len(allocator.capacity.cpus) if backend_kind == "instant" else min(len(allocator.capacity.cpus), n)
    overhead = wall if backend_kind == "instant" else max(0.0, wall - busy / concurrency)
    return {
        "create_s": created,
        "wall_s": wall,
        "per_task_ms": 1000 * overhead / n,
        "gate_per_task_ms": 1000 * dispatcher.gate.total_seconds / n,
    }


def _running(store: Store, run_id: int) -> bool:
    from nbjobs.store import groups

    return groups.get_run(store, run_id).state == "running"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--real", type=int, default=20, help="tasks of the real-kernel run (0: skip)")
    parser.add_argument("--cpus", type=int, default=8, help="slots of the instant backend's host")
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"machine: nproc {os.cpu_count()}, {cpu}, python {platform.python_version()}")
    notebook_dir = Path(tempfile.mkdtemp(prefix="nbjobs-bench-"))
    notebook = write_notebook(notebook_dir)
    runs = [(kind, args.tasks, "instant") for kind in ("wide", "deep")]
    if args.real:
        runs += [(kind, args.real, "real") for kind in ("wide", "deep")]
    for kind, n, backend in runs:
        home = Path(tempfile.mkdtemp(prefix=f"nbjobs-bench-{kind}-"))
        result = asyncio.run(run_pipeline(kind, n, home, notebook, backend, args.cpus))
        print(
            f"{backend:8} {kind:5} {n:5} tasks: create {result['create_s']:.2f} s, run {result['wall_s']:.2f} s, "
            f"scheduler overhead {result['per_task_ms']:.2f} ms/task (gate {result['gate_per_task_ms']:.2f} ms/task)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
