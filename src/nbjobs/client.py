"""A small HTTP client for the server, used by the CLI.

The server is found at `NBJOBS_URL`, else where a running server announced itself
($NBJOBS_HOME/server.json), else http://127.0.0.1:8765; the token comes from
`NBJOBS_TOKEN`, else $NBJOBS_HOME/token.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from nbjobs.config import Settings
from nbjobs.errors import Conflict, InvalidInput, NotFound

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
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = {404: NotFound, 409: Conflict}.get(response.status_code, InvalidInput)
            if response.status_code == 401:
                detail = f"The server at {self.url} refused the token ({detail}); set NBJOBS_TOKEN to a valid one."
            raise error(str(detail))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

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
