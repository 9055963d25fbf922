"""End to end: N trivial notebooks submitted at once to the local server vs papermill
run one after another, side by side in one run; prints total times and the ratio.

Usage: python bench/bench_server.py [--jobs 100] [--papermill-jobs 20] [--papermill-parallel 1]
(papermill's total is measured on --papermill-jobs runs and scaled to --jobs when
smaller, since its runs are independent; the output says so.) The server uses its
configured kernel provider: a zygote with ready kernels for Python.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from common import BIN, machine, run, table, trivial_notebook


def start_server(home: Path, config: str = "") -> tuple[subprocess.Popen[bytes], httpx.Client]:
    home.mkdir(parents=True, exist_ok=True)
    if config:
        (home / "config.toml").write_text(config)
    env = {**os.environ, "NBJOBS_HOME": str(home)}
    proc = subprocess.Popen([str(BIN / "nbjobs"), "server", "--port", "0"], env=env, stdout=subprocess.DEVNULL)
    while not (home / "server.json").exists():
        if proc.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    url = json.loads((home / "server.json").read_text())["url"]
    token = (home / "token").read_text().strip()
    return proc, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def run_on_server(nb: Path, jobs: int, home: Path) -> float:
    proc, client = start_server(home)
    try:
        started = time.perf_counter()
        ids = [client.post("/api/jobs", json={"notebook": str(nb)}).json()["id"] for _ in range(jobs)]
        for job_id in ids:
            while client.get(f"/api/jobs/{job_id}/wait", params={"timeout": 60}).json()["state"] != "succeeded":
                pass
        return time.perf_counter() - started
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def run_papermill(nb: Path, jobs: int, work: Path, parallel: int = 1) -> float:
    """`jobs` papermill runs, `parallel` processes at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        run([str(BIN / "papermill"), str(nb), str(work / f"pm-{i}.ipynb"), "--no-progress-bar"])

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(jobs)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--papermill-jobs", type=int, default=None)
    parser.add_argument("--papermill-parallel", type=int, default=1, help="papermill processes at a time")
    args = parser.parse_args()
    pm_jobs = args.papermill_jobs or args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nb = trivial_notebook(work / "trivial.ipynb")
        server_s = run_on_server(nb, args.jobs, work / "home")
        pm_s = run_papermill(nb, pm_jobs, work, args.papermill_parallel) * args.jobs / pm_jobs
    speedup = pm_s / server_s
    scaled = f" (measured on {pm_jobs}, scaled)" if pm_jobs != args.jobs else ""
    rows = [
        ["how", f"total s for {args.jobs} notebooks", "per notebook s", "speed-up"],
        [f"papermill, {args.papermill_parallel} at a time{scaled}", f"{pm_s:.1f}", f"{pm_s / args.jobs:.3f}", "1.00x"],
        ["nbjobs server, submitted at once", f"{server_s:.1f}", f"{server_s / args.jobs:.3f}", f"{speedup:.2f}x"],
    ]
    print(f"{args.jobs} trivial notebooks; {machine()}")
    print(table(rows))


if __name__ == "__main__":
    main()
