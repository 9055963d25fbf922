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
        held = q.held_for_dependencies(self.store)
        if not held:
            return
        below: dict[int, list[int]] = {}  # upstream id -> held jobs waiting on it
        for job in held.values():
            for ups in job.groups.values():
                for up in ups:
                    below.setdefault(up.job_id, []).append(job.id)
        reasons: dict[int, str] = {}
        todo = list(held)
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
                    reasons[job.id] = decision.reason or ""
                continue
            del held[job.id]
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
            for waiter in below.get(job.id, ()):
                if waiter in held:
                    for ups in held[waiter].groups.values():
                        for up in ups:
                            if up.job_id == job.id:
                                up.state, up.reason = state, reason
                    todo.append(waiter)
        q.set_reasons(self.store, reasons)

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
        tasks = {t.task: t for t in groups.run_tasks(self.store, run_id) if t.task}

        def lookup(ref: dag.Reference) -> Any:
            if ref.source == dag.PARAMS_SOURCE:
                return dag.follow_path(run_params[ref.name], ref)
            upstream = tasks[ref.source]
            if ref.name not in upstream.results:
                recorded = ", ".join(sorted(upstream.results)) or "nothing"
                raise KeyError(
                    f"{ref.text}: {ref.source} ({upstream.state.value}) recorded no result {ref.name!r} "
                    f"(it recorded: {recorded})"
                )
            return dag.follow_path(upstream.results[ref.name], ref)

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
