"""Users, tokens and sessions on a real server: every route needs a token, a user sees only their own jobs."""

from __future__ import annotations

import re
import sqlite3

import httpx

from people_support import Api, files_containing, wait_for


def test_every_route_in_the_schema_refuses_requests_without_a_valid_token(start_server):
    server = start_server()
    schema = httpx.get(server.url + "/openapi.json").json()
    checked = 0
    for path, methods in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Cookie": "nbjobs_session=forged"}):
                answer = httpx.request(method.upper(), server.url + concrete, headers=headers, json={})
                assert answer.status_code == 401, (method, path, headers, answer.status_code, answer.text)
                checked += 1
    assert checked >= 3 * 25  # jobs, users, tokens, secrets, webhooks, events, metrics...
    assert httpx.get(server.url + "/ui", follow_redirects=False).status_code == 303  # pages: to the login


def test_users_see_cancel_retry_and_stream_only_their_own_jobs(cli, notebook, start_server, monkeypatch):
    server = start_server()
    admin = Api.admin(server)
    me = admin.get("/api/me").json()
    assert me["admin"] is True and me["name"]  # the local token is the first admin's, named after the OS user

    made = cli("user", "add", "alice")
    assert made.exit_code == 0, made.output
    alice = Api(server.url, made.stdout.strip().splitlines()[-1])
    bob = admin.add_user("bob")
    assert alice.get("/api/me").json() == {"id": 2, "name": "alice", "admin": False}

    nb = notebook(["import time\ntime.sleep(30)"])
    job = alice.submit(nb)
    assert job["owner"] == "alice"
    job_id = job["id"]
    for method, path in [
        ("GET", f"/api/jobs/{job_id}"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/retry"),
        ("GET", f"/api/jobs/{job_id}/wait?timeout=0.1"),
        ("GET", f"/api/jobs/{job_id}/log"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("GET", f"/api/jobs/{job_id}/webhooks"),
        ("GET", f"/ui/jobs/{job_id}"),
        ("GET", f"/ui/jobs/{job_id}/notebook"),
    ]:
        answer = bob.http.request(method, path)
        assert answer.status_code == 404, (method, path, answer.status_code)
        assert answer.status_code == bob.http.request(method, path.replace(str(job_id), "999", 1)).status_code
    assert bob.get("/api/jobs").json() == []
    assert [j["id"] for j in alice.get("/api/jobs").json()] == [job_id]
    assert [j["id"] for j in admin.get("/api/jobs", params={"owner": "alice"}).json()] == [job_id]
    assert bob.post("/api/users", json={"name": "mallory"}).status_code == 403

    monkeypatch.setenv("NBJOBS_TOKEN", bob.token)
    refused = cli("cancel", job_id)
    assert refused.exit_code == 2 and f"No job with id {job_id}" in refused.stderr
    monkeypatch.setenv("NBJOBS_TOKEN", alice.token)
    assert cli("cancel", job_id).exit_code == 0
    assert alice.wait(job_id)["state"] == "cancelled"
    monkeypatch.delenv("NBJOBS_TOKEN")
    assert admin.post(f"/api/jobs/{job_id}/retry").status_code == 200  # an admin may act on anyone's job
    assert admin.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    assert admin.wait(job_id)["state"] == "cancelled"


def test_tokens_are_stored_hashed_listed_by_id_and_revocable(cli, start_server, monkeypatch):
    server = start_server()
    admin = Api.admin(server)
    carol = admin.add_user("carol")
    monkeypatch.setenv("NBJOBS_TOKEN", carol.token)
    created = cli("token", "create", "--label", "laptop")
    assert created.exit_code == 0, created.output
    second = created.stdout.strip()
    token_id = second.split("_")[1]
    listing = cli("token", "ls").stdout
    assert token_id in listing and "laptop" in listing and second not in listing
    assert Api(server.url, second).get("/api/me").json()["name"] == "carol"
    assert carol.get("/api/tokens", params={"everyone": True}).json()[0]["user"] == "carol"  # not an admin: own only

    assert cli("token", "revoke", token_id).exit_code == 0
    assert Api(server.url, second).get("/api/me").status_code == 401
    assert carol.http.delete("/api/tokens/local").status_code == 404  # someone else's token: not found
    monkeypatch.delenv("NBJOBS_TOKEN")

    db = server.home / "nbjobs.db"
    with sqlite3.connect(db) as conn:
        hashes = [h for (h,) in conn.execute("select hash from tokens")]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes) and len(hashes) == 3  # local, carol's first and second
    assert not files_containing(server.home, second) and not files_containing(server.home, carol.token)


def test_browser_session_cookie_csrf_and_logout(notebook, start_server):
    server = start_server()
    admin = Api.admin(server)
    dave = admin.add_user("dave")
    browser = httpx.Client(base_url=server.url, follow_redirects=False)
    assert browser.get("/ui").headers["location"].startswith("/ui/login")
    wrong = browser.post("/ui/login", data={"token": "nope", "next": "/ui"})
    assert (
        wrong.status_code == 200
        and "not valid" in wrong.text
        and "nbjobs_session" not in wrong.headers.get("set-cookie", "")
    )
    login = browser.post("/ui/login", data={"token": dave.token, "next": "/ui/queue"})
    assert login.status_code == 303 and login.headers["location"] == "/ui/queue"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    session = re.search(r"nbjobs_session=([^;]+)", login.headers["set-cookie"]).group(1)
    browser.cookies.set("nbjobs_session", session)
    assert browser.get("/api/me").json()["name"] == "dave"
    page = browser.get("/ui")
    assert page.status_code == 200 and "dave" in page.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)

    job = dave.submit(notebook(["import time\ntime.sleep(30)"]))
    forged = browser.post(f"/api/jobs/{job['id']}/cancel")
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
    done = browser.post(f"/api/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200
    assert browser.get("/ui/login?next=https://evil.example/").status_code == 200
    assert (
        "evil"
        not in browser.post("/ui/login", data={"token": dave.token, "next": "//evil.example"}).headers["location"]
    )

    browser.post("/ui/logout", data={"csrf": csrf})
    assert browser.get("/api/me").status_code == 401
    wait_for(lambda: admin.get(f"/api/jobs/{job['id']}").json()["state"] == "cancelled")
