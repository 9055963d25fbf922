"""A small HTTP client for the server, used by the CLI.

The server is found at `NBJOBS_URL`, else where a running server announced itself
($NBJOBS_HOME/server.json), else http://127.0.0.1:8765; the token comes from
`NBJOBS_TOKEN`, else $NBJOBS_HOME/token.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

from nbjobs.config import Settings
from nbjobs.errors import Conflict, InvalidInput, NotFound
from nbjobs.spec import JobState

DEFAULT_URL = "http://127.0.0.1:8765"


class NoServer(InvalidInput):
    """No server answers where we looked."""


def server_url(settings: Settings) -> str:
    if url := os.environ.get("NBJOBS_URL"):
        return url.rstrip("/")
    announced = settings.home / "server.json"
    if announced.exists():
        try:
            return str(json.loads(announced.read_text(encoding="utf-8"))["url"])
        except (ValueError, KeyError):
            pass
    return DEFAULT_URL


class Client:
    def __init__(self, settings: Settings | None = None, timeout: float = 30.0) -> None:
        settings = settings or Settings.from_env()
        self.url = server_url(settings)
        token = os.environ.get("NBJOBS_TOKEN")
        token_file = settings.home / "token"
        if not token and token_file.exists():
            token = token_file.read_text(encoding="utf-8").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise NoServer(
                f"No nbjobs server answers at {self.url}. Start one with `nbjobs server` "
                "(in another terminal, or in the background: `nbjobs server &`), or set NBJOBS_URL."
            ) from None
        self._raise_for_status(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        error = {404: NotFound, 409: Conflict}.get(response.status_code, InvalidInput)
        if response.status_code == 401:
            detail = f"The server at {self.url} refused the token ({detail}); set NBJOBS_TOKEN to a valid one."
        raise error(str(detail))

    def events(self, path: str, *, reconnect_for: float = 30.0) -> Iterator[dict[str, Any]]:
        """Server-Sent Events from `path` as dicts (`id`, `kind`, ...); a dropped connection is resumed
        with Last-Event-ID, so no event is missed or repeated; gives up after `reconnect_for` seconds without one."""
        last: str | None = None
        down_since: float | None = None
        while True:
            headers = {"Last-Event-ID": last} if last is not None else {}
            try:
                with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)) as r:
                    if r.status_code >= 400:
                        r.read()
                        self._raise_for_status(r)
                    down_since = None
                    for event in parse_sse(r.iter_lines()):
                        last = str(event["id"])
                        yield event
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > reconnect_for:
                    raise NoServer(f"Lost the event stream from {self.url} ({exc}).") from None
                time.sleep(1.0)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/api/jobs", json=spec)

    def wait(self, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
        return self.request("GET", f"/api/jobs/{job_id}/wait", params={"timeout": timeout}, timeout=timeout + 10)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def retry(self, job_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/retry")

    def run(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self.request("POST", "/api/run", json={"spec": spec, "timeout": timeout}, timeout=timeout + 30)


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events of a text/event-stream whose data is JSON; comments (keep-alives) and retry hints are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def job_has_ended(client: Client, job_id: int, event: dict[str, Any]) -> bool:
    """Whether a streamed event ends the job: an end state that is the job's own, not an
    attempt's end followed by a retry's `queued`."""
    if event["kind"] != "state" or not JobState(event["state"]).is_final:
        return False
    return JobState(client.request("GET", f"/api/jobs/{job_id}")["state"]).is_final
