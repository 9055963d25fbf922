"""The dask backend on a real cluster: a LocalCluster's scheduler with `nbjobs worker` processes
of different resources (one with a fake GPU), a real server started with --backend dask, real kernels."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import psutil
import pytest

import test_server
from test_server import cell_is_running, wait_for

from conftest import ServerProcess, job_json

pytest.importorskip("distributed")

CPU_IDS = sorted(os.sched_getaffinity(0))


def cpu_id(n: int) -> str:
    """One CPU id as a range (a bare number would be a count): workers of one host get different ones."""
    cpu = CPU_IDS[n % len(CPU_IDS)]
    return f"{cpu}-{cpu}"


class Cluster:
    """A Dask scheduler (LocalCluster without workers) and `nbjobs worker` processes joining it."""

    def __init__(self, folder: Path) -> None:
        from distributed import LocalCluster

        self.folder = folder
        self.local = LocalCluster(
            n_workers=0, processes=True, host="127.0.0.1", scheduler_port=0, dashboard_address=None
        )
        self.address = self.local.scheduler_address
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.folder / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "nbjobs.cli", "worker", "--scheduler-address", self.address, "--name", name]
        with log.open("wb") as out:
            self.workers[name] = subprocess.Popen(
                [*cmd, *args],
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: nanny and worker are killed together
            )
        wait_for(lambda: f"nbjobs worker {name} at" in log.read_text() or self.workers[name].poll() is not None, 60)
        assert self.workers[name].poll() is None, log.read_text()

    def kill(self, name: str) -> None:
        """SIGKILL the worker's nanny and worker processes at once: no goodbye to the scheduler."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers.pop(name).wait(timeout=30)

    def stop(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def close(self) -> None:
        for name in list(self.workers):
            self.stop(name)
        self.local.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start_worker("plain", "--cpus", cpu_id(0), "--memory", "2GiB")
        cluster.start_worker(
            "gpu",
            "--cpus",
            cpu_id(1),
            "--memory",
            "1GiB",
            "--gpus",
            "1",
            "--resource",
            "licenses=1",
            env={"NBJOBS_GPUS": "1"},
        )
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def start_server(home: Path, cluster: Cluster) -> Any:
    """As conftest's, with the server on the dask backend (so test_server's tests run on it unchanged)."""
    started: list[ServerProcess] = []

    def start(config: str = "", env: dict[str, str] | None = None) -> ServerProcess:
        home.mkdir(parents=True, exist_ok=True)
        if config:
            (home / "config.toml").write_text(config)
        args = ["--backend", "dask", "--scheduler-address", cluster.address]
        proc = ServerProcess(home, env, args=args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def attempt_worker(record: dict[str, Any], number: int = 1) -> str:
    """The worker name an attempt ran on (its host is HOSTNAME/WORKER)."""
    return str(record["attempts"][number - 1]["host"]).rsplit("/", 1)[-1]


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


SHARED_JOB_TESTS = [
    test_server.test_submit_returns_at_once_and_wait_gives_the_end,
    test_server.test_retry_after_kernel_death_goes_back_through_the_queue,
    test_server.test_manual_retry_and_its_refusals,
    test_server.test_bad_requests_are_refused_with_nothing_stored,
    test_server.test_idempotent_submit_and_run_and_wait,
    test_server.test_gpus_are_never_shared_between_running_jobs,
    test_server.test_server_killed_mid_run_recovers_on_restart,
]


@pytest.mark.parametrize("job_test", SHARED_JOB_TESTS, ids=lambda test: test.__name__.removeprefix("test_"))
def test_server_job_tests_on_the_dask_backend(job_test: Any, request: pytest.FixtureRequest) -> None:
    """test_server's tests, their fixtures resolved here: the server runs jobs on the cluster."""
    job_test(**{name: request.getfixturevalue(name) for name in inspect.signature(job_test).parameters})


def test_jobs_land_only_on_workers_that_fit(cli, notebook, start_server):  # type: ignore[no-untyped-def]
    start_server()
    nb = notebook(
        ["import os\nprint(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), os.environ.get('MALLOC_TRIM_THRESHOLD_'))"]
    )
    flags = {
        "gpu": ["--gpus", "1"],
        "memory": ["--memory", "1.5GiB"],
        "licenses": ["--resource", "licenses=1"],
        "none": [],
    }
    jobs = {what: job_json(cli("submit", nb, *f, "--json"))["id"] for what, f in flags.items()}
    records = {what: job_json(cli("wait", job, "--json")) for what, job in jobs.items()}
    assert all(r["state"] == "succeeded" for r in records.values()), records
    assert attempt_worker(records["gpu"]) == "gpu" and attempt_worker(records["licenses"]) == "gpu"
    assert attempt_worker(records["memory"]) == "plain"
    # The GPU job sees the GPU its worker picked; the others see none.
    assert Path(records["gpu"]["log"]).read_text().startswith("'GPU-fake-0'")
    assert Path(records["memory"]["log"]).read_text().startswith("''")
    # The Dask nanny's settings for its worker (malloc trimming, one BLAS thread) stay out of kernels.
    assert all(Path(r["log"]).read_text().rstrip().endswith(" None") for r in records.values())

    view = json.loads(cli("queue", "--json").stdout)
    assert len(view["capacity"]["cpus"]) == 2 and len(view["capacity"]["gpus"]) == 1
    assert view["capacity"]["custom"] == {"licenses": 1} and view["leader"] is True

    for flags_, expected in {
        ("--cpus", "2"): "needs 2 CPUs",
        ("--gpus", "2"): "needs 1 CPU, 2 GPUs",
        ("--memory", "3GiB"): "3 GiB",
        ("--resource", "seats=1"): "seats=1",
    }.items():
        result = cli("submit", nb, *flags_)
        assert result.exit_code == 2 and "can never run on this Dask cluster" in result.stderr, result.stderr
        assert expected in result.stderr and "gpu: 1 CPU, 1 GiB memory, 1 GPU, licenses=1" in result.stderr


def test_cancel_reaches_a_running_job_on_a_worker(cli, notebook, start_server):  # type: ignore[no-untyped-def]
    start_server()
    nb = notebook(["print('started', flush=True)", "import time\ntime.sleep(60)", "print('never')"])
    job = job_json(cli("submit", nb, "--json"))["id"]
    record = wait_for(lambda: cell_is_running(r := job_json(cli("show", job, "--json")), 1) and r)
    kernel = record["attempts"][0]["pid"]
    assert kernel and psutil.pid_exists(kernel)
    cli("cancel", job)
    record = job_json(cli("wait", job, "--json"))
    assert record["state"] == "cancelled" and "cancelled by user" in record["reason"]
    assert [c["status"] for c in record["cells"]] == ["completed", "cancelled", "pending"]
    assert nbformat.read(record["output"], as_version=4).metadata["nbjobs_run"]["state"] == "cancelled"
    wait_for(lambda: gone(kernel), 15)


def test_worker_killed_mid_job_is_lost_and_retried_on_the_other(  # type: ignore[no-untyped-def]
    cli, notebook, start_server, cluster, tmp_path
):
    cluster.start_worker("crash-a", "--cpus", cpu_id(0), "--resource", "crash=1")
    cluster.start_worker("crash-b", "--cpus", cpu_id(1), "--resource", "crash=1")
    try:
        start_server()
        spec = tmp_path / "job.toml"
        spec.write_text("[retry]\nattempts = 2\nbackoff = 0.2\n\n[resources]\ncustom = {crash = 1}\n")
        nb = notebook(["import os, time\nif os.environ['NBJOBS_ATTEMPT'] == '1':\n    time.sleep(60)"])
        job = job_json(cli("submit", nb, "--spec", spec, "--json"))["id"]
        first = wait_for(lambda: cell_is_running(r := job_json(cli("show", job, "--json")), 0) and r)
        victim, kernel = attempt_worker(first), first["attempts"][0]["pid"]
        cluster.kill(victim)

        record = job_json(cli("wait", job, "--timeout", "90", "--json"))
        assert record["state"] == "succeeded", record
        assert [a["state"] for a in record["attempts"]] == ["lost", "succeeded"]
        assert attempt_worker(record, 2) == ({"crash-a", "crash-b"} - {victim}).pop()
        assert [h["state"] for h in record["history"]].count("running") == 2  # never re-run by Dask itself
        wait_for(lambda: gone(kernel), 15)  # the killed worker's kernel does not live on
    finally:
        for name in ("crash-a", "crash-b"):
            if name in cluster.workers:
                cluster.stop(name)


def test_outputs_go_to_a_storage_url(cli, notebook, start_server, tmp_path):  # type: ignore[no-untyped-def]
    root = tmp_path / "bucket"
    # `local://` is fsspec's URL for this disk: the worker copies outputs up as it would to s3://.
    start_server(f'[backend]\nstorage_url = "local://{root}"\n')
    nb = notebook(["import os\nprint('hello from the worker')\nopen(os.environ['NBJOBS_ARTIFACTS'] + '/a.txt', 'w')"])
    job = job_json(cli("submit", nb, "--json"))["id"]
    record = job_json(cli("wait", job, "--json"))
    assert record["state"] == "succeeded" and record["artifacts"] == ["a.txt"]
    assert record["output"] == f"local://{root}/jobs/{job}/attempt-1/output.ipynb"
    assert record["log"] == f"local://{root}/jobs/{job}/attempt-1/log.txt"
    folder = root / "jobs" / str(job) / "attempt-1"
    assert nbformat.read(folder / "output.ipynb", as_version=4).metadata["nbjobs_run"]["state"] == "succeeded"
    assert (folder / "artifacts" / "a.txt").exists()
    assert cli("logs", job).stdout == "hello from the worker\n"


def test_storage_copies_a_folder_up_and_reads_back() -> None:
    from nbjobs.storage import Storage, read_text

    storage = Storage("memory://nbjobs-test")
    assert storage.local_root is None
    location = storage.attempt_location(3, 2)
    assert location == "memory://nbjobs-test/jobs/3/attempt-2"
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "artifacts").mkdir()
        (Path(folder) / "log.txt").write_text("one\n")
        (Path(folder) / "artifacts" / "x.csv").write_text("a,b\n")
        sent: dict[str, tuple[int, int]] = {}
        storage.upload(Path(folder), location, sent)
        assert set(sent) == {"log.txt", "artifacts/x.csv"}
        assert read_text(f"{location}/log.txt") == "one\n" and read_text(f"{location}/artifacts/x.csv") == "a,b\n"
        assert read_text(f"{location}/missing.txt") is None
    local = Storage("/tmp/somewhere/")
    assert local.local_root == Path("/tmp/somewhere") and local.attempt_location(1, 1).endswith("jobs/1/attempt-1")


def test_worker_and_server_refuse_bad_options(cli, cluster):  # type: ignore[no-untyped-def]
    cases = {
        ("worker", "--scheduler-address", cluster.address, "--cpus", "4096"): "--cpus 4096",
        ("worker", "--scheduler-address", cluster.address, "--cpus", "0,x"): "CPU ids such as 0,2-3",
        ("worker", "--scheduler-address", cluster.address, "--gpus", "64"): "GPU(s) found",
        ("worker", "--scheduler-address", cluster.address, "--memory", "lots"): "--memory",
        ("worker", "--scheduler-address", cluster.address, "--resource", "GPU=1"): "other than CPU, MEMORY, GPU",
        ("worker", "--scheduler-address", cluster.address, "--resource", "seats=x"): "whole number",
        ("server", "--backend", "dask"): "needs the scheduler's address",
        ("server", "--scheduler-address", "tcp://127.0.0.1:9"): "No Dask scheduler answers",
    }
    for args, expected in cases.items():
        result = cli(*args)
        assert result.exit_code == 2 and expected in result.stderr, (args, result.stderr)


def test_a_job_naming_secrets_is_refused_on_the_dask_backend(cli, notebook, start_server):  # type: ignore[no-untyped-def]
    server = start_server()
    auth = {"Authorization": f"Bearer {(server.home / 'token').read_text().strip()}"}
    assert httpx.put(server.url + "/api/secrets/API_KEY", json={"value": "s3cr3t"}, headers=auth).status_code < 300
    spec = {"notebook": str(notebook(["x = 1"])), "secrets": ["API_KEY"]}
    answer = httpx.post(server.url + "/api/jobs", json=spec, headers=auth)
    assert answer.status_code == 400 and "dask backend cannot hand secrets" in answer.json()["detail"]
    assert json.loads(cli("ls", "--json").stdout) == []
