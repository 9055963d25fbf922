"""The queue gate: what the dispatcher runs before the queue policy decides.

A job with dependencies is created held (`jobs.hold = "dependencies"`), so the
policy never sees it. Each dispatcher pass, the gate:
1. evaluates every held job's run-if conditions (pure rules in `scheduler.dag`):
   still waiting (its queue reason says for whom), released (its parameters'
   `${task.result}` references filled in from the run's results), or ended as
   `skipped` with the reason; a skip is passed on to the jobs below it in the
   same pass, so a failure early in a deep chain settles the chain at once;
2. admits held sweep jobs while their sweep is under its max-parallel;
3. gives each pipeline run whose tasks have all ended its own end state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbjobs.pipelines.model import Pipeline
from nbjobs.scheduler import dag
from nbjobs.spec import JobState, RunIf
from nbjobs.store import Store, groups
from nbjobs.store import gates as q
from nbjobs.store.batch import HOLD_SWEEP

log = logging.getLogger(__name__)
FULL_SYNC_SECONDS = 60.0  # how often the gate reloads every held job instead of following events


@dataclass
class GateOutcome:
    released: list[int] = field(default_factory=list)  # now visible to the queue policy
    ended: list[int] = field(default_factory=list)  # skipped, or failed to resolve their parameters
    runs_ended: list[int] = field(default_factory=list)
    seconds: float = 0.0


def sweep_reason(sweep_id: int | None, limit: int) -> str:
    return f"sweep {sweep_id} at its max-parallel {limit}"


class QueueGate:
    """Holds and releases queued jobs by their dependencies and sweep limits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._definitions: dict[int, tuple[Pipeline, dict[str, Any]]] = {}  # run id -> (pipeline, params)
        self._held: dict[int, q.HeldJob] = {}  # held jobs as last seen, with their upstreams' states
        self._below: dict[int, set[int]] = {}  # upstream id -> held jobs waiting on it
        self._last_event = 0
        self._synced_at = -math.inf
        self.total_seconds = 0.0  # time spent in passes, for the pipeline benchmark

    def pass_once(self) -> GateOutcome:
        started = time.perf_counter()
        outcome = GateOutcome()
        self._dependencies(outcome)
        self._sweeps(outcome)
        self._conclude_runs(outcome)
        outcome.seconds = time.perf_counter() - started
        self.total_seconds += outcome.seconds
        return outcome

    # ------------------------------------------------------------ dependencies

    def _dependencies(self, outcome: GateOutcome) -> None:
        """Evaluate the held jobs whose upstreams changed since the last pass (all, on a full sync)."""
        dirty = self._sync()
        held = self._held
        reasons: dict[int, str] = {}
        todo = list(dirty)
        while todo:
            job = held.get(todo.pop())
            if job is None:
                continue
            groups_ = {
                run_if: [dag.Upstream(u.job_id, u.name, u.state, u.reason) for u in ups]
                for run_if, ups in job.groups.items()
            }
            decision = dag.evaluate(groups_)
            if decision.verdict is dag.Verdict.WAIT:
                if decision.reason != job.queue_reason:
                    reasons[job.id] = job.queue_reason = decision.reason or ""
                continue
            self._forget(job.id)
            reasons.pop(job.id, None)
            if decision.verdict is dag.Verdict.RELEASE:
                ended_as = self._release(job)
                if ended_as is None:
                    outcome.released.append(job.id)
                    continue
                state, reason = ended_as
            else:
                state, reason = JobState.SKIPPED, decision.reason
                if not self.store.transition(job.id, state, reason, expect=(JobState.QUEUED,), hold=None):
                    continue
            outcome.ended.append(job.id)
            # Jobs below see the end in this same pass, so a skip runs down a chain at once.
            todo.extend(self._upstream_changed(job.id, state, reason))
        q.set_reasons(self.store, reasons)

    def _sync(self) -> set[int]:
        """Bring the held jobs up to date; the ids to evaluate.

        Incremental: the state events recorded since the last pass say which
        upstreams changed (and which jobs were queued held), so a pass costs what
        changed, not what waits. A full reload now and then heals anything missed
        (on PostgreSQL, an event committed out of id order).
        """
        now = time.monotonic()
        if now - self._synced_at > FULL_SYNC_SECONDS:
            self._last_event = q.last_event_id(self.store)  # before the reload: nothing falls between
            self._held = q.held_for_dependencies(self.store)
            self._below = {}
            for job in self._held.values():
                self._index(job)
            self._synced_at = now
            return set(self._held)
        events = q.events_since(self.store, self._last_event)
        if not events:
            return set()
        self._last_event = events[-1][0]
        dirty: set[int] = set()
        queued = []
        for _, job_id, state, reason in events:
            if state is JobState.QUEUED:
                if job_id not in self._held:
                    queued.append(job_id)  # new, requeued (repair) or retried: held or not, we'll see
            elif job_id in self._held:
                self._forget(job_id)  # claimed, cancelled or ended by someone else
            dirty.update(self._upstream_changed(job_id, state, reason))
        if queued:
            for job in q.held_for_dependencies(self.store, queued).values():
                self._held[job.id] = job
                self._index(job)
                dirty.add(job.id)
        return dirty

    def _index(self, job: q.HeldJob) -> None:
        for ups in job.groups.values():
            for up in ups:
                self._below.setdefault(up.job_id, set()).add(job.id)

    def _forget(self, job_id: int) -> None:
        job = self._held.pop(job_id, None)
        if job is not None:
            for ups in job.groups.values():
                for up in ups:
                    self._below.get(up.job_id, set()).discard(job_id)

    def _upstream_changed(self, job_id: int, state: JobState, reason: str | None) -> list[int]:
        """Record an upstream's new state in the held jobs below it; those jobs."""
        waiters = [w for w in self._below.get(job_id, ()) if w in self._held]
        for waiter in waiters:
            for ups in self._held[waiter].groups.values():
                for up in ups:
                    if up.job_id == job_id:
                        up.state, up.reason = state, reason
        return waiters

    def _release(self, job: q.HeldJob) -> tuple[JobState, str] | None:
        """Let a job go; (state, reason) if it ended instead (a reference could not be filled)."""
        spec = None
        if job.run_id is not None and job.task is not None:
            try:
                spec = self._resolved_spec(job.run_id, job.task, job.id)
            except KeyError as exc:
                reason = f"could not fill in its parameters: {exc.args[0]}"
                if self.store.transition(job.id, JobState.FAILED, reason, expect=(JobState.QUEUED,), hold=None):
                    return JobState.FAILED, reason
                return None
        hold, reason = None, None
        limit = q.sweep_limit(self.store, job.sweep_id) if job.sweep_id is not None else None
        if limit:
            hold, reason = HOLD_SWEEP, sweep_reason(job.sweep_id, limit)
        q.release(self.store, job.id, hold=hold, reason=reason, spec=spec)
        return None

    def _resolved_spec(self, run_id: int, task: str, job_id: int) -> dict[str, Any] | None:
        """The job's spec with `${task.result}` filled in from the run's results; None if it has none."""
        pipeline, run_params = self._definition(run_id)
        template = pipeline.tasks[task].params
        refs = [r for v in template.values() for r in dag.find_references(v) if r.source != dag.PARAMS_SOURCE]
        if not refs:
            return None
        tasks = q.task_results(self.store, run_id, sorted({r.source for r in refs}))

        def lookup(ref: dag.Reference) -> Any:
            if ref.source == dag.PARAMS_SOURCE:
                return dag.follow_path(run_params[ref.name], ref)
            state, results = tasks[ref.source]
            if ref.name not in results:
                recorded = ", ".join(sorted(results)) or "nothing"
                raise KeyError(
                    f"{ref.text}: {ref.source} ({state.value}) recorded no result {ref.name!r} "
                    f"(it recorded: {recorded})"
                )
            return dag.follow_path(results[ref.name], ref)

        params = {name: dag.resolve(value, lookup) for name, value in template.items()}
        spec = dict(q.job_spec(self.store, job_id))
        spec["parameters"] = {**spec.get("parameters", {}), **params}
        return spec

    def _definition(self, run_id: int) -> tuple[Pipeline, Mapping[str, Any]]:
        if run_id not in self._definitions:  # a run's definition never changes: read it once
            run = groups.get_run(self.store, run_id)
            self._definitions[run_id] = (Pipeline.model_validate(run.pipeline), dict(run.params))
        return self._definitions[run_id]

    # ------------------------------------------------------------ sweeps

    def _sweeps(self, outcome: GateOutcome) -> None:
        for sweep_id, free in q.sweep_slots(self.store):
            outcome.released.extend(q.admit_from_sweep(self.store, sweep_id, free))

    # ------------------------------------------------------------ runs

    def _conclude_runs(self, outcome: GateOutcome) -> None:
        for run_id in q.runs_to_conclude(self.store):
            run = groups.get_run(self.store, run_id)
            tasks = groups.run_tasks(self.store, run_id)
            names = {t.id: t.task or t.name for t in tasks}
            views = {}
            for t in tasks:
                inside = [(names[u], run_if) for u, run_if in t.upstreams if u in names]  # not a previous run's
                run_if = inside[0][1] if inside else RunIf.ALL_SUCCEEDED
                views[names[t.id]] = dag.TaskView(t.state, t.reason, tuple(u for u, _ in inside), run_if)
            state, reason = dag.run_outcome(views, cancelled=run.cancel_requested is not None)
            if state.is_final and groups.set_run_state(self.store, run_id, state.value, reason, expect=("running",)):
                outcome.runs_ended.append(run_id)
                self._definitions.pop(run_id, None)
                log.info("pipeline run %s ended %s: %s", run_id, state.value, reason)
