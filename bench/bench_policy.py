"""Benchmark of the queue policy: FIFO against priority + EASY backfill, in simulated time.

    python bench/bench_policy.py [--jobs 10000 100000] [--depth 200] [--seed 1]

One host (64 CPUs, 256 GiB, 8 GPUs by default) and N jobs with mixed requests
(1-16 CPUs, memory, some GPUs) and run times at most their time bound. Two
scenarios: every job submitted at t=0, and arrivals spread over time at a rate
that keeps the host slightly over-subscribed. For each, both policies run on
the same workload and the script prints makespan, utilisation against the lower
bound (total resource-time / capacity, per dimension, the max of them; or the
last arrival plus its run time, if later), decide() calls per second, and
scheduler time per job (queue updates + decide(), not the simulator), as wall
time and as CPU time (the steadier of the two on a shared machine).
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nbjobs.scheduler import Counts, Policy, QueuedJob
from nbjobs.scheduler.simulation import SimJob, SimResult, simulate

GiB = 1024**3
HOST = Counts(cpus=64, memory=256 * GiB, gpus=8)
CPU_CHOICES = (1, 1, 1, 2, 2, 2, 4, 4, 4, 6, 8, 8, 12, 16)
TIME_BOUNDS = (300.0, 900.0, 1800.0, 3600.0, 7200.0)
USERS = tuple(f"user{number}" for number in range(12))


def make_workload(count: int, seed: int, *, spread: bool) -> list[SimJob]:
    """`count` random jobs; with `spread`, arrivals over ~95% of the lower bound (else all at t=0)."""
    rng = random.Random(seed)
    jobs: list[tuple[Counts, float, float, int, str]] = []
    for _ in range(count):
        cpus = rng.choice(CPU_CHOICES)
        memory = cpus * rng.choice((1, 2, 4, 8)) * GiB // 2
        gpus = rng.choice((1, 1, 2, 4)) if rng.random() < 0.12 else 0
        bound = rng.choice(TIME_BOUNDS)
        runtime = bound * rng.uniform(0.2, 1.0)  # jobs finish before their bound, as real ones do
        priority = rng.choice((0,) * 8 + (1, 5))
        jobs.append((Counts(cpus=cpus, memory=memory, gpus=gpus), bound, runtime, priority, rng.choice(USERS)))
    horizon = 0.95 * resource_bound([(request, runtime) for request, _, runtime, _, _ in jobs]) if spread else 0.0
    arrivals = sorted(rng.uniform(0, horizon) for _ in range(count)) if spread else [0.0] * count
    return [
        SimJob(QueuedJob(number, request, bound, priority, arrivals[number], user), runtime)
        for number, (request, bound, runtime, priority, user) in enumerate(jobs)
    ]


def resource_bound(work: list[tuple[Counts, float]]) -> float:
    """Total resource-time over capacity, per dimension; the largest one."""
    return max(
        sum(request.cpus * runtime for request, runtime in work) / HOST.cpus,
        sum(request.memory * runtime for request, runtime in work) / HOST.memory,
        sum(request.gpus * runtime for request, runtime in work) / HOST.gpus,
    )


def lower_bound(workload: list[SimJob]) -> float:
    latest = max(sim.job.submitted + sim.runtime for sim in workload)
    return max(resource_bound([(sim.job.request, sim.runtime) for sim in workload]), latest)


@dataclass
class Row:
    scenario: str
    jobs: int
    policy: str
    result: SimResult
    bound: float

    @property
    def efficiency(self) -> float:
        return self.bound / self.result.makespan

    def line(self) -> str:
        result = self.result
        per_second = result.decisions / result.scheduler_seconds if result.scheduler_seconds else float("inf")
        per_job_us = result.scheduler_seconds / self.jobs * 1e6
        cpu_per_job_us = result.scheduler_cpu_seconds / self.jobs * 1e6
        return (
            f"{self.scenario:<9} {self.jobs:>7} {self.policy:<9} {result.makespan / 3600:>10.2f} "
            f"{self.efficiency:>8.1%} {result.decisions:>9} {per_second:>10.0f} {per_job_us:>11.1f} "
            f"{cpu_per_job_us:>11.1f}"
        )


HEADER = (
    f"{'scenario':<9} {'jobs':>7} {'policy':<9} {'makespan_h':>10} {'util/LB':>8} "
    f"{'decisions':>9} {'decide/s':>10} {'wall_us/job':>11} {'cpu_us/job':>11}"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10000])
    parser.add_argument("--depth", type=int, default=None, help="backfill scan depth (default: the policy's)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backfill = Policy() if args.depth is None else Policy(depth=args.depth)
    policies = {"fifo": Policy(backfill=False), "backfill": backfill}
    print(f"python {platform.python_version()}, host {HOST.cpus:g} CPUs / 256 GiB / {HOST.gpus} GPUs, ", end="")
    print(f"backfill depth {backfill.depth}, seed {args.seed}")
    print(HEADER)
    worst_us = 0.0
    worst_efficiency = 1.0
    for count in args.jobs:
        for scenario, spread in (("t=0", False), ("arrivals", True)):
            workload = make_workload(count, args.seed, spread=spread)
            bound = lower_bound(workload)
            rows = {}
            for name, policy in policies.items():
                result = simulate(policy, workload, HOST)
                assert not result.unstarted, f"{name}: {len(result.unstarted)} jobs never started"
                rows[name] = Row(scenario, count, name, result, bound)
                print(rows[name].line(), flush=True)
            fifo, easy = rows["fifo"], rows["backfill"]
            print(
                f"{'':<9} {'':>7} {'ratio':<9} {easy.result.makespan / fifo.result.makespan:>10.3f} "
                f"{easy.efficiency / fifo.efficiency:>8.3f}   (backfill / fifo)"
            )
            worst_us = max(worst_us, easy.result.scheduler_seconds / count * 1e6)
            worst_efficiency = min(worst_efficiency, easy.efficiency)
    verdict = "PASS" if worst_efficiency >= 0.9 and worst_us <= 1000 else "MISS"
    print(f"targets (backfill >= 90% of lower bound, <= 1000 us/job): {verdict}", end=" ")
    print(f"(worst {worst_efficiency:.1%}, {worst_us:.0f} us/job)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
