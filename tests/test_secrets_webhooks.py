"""Secrets reach the kernel and nothing else; webhooks are signed, retried and logged; /metrics counts it all."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from click.testing import CliRunner

from nbjobs.cli import main
from people_support import Api, files_containing, is_final, wait_for


def test_a_secret_reaches_the_kernel_and_never_appears_in_anything_stored_or_served(
    cli, notebook, start_server, monkeypatch
):
    server = start_server()
    admin = Api.admin(server)
    erin, frank = admin.add_user("erin"), admin.add_user("frank")
    value = "s3cr3t-" + secrets.token_hex(12)
    monkeypatch.setenv("NBJOBS_TOKEN", erin.token)
    stored = CliRunner().invoke(main, ["secret", "set", "API_KEY"], input=value + "\n")
    assert stored.exit_code == 0 and "Secret API_KEY set" in stored.stdout
    listing = cli("secret", "ls")
    assert "API_KEY" in listing.stdout and value not in listing.stdout

    nb = notebook(
        [
            f"import os\nkey = os.environ['API_KEY']\nassert len(key) == {len(value)}",
            "print('key is', key, flush=True)",
            "import nbjobs\nnbjobs.record('echo', key)\nnbjobs.record('length', len(key))",
            "key",
            "raise ValueError('bad key ' + key)",
        ]
    )
    job = erin.submit(nb, secrets=["API_KEY"], outputs={"formats": ["ipynb", "html"]})
    assert job["spec"]["secrets"] == ["API_KEY"] and "env" not in json.dumps(job["spec"]).replace('"env": {}', "")
    stream = erin.events(f"/api/jobs/{job['id']}/events", until=lambda e: e["kind"] == "state" and is_final(e["state"]))
    record = erin.wait(job["id"])
    assert record["state"] == "failed" and "[secret API_KEY]" in record["reason"]
    assert record["results"] == {"echo": "[secret API_KEY]", "length": len(value)}  # the kernel had the real value
    log = erin.get(f"/api/jobs/{job['id']}/log").text
    assert "key is [secret API_KEY]" in log and "ValueError: bad key [secret API_KEY]" in log
    assert "key is [secret API_KEY]" in "".join(e.get("text", "") for e in stream)

    served = [
        json.dumps(record),
        log,
        json.dumps(stream),
        erin.get(f"/ui/jobs/{job['id']}").text,
        erin.get(f"/ui/jobs/{job['id']}/notebook").text,
        erin.get("/api/secrets").text,
        erin.get("/api/jobs").text,
        admin.get("/metrics").text,
    ]
    assert not [text for text in served if value in text]
    assert "[secret API_KEY]" in erin.get(f"/ui/jobs/{job['id']}/notebook").text
    server.stop()  # flushes the store's write-ahead log too
    assert files_containing(server.home, value) == []
    assert files_containing(server.home, "[secret API_KEY]")  # output notebook, HTML, log: redacted, not missing

    server = type(server)(server.home).start()
    refused = Api(server.url, frank.token).post(
        "/api/jobs", json={"notebook": str(nb), "secrets": ["API_KEY"]}
    )  # erin's secret is not frank's
    assert refused.status_code == 400 and "`secrets`" in refused.json()["detail"]
    bad_name = erin.http.put(f"{server.url}/api/secrets/1BAD", json={"value": "x"})
    assert bad_name.status_code == 400 and "`name`" in bad_name.json()["detail"]
    assert cli("secret", "rm", "API_KEY").exit_code == 0
    assert Api(server.url, erin.token).get("/api/secrets").json() == []
    server.stop()


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records POSTs; /flaky answers 500 to its first `started` event."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        received = self.requests
        state = {"flaky": 0}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "headers": dict(self.headers), "body": body, "at": time.time()})
                status = 200
                if self.path == "/flaky" and json.loads(body).get("event") == "started":
                    # Keyed by event: a fast job's started and succeeded deliveries may arrive in either order.
                    state["flaky"] += 1
                    status = 500 if state["flaky"] == 1 else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_webhooks_are_signed_retried_logged_and_metrics_count_jobs(cli, notebook, start_server, monkeypatch):
    receiver = Receiver()
    try:
        server = start_server(env={"NBJOBS_WEBHOOK_HOSTS": "127.0.0.1"})
        admin = Api.admin(server)
        gina = admin.add_user("gina")
        monkeypatch.setenv("NBJOBS_TOKEN", gina.token)
        added = cli("webhook", "add", receiver.url + "/mine", "--event", "succeeded", "--event", "failed")
        assert added.exit_code == 0, added.output
        key = cli("webhook", "secret").stdout.strip()
        assert len(key) == 64

        nb = notebook(["x = 1"])
        far = gina.post("/api/jobs", json={"notebook": str(nb), "webhooks": [{"url": "http://example.com/x"}]})
        assert far.status_code == 400 and "`webhooks.0.url`" in far.json()["detail"]
        hooks = [{"url": receiver.url + "/flaky", "events": ["started", "succeeded"]}]
        job = gina.submit(nb, webhooks=hooks)
        assert gina.wait(job["id"])["state"] == "succeeded"

        def delivered() -> list[dict[str, Any]] | None:
            rows = gina.get(f"/api/jobs/{job['id']}/webhooks").json()
            return rows if len(rows) == 3 and all(r["status"] == "delivered" for r in rows) else None

        rows = wait_for(delivered, timeout=30)
        by_target = {(r["url"].rsplit("/", 1)[1], r["event"]): r for r in rows}
        assert set(by_target) == {("flaky", "started"), ("flaky", "succeeded"), ("mine", "succeeded")}
        assert by_target["flaky", "started"]["tries"] == 2  # the first try got a 500
        assert by_target["mine", "succeeded"]["tries"] == 1 and by_target["mine", "succeeded"]["response_code"] == 200

        flaky_started = [
            r for r in receiver.requests if r["path"] == "/flaky" and json.loads(r["body"])["event"] == "started"
        ]
        assert len(flaky_started) == 2 and flaky_started[1]["at"] - flaky_started[0]["at"] >= 0.4  # backoff
        for request in receiver.requests:
            expected = "sha256=" + hmac.new(key.encode(), request["body"], hashlib.sha256).hexdigest()
            assert request["headers"]["X-Nbjobs-Signature"] == expected
            payload = json.loads(request["body"])
            assert payload["job"]["id"] == job["id"] and payload["event"] == request["headers"]["X-Nbjobs-Event"]
        ends = [json.loads(r["body"]) for r in receiver.requests if r["headers"]["X-Nbjobs-Event"] == "succeeded"]
        assert len(ends) == 2 and all(p["job"]["state"] == "succeeded" and p["job"]["ended"] for p in ends)
        page = gina.get(f"/ui/jobs/{job['id']}").text
        assert "Webhook deliveries" in page and "delivered" in page
        log = cli("webhook", "deliveries", "--job", job["id"]).stdout
        assert log.count("delivered") == 3
        assert Api(server.url, admin.add_user("hank").token).get(f"/api/jobs/{job['id']}/webhooks").status_code == 404

        assert httpx.get(server.url + "/metrics").status_code == 401
        metrics = admin.get("/metrics").text
        assert 'nbjobs_jobs{state="succeeded"} 1.0' in metrics and "nbjobs_queue_length 0.0" in metrics
        assert "nbjobs_job_wait_seconds_count 1.0" in metrics
        assert 'nbjobs_job_run_seconds_count{state="succeeded"} 1.0' in metrics
        assert 'nbjobs_resource_capacity{resource="cpus"}' in metrics
        assert 'nbjobs_resource_allocated{resource="memory_bytes"} 0.0' in metrics
        assert 'nbjobs_resource_used{resource="memory_bytes"}' in metrics
    finally:
        receiver.close()
