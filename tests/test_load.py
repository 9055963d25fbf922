"""Load: 50 concurrent clients submit 2,000 real notebook jobs to one server.

What it proves: every submission is answered without error and gets its own id;
no job is lost (the store holds exactly the 2,000, each ends in a final state);
the event stream keeps up (a listener connected throughout sees the `queued`
event and the end of every one of the 2,000 jobs, in id order, within seconds)
and the stored events replay exactly what was streamed live.

To finish on a 2-core CI machine, each client cancels its job right after
submitting it, except one in 50, which runs to the end on a real kernel (40
real notebook runs for 2,000 jobs): the full API path (auth, validation,
store, dispatcher, cancel, events) is taken 2,000 times, but kernels start
only 40 times. NBJOBS_LOAD_JOBS sets another count.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from people_support import Api, is_final, sse_events, wait_for

CLIENTS = 50
JOBS = int(os.environ.get("NBJOBS_LOAD_JOBS", "2000"))
RUN_EVERY = 50  # one job in 50 runs on a real kernel; the others are cancelled by their client at once


class Listener(threading.Thread):
    """Follows /api/events from the start and keeps every event with the time it arrived."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with (
            httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(10, read=60)) as client,
            client.stream("GET", "/api/events?after=0") as response,
        ):
            self.connected.set()
            try:
                for event in sse_events(response.iter_lines()):
                    event["received"] = time.time()
                    self.events.append(event)
                    if self.stop.is_set():
                        return
            except httpx.HTTPError:  # the server stopped at the end of the test
                return


@pytest.mark.timeout(900)  # about 90 s on a 2-core machine, more when it is shared
def test_fifty_clients_two_thousand_jobs_nothing_lost_and_the_stream_keeps_up(notebook, start_server):
    server = start_server()
    admin = Api.admin(server)
    tokens = [admin.add_user(f"load{i}").token for i in range(5)]  # ten clients per user
    nb = notebook(["x = 1"])
    listener = Listener(server.url, admin.token)
    listener.start()
    assert listener.connected.wait(30)

    def client_work(number: int) -> list[int]:
        """Submit this client's share; cancel each at once except every RUN_EVERY-th, which runs for real."""
        token = tokens[number % len(tokens)]
        ids = []
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
            for i in range(number, JOBS, CLIENTS):
                answer = http.post("/api/jobs", json={"notebook": str(nb), "name": f"load-{i}", "tags": ["load"]})
                assert answer.status_code == 201, answer.text
                job_id = answer.json()["id"]
                ids.append(job_id)
                if i % RUN_EVERY:
                    cancelled = http.post(f"/api/jobs/{job_id}/cancel")
                    assert cancelled.status_code == 200, cancelled.text
        return ids

    began = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        submitted = [job_id for ids in pool.map(client_work, range(CLIENTS)) for job_id in ids]
    submit_seconds = time.monotonic() - began
    assert len(submitted) == JOBS and len(set(submitted)) == JOBS

    wait_for(lambda: all(is_final(j["state"]) for j in _all_jobs(admin)), timeout=300, interval=1)
    final = {j["id"]: j for j in _all_jobs(admin)}
    assert sorted(final) == sorted(submitted)  # nothing lost, nothing extra
    by_name = {j["name"]: j["state"] for j in final.values()}
    kept = {f"load-{i}" for i in range(0, JOBS, RUN_EVERY)}
    assert {n for n, s in by_name.items() if s == "succeeded"} == kept  # real kernels ran these
    assert {n for n, s in by_name.items() if s == "cancelled"} == set(by_name) - kept

    def stream_has_every_end() -> bool:
        ended = {e["job_id"] for e in listener.events if e["kind"] == "state" and is_final(e["state"])}
        return ended >= set(submitted)

    wait_for(stream_has_every_end, timeout=60)
    listener.stop.set()
    live = list(listener.events)
    ids = [e["id"] for e in live]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    queued = {e["job_id"] for e in live if e["kind"] == "state" and e["state"] == "queued"}
    assert queued >= set(submitted)
    lags = [e["received"] - _epoch(e["at"]) for e in live if e["kind"] == "state"]  # the server's clock is ours
    assert max(lags) < 10, (max(lags), submit_seconds)

    replay = admin.events("/api/events?after=0", until=lambda e: e["id"] == ids[-1], timeout=120)
    assert [e["id"] for e in replay] == ids
    print(
        f"\n{JOBS} jobs from {CLIENTS} clients: submitted in {submit_seconds:.1f} s, {len(kept)} ran, "
        f"{len(live)} events, stream lag max {max(lags):.2f} s"
    )


def _all_jobs(api: Api) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"before": before} if before else {})
        page = api.get("/api/jobs", params=params).json()
        jobs += page
        if len(page) < 1000:
            return jobs
        before = page[-1]["id"]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
