"""The store on a real PostgreSQL server: migrations, transitions under concurrency, the leader lease,
and two servers sharing one store."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from nbjobs.attempt import AttemptResult
from nbjobs.lifecycle import conclude_attempt
from nbjobs.notebook.runner import RunOutcome
from nbjobs.spec import JobSpec, JobState
from nbjobs.store import Store
from nbjobs.store.leader import LeaderLease
from nbjobs.store.migrate import alembic_config
from nbjobs.store.models import Base

from conftest import ServerProcess

TABLES = {"jobs", "attempts", "cells", "job_tags", "state_events", "leader", "alembic_version"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


def _spec(tmp_path: Path, **fields: object) -> JobSpec:
    return JobSpec.model_validate({"notebook": str(tmp_path / "nb.ipynb"), **fields})


def test_the_same_migrations_build_the_same_schema_on_both(db_url: str) -> None:
    store = Store(db_url)  # upgrades to head
    try:
        assert set(inspect(store.engine).get_table_names()) >= TABLES
        with store.engine.connect() as conn:
            # The migrations and the models agree: autogenerate would find nothing to do.
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        cfg = alembic_config()
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        assert set(inspect(store.engine).get_table_names()) >= TABLES
    finally:
        store.close()


def test_claims_and_releases_from_many_threads_never_overlap(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    job = store.create_job(_spec(tmp_path), owner="t", host="h")
    claims: Counter[str] = Counter()
    errors: list[BaseException] = []

    def hammer(name: str) -> None:
        try:
            for _ in range(30):
                if store.transition(job, JobState.STARTING, expect=(JobState.QUEUED,), lease_owner=name):
                    claims[name] += 1
                    assert store.transition(job, JobState.QUEUED, expect=(JobState.STARTING,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(f"server-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = [h.state for h in store.get(job).history]
    # Every claim was seen by exactly one thread, and no two claims ever held at once.
    assert history[0] is JobState.QUEUED and history.count(JobState.STARTING) == sum(claims.values()) > 0
    assert all(a != b for a, b in itertools.pairwise(history))
    store.close()


def test_cancel_racing_a_claim_has_one_winner_per_job(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    jobs = [store.create_job(_spec(tmp_path), owner="t", host="h") for _ in range(40)]
    won: dict[str, list[int]] = {"claim": [], "cancel": []}
    start = threading.Barrier(2)

    def claim() -> None:
        start.wait()
        won["claim"] += [j for j in jobs if store.transition(j, JobState.STARTING, expect=(JobState.QUEUED,))]

    def cancel() -> None:
        start.wait()
        won["cancel"] += [
            j for j in jobs if store.transition(j, JobState.CANCELLED, "by user", expect=(JobState.QUEUED,))
        ]

    threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won["claim"] + won["cancel"]) == jobs  # each job exactly once
    for job in jobs:
        record = store.get(job)
        expected = JobState.STARTING if job in won["claim"] else JobState.CANCELLED
        assert record.state is expected and [h.state for h in record.history] == [JobState.QUEUED, expected]
    store.close()


def test_two_recoverers_concluding_one_attempt_queue_one_retry(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    spec = _spec(tmp_path, retry={"attempts": 3})
    jobs = []
    for _ in range(15):
        job = store.create_job(spec, owner="t", host="h")
        store.transition(job, JobState.STARTING, attempt=1)
        store.begin_attempt(job, 1, host="h", output="o", log="l", cells=[0])
        store.transition(job, JobState.RUNNING)
        jobs.append(job)
    lost = AttemptResult(RunOutcome(JobState.LOST, "its runner is gone"))
    errors: list[BaseException] = []

    def recover() -> None:
        try:
            for job in jobs:
                conclude_attempt(store, spec, job, 1, lost, None)
        except BaseException as exc:  # e.g. a deadlock between the writers
            errors.append(exc)

    threads = [threading.Thread(target=recover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for job in jobs:
        states = [h.state for h in store.get(job).history]
        assert states == [JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.LOST, JobState.QUEUED]
    store.close()


def test_leader_lease_one_holder_handover_on_release_and_lapse(pg_url: str) -> None:
    store = Store(pg_url)
    first = LeaderLease(store, "server-a", ttl=1.5)
    second = LeaderLease(store, "server-b", ttl=1.5)
    results = []
    barrier = threading.Barrier(2)

    def race(lease: LeaderLease) -> None:
        barrier.wait()
        results.append(lease.try_acquire())

    threads = [threading.Thread(target=race, args=(lease,)) for lease in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]  # the row did not exist: one insert wins
    leader, follower = (first, second) if first.held else (second, first)
    assert leader.try_acquire() and not follower.try_acquire()  # renewal keeps it
    assert follower.current_holder() == leader.holder

    leader.release()  # a clean shutdown: taken over at once
    assert not leader.held and follower.try_acquire() and follower.held
    assert not leader.try_acquire()

    time.sleep(1.6)  # the holder stops renewing: its lease lapses
    assert not follower.held
    assert leader.try_acquire() and not follower.try_acquire()

    dead = LeaderLease(store, "server-c", ttl=60, holder_is_gone=lambda holder: holder == leader.holder)
    assert dead.try_acquire()  # a holder known to be dead is replaced without waiting for its lease
    store.close()


def _token(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {(server.home / 'token').read_text().strip()}"}


def _submit(server: ServerProcess, notebook: Path) -> int:
    response = httpx.post(server.url + "/api/jobs", json={"notebook": str(notebook)}, headers=_token(server))
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _wait_all(store: Store, jobs: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(store.get(j).state.is_final for j in jobs):
        assert time.monotonic() < deadline, [store.get(j).state for j in jobs]
        time.sleep(0.2)


def test_two_servers_on_one_store_start_each_job_once(pg_url, notebook, tmp_path):  # type: ignore[no-untyped-def]
    config = "[backend]\nleader_lease = 3\n"
    servers = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        (home / "config.toml").write_text(config)
        servers.append(ServerProcess(home, env={"NBJOBS_DB_URL": pg_url}).start())
    store = Store(pg_url)
    try:
        views = [httpx.get(s.url + "/api/queue", headers=_token(s)).json() for s in servers]
        assert sorted(v["leader"] for v in views) == [False, True]
        leader, follower = servers if views[0]["leader"] else servers[::-1]

        quick = notebook(["x = 1"], name="quick.ipynb")
        jobs = [_submit(servers[i % 2], quick) for i in range(8)]
        _wait_all(store, jobs)
        for job in jobs:
            record = store.get(job)
            assert record.state is JobState.SUCCEEDED and len(record.attempts) == 1
            assert [h.state.value for h in record.history] == ["queued", "starting", "running", "succeeded"]

        # A job runs on the leader; cancelling it through the other server still reaches it.
        slow = notebook(["import time\ntime.sleep(60)"], name="slow.ipynb")
        job = _submit(follower, slow)
        deadline = time.monotonic() + 60
        while store.get(job).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answer = httpx.post(f"{follower.url}/api/jobs/{job}/cancel", headers=_token(follower))
        assert answer.status_code == 200
        _wait_all(store, [job], timeout=30)
        assert store.get(job).state is JobState.CANCELLED and "cancelled by user" in (store.get(job).reason or "")

        # The leader stops: the other server takes over and starts what is queued.
        leader.stop()
        deadline = time.monotonic() + 15
        while not httpx.get(follower.url + "/api/queue", headers=_token(follower)).json()["leader"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        last = _submit(follower, quick)
        _wait_all(store, [last])
        assert store.get(last).state is JobState.SUCCEEDED
    finally:
        for server in servers:
            server.stop()
        store.close()
