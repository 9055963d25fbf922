"""Helpers for the tests of the server for people: API calls as a user, SSE reading, waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from conftest import wait_for  # noqa: F401  (re-exported for the people tests)

ARTIFACTS = Path(__file__).with_name("artifacts")


class Api:
    """httpx against a running server with one user's token."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    @classmethod
    def admin(cls, server: Any) -> Api:
        return cls(server.url, (server.home / "token").read_text().strip())

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def add_user(self, name: str, admin: bool = False) -> Api:
        answer = self.post("/api/users", json={"name": name, "admin": admin})
        assert answer.status_code == 201, answer.text
        return Api(self.url, answer.json()["token"])

    def submit(self, notebook: Path | str, **spec: Any) -> dict[str, Any]:
        answer = self.post("/api/jobs", json={"notebook": str(notebook), **spec})
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def wait(self, job_id: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(f"/api/jobs/{job_id}/wait", params={"timeout": 20}).json()
            if record["state"] not in ("queued", "starting", "running") or time.monotonic() > deadline:
                return record  # type: ignore[no-any-return]

    def events(
        self,
        path: str,
        *,
        last_event_id: int | None = None,
        until: Callable[[dict[str, Any]], bool],
        timeout: float = 90,
    ) -> list[dict[str, Any]]:
        """Read an SSE stream until `until(event)` is true for an event (included)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(10, read=timeout)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(response.iter_lines()):
                event["received"] = time.monotonic()
                seen.append(event)
                if until(event) or time.monotonic() > deadline:
                    return seen
        return seen

    def close(self) -> None:
        self.http.close()


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse text/event-stream: checks that `id:` and the data's id agree."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                event = json.loads("\n".join(data))
                assert str(event["id"]) == fields.get("id") and event["kind"] == fields.get("event")
                yield event
            fields, data = {}, []
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()


def is_final(state: str) -> bool:
    return state not in ("queued", "starting", "running")


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every file under `root` whose bytes contain `needle` (the SQLite WAL included)."""
    raw = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]
