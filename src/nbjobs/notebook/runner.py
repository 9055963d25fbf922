"""Execute one notebook on a given kernel: the cell loop.

The output notebook is the record: it is saved when the run starts and after
every cell (and every few seconds during a long one), atomically, so a crash
leaves a valid partial notebook. Cells that never ran keep no outputs and
the status `pending`; the failing cell is marked and a banner at the top links
to it. nbclient executes each cell (outputs, display updates, widgets); this
module owns the loop, the limits and the end state.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from nbjobs.events import CellFinished, CellSkipped, CellStarted, EventSink, StreamText
from nbjobs.kernels.base import KernelHandle
from nbjobs.notebook.io import save_notebook
from nbjobs.spec import JobState

SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"
ERROR_ANCHOR = "nbjobs-error-cell"
BANNER_TAG = "nbjobs-error-banner"
MARKER_TAG = "nbjobs-error-marker"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
AUTOSAVE_SECONDS = 5.0
CANCEL_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class RunLimits:
    cell_timeout: float | None = None
    job_timeout: float | None = None
    started_at: float | None = None  # time.monotonic() when the job's clock started
    allow_errors: bool = False

    @property
    def deadline(self) -> float | None:
        if self.job_timeout is None:
            return None
        return (self.started_at or time.monotonic()) + self.job_timeout


@dataclass(frozen=True)
class RunOutcome:
    state: JobState
    reason: str
    failed_cell: int | None = None


# Given how a run is about to end (state, reason), a better account of it, or None. The caller
# may know more than the kernel connection shows: e.g. that the kernel died from an OOM kill.
ExplainEnd = Callable[[JobState, str], tuple[JobState, str] | None]


def now() -> datetime:
    return datetime.now(UTC)


def prepare_for_run(nb: NotebookNode) -> None:
    """Clear what an earlier run left, so nothing stale is shown as this run's result."""
    nb.cells = [c for c in nb.cells if not set(c.metadata.get("tags", [])) & {BANNER_TAG, MARKER_TAG}]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata["nbjobs"] = {"index": index, "status": "pending"}


