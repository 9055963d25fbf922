"""A check on a machine with real NVIDIA GPUs: pinning, queueing and measurement.

Run from the repository root: `python tools/gpu_check.py [--out FILE]`. It starts a
real `nbjobs server` in a temporary NBJOBS_HOME, submits one job per GPU plus one
more (each asking one GPU), and a job asking none, and prints what each kernel saw
(CUDA_VISIBLE_DEVICES, torch's devices), the queue reasons while they waited, and
the GPU memory the monitor measured. Then a foreground run under a memory limit
shows which enforcement the host allows. Needs torch in the kernel's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

PROBE = """import os, json, time, torch
seen = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "count": torch.cuda.device_count(),
        "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
if seen["count"]:
    x = torch.ones(256, 1024, 1024, device="cuda")  # 1 GiB on the GPU, for the monitor to see
    seen["uuid"] = str(torch.cuda.get_device_properties(0).uuid)
time.sleep(4)
print(json.dumps(seen))"""

HOG = "x = []\nfor _ in range(40):\n    x.append(bytearray(50 * 1024 * 1024))"


def notebook(path: Path, source: str) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(source)]
    nbformat.write(nb, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
    work = Path(tempfile.mkdtemp())
    home = work / "home"
    home.mkdir()
    (home / "config.toml").write_text("[resources]\nsample_interval = 0.5\n")
    env = {**os.environ, "NBJOBS_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "nbjobs.cli", "server", "--port", "0"], env=env)
    try:
        while not (home / "server.json").exists():
            time.sleep(0.1)
        url = json.loads((home / "server.json").read_text())["url"]
        http = httpx.Client(base_url=url, headers={"Authorization": "Bearer " + (home / "token").read_text().strip()})
        queue = http.get("/api/queue").json()
        gpus = len(queue["capacity"]["gpus"])
        say(f"server capacity: {queue['capacity']['text']}")
        probe = notebook(work / "probe.ipynb", PROBE)
        ids = [
            http.post("/api/jobs", json={"notebook": str(probe), "resources": {"gpus": 1}}).json()["id"]
            for _ in range(gpus + 1)
        ]
        none = http.post("/api/jobs", json={"notebook": str(probe), "resources": {"gpus": 0}}).json()["id"]
        time.sleep(2)
        for job in http.get("/api/queue").json()["waiting"]:
            say(f"waiting: job {job['id']}: {job['reason']}")
        for job_id in [*ids, none]:
            record = http.get(f"/api/jobs/{job_id}/wait", params={"timeout": 120}, timeout=130).json()
            seen = Path(record["log"]).read_text().strip().splitlines()[-1] if record["log"] else "-"
            usage = record["attempts"][-1]["usage"] if record["attempts"] else {}
            summary = usage.get("summary", {})
            say(
                f"job {job_id} {record['state']} {record['started']} -> {record['ended']}: saw {seen}; "
                f"allocation {usage.get('allocation', {}).get('gpus')}; peak GPU memory "
                f"{summary.get('peak_gpu_memory')}; peak memory {summary.get('peak_memory')}"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    for cgroup in ("auto", "/sys/fs/cgroup/nbjobs"):
        hog = notebook(work / "hog.ipynb", HOG)
        run_env = {**env, "NBJOBS_CGROUP": cgroup}
        result = subprocess.run(
            [sys.executable, "-m", "nbjobs.cli", "run", str(hog), "--memory", "300MiB", "--json", "--no-progress"],
            env=run_env,
            capture_output=True,
            text=True,
        )
        try:
            record = json.loads(result.stdout)
            usage = record["attempts"][-1]["usage"]
            say(
                f"NBJOBS_CGROUP={cgroup}: memory hog ended {record['state']} ({record['reason']}); "
                f"enforcement {usage.get('enforcement')}"
            )
        except (ValueError, KeyError, IndexError):
            say(f"NBJOBS_CGROUP={cgroup}: exit {result.returncode}: {result.stderr[-500:]}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
