"""Pipeline runs: start one (every task a queued job with its edges), look, cancel, repair.

A run's tasks are ordinary jobs with a run id and a task name; the dispatcher's
gate (`nbjobs.pipelines.gate`) releases each when its upstreams allow it and
gives the run its end state. Repair requeues the same job rows as new attempts,
so every task keeps its attempt history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from nbjobs.errors import Conflict
from nbjobs.pipelines.checks import Plan, plan_pipeline
from nbjobs.pipelines.model import Pipeline
from nbjobs.scheduler import dag
from nbjobs.spec import END_STATES, JobState, RunIf
from nbjobs.store import groups
from nbjobs.store.batch import HOLD_DEPENDENCIES, NewJob, insert_jobs
from nbjobs.store.repository import utcnow

if TYPE_CHECKING:
    from nbjobs.service import JobService

REPAIRED_STATES = frozenset(dag.FAILURE_STATES | {JobState.SKIPPED})


class PipelineService:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store

    # ------------------------------------------------------------------ start

    def plan(self, pipeline: Pipeline, params: Mapping[str, Any] | None = None) -> Plan:
        """Every check, as at run time (the server's pools and capacity included)."""
        return plan_pipeline(pipeline, params, check=self.jobs.validate)

    def start(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None,
        owner: str,
        source: str | None = None,
    ) -> dict[str, Any]:
        plan = self.plan(pipeline, params)
        with self.store.session() as s, s.begin():
            run_id = self.create(s, plan, owner, source)
        self.jobs.dispatcher.wake()
        return self.view(run_id) | {"warnings": plan.warnings}

    def create(
        self,
        s: Session,
        plan: Plan,
        owner: str,
        source: str | None,
        *,
        schedule_id: int | None = None,
        idempotency_key: str | None = None,
        after: Sequence[int] = (),
    ) -> int:
        """Store a checked run and its tasks in session `s`; `after`: jobs its first tasks wait for."""
        run_id = groups.add_run(
            s,
            name=plan.pipeline.name,
            owner=owner,
            pipeline=plan.pipeline.to_json(),
            params=plan.params,
            source=source,
            schedule_id=schedule_id,
            idempotency_key=idempotency_key,
        )
        position = {task.name: i for i, task in enumerate(plan.tasks)}
        new = []
        for task in plan.tasks:
            waits_for_previous = [(job_id, RunIf.ALL_DONE) for job_id in after] if not task.upstreams else []
            held = bool(task.upstreams or waits_for_previous)
            new.append(
                NewJob(
                    spec=task.spec,
                    run_id=run_id,
                    task=task.name,
                    hold=HOLD_DEPENDENCIES if held else None,
                    queue_reason="waiting for its upstream tasks" if held else None,
                    upstream_positions=[(position[up], task.run_if) for up in task.upstreams],
                    upstream_ids=waits_for_previous,
                )
            )
        insert_jobs(s, new, owner=owner, host=self.jobs.host, now=utcnow())
        return run_id

    # ------------------------------------------------------------------- look

    def view(self, run_id: int) -> dict[str, Any]:
        """A run with its tasks (upstreams first), their states, results and the graph's levels."""
        run = groups.get_run(self.store, run_id)
        tasks = groups.run_tasks(self.store, run_id)
        names = {t.id: t.task or t.name for t in tasks}
        graph = {names[t.id]: [names[u] for u, _ in t.upstreams if u in names] for t in tasks}
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        return {
            "id": run.id,
            "name": run.name,
            "state": run.state,
            "reason": run.reason,
            "owner": run.owner,
            "created": run.created,
            "ended": run.ended,
            "params": run.params,
            "source": run.source,
            "schedule_id": run.schedule_id,
            "counts": counts,
            "levels": dag.levels(graph),
            "tasks": [
                {
                    "name": names[t.id],
                    "job_id": t.id,
                    "state": t.state.value,
                    "reason": t.reason,
                    "queue_reason": t.queue_reason,
                    "depends_on": graph[names[t.id]],
                    "run_if": next((r.value for u, r in t.upstreams if u in names), RunIf.ALL_SUCCEEDED.value),
                    "attempts": t.attempt,
                    "parameters": t.parameters,
                    "results": t.results,
                    "started": t.started,
                    "ended": t.ended,
                    "duration": t.duration,
                }
                for t in tasks
            ],
        }

    def list(self, limit: int = 50, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest runs (only `owner`'s, when given), each with its tasks counted by state."""
        return [
            {
                "id": run.id,
                "name": run.name,
                "owner": run.owner,
                "state": run.state,
                "reason": run.reason,
                "created": run.created,
                "ended": run.ended,
                "tasks": sum(counts.values()),
                "counts": counts,
            }
            for run, counts in groups.list_runs(self.store, limit, owner)
        ]

    # ---------------------------------------------------------------- control

    async def cancel(self, run_id: int, reason: str = "cancelled by user") -> dict[str, Any]:
        """Cancel every unfinished task; the run ends `cancelled` once they have all ended."""
        run = groups.get_run(self.store, run_id)
        if run.state != dag.RunState.RUNNING.value:
            raise Conflict(f"Pipeline run {run_id} has already ended ({run.state}); there is nothing to cancel.")
        groups.request_run_cancel(self.store, run_id, reason)
        for task in groups.run_tasks(self.store, run_id):
            if not task.state.is_final:
                with contextlib.suppress(Conflict):  # it ended meanwhile
                    await self.jobs.cancel(task.id, reason)
        self.jobs.dispatcher.wake()
        return self.view(run_id)

    def repair(self, run_id: int) -> dict[str, Any]:
        """Run failed, cancelled and skipped tasks again, and every task below them, in the same run.

        Succeeded tasks above them keep their results, which the requeued tasks use.
        """
        run = groups.get_run(self.store, run_id)
        if run.state == dag.RunState.RUNNING.value:
            raise Conflict(
                f"Pipeline run {run_id} is still running; repair it once it has ended "
                f"(or cancel it first: `nbjobs pipeline cancel {run_id}`)."
            )
        tasks = groups.run_tasks(self.store, run_id)
        names = {t.id: t.task or t.name for t in tasks}
        graph = {names[t.id]: [names[u] for u, _ in t.upstreams if u in names] for t in tasks}
        broken = [names[t.id] for t in tasks if t.state in REPAIRED_STATES]
        if not broken:
            raise Conflict(f"Pipeline run {run_id} has nothing to repair: every task succeeded.")
        redo = dag.descendants(graph, broken)
        by_name = {names[t.id]: t for t in tasks}
        # Upstreams first: a requeued task must never see its upstream still in its old failed state.
        for name in dag.topological_order(graph):
            if name not in redo:
                continue
            task = by_name[name]
            self.store.transition(
                task.id,
                JobState.QUEUED,
                "repair requested",
                expect=END_STATES,
                hold=HOLD_DEPENDENCIES if task.upstreams else None,
                queue_reason="waiting for its upstream tasks" if task.upstreams else None,
                not_before=None,
                cancel_requested=None,
            )
        groups.request_run_cancel(self.store, run_id, None)
        groups.set_run_state(self.store, run_id, dag.RunState.RUNNING.value, f"repairing {len(redo)} tasks")
        self.jobs.dispatcher.wake()
        return self.view(run_id) | {"repaired": sorted(redo, key=list(graph).index)}
