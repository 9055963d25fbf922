"""Kernel start-up: papermill against nbjobs' plain, pool and zygote providers, side by side.

    python bench/bench_startup.py [--jobs 50] [--throughput 200] [--record]

1. Latency from submit to first cell start, p50/p99 over --jobs jobs (one warm-up job first,
   not counted). papermill: `execute_notebook` called to its engine's first `cell_start`
   hook (papermill's own per-cell hook, patched to take the time). nbjobs: `Attempt.run()`
   called to the attempt's first CellStarted event. Jobs run one after the other; "ready"
   variants wait between jobs until the provider's spare kernel is ready (not counted).
2. Throughput: --throughput trivial notebooks. nbjobs: zygote, 2 attempts at a time in one
   process (asyncio), the zygote's start included. papermill: 2 processes, each running half
   the notebooks through papermill's Python API (import paid once per process).
3. Memory: PSS of idle, ready kernels with numpy imported: forked from a zygote that
   preloaded numpy, and plain kernels that imported it (and bare plain kernels).
4. A notebook importing numpy and pandas, end to end (Attempt.run() call to return), p50.
5. A foreground `nbjobs run` (CLI process, end to end) with `provider = plain` and `zygote`.
Needs numpy, pandas and papermill in this Python (for the bench only).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from nbjobs.attempt import Attempt, AttemptPaths
from nbjobs.events import CellStarted
from nbjobs.kernels import KernelProvider, KernelRequest, PlainProvider, resolve_kernel
from nbjobs.kernels.pool import PoolProvider
from nbjobs.kernels.zygote import ZygoteProvider
from nbjobs.prepare import PreparedJob, load_spec, prepare

from common import machine, median, percentile, table, trivial_notebook

RESULTS = Path(__file__).with_name("RESULTS.md")
TRIVIAL = ("x = 1 + 1",)
NUMPY_PANDAS = ("import numpy as np\nimport pandas as pd", "pd.DataFrame({'a': np.arange(10)}).sum()")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


class Runner:
    """Runs nbjobs attempts on one provider, in the caller's event loop."""

    def __init__(self, provider: KernelProvider, work: Path) -> None:
        self.provider, self.work, self.count = provider, work, 0

    async def run(self, prepared: PreparedJob) -> tuple[float, float]:
        """(seconds to first cell start, seconds to the end) of one attempt."""
        self.count += 1
        folder = self.work / f"job-{self.count}"
        first: list[float] = []

        def on_event(event: Any) -> None:
            if isinstance(event, CellStarted) and not first:
                first.append(time.perf_counter())

        paths = AttemptPaths(folder=folder, output=folder / "output.ipynb")
        attempt = Attempt(prepared, job_id=self.count, number=1, paths=paths, provider=self.provider, emit=on_event)
        started = time.perf_counter()
        result = await attempt.run()
        ended = time.perf_counter()
        if result.outcome.state.value != "succeeded":
            raise RuntimeError(f"bench job failed: {result.outcome}")
        return first[0] - started, ended - started


# --- 1. latency ------------------------------------------------------------------------------


async def nbjobs_latency(make: Callable[[], KernelProvider], prepared: PreparedJob, jobs: int, work: Path):
    provider = make()
    runner = Runner(provider, work)
    try:
        await provider.warm()
        samples = []
        for n in range(jobs + 1):
            first, _ = await runner.run(prepared)
            if n:  # the first job warms up caches (and a pool's key)
                samples.append(first)
            await provider.warm()
        return samples
    finally:
        await provider.close()


