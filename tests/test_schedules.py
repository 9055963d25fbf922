"""Schedules against a real SQLite store with a fake clock: firing, overlap, catch-up, one fire per time."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nbjobs.backends.local import LocalBackend
from nbjobs.config import Settings
from nbjobs.dispatch import Dispatcher
from nbjobs.errors import Conflict
from nbjobs.pipelines.model import Pipeline
from nbjobs.pipelines.schedules import ScheduleRequest, ScheduleService
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import detect_capacity
from nbjobs.scheduler.firing import CatchUp, fires_due, next_fire
from nbjobs.service import JobService
from nbjobs.spec import JobState
from nbjobs.store import Store
from nbjobs.store import models as m


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, text: str) -> datetime:
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return self.now


def make_service(home: Path, clock: FakeClock) -> ScheduleService:
    """The real services over a real store, without a running server: nothing starts a kernel."""
    settings = Settings.from_env()
    store = Store(settings.db_url)
    allocator = Allocator(detect_capacity(settings.config))

    async def on_finished(*_args):  # type: ignore[no-untyped-def]
        return None

    dispatcher = Dispatcher(settings, store, allocator, LocalBackend(settings, store, on_finished))
    return ScheduleService(JobService(settings, store, allocator, dispatcher), clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))


@pytest.fixture
def service(home: Path, clock: FakeClock) -> ScheduleService:
    svc = make_service(home, clock)
    yield svc
    svc.store.close()


@pytest.fixture
def nb(notebook) -> Path:  # type: ignore[no-untyped-def]
    return notebook([("n = 1", ["parameters"]), "print(n)"])


def add(service: ScheduleService, nb: Path, **fields) -> dict:  # type: ignore[no-untyped-def]
    request = {"name": "daily", "cron": "0 6 * * *", "timezone": "Europe/Paris", "spec": {"notebook": str(nb)}}
    return service.add(ScheduleRequest.model_validate(request | fields), "tester")


def jobs_of(service: ScheduleService) -> list[m.Job]:
    with service.store.session() as s:
        return list(s.scalars(select(m.Job).order_by(m.Job.id)))


def test_cron_in_a_time_zone_follows_daylight_saving():
    paris = "Europe/Paris"
    winter = next_fire("0 6 * * *", paris, datetime(2026, 3, 27, 12, tzinfo=UTC))
    summer = next_fire("0 6 * * *", paris, winter)  # clocks go forward in the night of the 29th
    assert winter == datetime(2026, 3, 28, 5, tzinfo=UTC) and summer == datetime(2026, 3, 29, 4, tzinfo=UTC)
    due = datetime(2026, 11, 25, 5, tzinfo=UTC)
    now = due + timedelta(days=3, minutes=5)
    assert fires_due("0 6 * * *", paris, due, now, CatchUp.NONE) == []
    assert fires_due("0 6 * * *", paris, due, now, CatchUp.LATEST) == [due + timedelta(days=3)]
    assert fires_due("0 6 * * *", paris, due, now, CatchUp.ALL) == [due + timedelta(days=d) for d in range(4)]
    assert fires_due("0 6 * * *", paris, due, due + timedelta(seconds=5), CatchUp.NONE) == [due]


def test_fires_once_per_time_with_an_idempotency_key(service, clock, nb):
    made = add(service, nb)
    assert made["next_fire_at"] == datetime(2026, 11, 21, 5, tzinfo=UTC)  # 06:00 in Paris, winter time
    assert made["then"][0] == datetime(2026, 11, 22, 5, tzinfo=UTC)
    assert service.tick(clock.at("2026-11-21T04:59:59")) == []
    fired = service.tick(clock.at("2026-11-21T05:00:02"))
    assert [(name, at) for name, at, _, _ in fired] == [("daily", datetime(2026, 11, 21, 5, tzinfo=UTC))]
    assert service.tick() == []  # same time again: nothing
    (job,) = jobs_of(service)
    assert job.idempotency_key == f"schedule:{made['id']}:2026-11-21T05:00:00+00:00" and job.state == "queued"
    listed = service.list()[0]
    assert listed["last_job_id"] == job.id and listed["next_fire_at"] == datetime(2026, 11, 22, 5, tzinfo=UTC)
    with pytest.raises(Conflict, match="exists already"):
        add(service, nb)


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_overlap_policies_while_the_previous_run_goes_on(service, clock, nb, overlap):
    add(service, nb, overlap=overlap)
    service.tick(clock.at("2026-11-21T05:00:01"))
    first = jobs_of(service)[0]  # still queued: no dispatcher runs here
    service.tick(clock.at("2026-11-22T05:00:01"))
    jobs = jobs_of(service)
    if overlap == "skip":
        assert len(jobs) == 1 and "skipped: the previous run is still going" in service.get("daily")["last_note"]
        return
    second = jobs[1]
    if overlap == "allow":
        assert second.hold is None
    else:
        assert second.hold == "dependencies"
        with service.store.session() as s:
            edges = s.execute(select(m.JobDependency.upstream_id, m.JobDependency.run_if)).all()
        assert edges == [(first.id, "all_done")]
        # The previous one ends: the queued fire is released by the dispatcher's gate.
        service.store.transition(first.id, JobState.FAILED, "boom")
        outcome = service.jobs.dispatcher.gate.pass_once()
        assert outcome.released == [second.id]


@pytest.mark.parametrize(("catch_up", "fires"), [("none", 0), ("latest", 1), ("all", 4)])
def test_catch_up_after_downtime(service, clock, nb, catch_up, fires):
    add(service, nb, catch_up=catch_up, overlap="allow")
    made = service.tick(clock.at("2026-11-24T05:30:00"))  # down since before the 21st's fire
    assert len(made) == fires
    if catch_up == "latest":
        assert made[0][1] == datetime(2026, 11, 24, 5, tzinfo=UTC)
    assert service.get("daily")["next_fire_at"] == datetime(2026, 11, 25, 5, tzinfo=UTC)


def test_two_schedulers_on_one_store_fire_once(home, clock, nb):
    services = [make_service(home, clock) for _ in range(2)]
    add(services[0], nb, cron="* * * * *", timezone="UTC", overlap="allow")
    made: list[list] = [[], []]
    for minute in range(1, 6):
        now = datetime(2026, 11, 20, 12, minute, 1, tzinfo=UTC)
        barrier = threading.Barrier(2)

        def fire(i: int, now: datetime = now, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            made[i].extend(services[i].tick(now))

        threads = [threading.Thread(target=fire, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(made[0]) + len(made[1]) == 5
    with services[0].store.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Job)) == 5
    for svc in services:
        svc.store.close()


def test_pipeline_schedule_creates_runs_and_pause_resume(service, clock, notebook):
    notebook(["import nbjobs\nnbjobs.record('rows', 2)"], name="extract.ipynb")
    b = notebook([("rows = 0", ["parameters"]), "print(rows)"], name="train.ipynb")
    pipeline = Pipeline.model_validate(
        {
            "name": "nightly",
            "tasks": {
                "extract": {"notebook": str(b.with_name("extract.ipynb"))},
                "train": {"notebook": str(b), "depends_on": ["extract"], "params": {"rows": "${extract.rows}"}},
            },
        }
    )
    request = ScheduleRequest(name="nightly", cron="30 2 * * *", pipeline=pipeline, catch_up=CatchUp.NONE)
    service.add(request, "tester")
    service.pause("nightly")
    assert service.tick(clock.at("2026-11-21T02:30:05")) == []
    service.resume("nightly")  # from now on: the 21st's time is not caught up
    assert service.get("nightly")["next_fire_at"] == datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
    (fire,) = service.tick(clock.at("2026-11-22T02:30:05"))
    run_id = fire[3]
    assert run_id is not None
    run = service.pipelines.view(run_id)
    assert run["schedule_id"] == service.get("nightly")["id"] and [t["name"] for t in run["tasks"]] == [
        "extract",
        "train",
    ]
    service.remove("nightly")
    assert service.list() == []


def test_schedule_commands_on_a_server(cli, nb, start_server):
    start_server()
    added = cli("schedule", "add", "hourly", "--notebook", nb, "-p", "n", "2", "--cron", "0 * * * *", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["kind"] == "notebook"
    bad = cli("schedule", "add", "x", "--notebook", nb, "--cron", "61 * * * *")
    assert bad.exit_code == 2 and "not a valid cron expression" in bad.stderr
    zone = cli("schedule", "add", "x", "--notebook", nb, "--cron", "0 6 * * *", "--timezone", "Mars/Olympus")
    assert zone.exit_code == 2 and "unknown time zone" in zone.stderr
    assert cli("schedule", "pause", "hourly").exit_code == 0
    listed = json.loads(cli("schedule", "ls", "--json").stdout)
    assert [s["name"] for s in listed] == ["hourly"] and listed[0]["paused"]
    assert "paused" in cli("schedule", "ls").stdout
    assert cli("schedule", "resume", "hourly").exit_code == 0
    assert cli("schedule", "rm", "hourly").exit_code == 0
    assert cli("schedule", "rm", "hourly").exit_code == 2
