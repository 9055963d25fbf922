"""One attempt of a job on the host that runs it: kernel, cell loop, outputs.

This is what a backend calls on its target host. It reports state changes and
events through callbacks and returns what the attempt produced; it does not
know about the store, so the same code serves a foreground run, the local
server and a remote worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from nbjobs.events import EventSink, StreamText, fan_out
from nbjobs.kernels.base import KernelHandle, KernelProvider, KernelRequest
from nbjobs.notebook.results import collect_results
from nbjobs.notebook.runner import NotebookRunner, RunLimits, RunOutcome, prepare_for_run
from nbjobs.prepare import PreparedJob
from nbjobs.redact import Redactor
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.enforce import Enforcement, kill_tree
from nbjobs.resources.gpus import FAKE_PREFIX
from nbjobs.resources.monitor import UsageMonitor, exceeded_reason
from nbjobs.spec import JobState, format_size

StateCallback = Callable[[JobState], None]
KERNEL_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class AttemptPaths:
    """Where one attempt writes: its folder, output notebook, log and artifacts."""

    folder: Path
    output: Path

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def html(self) -> Path:
        return self.output.with_suffix(".html")


@dataclass
class AttemptResult:
    outcome: RunOutcome
    results: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    # summary, series (see nbjobs.resources.monitor), requested, allocation, enforcement
    usage: dict[str, Any] = field(default_factory=dict)


class LogWriter:
    """Appends the job's stdout/stderr to its log file as it arrives."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def __call__(self, event: Any) -> None:
        if isinstance(event, StreamText):
            self._file.write(event.text)

    def close(self) -> None:
        self._file.close()


def kernel_env(prepared: PreparedJob, job_id: int, number: int, paths: AttemptPaths) -> dict[str, str]:
    return {
        **prepared.spec.env,
        "NBJOBS_JOB_ID": str(job_id),
        "NBJOBS_ATTEMPT": str(number),
        "NBJOBS_ARTIFACTS": str(paths.artifacts),
    }


