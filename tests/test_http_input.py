"""Bad HTTP input: a 4xx that names the field, never a 500, and nothing stored."""

from __future__ import annotations

import sqlite3

import httpx

from people_support import Api

MIB = 1024 * 1024


def test_bad_requests_get_a_4xx_naming_the_field_and_store_nothing(notebook, start_server):
    server = start_server()
    api = Api.admin(server)
    nb = notebook(["x = 1"])
    headers = {"Content-Type": "application/json"}
    cases = [
        ("POST", "/api/jobs", {"content": b'{"notebook": "x.ipynb",', "headers": headers}, 422, "`body`"),
        ("POST", "/api/jobs", {"content": b"[1, 2]", "headers": headers}, 422, "`body`"),
        ("POST", "/api/jobs", {"json": {"notebook": 5}}, 422, "`notebook`"),
        ("POST", "/api/jobs", {"json": {"notebook": str(nb), "priority": "high"}}, 422, "`priority`"),
        ("POST", "/api/jobs", {"json": {"notebook": str(nb), "colour": "red"}}, 422, "`colour`"),
        ("POST", "/api/jobs", {"json": {"notebook": str(nb), "secrets": ["no-dash"]}}, 422, "`secrets.0`"),
        (
            "POST",
            "/api/jobs",
            {"json": {"notebook": str(nb), "webhooks": [{"url": "ftp://x"}]}},
            422,
            "`webhooks.0.url`",
        ),
        ("POST", "/api/jobs", {"json": {"notebook": str(nb) + ".missing"}}, 400, "does not exist"),
        ("POST", "/api/jobs", {"json": {"notebook": "\x00"}}, 422, "`notebook`"),
        ("POST", "/api/jobs", {"content": b"x" * (2 * MIB), "headers": headers}, 413, "larger than"),
        (
            "POST",
            "/api/jobs",
            {"content": iter([b"{" + b" " * MIB, b" " * MIB]), "headers": headers},
            413,
            "larger than",
        ),
        ("POST", "/api/run", {"json": {"spec": {"notebook": str(nb)}, "timeout": "soon"}}, 422, "`timeout`"),
        ("GET", "/api/jobs/999", {}, 404, "No job with id 999"),
        ("GET", "/api/jobs/abc", {}, 422, "`job_id`"),
        ("GET", "/api/jobs/0", {}, 422, "`job_id`"),
        ("GET", "/api/jobs/99999999999999999999999", {}, 422, "`job_id`"),
        ("POST", "/api/jobs/999/cancel", {}, 404, "No job"),
        ("GET", "/api/jobs?limit=abc", {}, 422, "`limit`"),
        ("GET", "/api/jobs?state=bogus", {}, 422, "`state.0`"),
        ("GET", "/api/jobs/999/events", {}, 404, "No job"),
        ("PUT", "/api/secrets/OK", {"json": {"value": 3}}, 422, "`value`"),
        ("PUT", "/api/secrets/OK", {"json": {"value": ""}}, 422, "`value`"),
        ("PUT", "/api/secrets/9lives", {"json": {"value": "v"}}, 400, "`name`"),
        ("DELETE", "/api/secrets/NOPE", {}, 404, "NOPE"),
        ("POST", "/api/users", {"json": {"name": "bad name!"}}, 400, "`name`"),
        ("POST", "/api/webhooks", {"json": {"url": "not a url"}}, 422, "`url`"),
        ("POST", "/api/webhooks", {"json": {"url": "http://h/x", "events": ["exploded"]}}, 422, "`events.0`"),
        ("DELETE", "/api/webhooks/5", {}, 404, "no webhook"),
        ("DELETE", "/api/tokens/nope", {}, 404, "No token"),
        ("GET", "/ui?state=bogus", {}, 400, "`state`"),
        ("GET", "/ui/jobs/abc", {}, 422, "`job_id`"),
    ]
    for method, path, kwargs, status, words in cases:
        answer = api.http.request(method, path, **kwargs)
        assert answer.status_code == status, (method, path, answer.status_code, answer.text[:300])
        assert words in answer.json()["detail"], (path, answer.json())
    assert api.get("/api/jobs").json() == [] and api.get("/api/secrets").json() == []
    assert api.get("/api/webhooks").json() == [] and len(api.get("/api/users").json()) == 1
    with sqlite3.connect(server.home / "nbjobs.db") as conn:
        assert conn.execute("select count(*) from jobs").fetchone() == (0,)
        assert conn.execute("select count(*) from events").fetchone() == (0,)
    assert httpx.get(server.url + "/api/health", headers={"Authorization": "Bearer " + "x" * 5000}).status_code == 401