class _Client(NotebookClient):
    """nbclient's cell execution, with live stream lines forwarded as events."""

    def __init__(self, nb: NotebookNode, emit: EventSink, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self._emit = emit
        self.dirty = False

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> Any:
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "stream":
            self._emit(StreamText(cell_index, content.get("name", "stdout"), content.get("text", "")))
        elif kind == "error":
            text = ANSI.sub("", "\n".join(content.get("traceback", []))) + "\n"
            self._emit(StreamText(cell_index, "stderr", text))
        if kind in ("stream", "display_data", "execute_result", "error", "update_display_data"):
            self.dirty = True
        return super().process_message(msg, cell, cell_index)


class NotebookRunner:
    """Runs the code cells of `nb` in order on `kernel`, saving to `output_path`."""

    def __init__(
        self,
        nb: NotebookNode,
        kernel: KernelHandle,
        output_path: Path,
        emit: EventSink,
        limits: RunLimits,
        explain: ExplainEnd | None = None,
        redact: Callable[[NotebookNode], NotebookNode] | None = None,
    ) -> None:
        self.nb = nb
        self.redact = redact  # applied to the copy that is saved (secret values out)
        self.kernel = kernel
        self.output_path = output_path
        self.emit = emit
        self.limits = limits
        self.explain = explain
        self.stop_request: tuple[JobState, str] | None = None
        self._client = _Client(
            nb,
            emit,
            allow_errors=limits.allow_errors,
            interrupt_on_timeout=False,
            # Our own `metadata.nbjobs` holds each cell's times: nbclient's would only add volatile keys.
            record_timing=False,
            timeout_func=self._cell_timeout,
            # After a cell's reply, how long its last outputs may take to arrive: a burst of
            # thousands of lines on a busy machine needs more than a few seconds, and the
            # wait ends as soon as the kernel says it is idle, so a long bound costs nothing.
            iopub_timeout=30,
        )
        self._client.kc = kernel.client

    def request_stop(self, state: JobState, reason: str) -> None:
        """Ask for the run to end as `state`; the caller then cancels the run task."""
        if self.stop_request is None:
            self.stop_request = (state, reason)

    def _cell_timeout(self, cell: NotebookNode) -> float | None:
        limits = [t for t in (self.limits.cell_timeout, self._remaining()) if t is not None]
        # nbclient treats 0 as "no timeout": never hand it a non-positive number.
        return max(min(limits), 0.001) if limits else None

    def _remaining(self) -> float | None:
        deadline = self.limits.deadline
        return None if deadline is None else deadline - time.monotonic()

    def save(self) -> None:
        self._client.dirty = False
        save_notebook(self.redact(self.nb) if self.redact else self.nb, self.output_path)

    async def _autosave(self) -> None:
        while True:
            await asyncio.sleep(AUTOSAVE_SECONDS)
            # Saved on the loop thread: nbclient mutates the notebook there too.
            if self._client.dirty:
                self.save()

    async def run(self) -> RunOutcome:
        self.save()
        autosave = asyncio.create_task(self._autosave())
        try:
            return await self._run_cells()
        finally:
            autosave.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await autosave
            self.save()

    async def _run_cells(self) -> RunOutcome:
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code":
                continue
            meta = cell.metadata["nbjobs"]
            if SKIP_TAG in cell.metadata.get("tags", []) or not cell.source.strip():
                meta["status"] = "skipped"
                self.emit(CellSkipped(index))
                continue
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return self._fail(index, JobState.TIMED_OUT, self._job_timeout_reason(index, before=True), ran=False)
            started = now()
            meta.update(status="running", started=started.isoformat())
            self.emit(CellStarted(index, started))
            self.save()  # a crash from here on shows this cell as running, never completed
            outcome = await self._execute(index, cell, started)
            if outcome is not None:
                return outcome
            ended = now()
            meta.update(status="completed", ended=ended.isoformat(), duration=(ended - started).total_seconds())
            self.emit(CellFinished(index, "completed", started, ended))
            self.save()
        return RunOutcome(JobState.SUCCEEDED, "all cells completed")

    async def _execute(self, index: int, cell: NotebookNode, started: datetime) -> RunOutcome | None:
        """Run one cell; None if it completed, else the run's outcome."""
        try:
            await self._client.async_execute_cell(cell, index)
        except CellExecutionError as exc:
            name = f"{exc.ename}: {exc.evalue}" if exc.ename else str(exc).splitlines()[0]
            return self._fail(index, JobState.FAILED, f"cell {index} raised {name}", started=started)
        except CellTimeoutError:
            await self._stop_kernel()
            remaining = self._remaining()
            if remaining is not None and remaining <= 0.01:
                reason = self._job_timeout_reason(index)
            else:
                reason = f"cell {index} exceeded its {self.limits.cell_timeout:g} s cell timeout"
            return self._fail(index, JobState.TIMED_OUT, reason, started=started)
        except DeadKernelError:
            if self.stop_request:  # killed on purpose (e.g. memory limit)
                state, reason = self.stop_request
                return self._fail(index, state, f"{reason} during cell {index}", started=started)
            status = await self.kernel.exit_status()
            how = f" (exit code {status})" if status is not None and status >= 0 else ""
            if status is not None and status < 0:
                how = f" (killed by signal {-status})"
            return self._fail(
                index, JobState.KERNEL_DIED, f"kernel died while running cell {index}{how}", started=started
            )
        except asyncio.CancelledError:
            state, reason = self.stop_request or (JobState.CANCELLED, "cancelled")
            await self._stop_kernel()
            return self._fail(index, state, f"{reason} during cell {index}", started=started)
        return None

    async def _stop_kernel(self) -> None:
        """Interrupt the running cell and give it a moment to unwind; the caller kills the kernel."""
        with contextlib.suppress(Exception):
            if not await self.kernel.is_alive():  # killed already (e.g. over its memory limit): nothing to drain
                return
            await self.kernel.interrupt()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain_until_idle(), CANCEL_GRACE_SECONDS)

    async def _drain_until_idle(self) -> None:
        while True:
            msg = await self.kernel.client.get_iopub_msg()
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                return

    def _job_timeout_reason(self, index: int, before: bool = False) -> str:
        where = f"before cell {index} started" if before else f"in cell {index}"
        return f"job exceeded its {self.limits.job_timeout:g} s timeout {where}"

    def _fail(
        self, index: int, state: JobState, reason: str, *, started: datetime | None = None, ran: bool = True
    ) -> RunOutcome:
        if self.explain is not None and (better := self.explain(state, reason)) is not None:
            state, reason = better
        cell = self.nb.cells[index]
        meta = cell.metadata["nbjobs"]
        status = "failed" if state is JobState.FAILED else state.value
        ended = now()
        if ran and started is not None:
            meta.update(status=status, ended=ended.isoformat(), duration=(ended - started).total_seconds())
            self.emit(CellFinished(index, status, started, ended))
        meta["error"] = reason
        self._mark_error(index, state, reason)
        return RunOutcome(state, reason, failed_cell=index)

    def _mark_error(self, index: int, state: JobState, reason: str) -> None:
        """A banner at the top linking to a marker just before the failing cell."""
        marker = nbformat.v4.new_markdown_cell(
            f'<a id="{ERROR_ANCHOR}"></a>\n**nbjobs: the job stopped here** ({state.value}): {reason}',
            metadata={"tags": [MARKER_TAG]},
        )
        marker.id = MARKER_TAG  # fixed ids: two runs that end alike write the same notebook
        banner = nbformat.v4.new_markdown_cell(
            f"**nbjobs: this job ended `{state.value}`**: {reason}. "
            f"[Go to the cell where it stopped](#{ERROR_ANCHOR}). "
            "Cells after it did not run.",
            metadata={"tags": [BANNER_TAG]},
        )
        banner.id = BANNER_TAG
        if (self.nb.get("nbformat", 4), self.nb.get("nbformat_minor", 0)) < (4, 5):
            del marker["id"], banner["id"]  # cell ids are invalid before nbformat 4.5
        self.nb.cells.insert(index, marker)
        self.nb.cells.insert(0, banner)