def list_artifacts(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class Attempt:
    """Runs attempt `number` of job `job_id`; `cancel()` from another task stops it."""

    def __init__(
        self,
        prepared: PreparedJob,
        *,
        job_id: int,
        number: int,
        paths: AttemptPaths,
        provider: KernelProvider,
        emit: EventSink | None = None,
        on_state: StateCallback | None = None,
        on_kernel: Callable[[int | None], None] | None = None,
        allocation: Allocation | None = None,
        sample_interval: float = 1.0,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.prepared = prepared
        self.allocation = allocation
        self.sample_interval = sample_interval
        self.job_id = job_id
        self.number = number
        self.paths = paths
        self.provider = provider
        self.emit = emit
        self.on_state = on_state or (lambda _state: None)
        self.on_kernel = on_kernel or (lambda _pid: None)
        # The kernel gets the secrets as environment variables; their values are redacted from
        # everything the attempt leaves: log, events, output notebook, HTML, results, reason.
        self.secrets = dict(secrets or {})
        self.redactor = Redactor(self.secrets)
        self.runner: NotebookRunner | None = None
        self._task: asyncio.Task[AttemptResult] | None = None
        self._stop: tuple[JobState, str] | None = None
        self.monitor: UsageMonitor | None = None
        self.enforcement: Enforcement | None = None

    def cancel(self, state: JobState = JobState.CANCELLED, reason: str = "cancelled") -> None:
        """Stop the attempt: the running cell is interrupted, then the kernel killed."""
        self._stop = self._stop or (state, reason)
        if self.runner is not None:
            self.runner.request_stop(state, reason)
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> AttemptResult:
        self._task = asyncio.current_task()
        self.paths.folder.mkdir(parents=True, exist_ok=True)
        self.paths.artifacts.mkdir(exist_ok=True)
        log = LogWriter(self.paths.log)
        kernel: KernelHandle | None = None
        started_at = time.monotonic()
        enforcement = self.enforcement = Enforcement.create(
            self.allocation, f"{self.job_id}-{self.number}", language=self.prepared.kernel.language or "python"
        )
        try:
            self.on_state(JobState.STARTING)
            request = KernelRequest(
                kernel_name=self.prepared.kernel.name,
                cwd=self.prepared.cwd,
                kernel_log=self.paths.folder / "kernel.log",
                env=kernel_env(self.prepared, self.job_id, self.number, self.paths) | self.secrets,
                allocation=self.allocation,
                cgroup=enforcement.cgroup,
                address_space=enforcement.address_space,
            )
            try:
                kernel = await self.provider.start(request, timeout=KERNEL_START_TIMEOUT)
            except asyncio.CancelledError:
                state, reason = self._stop or (JobState.CANCELLED, "cancelled")
                return self._result(RunOutcome(state, f"{reason} before the kernel was ready"))
            except Exception as exc:  # a kernel that cannot start is this attempt's failure
                return self._result(RunOutcome(JobState.KERNEL_DIED, f"kernel failed to start: {exc}"))
            self.on_kernel(kernel.pid)
            enforcement.attach(kernel.pid)
            self._start_monitor(kernel, enforcement)
            self.on_state(JobState.RUNNING)
            outcome = await self._execute(kernel, self.redactor.sink(fan_out([log, self.emit])), started_at)
            outcome = RunOutcome(outcome.state, self.redactor.text(outcome.reason), outcome.failed_cell)
        finally:
            log.close()
            if self.monitor is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.monitor.stop())
            if kernel is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(kernel.kill())
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(enforcement.close))
        results = self.redactor.value(collect_results(self.runner.nb)) if self.runner else {}
        if "html" in self.prepared.spec.outputs.formats and self.runner is not None:
            await asyncio.to_thread(write_html, self.redactor.notebook(self.runner.nb), self.paths.html)
        return self._result(outcome, results, list_artifacts(self.paths.artifacts))

    def _result(
        self, outcome: RunOutcome, results: dict[str, Any] | None = None, artifacts: list[str] | None = None
    ) -> AttemptResult:
        usage: dict[str, Any] = {
            "requested": self.prepared.spec.resources.model_dump(mode="json"),
            "allocation": (self.allocation or Allocation()).to_dict(),
            "enforcement": self.enforcement.mode if self.enforcement else "none",
        }
        if self.monitor is not None:
            usage.update(self.monitor.usage())
        return AttemptResult(outcome, results or {}, artifacts or [], usage)

    def _start_monitor(self, kernel: KernelHandle, enforcement: Enforcement) -> None:
        if kernel.pid is None:  # a provider that cannot tell: nothing to sample
            return
        allocation = enforcement.allocation
        self.monitor = UsageMonitor(
            kernel.pid,
            interval=self.sample_interval,
            memory_limit=allocation.memory,
            watchdog=enforcement.mode == "watchdog",
            cgroup=enforcement.group,
            gpus=any(not g.startswith(FAKE_PREFIX) for g in allocation.gpus),
            on_exceeded=lambda peak, limit: self._memory_exceeded(kernel, peak, limit),
        )
        self.monitor.start()

    def _memory_exceeded(self, kernel: KernelHandle, peak: int, limit: int) -> None:
        oom_killed = self.enforcement is not None and self.enforcement.oom_killed()
        self.cancel(JobState.MEMORY_EXCEEDED, exceeded_reason(peak, limit, oom_killed=oom_killed))
        if kernel.pid is not None:
            kill_tree(kernel.pid)  # now: a cell that allocates must not get the cancel grace period

    def _explain_end(self, state: JobState, reason: str) -> tuple[JobState, str] | None:
        """What the kernel connection cannot see: an OOM kill, or the address-space backstop."""
        enforcement, monitor = self.enforcement, self.monitor
        limit = self.allocation.memory if self.allocation else None
        if enforcement is None or limit is None or state is JobState.MEMORY_EXCEEDED:
            return None
        peak = monitor.peak_memory() if monitor is not None else 0
        if state is JobState.KERNEL_DIED and enforcement.oom_killed():
            if monitor is not None:
                monitor.exceeded = True
            return JobState.MEMORY_EXCEEDED, exceeded_reason(peak, limit, oom_killed=True)
        backstop = enforcement.address_space
        if state is JobState.FAILED and backstop is not None and "raised MemoryError" in reason:
            return JobState.MEMORY_EXCEEDED, (
                f"{reason}: it reached the {format_size(backstop)} address-space backstop of the "
                f"{format_size(limit)} memory limit (peak {format_size(peak)})"
            )
        return None

    async def _execute(self, kernel: KernelHandle, emit: EventSink, started_at: float) -> RunOutcome:
        spec = self.prepared.spec
        nb = copy.deepcopy(self.prepared.nb)  # a retry starts again from the prepared notebook
        prepare_for_run(nb)
        nb.metadata["nbjobs_run"] = {
            "job_id": self.job_id,
            "attempt": self.number,
            "name": spec.display_name,
            "parameters": spec.parameters,
            "kernel": self.prepared.kernel.name,
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(),
            "git": self.prepared.git,  # null outside a repository
        }
        limits = RunLimits(
            cell_timeout=spec.cell_timeout,
            job_timeout=spec.timeout,
            started_at=started_at,
            allow_errors=spec.allow_errors,
        )
        redact = self.redactor.notebook if self.redactor else None
        self.runner = NotebookRunner(
            nb, kernel, self.paths.output, emit, limits, explain=self._explain_end, redact=redact
        )
        if self._stop:
            self.runner.request_stop(*self._stop)
        try:
            outcome = await self.runner.run()
        except asyncio.CancelledError:  # cancelled between cells
            state, reason = self._stop or (JobState.CANCELLED, "cancelled")
            outcome = RunOutcome(state, reason)
        nb.metadata["nbjobs_run"].update(
            state=outcome.state.value, reason=outcome.reason, ended=datetime.now(UTC).isoformat()
        )
        self.runner.save()
        return outcome


def write_html(nb: Any, path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
