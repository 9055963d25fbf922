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
from nbjobs.pipelines.sweeps import SweepService
from nbjobs.server.app import User
from nbjobs.server.users import UserInfo
from nbjobs.service import JobService

RecordId = Annotated[int, Path(ge=1, le=2**62, description="A record id")]


def visible(view: dict[str, Any], who: UserInfo, what: str) -> dict[str, Any]:
    """A pipeline run, sweep or schedule only for its owner (and admins); 404 for anyone else."""
    if not who.can_see(view["owner"]):
        raise NotFound(f"No {what}.")
    return view


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
        return only_visible(pipelines.list(limit), who)

    @router.get("/pipelines/runs/{run_id}")
    def get_run(run_id: RecordId, who: User) -> dict[str, Any]:
        return visible(pipelines.view(run_id), who, f"pipeline run {run_id}")

    @router.post("/pipelines/runs/{run_id}/cancel")
    async def cancel_run(run_id: RecordId, who: User) -> dict[str, Any]:
        visible(pipelines.view(run_id), who, f"pipeline run {run_id}")
        return await pipelines.cancel(run_id)

    @router.post("/pipelines/runs/{run_id}/repair")
    def repair_run(run_id: RecordId, who: User) -> dict[str, Any]:
        visible(pipelines.view(run_id), who, f"pipeline run {run_id}")
        return pipelines.repair(run_id)

    # ------------------------------------------------------------ sweeps

    @router.post("/sweeps", status_code=201)
    def create_sweep(body: SweepRequest, who: User) -> dict[str, Any]:
        return sweeps.create(body.spec, body.axes, who.name, mode=body.mode, max_parallel=body.max_parallel)

    @router.get("/sweeps")
    def list_sweeps(who: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return only_visible(sweeps.list(limit), who)

    @router.get("/sweeps/{sweep_id}")
    def get_sweep(sweep_id: RecordId, who: User) -> dict[str, Any]:
        return visible(sweeps.view(sweep_id), who, f"sweep {sweep_id}")

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
        return visible(schedules.get(name), who, f"schedule {name!r}")

    @router.post("/schedules/{name}/pause")
    def pause_schedule(name: str, who: User) -> dict[str, Any]:
        visible(schedules.get(name), who, f"schedule {name!r}")
        return schedules.pause(name)

    @router.post("/schedules/{name}/resume")
    def resume_schedule(name: str, who: User) -> dict[str, Any]:
        visible(schedules.get(name), who, f"schedule {name!r}")
        return schedules.resume(name)

    @router.delete("/schedules/{name}", status_code=204)
    def remove_schedule(name: str, who: User) -> Response:
        visible(schedules.get(name), who, f"schedule {name!r}")
        schedules.remove(name)
        return Response(status_code=204)

    return router
