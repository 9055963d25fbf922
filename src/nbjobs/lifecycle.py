"""A job's life in the store: beginning an attempt, recording its progress, concluding it.

Shared by the foreground run (`nbjobs run`) and every backend, so a job's record
looks the same whoever ran it: the same states, the same retry decisions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nbjobs.attempt import AttemptPaths, AttemptResult
from nbjobs.config import Settings
from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event
from nbjobs.prepare import PreparedJob, render_output_path
from nbjobs.spec import JobSpec, JobState
from nbjobs.store import Store
from nbjobs.store.repository import utcnow

ACTIVE = (JobState.STARTING, JobState.RUNNING)


class StoreRecorder:
    """Writes cell progress of one attempt into the store as it happens."""

    def __init__(self, store: Store, job_id: int, attempt: int) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt

    def __call__(self, event: Event) -> None:
        match event:
            case CellStarted(index=i, at=at):
                self.store.update_cell(self.job_id, self.attempt, i, "running", started=at)
            case CellFinished(index=i, status=status, started=started, ended=ended):
                self.store.update_cell(self.job_id, self.attempt, i, status, started=started, ended=ended)
            case CellSkipped(index=i):
                self.store.update_cell(self.job_id, self.attempt, i, "skipped")


def code_cell_indexes(prepared: PreparedJob) -> list[int]:
    return [i for i, c in enumerate(prepared.nb.cells) if c.cell_type == "code"]


def begin_attempt(
    store: Store, settings: Settings, prepared: PreparedJob, job_id: int, number: int, host: str
) -> AttemptPaths:
    """Create attempt `number`'s folder and row (all cells pending); return its paths."""
    folder = settings.attempt_dir(job_id, number)
    paths = AttemptPaths(
        folder=folder,
        output=render_output_path(prepared, job_id=job_id, attempt=number, default=folder / "output.ipynb"),
    )
    folder.mkdir(parents=True, exist_ok=True)
    store.begin_attempt(
        job_id, number, host=host, output=str(paths.output), log=str(paths.log), cells=code_cell_indexes(prepared)
    )
    return paths


def state_recorder(store: Store, job_id: int) -> Callable[[JobState], None]:
    """The `on_state` callback of an attempt: starting and running, in that order only."""
    expected = {JobState.STARTING: (JobState.QUEUED,), JobState.RUNNING: (JobState.STARTING,)}

    def on_state(state: JobState) -> None:
        store.transition(job_id, state, expect=expected.get(state))

    return on_state


@dataclass(frozen=True)
class Conclusion:
    state: JobState  # the job's state now: an end state, or QUEUED for a retry
    retry_at: datetime | None = None


def conclude_attempt(
    store: Store, spec: JobSpec, job_id: int, number: int, result: AttemptResult, paths: AttemptPaths | None
) -> Conclusion:
    """Store what attempt `number` produced and decide: end the job, or queue a retry."""
    outcome = result.outcome
    store.finish_attempt(job_id, number, results=result.results, artifacts=result.artifacts, usage=result.usage)
    retry = spec.retry
    if number < retry.attempts and outcome.state in retry.on:
        # Compare-and-set both steps: a job another writer ended meanwhile (a cancel, a second
        # server recovering it) is left as that writer left it, never queued again behind its back.
        if not store.transition(job_id, outcome.state, outcome.reason, expect=ACTIVE):
            return Conclusion(store.get(job_id).state)
        delay = retry.delay_before(number + 1)
        retry_at = utcnow() + timedelta(seconds=delay)
        reason = f"retry {number + 1}/{retry.attempts} in {delay:g} s after {outcome.state.value}: {outcome.reason}"
        store.transition(job_id, JobState.QUEUED, reason, expect=(outcome.state,), not_before=retry_at)
        if paths is not None:
            keep_attempt_output(store, job_id, number, paths)
        return Conclusion(JobState.QUEUED, retry_at)
    store.transition(job_id, outcome.state, outcome.reason, expect=ACTIVE)
    return Conclusion(outcome.state)


def keep_attempt_output(store: Store, job_id: int, number: int, paths: AttemptPaths) -> None:
    """An output path shared by all attempts: move this attempt's notebook into its own folder."""
    if paths.output.parent == paths.folder or not paths.output.exists():
        return
    kept = paths.folder / "output.ipynb"
    shutil.move(paths.output, kept)
    store.set_attempt_output(job_id, number, str(kept))
