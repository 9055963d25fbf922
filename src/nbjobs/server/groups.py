"""HTTP routes for groups of jobs: pipelines, sweeps, schedules and batch submit.

Mounted by `create_app`; like every route they need the bearer token, and the
app's error handlers turn refusals into 400/404/409/422 with one paragraph.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from nbjobs.errors import NotFound
from nbjobs.pipelines.model import Pipeline
from nbjobs.pipelines.runs import PipelineService
from nbjobs.pipelines.schedules import ScheduleRequest, ScheduleService
from nbjobs.pipelines.submit import submit_batch
from nbjobs.pipelines.sweep_table import sweep_csv, sweep_rows
from nbjobs.pipelines.sweeps import SweepService
from nbjobs.server.app import User
from nbjobs.server.users import UserInfo
from nbjobs.service import JobService
from nbjobs.store.groups import no_run, no_sweep
from nbjobs.store.schedules import no_schedule

RecordId = Annotated[int, Path(ge=1, le=2**62, description="A record id")]


def visible(view: dict[str, Any], who: UserInfo, missing: str) -> dict[str, Any]:
    """A pipeline run, sweep or schedule only for its owner (and admins); 404 for anyone else.

    `missing` is what a missing one is answered with: another user's reads the same, so it leaks nothing.
    """
    if not who.can_see(view["owner"]):
        raise NotFound(missing)
    return view


def owner_filter(who: UserInfo) -> str | None:
    """Whose groups a list shows: an admin's, everyone's."""
    return None if who.is_admin else who.name


def only_visible(views: list[dict[str, Any]], who: UserInfo) -> list[dict[str, Any]]:
    return [v for v in views if who.can_see(v["owner"])]


class PipelineRequest(BaseModel):
    pipeline: Pipeline
    params: dict[str, Any] = Field(default_factory=dict, description="Run parameters (`${params.NAME}`)")
    source: str | None = Field(None, description="The pipeline file, for the record")


class SweepRequest(BaseModel):
    spec: dict[str, Any] = Field(description="The job spec every element shares (its parameters fixed)")
    axes: dict[str, list[Any]] = Field(description="Parameter name -> the values it takes")
    mode: Literal["grid", "zip"] = "grid"
    max_parallel: int | None = Field(None, ge=1, description="Most elements running at once")


class BatchRequest(BaseModel):
    specs: list[dict[str, Any]] = Field(description="Job specs; all are stored, or none")


def groups_router(service: JobService, schedules: ScheduleService | None = None) -> APIRouter:
    router = APIRouter(prefix="/api")
    pipelines = PipelineService(service)
    sweeps = SweepService(service)
    schedules = schedules or ScheduleService(service)

    # ------------------------------------------------------------ pipelines

    @router.post("/pipelines/validate")
    def validate_pipeline(body: PipelineRequest, _: User) -> dict[str, Any]:
        plan = pipelines.plan(body.pipeline, body.params)
        return {
            "ok": True,
            "name": body.pipeline.name,
            "params": plan.params,
            "levels": plan.levels,
            "warnings": plan.warnings,
        }

    @router.post("/pipelines/runs", status_code=201)
    def start_run(body: PipelineRequest, who: User) -> dict[str, Any]:
        return pipelines.start(body.pipeline, body.params, who.name, body.source)

    @router.get("/pipelines/runs")
    def list_runs(who: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return only_visible(pipelines.list(limit, owner_filter(who)), who)

    @router.get("/pipelines/runs/{run_id}")
    def get_run(run_id: RecordId, who: User) -> dict[str, Any]:
        return visible(pipelines.view(run_id), who, no_run(run_id))

    @router.post("/pipelines/runs/{run_id}/cancel")
    async def cancel_run(run_id: RecordId, who: User) -> dict[str, Any]:
        visible(pipelines.view(run_id), who, no_run(run_id))
        return await pipelines.cancel(run_id)

    @router.post("/pipelines/runs/{run_id}/repair")
    def repair_run(run_id: RecordId, who: User) -> dict[str, Any]:
        visible(pipelines.view(run_id), who, no_run(run_id))
        return pipelines.repair(run_id)

    # ------------------------------------------------------------ sweeps

    @router.post("/sweeps", status_code=201)
    def create_sweep(body: SweepRequest, who: User) -> dict[str, Any]:
        return sweeps.create(body.spec, body.axes, who.name, mode=body.mode, max_parallel=body.max_parallel)

    @router.get("/sweeps")
    def list_sweeps(who: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return only_visible(sweeps.list(limit, owner_filter(who)), who)

    @router.get("/sweeps/{sweep_id}")
    def get_sweep(sweep_id: RecordId, who: User) -> dict[str, Any]:
        return visible(sweeps.view(sweep_id), who, no_sweep(sweep_id))

    @router.get(
        "/sweeps/{sweep_id}/results.csv",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}, "description": "One row per element"}},
    )
    def sweep_results_csv(
        sweep_id: RecordId,
        who: User,
        sort: Annotated[str | None, Query(max_length=200, description="A column; `-` in front: descending")] = None,
    ) -> Response:
        """The sweep's table: index, job, each parameter, state, each result, duration_s."""
        view = visible(sweeps.view(sweep_id), who, no_sweep(sweep_id))
        columns, rows = sweep_rows(view, sort, durations=True, field="`sort`")
        return Response(
            sweep_csv(columns, rows, for_spreadsheets=True),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="sweep-{sweep_id}.csv"'},
        )

    # ------------------------------------------------------------ batch

    @router.post("/jobs/batch", status_code=201)
    def batch(body: BatchRequest, who: User) -> dict[str, Any]:
        return {"jobs": submit_batch(service, body.specs, who.name)}

    # ------------------------------------------------------------ schedules

    @router.post("/schedules", status_code=201)
    def add_schedule(body: ScheduleRequest, who: User) -> dict[str, Any]:
        return schedules.add(body, who.name)

    @router.get("/schedules")
    def list_schedules(who: User) -> list[dict[str, Any]]:
        return only_visible(schedules.list(), who)

    @router.get("/schedules/{name}")
    def get_schedule(name: str, who: User) -> dict[str, Any]:
        return visible(schedules.get(name), who, no_schedule(name))

    @router.post("/schedules/{name}/pause")
    def pause_schedule(name: str, who: User) -> dict[str, Any]:
        visible(schedules.get(name), who, no_schedule(name))
        return schedules.pause(name)

    @router.post("/schedules/{name}/resume")
    def resume_schedule(name: str, who: User) -> dict[str, Any]:
        visible(schedules.get(name), who, no_schedule(name))
        return schedules.resume(name)

    @router.delete("/schedules/{name}", status_code=204)
    def remove_schedule(name: str, who: User) -> Response:
        visible(schedules.get(name), who, no_schedule(name))
        schedules.remove(name)
        return Response(status_code=204)

    return router
