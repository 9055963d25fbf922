"""Tests for nbjobs.scheduler: the queue, priority order, EASY backfill, limits, reasons, starvation."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbjobs.config import SchedulerConfig
from nbjobs.scheduler import (
    Counts,
    Decision,
    JobQueue,
    Limits,
    Policy,
    QueuedJob,
    RunningJob,
    WaitKind,
)
from nbjobs.scheduler.reasons import format_in
from nbjobs.scheduler.simulation import SimJob, simulate
from nbjobs.spec import Resources

GiB = 1024**3
HOST = Counts(cpus=8, memory=32 * GiB, gpus=2, custom={"licenses": 2})


def job(
    id: int,
    cpus: float = 1,
    *,
    memory: int = 0,
    gpus: int = 0,
    custom: dict[str, int] | None = None,
    bound: float = 100.0,
    priority: int = 0,
    submitted: float = 0.0,
    user: str | None = None,
    pool: str | None = None,
) -> QueuedJob:
    request = Counts(cpus=cpus, memory=memory, gpus=gpus, custom=custom or {})
    return QueuedJob(id, request, bound, priority, submitted, user, pool)


def running(
    id: int, cpus: float = 1, *, end: float = 100.0, gpus: int = 0, user: str | None = None, pool: str | None = None
) -> RunningJob:
    return RunningJob(id, Counts(cpus=cpus, gpus=gpus), end, user, pool)


def decide(
    jobs: Iterable[QueuedJob],
    busy: Iterable[RunningJob] = (),
    *,
    policy: Policy | None = None,
    capacity: Counts = HOST,
    now: float = 0.0,
) -> tuple[Decision, JobQueue]:
    queue = JobQueue(jobs)
    return (policy or Policy()).decide(now, queue, list(busy), capacity), queue


def ids(decision: Decision) -> list[int]:
    return [job.id for job in decision.start]


def reason(decision: Decision, queue: JobQueue, job_id: int) -> str:
    queued = queue.get(job_id)
    assert queued is not None, f"job {job_id} is not waiting"
    return decision.reason_for(queued).message


# ------------------------------------------------------------------ the queue


def test_queue_orders_by_priority_then_submit_time_then_id() -> None:
    queue = JobQueue([job(5, submitted=2), job(3, submitted=2), job(9, priority=5, submitted=9), job(1, submitted=4)])
    queue.add(job(7, priority=-1))
    assert [j.id for j in queue] == [9, 3, 5, 1, 7]
    queue.remove(3)
    queue.add(job(3, submitted=2))  # back in its place, by its own order key
    assert [j.id for j in queue] == [9, 3, 5, 1, 7]
    with pytest.raises(ValueError, match="already queued"):
        queue.add(job(9))
    assert len(queue) == 5 and 9 in queue and 4 not in queue


def test_priority_decides_who_starts_when_only_one_fits() -> None:
    jobs = [job(1, cpus=8, submitted=0), job(2, cpus=8, submitted=5, priority=3), job(3, cpus=8, submitted=1)]
    decision, _ = decide(jobs)
    assert ids(decision) == [2]


def test_aging_lets_a_long_wait_outrank_a_higher_priority() -> None:
    old = job(1, priority=0, submitted=0)
    new = job(2, priority=1, submitted=50)
    assert [j.id for j in JobQueue([old, new])] == [2, 1]
    assert [j.id for j in JobQueue([old, new], aging=10)] == [1, 2]  # 50 s of waiting is worth 5 points
    assert [j.id for j in JobQueue([old, new], aging=100)] == [2, 1]


def test_queue_tracks_the_smallest_request() -> None:
    queue = JobQueue([job(1, cpus=4, memory=GiB), job(2, cpus=2, gpus=1, memory=8 * GiB)])
    assert queue.smallest_request() == Counts(cpus=2, memory=GiB)
    queue.remove(2)
    assert queue.smallest_request() == Counts(cpus=4, memory=GiB)
    queue.add(job(3, cpus=0.5))
    assert queue.smallest_request() == Counts(cpus=0.5)


# --------------------------------------------------------- FIFO and backfill


def crafted() -> tuple[list[QueuedJob], list[RunningJob]]:
    """8 CPUs, 4 busy until t=100. Job 2 needs all 8; job 3 is short; job 4 is long."""
    return [job(2, cpus=8, bound=500), job(3, cpus=2, bound=50), job(4, cpus=2, bound=500)], [running(1, 4, end=100)]


def test_fifo_keeps_strict_order() -> None:
    decision, queue = decide(*crafted()[:1], crafted()[1], policy=Policy(backfill=False))
    assert ids(decision) == []
    assert decision.reservation is None
    assert reason(decision, queue, 2) == "needs 8 CPUs, 4 free"
    assert reason(decision, queue, 3) == "behind job 2 in queue order"


def test_backfill_starts_a_job_that_ends_before_the_reservation() -> None:
    decision, queue = decide(*crafted())
    assert ids(decision) == [3]
    assert 3 not in queue  # decide() took it out of the queue
    assert decision.reservation is not None and decision.reservation.job_id == 2
    assert decision.reservation.start == decision.reservation.promised == 100
    assert reason(decision, queue, 2) == "needs 8 CPUs, 2 free; reserved to start by +100 s"
    assert reason(decision, queue, 4) == "reserved: job 2 starts first at +100 s"
    assert decision.reason_for(queue.get(4)).kind is WaitKind.RESERVATION  # type: ignore[arg-type]


def test_backfill_starts_a_long_job_on_what_is_left_at_the_reserved_start() -> None:
    # Job 2 needs 6 of 8 CPUs at t=100: 2 are left over then, enough for long job 4 now.
    jobs = [job(2, cpus=6, bound=500), job(4, cpus=2, bound=5000), job(5, cpus=1, bound=5000)]
    decision, queue = decide(jobs, [running(1, 4, end=100)])
    assert ids(decision) == [4]
    assert reason(decision, queue, 5) == "reserved: job 2 starts first at +100 s"


def test_what_is_left_at_the_reserved_start_is_counted_exactly() -> None:
    # Jobs 1 and 2 both end at t=100: job 3 starts then, and 2 CPUs are left over with it.
    # Short job 4 ends before t=100, so it takes none of them; long job 5 takes them.
    busy = [running(1, 2, end=100), running(2, 2, end=100)]
    jobs = [job(3, cpus=6), job(4, cpus=2, bound=50), job(5, cpus=2, bound=500), job(6, cpus=1, bound=500)]
    decision, queue = decide(jobs, busy)
    assert ids(decision) == [4, 5]
    assert reason(decision, queue, 6) == "needs 1 CPU, 0 free"


def test_reservation_counts_every_dimension() -> None:
    # CPUs free up at t=50 but GPUs only at t=200: the reservation is at 200.
    busy = [running(1, 4, end=50), running(2, 1, gpus=2, end=200)]
    decision, queue = decide([job(3, cpus=6, gpus=2), job(4, cpus=1, gpus=1)], busy)
    assert decision.reservation is not None and decision.reservation.start == 200
    assert reason(decision, queue, 3) == "needs 6 CPUs, 3 free; needs 2 GPUs, 0 free; reserved to start by +200 s"
    assert reason(decision, queue, 4) == "needs 1 GPU, 0 free"


def test_reservation_holds_against_later_higher_priority_arrivals() -> None:
    jobs, busy = crafted()
    queue = JobQueue(jobs)
    policy = Policy()
    policy.decide(0, queue, busy, HOST)  # reserves t=100 for job 2, starts job 3 (ends by t=50)
    queue.add(job(10, cpus=2, bound=1000, priority=100, submitted=5))  # fits now, would delay job 2
    queue.add(job(11, cpus=1, bound=20, priority=100, submitted=5))  # ends long before t=100
    job3 = RunningJob.started(job(3, cpus=2, bound=50), 0)
    decision = policy.decide(5, queue, [*busy, job3], HOST)
    assert ids(decision) == [11]
    assert reason(decision, queue, 10) == "reserved: job 2 starts first at +95 s"
    # Job 1 ended early: the projection moves to job 3's end; the promise stays as made.
    decision = policy.decide(30, queue, [job3], HOST)
    assert decision.reservation is not None
    assert (decision.reservation.start, decision.reservation.promised) == (50, 100)
    assert reason(decision, queue, 10) == "reserved: job 2 starts first at +20 s"
    decision = policy.decide(50, queue, [], HOST)
    assert ids(decision) == [2]
    assert decision.reservation is not None and decision.reservation.job_id == 10  # the next in line


def test_projection_moves_earlier_when_jobs_end_early() -> None:
    queue = JobQueue([job(2, cpus=8)])
    policy = Policy()
    policy.decide(0, queue, [running(1, 4, end=100), running(5, 2, end=300)], HOST)
    assert queue.reservation is not None and queue.reservation.start == 300
    decision = policy.decide(10, queue, [running(5, 2, end=300)], HOST)  # job 1 ended at 10
    assert decision.reservation is not None
    assert (decision.reservation.start, decision.reservation.promised) == (300, 300)
    cancelled = queue.remove(2)
    assert cancelled.id == 2 and queue.reservation is None


def test_fifo_never_reserves() -> None:
    decision, _ = decide([job(2, cpus=8)], [running(1, 4)], policy=Policy(backfill=False))
    assert decision.reservation is None


# ------------------------------------------------------------------- limits


def test_user_at_limit_does_not_block_others() -> None:
    limits = Limits(per_user_running=2)
    busy = [running(1, user="alice"), running(2, user="alice")]
    decision, queue = decide([job(3, user="alice"), job(4, user="bob")], busy, policy=Policy(limits))
    assert ids(decision) == [4]
    assert reason(decision, queue, 3) == "user alice at the per-user limit 2"
    assert decision.reason_for(queue.get(3)).kind is WaitKind.USER_LIMIT  # type: ignore[arg-type]


def test_limit_reached_within_one_pass() -> None:
    policy = Policy(Limits(per_user_running=2, pools={"gpu-shared": 1}))
    jobs = [job(1, user="alice"), job(2, user="alice"), job(3, user="alice"), job(4, pool="gpu-shared")]
    decision, queue = decide([*jobs, job(5, pool="gpu-shared"), job(6)], policy=policy)
    assert ids(decision) == [1, 2, 4, 6]
    assert reason(decision, queue, 3) == "user alice at the per-user limit 2"
    assert reason(decision, queue, 5) == "pool gpu-shared at its limit 1"


def test_a_limited_users_backlog_is_skipped_in_one_step() -> None:
    policy = Policy(Limits(per_user_running=1), depth=5)
    backlog = [job(n, user="alice", submitted=n) for n in range(1, 5001)]
    queue = JobQueue([*backlog, job(9999, user="bob", submitted=9999)])
    scan = queue.scan()
    looked_at = [next(iter(scan)).id]
    scan.skip_group()
    looked_at.extend(j.id for j in scan)
    assert looked_at == [1, 9999]  # alice's other 4,999 jobs are never visited
    decision = policy.decide(0, queue, [running(0, user="alice")], HOST)
    assert ids(decision) == [9999]
    assert reason(decision, queue, 4000) == "user alice at the per-user limit 1"


def test_limited_job_does_not_take_the_reservation() -> None:
    policy = Policy(Limits(pools={"gpu-shared": 4}))
    busy = [running(n, 1, end=100, pool="gpu-shared") for n in range(1, 5)]
    decision, queue = decide([job(5, cpus=8, pool="gpu-shared"), job(6, cpus=8), job(7, bound=10)], busy, policy=policy)
    assert decision.reservation is not None and decision.reservation.job_id == 6
    assert ids(decision) == [7]
    assert reason(decision, queue, 5) == "pool gpu-shared at its limit 4"


def test_backfill_leaves_the_reserved_job_a_slot_under_its_user_limit() -> None:
    # Alice runs 1 of her 2 slots until t=1000. Her big job is reserved for t=100;
    # her long small job would take her last slot past t=100, so it waits; Bob's does not.
    policy = Policy(Limits(per_user_running=2))
    busy = [running(1, 1, end=1000, user="alice"), running(2, 6, end=100, user="bob")]
    jobs = [job(3, cpus=6, user="alice"), job(4, bound=500, user="alice"), job(5, bound=500, user="bob")]
    decision, queue = decide(jobs, busy, policy=policy)
    assert decision.reservation is not None and decision.reservation.job_id == 3
    assert ids(decision) == [5]
    assert reason(decision, queue, 4) == "reserved: job 3 starts first at +100 s"


def test_reserved_job_held_back_by_its_user_limit_keeps_its_reservation() -> None:
    # Alice's short job may start (it ends by t=100) and fills her 2 slots; when Bob's job ends
    # early, her big job still waits for that slot: the projection is t=50, not now.
    policy = Policy(Limits(per_user_running=2))
    queue = JobQueue([job(3, cpus=6, user="alice"), job(4, bound=50, user="alice")])
    alice_long, bob = running(1, 1, end=1000, user="alice"), running(2, 6, end=100, user="bob")
    decision = policy.decide(0, queue, [alice_long, bob], HOST)
    assert ids(decision) == [4]
    decision = policy.decide(20, queue, [alice_long, RunningJob.started(job(4, bound=50, user="alice"), 0)], HOST)
    assert ids(decision) == []
    assert decision.reservation is not None and decision.reservation.start == 50
    assert reason(decision, queue, 3) == "user alice at the per-user limit 2; reserved to start by +30 s"


def test_limits_from_config() -> None:
    config = SchedulerConfig(pools={"gpu": {"limit": 2}}, per_user_running=3)  # type: ignore[dict-item]
    assert Limits.from_config(config) == Limits(pools={"gpu": 2}, per_user_running=3)


# ------------------------------------------------ resources and their reasons


def test_multi_dimensional_requests_and_their_reasons() -> None:
    busy = [RunningJob(1, Counts(cpus=2, memory=30 * GiB + GiB // 2, gpus=1, custom={"licenses": 1}), 100)]
    jobs = [
        job(2, memory=4 * GiB, bound=500),
        job(3, gpus=2, bound=500),
        job(4, custom={"licenses": 2}, bound=500),
        job(5, cpus=0.5, memory=GiB, gpus=1, custom={"licenses": 1}, bound=500),
    ]
    decision, queue = decide(jobs, busy)
    assert ids(decision) == [5]  # it fits now in every dimension, and in what is left at t=100
    # Reasons tell the state the pass left: job 5 took some memory, a GPU and a license.
    assert reason(decision, queue, 2) == "needs 4 GiB memory, 512 MiB free; reserved to start by +100 s"
    assert reason(decision, queue, 3) == "needs 2 GPUs, 0 free"
    assert reason(decision, queue, 4) == "needs 2 licenses, 0 free"


def test_a_job_bigger_than_the_host_blocks_no_one() -> None:
    decision, queue = decide([job(1, gpus=16), job(2, cpus=0.5, custom={"tokens": 1}), job(3, cpus=2)])
    assert ids(decision) == [3]
    assert decision.reservation is None
    assert reason(decision, queue, 1) == "cannot fit this host: needs 16 GPUs, 2 in all"
    assert reason(decision, queue, 2) == "cannot fit this host: needs 1 tokens, 0 in all"
    assert decision.reason_for(queue.get(1)).kind is WaitKind.NEVER_FITS  # type: ignore[arg-type]


def test_counts_from_a_job_spec() -> None:
    assert Counts.from_resources(Resources()) == Counts(cpus=1)
    spec = Resources(cpus=2.5, memory="2GiB", gpus=1, custom={"licenses": 1})
    assert Counts.from_resources(spec) == Counts(cpus=2.5, memory=2 * GiB, gpus=1, custom={"licenses": 1})
    assert Counts(custom={"a": 0}) == Counts() and hash(Counts(custom={"a": 0})) == hash(Counts())
    with pytest.raises(ValueError):
        Counts(cpus=-1)


def test_wait_times_read_well() -> None:
    assert [format_in(s) for s in (0, 119.2, 1500, 9000)] == ["+0 s", "+120 s", "+25 min", "+2.5 h"]


def test_jobs_past_the_scan_depth_still_get_a_reason() -> None:
    jobs = [job(1, cpus=8), *(job(n, cpus=4, bound=1000) for n in range(2, 12)), job(12, bound=5)]
    decision, queue = decide(jobs, [running(100, 6)], policy=Policy(depth=3))
    assert ids(decision) == []  # job 12 would backfill, but the pass stopped before it
    assert len(decision.reasons) == 3
    assert reason(decision, queue, 11) == "needs 4 CPUs, 2 free"
    assert reason(decision, queue, 12) == "behind job 1 in queue order"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(1, 8), st.integers(0, 2), st.sampled_from([10.0, 50.0, 200.0]), st.integers(0, 2)),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 30),
    st.booleans(),
)
def test_every_waiting_job_has_a_reason(specs: list[tuple[int, int, float, int]], depth: int, backfill: bool) -> None:
    users = ("alice", "bob", None)
    jobs = [
        job(n, cpus, gpus=gpus, bound=bound, user=users[u], priority=u)
        for n, (cpus, gpus, bound, u) in enumerate(specs)
    ]
    busy = [running(1000, 3, end=60, user="alice"), running(1001, 1, gpus=1, end=300)]
    policy = Policy(Limits(per_user_running=2), backfill=backfill, depth=depth)
    decision, queue = decide(jobs, busy, policy=policy)
    for waiting in queue:
        why = decision.reason_for(waiting)
        assert why.kind in WaitKind and why.message


# ------------------------------------------ simulated runs: promises and limits


def check_invariants(limits: Limits, capacity: Counts = HOST):
    """An observer for simulate(): capacity and limits are never exceeded."""

    def observe(now: float, decision: Decision, queue: JobQueue, busy: dict[int, RunningJob]) -> None:
        jobs = list(busy.values())
        assert sum(j.request.cpus for j in jobs) <= capacity.cpus + 1e-9
        assert sum(j.request.memory for j in jobs) <= capacity.memory
        assert sum(j.request.gpus for j in jobs) <= capacity.gpus
        assert sum(j.request.custom.get("licenses", 0) for j in jobs) <= capacity.custom["licenses"]
        per_user = Counter(j.user for j in jobs if j.user is not None)
        per_pool = Counter(j.pool for j in jobs if j.pool is not None)
        assert all(count <= (limits.per_user_running or 10**9) for count in per_user.values())
        assert all(count <= limits.pools.get(pool, 10**9) for pool, count in per_pool.items())

    return observe


sim_jobs = st.lists(
    st.tuples(
        st.sampled_from([0.5, 1, 2, 3, 4, 6, 8]),  # cpus
        st.sampled_from([0, GiB, 8 * GiB, 30 * GiB]),  # memory
        st.integers(0, 2),  # gpus
        st.integers(0, 2),  # licenses
        st.integers(1, 40).map(lambda n: n * 5.0),  # time bound
        st.floats(0.05, 1.0),  # share of the bound it really runs
        st.integers(-1, 2),  # priority
        st.integers(0, 40).map(lambda n: n * 7.0),  # arrival
        st.sampled_from(["alice", "bob", "carol"]),
        st.sampled_from([None, None, "gpu-shared"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim_jobs, st.booleans(), st.booleans(), st.sampled_from([None, 20.0]))
def test_backfill_never_delays_the_reserved_job(
    specs: list[tuple], exact: bool, limited: bool, aging: float | None
) -> None:
    workload = []
    for n, (cpus, memory, gpus, licenses, bound, share, priority, arrival, user, pool) in enumerate(specs):
        request = Counts(cpus=cpus, memory=memory, gpus=gpus, custom={"licenses": licenses})
        runtime = bound if exact else max(bound * share, 0.1)
        workload.append(SimJob(QueuedJob(n, request, bound, priority, arrival, user, pool), runtime))
    limits = Limits(pools={"gpu-shared": 2}, per_user_running=2) if limited else Limits()
    result = simulate(Policy(limits, depth=8), workload, HOST, aging=aging, observe=check_invariants(limits))
    assert not result.unstarted
    for job_id, promised in result.promised.items():
        assert result.starts[job_id] <= promised + 1e-9, f"job {job_id} promised {promised}"


def tight_workload(seed: int) -> list[SimJob]:
    """CPUs only, two users at 2 jobs each, a pool of 2: the reserved job's user or pool slot
    is what backfill most easily takes by mistake, and this mix finds such a mistake in
    one run out of a few (random lists from hypothesis skew small and rarely get there)."""
    rng = random.Random(seed)
    workload = []
    for n in range(rng.randint(10, 40)):
        bound = rng.randint(1, 40) * 5.0
        runtime = bound if rng.random() < 0.5 else bound * rng.uniform(0.05, 1)
        request = Counts(cpus=rng.choice([1, 2, 4, 6]))
        user, pool = rng.choice(["alice", "bob"]), rng.choice([None, "etl"])
        workload.append(
            SimJob(QueuedJob(n, request, bound, rng.randint(-1, 2), rng.randint(0, 40) * 7.0, user, pool), runtime)
        )
    return workload


@pytest.mark.parametrize("seeds", [range(0, 50), range(50, 100)])
def test_backfill_never_delays_the_reserved_job_under_tight_limits(seeds: range) -> None:
    limits = Limits(pools={"etl": 2}, per_user_running=2)
    for seed in seeds:
        result = simulate(Policy(limits, depth=8), tight_workload(seed), HOST, observe=check_invariants(limits))
        assert not result.unstarted
        for job_id, promised in result.promised.items():
            assert result.starts[job_id] <= promised + 1e-9, f"seed {seed}: job {job_id} promised {promised}"


def test_a_stream_of_small_jobs_cannot_starve_a_big_one() -> None:
    # 8 CPUs kept busy by 1-CPU jobs arriving every 5 s; without the reservation
    # the 6-CPU job would never see 6 free CPUs at once.
    stream = [SimJob(job(n, 1, bound=100, submitted=5.0 * n), 100.0) for n in range(1, 800)]
    big = SimJob(job(0, 6, bound=100, submitted=50.0), 100.0)
    result = simulate(Policy(), [big, *stream], HOST)
    assert result.promised[0] <= 150
    assert result.starts[0] <= result.promised[0]
    assert not result.unstarted


def test_aging_bounds_the_wait_behind_higher_priority_jobs() -> None:
    # 4 CPUs and a stream of priority-1 jobs asking 5 CPUs' worth: their backlog only grows, so a
    # priority-0 job arriving later never reaches the head of the queue, unless waiting counts (aging).
    host = Counts(cpus=4)
    stream = [SimJob(job(n, 1, bound=100, priority=1, submitted=20.0 * n), 100.0) for n in range(1, 400)]
    low = SimJob(job(0, 4, bound=100, priority=0, submitted=1000.0), 100.0)
    strict = simulate(Policy(), [low, *stream], host)
    assert strict.starts[0] >= 400 * 20  # only once the stream is over
    aged = simulate(Policy(), [low, *stream], host, aging=10)  # 10 s of waiting = 1 priority point
    assert aged.starts[0] <= 1000 + 600
    assert aged.starts[0] <= aged.promised[0]
