"""The event stream on a real server and real kernels: order, liveness, resume with Last-Event-ID, logs -f."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from people_support import Api, is_final


def test_job_stream_is_live_ordered_and_resumable(notebook, start_server):
    server = start_server()
    api = Api.admin(server)
    nb = notebook(
        [
            "print('line one', flush=True)",
            "import time\nfor i in range(3):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)",
            "import sys\nprint('to stderr', file=sys.stderr, flush=True)",
        ]
    )
    job_id = api.submit(nb)["id"]
    path = f"/api/jobs/{job_id}/events"
    seen = api.events(path, until=lambda e: e["kind"] == "state" and is_final(e["state"]))

    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    states = [e["state"] for e in seen if e["kind"] == "state"]
    assert states == ["queued", "starting", "running", "succeeded"]
    finished = [e for e in seen if e["kind"] == "cell_finished"]
    started = [e for e in seen if e["kind"] == "cell_started"]
    assert [e["index"] for e in started] == [e["index"] for e in finished] == [0, 1, 2]
    assert all(e["status"] == "completed" and e["duration"] >= 0 for e in finished) and finished[1]["duration"] >= 1.4
    stdout = "".join(e["text"] for e in seen if e["kind"] == "log" and e["name"] == "stdout")
    assert stdout == "line one\ntick 0\ntick 1\ntick 2\n"
    assert [e["text"] for e in seen if e["kind"] == "log" and e["name"] == "stderr"] == ["to stderr\n"]
    # Live: the first tick arrived while the cell still slept, not at the end.
    tick = next(e for e in seen if e["kind"] == "log" and "tick 0" in e["text"])
    assert seen[-1]["received"] - tick["received"] >= 0.8

    # A client that reconnects with Last-Event-ID gets exactly what came after it.
    middle = seen[len(seen) // 2]
    resumed = api.events(path, last_event_id=middle["id"], until=lambda e: e["id"] == seen[-1]["id"])
    assert [e["id"] for e in resumed] == ids[len(seen) // 2 + 1 :]
    replay = api.events(path, until=lambda e: e["id"] == seen[-1]["id"])
    assert [e["id"] for e in replay] == ids


def test_logs_follow_prints_lines_as_they_come_and_exits_with_the_jobs_code(cli, notebook, start_server):
    start_server()
    nb = notebook(["import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.3)"])
    job = cli("submit", nb).stdout.split()[1]
    followed = cli("logs", "-f", job)
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "step 0\nstep 1\nstep 2\n"
    assert cli("logs", job).stdout == followed.stdout  # the same text as the stored log

    failing = notebook(["print('before', flush=True)", "raise ValueError('boom')"], name="fail.ipynb")
    job = cli("submit", failing).stdout.split()[1]
    followed = cli("logs", "--follow", job)
    assert followed.exit_code == 1 and followed.stdout.startswith("before\n") and "ValueError: boom" in followed.stdout


def test_queue_stream_shows_each_user_their_own_jobs_and_log_writes_are_batched(notebook, start_server):
    server = start_server()
    admin = Api.admin(server)
    alice, bob = admin.add_user("alice"), admin.add_user("bob")
    # One stream message per line, spread over time (a burst of thousands outruns the runner's iopub drain).
    chatty = notebook(
        ["import time\nfor i in range(1000):\n    print('line', i, flush=True)\n    time.sleep(0.002)"],
        name="chatty.ipynb",
    )
    quiet = notebook(["x = 1"], name="quiet.ipynb")
    start = admin.get("/api/jobs").json()  # nothing yet
    assert start == []

    alice_job = alice.submit(chatty)["id"]
    bob_job = bob.submit(quiet)["id"]
    until_both_end = {alice_job, bob_job}

    def ended(event, wanted=until_both_end):  # type: ignore[no-untyped-def]
        if event["kind"] == "state" and is_final(event["state"]):
            wanted.discard(event["job_id"])
        return not wanted

    everything = admin.events("/api/events?after=0", until=ended)
    assert {e["job_id"] for e in everything} == {alice_job, bob_job}
    bob_sees = bob.events("/api/events?after=0", until=lambda e: e["kind"] == "state" and is_final(e["state"]))
    assert {e["job_id"] for e in bob_sees} == {bob_job}
    alice_sees = alice.events("/api/events?after=0", until=lambda e: e["kind"] == "state" and is_final(e["state"]))
    assert {e["job_id"] for e in alice_sees} == {alice_job}

    log_events = [e for e in everything if e["kind"] == "log"]
    text = "".join(e["text"] for e in log_events)
    assert text == "".join(f"line {i}\n" for i in range(1000))
    assert text == Path(admin.get(f"/api/jobs/{alice_job}").json()["log"]).read_text()
    with sqlite3.connect(server.home / "nbjobs.db") as conn:
        rows = conn.execute("select count(*) from events where kind = 'log' and job_id = ?", (alice_job,)).fetchone()
    assert rows[0] == len(log_events) and rows[0] < 200  # 1,000 lines, far fewer rows: writes are batched
