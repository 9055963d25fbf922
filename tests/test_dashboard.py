"""Dashboard pages over HTTP with 100,000 jobs in the store: keyset pages and filters stay fast."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from nbjobs.store import Store
from nbjobs.store import models as m
from people_support import Api

JOBS = 100_000
STATES = ["succeeded"] * 90 + ["failed"] * 7 + ["cancelled"] * 3


def fill_store(home, count: int = JOBS) -> None:  # type: ignore[no-untyped-def]
    """Rows written straight into the store, as a long-lived server would have them."""
    store = Store(f"sqlite:///{home / 'nbjobs.db'}")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    jobs, tags = [], []
    for i in range(1, count + 1):
        created = start + timedelta(seconds=i)
        owner = ("alice", "bob", "root")[i % 3]
        jobs.append(
            {
                "id": i, "name": f"report-{i % 500}", "notebook": "/nb/report.ipynb", "owner": owner, "host": "h",
                "state": STATES[i % len(STATES)], "spec": {"notebook": "/nb/report.ipynb", "parameters": {"i": i}},
                "priority": 0, "attempt": 0, "results": {}, "created": created, "ended": created,
            }
        )  # fmt: skip
        if i % 50 == 0:
            tags.append({"job_id": i, "tag": "nightly"})
    with store.session() as s, s.begin():
        s.execute(insert(m.Job), jobs)
        s.execute(insert(m.JobTag), tags)
    store.close()


def timed(api: Api, path: str, **params):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    answer = api.get(path, params=params)
    elapsed = time.perf_counter() - began
    assert answer.status_code == 200, (path, params, answer.text[:300])
    return answer, elapsed


def ids_on(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-job-id="(\d+)"', page)]


def test_job_list_pages_stay_fast_with_100k_jobs(home, start_server):
    home.mkdir(parents=True)
    fill_store(home)
    server = start_server()
    admin = Api.admin(server)
    timed(admin, "/ui")  # warm up: templates compiled, connections opened

    first, elapsed = timed(admin, "/ui")
    assert ids_on(first.text) == list(range(JOBS, JOBS - 50, -1)) and elapsed < 1.5
    assert "Older »" in first.text and "succeeded 90000" in first.text
    older = re.search(r'href="(/ui\?before=\d+)" rel="next"', first.text).group(1)
    second = admin.get(older).text
    assert ids_on(second)[0] == JOBS - 50  # keyset: the next page starts right below the last id shown

    slowest = 0.0
    for params in (
        {"before": 60},
        {"before": 50_000},
        {"state": "cancelled"},
        {"state": "failed", "before": 1000},
        {"owner": "bob"},
        {"tag": "nightly"},
        {"tag": "nightly", "before": 500},
        {"name": "report-499"},
        {"name": "no-such-name"},
        {"owner": "alice", "state": "failed", "tag": "nightly"},
    ):
        page, elapsed = timed(admin, "/ui", **params)
        slowest = max(slowest, elapsed)
        shown = ids_on(page.text)
        assert shown == sorted(shown, reverse=True) and len(shown) <= 50
        if "before" in params:
            assert all(i < params["before"] for i in shown)
        if params.get("state") == "cancelled":
            assert len(shown) == 50
    assert slowest < 1.5, slowest

    api_page, elapsed = timed(admin, "/api/jobs", before=70_000, limit=100)
    assert [j["id"] for j in api_page.json()] == list(range(69_999, 69_899, -1)) and elapsed < 1.5
    bob = admin.add_user("bob-viewer")
    assert ids_on(bob.get("/ui").text) == []  # a user sees only their own jobs
    alice_page = admin.get("/ui", params={"owner": "alice"}).text
    assert {i % 3 for i in ids_on(alice_page)} == {0}  # alice owns every third job


def test_pages_render_for_a_real_job_and_the_queue(notebook, start_server):
    server = start_server()
    admin = Api.admin(server)
    nb = notebook([("n = 3", ["parameters"]), "print('hello', n)\nimport nbjobs\nnbjobs.record('double', n * 2)"])
    job = admin.submit(nb, parameters={"n": 4}, tags=["t1"])
    assert admin.wait(job["id"])["state"] == "succeeded"
    page = admin.get(f"/ui/jobs/{job['id']}").text
    for expected in ("succeeded", "hello 4", "double", "<code>8</code>", "State history", "t1", "Requested", "iframe"):
        assert expected in page, expected
    notebook_html = admin.get(f"/ui/jobs/{job['id']}/notebook")
    assert notebook_html.status_code == 200 and "hello 4" in notebook_html.text
    assert notebook_html.headers["content-security-policy"].startswith("sandbox")
    queue = admin.get("/ui/queue").text
    assert "Capacity" in queue and "Nothing runs." in queue
    assert "Pipeline runs" in admin.get("/ui/pipelines").text


def test_demo_starts_the_server_with_example_jobs_and_prints_how_to_log_in(home):
    """What `make run` uses: the dashboard's URL and a working token on standard output."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NBJOBS_HOME": str(home)}
    cmd = [sys.executable, "-m", "nbjobs.cli", "demo", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any(line.startswith("Log in with this token:") for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = next(line for line in lines if line.startswith("Dashboard:")).split()[1]
        token = lines[-1].split(":", 1)[1].strip()
        api = Api(url.removesuffix("/ui"), token)
        assert api.get("/ui").status_code == 200
        names = sorted(j["name"] for j in api.get("/api/jobs").json())
        pipeline = ["daily-report/extract", "daily-report/report", "daily-report/train"]
        assert names == [*pipeline, "demo-1", "demo-2", "demo-3"]  # the example pipeline's tasks too
        assert any(line.startswith("Started pipeline run") for line in lines)
    finally:
        proc.terminate()
        proc.wait(30)
