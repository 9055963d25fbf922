"""The server, through the real CLI and HTTP API: submit, queue, wait, cancel, retry, recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import nbformat
import psutil

from conftest import job_json, wait_for

ONE_CPU = "[resources]\nreserve_cpus = {reserve}\nsample_interval = 0.2\n"


def one_cpu_config() -> str:
    return ONE_CPU.format(reserve=len(os.sched_getaffinity(0)) - 1)


def cell_is_running(record: dict, index: int) -> bool:  # type: ignore[type-arg]
    """Whether code cell `index` of the latest attempt runs (False while the attempt has no cells yet)."""
    cells = record["cells"]
    return len(cells) > index and cells[index]["status"] == "running"


def test_submit_returns_at_once_and_wait_gives_the_end(cli, notebook, start_server):
    start_server()
    nb = notebook([("n = 1", ["parameters"]), "import nbjobs\nnbjobs.record('double', n * 2)"])
    submitted = job_json(cli("submit", nb, "-p", "n", "21", "--json"))
    assert submitted["state"] == "queued" and submitted["id"] == 1
    result = cli("wait", 1, "--json")
    assert result.exit_code == 0, result.output
    record = job_json(result)
    assert record["state"] == "succeeded" and record["results"] == {"double": 42}
    assert [h["state"] for h in record["history"]] == ["queued", "starting", "running", "succeeded"]
    assert job_json(cli("show", 1, "--json"))["results"] == {"double": 42}
    assert "Job 1" in cli("submit", nb).stdout.replace("Job 2", "Job 1")


def test_queue_reasons_cancel_queued_and_running(cli, notebook, start_server):
    start_server(one_cpu_config())
    slow = notebook(
        ["print('started', flush=True)", "import time\ntime.sleep(60)", "print('never')"], name="slow.ipynb"
    )
    quick = notebook(["x = 1"], name="quick.ipynb")
    first = job_json(cli("submit", slow, "--cpus", "1", "--json"))["id"]
    second = job_json(cli("submit", quick, "--cpus", "1", "--json"))["id"]
    wait_for(lambda: job_json(cli("show", first, "--json"))["state"] == "running")
    waiting = wait_for(lambda: job_json(cli("show", second, "--json"))["queue_reason"])
    assert "needs 1 CPU" in waiting and "0 free" in waiting
    queue = json.loads(cli("queue", "--json").stdout)
    assert [j["id"] for j in queue["running"]] == [first] and queue["waiting"][0]["reason"] == waiting
    assert "needs 1 CPU" in cli("queue").stdout

    cancelled = job_json(cli("cancel", second, "--json"))
    assert cancelled["state"] == "cancelled" and cancelled["attempts"] == []

    wait_for(lambda: cell_is_running(job_json(cli("show", first, "--json")), 1))
    cli("cancel", first)
    record = job_json(cli("wait", first, "--json"))
    assert record["state"] == "cancelled" and "cancelled by user" in record["reason"]
    assert [c["status"] for c in record["cells"]] == ["completed", "cancelled", "pending"]
    out = nbformat.read(record["output"], as_version=4)
    assert out.metadata["nbjobs_run"]["state"] == "cancelled"

    again = cli("cancel", first)
    assert again.exit_code == 2 and "already ended" in again.stderr


def test_retry_after_kernel_death_goes_back_through_the_queue(cli, notebook, start_server, tmp_path):
    start_server()
    spec = tmp_path / "job.toml"
    spec.write_text("[retry]\nattempts = 3\nbackoff = 0.3\nbackoff_factor = 2\n")
    nb = notebook(["import os\nos._exit(7)"])
    job = job_json(cli("submit", nb, "--spec", spec, "--json"))["id"]
    result = cli("wait", job, "--json")
    assert result.exit_code == 4
    record = job_json(result)
    assert [a["state"] for a in record["attempts"]] == ["kernel_died"] * 3
    assert "exit code 7" in record["reason"]
    retries = [h["reason"] for h in record["history"] if h["state"] == "queued" and h["reason"]]
    assert retries[0].startswith("retry 2/3 in 0.3 s") and retries[1].startswith("retry 3/3 in 0.6 s")
    gaps = [
        (datetime_of(b["started"]) - datetime_of(a["ended"])).total_seconds()
        for a, b in zip(record["attempts"], record["attempts"][1:], strict=False)
    ]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6


def datetime_of(text: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_manual_retry_and_its_refusals(cli, notebook, start_server, tmp_path):
    start_server()
    flag = tmp_path / "fixed"
    nb = notebook([f"import os\nassert os.path.exists({str(flag)!r}), 'not fixed yet'"])
    job = job_json(cli("submit", nb, "--json"))["id"]
    assert cli("wait", job).exit_code == 1
    flag.write_text("yes")
    retried = cli("retry", job)
    assert retried.exit_code == 0
    record = job_json(cli("wait", job, "--json"))
    assert record["state"] == "succeeded" and [a["state"] for a in record["attempts"]] == ["failed", "succeeded"]
    assert Path(record["attempts"][0]["output"]).exists() and record["attempts"][0]["output"] != record["output"]

    slow = notebook(["import time\ntime.sleep(30)"], name="slow.ipynb")
    running = job_json(cli("submit", slow, "--json"))["id"]
    wait_for(lambda: job_json(cli("show", running, "--json"))["state"] == "running")
    refused = cli("retry", running)
    assert refused.exit_code == 2 and "only a job that has ended can be retried" in refused.stderr
    cli("cancel", running)


def test_bad_requests_are_refused_with_nothing_stored(cli, notebook, start_server):
    server = start_server("[resources]\ncustom = {licenses = 2}\n")
    nb = notebook(["x = 1"])
    cases = {
        ("--cpus", "4096"): "CPU",
        ("--memory", "100TB"): "memory",
        ("--gpus", "3"): "GPU",
        ("--resource", "seats=1"): "licenses",
        ("--resource", "licenses=3"): "licenses",
    }
    for flags, expected in cases.items():
        result = cli("submit", nb, *flags)
        assert result.exit_code == 2 and expected in result.stderr, (flags, result.stderr)
        assert "Traceback" not in result.output
    result = cli("submit", nb, "--spec", _write(notebook, "pool: nowhere\n"))
    assert result.exit_code == 2 and "Unknown pool 'nowhere'" in result.stderr
    assert cli("cancel", 99).exit_code == 2 and "No job with id 99" in cli("cancel", 99).stderr
    assert json.loads(cli("ls", "--json").stdout) == []

    anonymous = httpx.get(server.url + "/api/jobs")
    assert anonymous.status_code == 401
    token = (server.home / "token").read_text().strip()
    bad_body = httpx.post(
        server.url + "/api/jobs",
        json={"notebook": str(nb), "timeout": -1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad_body.status_code == 422 and "`timeout`" in bad_body.json()["detail"]


def _write(notebook, text: str) -> Path:  # type: ignore[no-untyped-def]
    path = Path(notebook(["x = 1"], name="spec-nb.ipynb")).with_name("job.yaml")
    path.write_text(text)
    return path


def test_idempotent_submit_and_run_and_wait(cli, notebook, start_server):
    server = start_server()
    nb = notebook([("x = 2", ["parameters"]), "import nbjobs\nnbjobs.record('square', x * x)"])
    first = job_json(cli("submit", nb, "--idempotency-key", "k-1", "--json"))
    second = job_json(cli("submit", nb, "--idempotency-key", "k-1", "--json"))
    assert first["id"] == second["id"]
    token = (server.home / "token").read_text().strip()
    answer = httpx.post(
        server.url + "/api/run",
        json={"spec": {"notebook": str(nb), "parameters": {"x": 9}}, "timeout": 60},
        headers={"Authorization": f"Bearer {token}"},
        timeout=90,
    )
    assert answer.status_code == 200
    assert answer.json()["state"] == "succeeded" and answer.json()["results"] == {"square": 81}


def test_gpus_are_never_shared_between_running_jobs(cli, notebook, start_server):
    start_server(env={"NBJOBS_GPUS": "2"})
    nb = notebook(["import os, time\nprint(os.environ['CUDA_VISIBLE_DEVICES'])\ntime.sleep(1.5)"])
    ids = [job_json(cli("submit", nb, "--gpus", "1", "--json"))["id"] for _ in range(4)]
    records = [job_json(cli("wait", i, "--json")) for i in ids]
    assert all(r["state"] == "succeeded" for r in records)
    spans = []
    for r in records:
        device = Path(r["log"]).read_text().strip()
        assert device and "," not in device
        spans.append((datetime_of(r["started"]), datetime_of(r["ended"]), device))
    for start, _, _ in spans:  # at each moment a job starts: who runs, on which GPU
        running = [device for s, e, device in spans if s <= start < e]
        assert len(running) <= 2 and len(set(running)) == len(running)  # two GPUs, never shared


def test_server_killed_mid_run_recovers_on_restart(cli, notebook, start_server, home):
    server = start_server()
    nb = notebook(["import os\nprint(os.getpid(), flush=True)", "import time\ntime.sleep(60)"])
    job = job_json(cli("submit", nb, "--retries", "1", "--json"))["id"]
    record = wait_for(lambda: cell_is_running(r := job_json(cli("show", job, "--json")), 1) and r)
    kernel_pid = record["attempts"][0]["pid"]
    assert kernel_pid and psutil.pid_exists(kernel_pid)
    server.stop(kill=True)
    wait_for(lambda: not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == "zombie", 15)

    start_server()
    record = wait_for(lambda: (r := job_json(cli("show", job, "--json")))["attempts"][0]["state"] == "lost" and r)
    assert "is gone" in record["attempts"][0]["reason"]
    assert record["state"] in ("queued", "starting", "running")  # retried: lost is retryable by default
    cli("cancel", job)
    final = job_json(cli("wait", job, "--json"))
    assert final["state"] == "cancelled"


def test_run_goes_through_a_running_server_unless_local(cli, notebook, start_server, tmp_path):
    start_server()
    nb = notebook([("n = 1", ["parameters"]), "import os, nbjobs\nprint('pid', os.getppid())\nnbjobs.record('n', n)"])
    output = tmp_path / "out.ipynb"
    result = cli("run", nb, output, "-p", "n", "5", "--log-output", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "pid" in result.stdout and "Job 1" in result.stdout
    record = job_json(cli("show", 1, "--json"))
    assert record["results"] == {"n": 5} and record["output"] == str(output) and output.exists()
    assert record["history"][0]["state"] == "queued" and record["attempts"][0]["pid"]  # the server's kernel

    local = job_json(cli("run", nb, "--local", "--json", "-p", "n", "6"))
    assert local["id"] == 2 and local["results"] == {"n": 6} and local["attempts"][0]["pid"] is None


def test_run_server_flag_without_a_server_is_refused(cli, notebook):
    result = cli("run", notebook(["x = 1"]), "--server")
    assert result.exit_code == 2 and "no nbjobs server answers" in result.stderr
