"""Kernel providers on real ipykernel kernels: one execution suite for plain, pool and zygote,
isolation between jobs on one provider, and nothing left running after a job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

from nbjobs.attempt import Attempt, AttemptPaths, AttemptResult
from nbjobs.config import KernelConfig
from nbjobs.kernels import KernelInfo, KernelProvider, KernelRequest, PlainProvider, resolve_kernel
from nbjobs.kernels.pool import PoolProvider
from nbjobs.kernels.registry import ConfiguredProviders
from nbjobs.kernels.registry import make_provider as make_provider_for
from nbjobs.kernels.zygote import ZygoteProvider
from nbjobs.notebook.runner import RunOutcome
from nbjobs.prepare import PreparedJob, load_spec, prepare
from nbjobs.resources.allocation import Allocation
from nbjobs.spec import JobState

PROVIDERS = ["plain", "pool", "zygote"]
# The zygote hands out a spare kernel (set up after start) or forks one on demand (set up
# before start): two paths to the same kernel, both tested.
ISOLATION_PROVIDERS = [*PROVIDERS, "zygote-on-demand"]


def make_provider(name: str) -> KernelProvider:
    if name == "plain":
        return PlainProvider()
    if name == "pool":
        return PoolProvider(ready=1)
    return ZygoteProvider(resolve_kernel("python3"), ready=0 if name == "zygote-on-demand" else 1)


def prepared_job(notebook: Callable[..., Path], cells: list[str], name: str, **fields: Any) -> PreparedJob:
    fields.setdefault("timeout", 90)  # a test that goes wrong fails instead of hanging
    spec, nb = load_spec(str(notebook(cells, name=f"{name}.ipynb")), overrides=fields)
    return prepare(spec, nb)


class Jobs:
    """Runs attempts on one provider instance, in one event loop (a provider belongs to its loop)."""

    def __init__(self, provider: KernelProvider, folder: Path) -> None:
        self.provider = provider
        self.folder = folder
        self.count = 0

    def attempt(self, prepared: PreparedJob) -> Attempt:
        self.count += 1
        folder = self.folder / f"job-{self.count}"
        paths = AttemptPaths(folder=folder, output=folder / "output.ipynb")
        return Attempt(prepared, job_id=self.count, number=1, paths=paths, provider=self.provider)

    async def run(self, prepared: PreparedJob) -> AttemptResult:
        result = await self.attempt(prepared).run()
        await self.provider.warm()  # what the next job may take is ready: runs do not depend on timing
        return result


def with_provider(name: str, tmp_path: Path, body: Callable[[Jobs], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        provider = make_provider(name)
        try:
            await provider.warm()
            return await body(Jobs(provider, tmp_path / "jobs"))
        finally:
            await provider.close()

    return asyncio.run(main())


def run_one(name: str, tmp_path: Path, prepared: PreparedJob) -> AttemptResult:
    return with_provider(name, tmp_path, lambda jobs: jobs.run(prepared))


def stdout_of(output: Path) -> list[str]:
    nb = nbformat.read(output, as_version=4)
    return [
        "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


async def printed_by(client: Any, code: str) -> str:
    """What `code` prints, executed directly on a kernel client."""
    msg_id = client.execute(code)
    texts = []
    while True:
        msg = await client.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(texts)


def assert_gone(*pids: int) -> None:
    """No such process, or a zombie: ended, waiting for init to collect an orphan."""
    for pid in pids:
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            continue
        assert status == psutil.STATUS_ZOMBIE, f"process {pid} still exists ({status})"


# --- one execution suite, every provider ---------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_with_outputs_in_the_jobs_cwd_and_env(provider, notebook, tmp_path, home):
    prepared = prepared_job(
        notebook,
        [
            "import os\nx = 21",
            "print(x * 2)",
            "x",
            "print(os.getcwd(), os.environ['GREETING'], os.environ['NBJOBS_JOB_ID'])",
        ],
        "ok",
        env={"GREETING": "hi"},
    )
    result = run_one(provider, tmp_path, prepared)
    assert result.outcome == RunOutcome(JobState.SUCCEEDED, "all cells completed")
    out = nbformat.read(tmp_path / "jobs" / "job-1" / "output.ipynb", as_version=4)
    cells = [c for c in out.cells if c.cell_type == "code"]
    assert cells[1].outputs[0].text == "42\n"
    assert cells[2].outputs[0].data["text/plain"] == "21"
    assert cells[3].outputs[0].text == f"{tmp_path} hi 1\n"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cell_error_fails_the_job_at_that_cell(provider, notebook, tmp_path, home):
    prepared = prepared_job(notebook, ["x = 1", "raise ValueError('bad row 7')", "print('never')"], "error")
    outcome = run_one(provider, tmp_path, prepared).outcome
    assert outcome.state is JobState.FAILED
    assert "ValueError: bad row 7" in outcome.reason and outcome.failed_cell == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cell_timeout(provider, notebook, tmp_path, home):
    prepared = prepared_job(notebook, ["import time", "time.sleep(60)"], "slow", cell_timeout=1)
    outcome = run_one(provider, tmp_path, prepared).outcome
    assert outcome.state is JobState.TIMED_OUT
    assert "cell 1 exceeded its 1 s cell timeout" in outcome.reason


@pytest.mark.parametrize("provider", PROVIDERS)
def test_kernel_death_reports_the_exit_code(provider, notebook, tmp_path, home):
    prepared = prepared_job(notebook, ["print('alive')", "import os\nos._exit(3)"], "dies")
    outcome = run_one(provider, tmp_path, prepared).outcome
    assert outcome.state is JobState.KERNEL_DIED
    assert outcome.reason == "kernel died while running cell 1 (exit code 3)"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_kills_the_whole_process_group(provider, notebook, tmp_path, home):
    prepared = prepared_job(
        notebook,
        [
            "import os, subprocess, time\nchild = subprocess.Popen(['sleep', '120'])\n"
            "print(os.getpid(), child.pid, flush=True)",
            "time.sleep(120)",
        ],
        "cancel",
    )

    async def body(jobs: Jobs) -> tuple[AttemptResult, float]:
        attempt = jobs.attempt(prepared)
        task = asyncio.create_task(attempt.run())
        log = attempt.paths.log
        while not (log.exists() and log.read_text().strip()):  # the first cell printed: now in cell 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        attempt.cancel(JobState.CANCELLED, "cancelled by test")
        result = await task
        return result, asyncio.get_running_loop().time() - started

    result, took = with_provider(provider, tmp_path, body)
    assert result.outcome.state is JobState.CANCELLED and result.outcome.failed_cell == 1
    assert result.outcome.reason.startswith("cancelled by test")
    assert took < 10  # interrupt, a short grace, then the kill: no waiting for the sleep
    kernel_pid, child_pid = map(int, stdout_of(tmp_path / "jobs" / "job-1" / "output.ipynb")[0].split())
    assert_gone(kernel_pid, child_pid)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_interrupt_raises_keyboard_interrupt_in_the_running_cell(provider, tmp_path):
    async def main() -> dict[str, Any]:
        provider_ = make_provider(provider)
        try:
            kernel = await provider_.start(KernelRequest("python3", tmp_path, tmp_path / "kernel.log"))
            try:
                msg_id = kernel.client.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
                while (await kernel.client.get_iopub_msg(timeout=30))["msg_type"] != "stream":
                    pass
                await kernel.interrupt()
                while True:
                    reply = await kernel.client.get_shell_msg(timeout=30)
                    if reply["parent_header"].get("msg_id") == msg_id:
                        return reply["content"]
            finally:
                await kernel.kill()
        finally:
            await provider_.close()

    content = asyncio.run(main())
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"


# --- isolation: a job sees nothing of the job before it on the same provider --------------

LEAKY = """
import json, os, threading, time
leaked_global = 1
os.environ["LEAKED_VAR"] = "1"
os.chdir("/")
json.leaked_attribute = 1  # not `json.dumps = None`: the kernel itself sends its replies with it
threading.Thread(target=time.sleep, args=(60,), name="leaked-thread", daemon=True).start()
print(os.getpid(), flush=True)
"""
CLEAN = """
import json, os, threading
assert "leaked_global" not in globals()
assert "LEAKED_VAR" not in os.environ
assert os.getcwd() == os.environ["EXPECTED_CWD"], os.getcwd()
assert not hasattr(json, "leaked_attribute")
assert not [t for t in threading.enumerate() if t.name == "leaked-thread"]
print(os.getpid(), flush=True)
"""


@pytest.mark.parametrize("provider", ISOLATION_PROVIDERS)
def test_a_job_sees_nothing_of_the_job_before_it(provider, notebook, tmp_path, home):
    first = prepared_job(notebook, [LEAKY], "first")
    second = prepared_job(notebook, [CLEAN], "second", env={"EXPECTED_CWD": str(tmp_path)})

    async def body(jobs: Jobs) -> list[AttemptResult]:
        return [await jobs.run(first), await jobs.run(second)]

    results = with_provider(provider, tmp_path, body)
    assert [r.outcome.state for r in results] == [JobState.SUCCEEDED, JobState.SUCCEEDED], results[1].outcome
    pids = [int(stdout_of(tmp_path / "jobs" / f"job-{n}" / "output.ipynb")[0]) for n in (1, 2)]
    assert pids[0] != pids[1]
    assert_gone(*pids)


# --- zygote specifics ------------------------------------------------------------------------


def test_zygote_is_restarted_after_it_dies(notebook, tmp_path, home):
    prepared = prepared_job(notebook, ["print('ok')"], "restart")

    async def body(jobs: Jobs) -> list[AttemptResult]:
        provider = jobs.provider
        assert isinstance(provider, ZygoteProvider) and provider.zygote is not None
        first = provider.zygote.pid
        os.kill(first, signal.SIGKILL)
        result = await jobs.run(prepared)
        assert provider.zygote is not None and provider.zygote.pid != first
        return [result]

    (result,) = with_provider("zygote", tmp_path, body)
    assert result.outcome.state is JobState.SUCCEEDED


def test_zygote_that_cannot_start_falls_back_to_plain(notebook, tmp_path, home, caplog):
    python3 = resolve_kernel("python3")
    broken = KernelInfo(name=python3.name, language="python", argv=("/bin/false", *python3.argv[1:]))
    prepared = prepared_job(notebook, ["print('ok')"], "fallback")

    async def main() -> AttemptResult:
        provider = ZygoteProvider(broken, ready=1)
        try:
            return await Jobs(provider, tmp_path / "jobs").run(prepared)
        finally:
            await provider.close()

    result = asyncio.run(main())
    assert result.outcome.state is JobState.SUCCEEDED
    assert "could not start" in caplog.text and "using plain kernels" in caplog.text


def test_zygote_job_env_applies_pythonpath_and_interpreter_variables(notebook, tmp_path, home):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "job_helper.py").write_text("VALUE = 'from the job path'\n")
    pythonpath = os.pathsep.join([str(tmp_path / "extra"), os.environ.get("PYTHONPATH", "")])
    expected_hash = subprocess.run(
        [sys.executable, "-c", "print(hash('nbjobs'))"],
        env={**os.environ, "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path_job = prepared_job(
        notebook, ["import job_helper\nprint(job_helper.VALUE)"], "path", env={"PYTHONPATH": pythonpath}
    )
    # PYTHONHASHSEED is read when Python starts: a forked kernel cannot honour it, a plain one does.
    seed_job = prepared_job(notebook, ["print(hash('nbjobs'))"], "seed", env={"PYTHONHASHSEED": "123"})

    async def body(jobs: Jobs) -> list[AttemptResult]:
        return [await jobs.run(path_job), await jobs.run(path_job), await jobs.run(seed_job)]

    results = with_provider("zygote", tmp_path, body)
    assert all(r.outcome.state is JobState.SUCCEEDED for r in results), [r.outcome for r in results]
    for n in (1, 2):  # a spare kernel, then one forked on demand... or the other way round
        assert stdout_of(tmp_path / "jobs" / f"job-{n}" / "output.ipynb") == ["from the job path\n"]
    assert stdout_of(tmp_path / "jobs" / "job-3" / "output.ipynb") == [f"{expected_hash}\n"]


@pytest.mark.parametrize("ready", [0, 1])
def test_zygote_pins_every_kernel_thread_to_the_allocated_cpus(ready, tmp_path):
    cpu = sorted(os.sched_getaffinity(0))[-1]
    code = (
        "import os, glob\n"
        "print(sorted({open(p).read().split('Cpus_allowed_list:')[1].split()[0] "
        "for p in glob.glob('/proc/self/task/*/status')}), os.environ['CUDA_VISIBLE_DEVICES'] == '')"
    )

    async def main() -> str:
        provider = ZygoteProvider(resolve_kernel("python3"), ready=ready)
        try:
            await provider.warm()
            request = KernelRequest("python3", tmp_path, tmp_path / "kernel.log", allocation=Allocation(cpus=(cpu,)))
            kernel = await provider.start(request)
            try:
                return await printed_by(kernel.client, code)
            finally:
                await kernel.kill()
        finally:
            await provider.close()

    assert asyncio.run(main()) == f"['{cpu}'] True\n"


@pytest.mark.parametrize("ready", [0, 1])
def test_zygote_applies_the_address_space_backstop(ready, tmp_path):
    limit = 2 << 30
    code = "try:\n    block = bytearray(3 << 30)\nexcept MemoryError:\n    print('MemoryError')"

    async def main() -> str:
        provider = ZygoteProvider(resolve_kernel("python3"), ready=ready)
        try:
            await provider.warm()
            request = KernelRequest("python3", tmp_path, tmp_path / "kernel.log", address_space=limit)
            kernel = await provider.start(request)
            try:
                return await printed_by(kernel.client, code)
            finally:
                await kernel.kill()
        finally:
            await provider.close()

    assert asyncio.run(main()) == "MemoryError\n"


# --- choosing a provider ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "single_job", "kind", "ready"),
    [
        ("auto", False, ZygoteProvider, 2),
        ("auto", True, PlainProvider, None),  # a foreground run: nothing outlives the job
        ("zygote", True, ZygoteProvider, 0),
        ("pool", False, PoolProvider, 2),
        ("pool", True, PlainProvider, None),
        ("plain", False, PlainProvider, None),
    ],
)
def test_make_provider_follows_the_config(provider, single_job, kind, ready):
    config = KernelConfig(provider=provider, ready=2, preload=["decimal"])
    chosen = make_provider_for(config, resolve_kernel("python3"), single_job=single_job)
    assert type(chosen) is kind
    if ready is not None:
        assert chosen.ready == ready
    if kind is ZygoteProvider:
        assert chosen.preload == ["decimal"]


def test_make_provider_gives_plain_kernels_to_other_languages():
    r_kernel = KernelInfo(name="ir", language="r", argv=("R", "--slave", "-e", "IRkernel::main()", "{connection_file}"))
    assert type(make_provider_for(KernelConfig(provider="zygote"), r_kernel)) is PlainProvider
    assert type(make_provider_for(KernelConfig(), r_kernel)) is PlainProvider


def test_configured_providers_keep_one_provider_per_kernelspec(tmp_path):
    async def main() -> tuple[str, ...]:
        providers = ConfiguredProviders(KernelConfig(ready=1))
        try:
            outputs = []
            for _ in range(2):
                kernel = await providers.start(KernelRequest("python3", tmp_path, tmp_path / "kernel.log"))
                try:
                    outputs.append(await printed_by(kernel.client, "print('ok')"))
                finally:
                    await kernel.kill()
            assert list(providers.providers) == ["python3"]
            assert isinstance(providers.providers["python3"], ZygoteProvider)
            return tuple(outputs)
        finally:
            await providers.close()

    assert asyncio.run(main()) == ("ok\n", "ok\n")