def papermill_latency(notebook: Path, jobs: int, work: Path) -> list[float]:
    import papermill
    from papermill.engines import NotebookExecutionManager

    first: list[float] = []
    original = NotebookExecutionManager.cell_start

    def cell_start(self: Any, cell: Any, cell_index: int | None = None, **kwargs: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return original(self, cell, cell_index, **kwargs)

    NotebookExecutionManager.cell_start = cell_start
    samples = []
    try:
        for n in range(jobs + 1):
            first.clear()
            started = time.perf_counter()
            papermill.execute_notebook(str(notebook), str(work / f"pm-{n}.ipynb"), progress_bar=False)
            if n:
                samples.append(first[0] - started)
    finally:
        NotebookExecutionManager.cell_start = original
    return samples


# --- 2. throughput ---------------------------------------------------------------------------


async def nbjobs_throughput(prepared: PreparedJob, count: int, concurrency: int, work: Path) -> float:
    started = time.perf_counter()
    provider = ZygoteProvider(resolve_kernel("python3"), ready=concurrency)
    runner = Runner(provider, work)
    remaining = list(range(count))

    async def worker() -> None:
        while remaining:
            remaining.pop()
            await runner.run(prepared)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await provider.close()
    return time.perf_counter() - started


def papermill_throughput(notebook: Path, count: int, processes: int, work: Path) -> float:
    started = time.perf_counter()
    share = [count // processes + (i < count % processes) for i in range(processes)]
    workers = [
        subprocess.Popen([sys.executable, __file__, "papermill-worker", str(notebook), str(work / f"w{i}"), str(n)])
        for i, n in enumerate(share)
    ]
    if any(w.wait() for w in workers):
        raise RuntimeError("a papermill worker failed")
    return time.perf_counter() - started


def papermill_worker(notebook: str, out: str, count: int) -> None:
    import papermill

    Path(out).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        papermill.execute_notebook(notebook, f"{out}/{n}.ipynb", progress_bar=False)


# --- 3. memory -------------------------------------------------------------------------------


async def run_code(kernel: Any, code: str) -> None:
    msg_id = kernel.client.execute(code)
    while True:
        msg = await kernel.client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id and msg["content"].get("execution_state") == "idle":
            return


def pss(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().pss


async def memory(count: int, work: Path) -> dict[str, float]:
    zygote = ZygoteProvider(resolve_kernel("python3"), preload=["numpy"], ready=count)
    await zygote.warm()
    await asyncio.sleep(1)  # let the kernels settle
    forked = statistics.mean(pss(s.pid) for s in zygote.spares)
    assert zygote.zygote is not None
    zygote_itself = pss(zygote.zygote.pid)
    await zygote.close()
    plain = PlainProvider()
    request = KernelRequest("python3", work, work / "kernel.log")
    kernels = [await plain.start(request) for _ in range(count)]
    try:
        await asyncio.sleep(1)
        bare = statistics.mean(pss(k.pid) for k in kernels)  # type: ignore[arg-type]
        for kernel in kernels:
            await run_code(kernel, "import numpy")
        await asyncio.sleep(1)
        with_numpy = statistics.mean(pss(k.pid) for k in kernels)  # type: ignore[arg-type]
    finally:
        for kernel in kernels:
            await kernel.kill()
    return {"forked": forked, "zygote": zygote_itself, "plain_numpy": with_numpy, "plain_bare": bare}


# --- 4. numpy + pandas notebook --------------------------------------------------------------


async def end_to_end(make: Callable[[], KernelProvider], prepared: PreparedJob, runs: int, work: Path) -> float:
    provider = make()
    runner = Runner(provider, work)
    try:
        await provider.warm()
        totals = []
        for _ in range(runs):
            totals.append((await runner.run(prepared))[1])
            await provider.warm()
        return median(totals)
    finally:
        await provider.close()


# --- 5. foreground CLI -----------------------------------------------------------------------


def foreground(notebook: Path, provider: str, runs: int, work: Path) -> float:
    home = work / f"home-{provider}"
    home.mkdir()
    (home / "config.toml").write_text(f'[kernels]\nprovider = "{provider}"\n')
    env = {**os.environ, "NBJOBS_HOME": str(home)}
    command = [sys.executable, "-m", "nbjobs.cli", "run", str(notebook), "--json", "--no-progress"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return median(times)


# --- the report ------------------------------------------------------------------------------


def describe_machine() -> str:
    import ipykernel

    load = os.getloadavg()[0]
    return f"{machine()} · ipykernel {ipykernel.__version__} · load average {load:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="jobs per latency variant")
    parser.add_argument("--throughput", type=int, default=200, help="notebooks in the throughput run")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nbjobs-bench-") as tmp:
        report = run_all(args, Path(tmp))
    print(report)
    if args.record:
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(text.rstrip("\n") + "\n\n" + report + "\n")


def section(title: str, rows: list[list[object]]) -> list[str]:
    return ["", f"### {title}", "", table(rows)]


def latency_section(args: argparse.Namespace, notebook: Path, prepared: PreparedJob, work: Path) -> list[str]:
    kernel = resolve_kernel("python3")
    providers: dict[str, Callable[[], KernelProvider]] = {
        "nbjobs plain": PlainProvider,
        "nbjobs pool (ready kernel)": lambda: PoolProvider(ready=1),
        "nbjobs zygote (ready kernel)": lambda: ZygoteProvider(kernel, ready=1),
        "nbjobs zygote (forked on demand)": lambda: ZygoteProvider(kernel, ready=0),
    }
    results = [("papermill", papermill_latency(notebook, args.jobs, work))]
    for n, (label, make) in enumerate(providers.items()):
        results.append((label, asyncio.run(nbjobs_latency(make, prepared, args.jobs, work / f"latency-{n}"))))
    base = median(results[0][1])
    rows: list[list[object]] = [["", "p50", "p99", "papermill p50 / p50"]]
    rows += [[label, ms(median(s)), ms(percentile(s, 99)), f"{base / median(s):,.1f}x"] for label, s in results]
    return section(f"Submit to first cell start ({args.jobs} jobs each)", rows)


def throughput_section(args: argparse.Namespace, notebook: Path, prepared: PreparedJob, work: Path) -> list[str]:
    count = args.throughput
    nbjobs_time = asyncio.run(nbjobs_throughput(prepared, count, 2, work / "throughput"))
    papermill_time = papermill_throughput(notebook, count, 2, work / "pm-throughput")
    rows: list[list[object]] = [
        ["", "wall time", "notebooks/s"],
        ["papermill, 2 processes", ms(papermill_time), f"{count / papermill_time:.1f}"],
        ["nbjobs zygote, 2 attempts in one process", ms(nbjobs_time), f"{count / nbjobs_time:.1f}"],
    ]
    ratio = f"nbjobs zygote: **{papermill_time / nbjobs_time:.1f}x** papermill's throughput."
    return [*section(f"Throughput: {count} trivial notebooks, 2 at a time", rows), "", ratio]


def memory_section(work: Path) -> list[str]:
    mem = {k: v / (1 << 20) for k, v in asyncio.run(memory(4, work)).items()}
    rows: list[list[object]] = [
        ["", "PSS"],
        ['forked from a zygote with preload = ["numpy"]', f"{mem['forked']:.1f} MiB"],
        ["the zygote itself (shared by all its kernels)", f"{mem['zygote']:.1f} MiB"],
        ["plain kernel after `import numpy`", f"{mem['plain_numpy']:.1f} MiB"],
        ["plain kernel, bare", f"{mem['plain_bare']:.1f} MiB"],
    ]
    return section("Memory: PSS per idle, ready kernel (mean of 4)", rows)


def numpy_pandas_section(work: Path, runs: int = 10) -> list[str]:
    kernel = resolve_kernel("python3")
    prepared = prepare(*load_spec(str(trivial_notebook(work / "numpy_pandas.ipynb", NUMPY_PANDAS))))
    variants: dict[str, Callable[[], KernelProvider]] = {
        "nbjobs plain": PlainProvider,
        "nbjobs zygote, no preload (ready kernel)": lambda: ZygoteProvider(kernel, ready=1),
        'nbjobs zygote, preload = ["numpy", "pandas"] (ready kernel)': lambda: ZygoteProvider(
            kernel, preload=["numpy", "pandas"], ready=1
        ),
    }
    rows: list[list[object]] = [["", "p50"]]
    for n, (label, make) in enumerate(variants.items()):
        rows.append([label, ms(asyncio.run(end_to_end(make, prepared, runs, work / f"heavy-{n}")))])
    return section(f"A notebook importing numpy and pandas, end to end (p50 of {runs})", rows)


def foreground_section(notebook: Path, work: Path, runs: int = 5) -> list[str]:
    rows: list[list[object]] = [["config `[kernels] provider`", "p50"]]
    rows += [[provider, ms(foreground(notebook, provider, runs, work))] for provider in ("plain", "zygote")]
    return section(f"Foreground `nbjobs run`: one trivial notebook, the whole CLI process (p50 of {runs})", rows)


def run_all(args: argparse.Namespace, work: Path) -> str:
    header = describe_machine()
    notebook = trivial_notebook(work / "trivial.ipynb", TRIVIAL)
    prepared = prepare(*load_spec(str(notebook)))
    command = f"python bench/bench_startup.py --jobs {args.jobs} --throughput {args.throughput}"
    lines = ["## Kernel start-up", "", f"{header}. `{command}`"]
    steps: list[tuple[str, Callable[[], list[str]]]] = [
        ("latency", lambda: latency_section(args, notebook, prepared, work)),
        ("throughput", lambda: throughput_section(args, notebook, prepared, work)),
        ("memory", lambda: memory_section(work)),
        ("numpy + pandas notebook", lambda: numpy_pandas_section(work)),
        ("foreground CLI", lambda: foreground_section(notebook, work)),
    ]
    for name, step in steps:
        print(f"{name} ...", file=sys.stderr, flush=True)
        lines += step()
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["papermill-worker"]:
        papermill_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
