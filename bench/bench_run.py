"""`nbjobs run` vs `papermill` on the same trivial two-cell notebook, side by side.

Each tool runs the notebook N times as a user would type it (a fresh process per
run), interleaved so both see the same machine state; prints medians and the
ratio. Usage: python bench/bench_run.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import BIN, machine, median, run, table, trivial_notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nb = trivial_notebook(work / "trivial.ipynb")
        env = {**os.environ, "NBJOBS_HOME": str(work / "home")}
        commands = {
            "papermill": [str(BIN / "papermill"), str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar"],
            "nbjobs run": [str(BIN / "nbjobs"), "run", str(nb), str(work / "nj-out.ipynb"), "--no-progress"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for cmd in commands.values():  # warm the file cache once
            run(cmd, env)
        for _ in range(args.runs):
            for name, cmd in commands.items():
                started = time.perf_counter()
                run(cmd, env)
                times[name].append(time.perf_counter() - started)
    base = median(times["papermill"])
    rows = [["tool", "median s", "min s", "max s", "vs papermill"]]
    for name, values in times.items():
        rows.append(
            [name, f"{median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}", f"{median(values) / base:.2f}x"]
        )
    print(f"Trivial 2-cell notebook, {args.runs} runs each, interleaved; {machine()}")
    print(table(rows))


if __name__ == "__main__":
    main()
