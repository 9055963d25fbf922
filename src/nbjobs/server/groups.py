"""HTTP routes for groups of jobs: pipelines, sweeps, schedules and batch submit.

Mounted by `create_app`; like every route they need the bearer token, and the
app's error handlers turn refusals into 400/404/409/422 with one paragraph.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from nbjobs.pipelines.model import Pipeline
from nbjobs.pipelines.runs import PipelineService
from nbjobs.pipelines.schedules import ScheduleRequest, ScheduleService
from nbjobs.pipelines.submit import submit_batch
from nbjobs.pipelines.sweeps import SweepService
from nbjobs.server.app import User
from nbjobs.service import JobService


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
        return pipelines.start(body.pipeline, body.params, who, body.source)

    @router.get("/pipelines/runs")
    def list_runs(_: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return pipelines.list(limit)

    @router.get("/pipelines/runs/{run_id}")
    def get_run(run_id: int, _: User) -> dict[str, Any]:
        return pipelines.view(run_id)

    @router.post("/pipelines/runs/{run_id}/cancel")
    async def cancel_run(run_id: int, _: User) -> dict[str, Any]:
        return await pipelines.cancel(run_id)

    @router.post("/pipelines/runs/{run_id}/repair")
    def repair_run(run_id: int, _: User) -> dict[str, Any]:
        return pipelines.repair(run_id)

    # ------------------------------------------------------------ sweeps

    @router.post("/sweeps", status_code=201)
    def create_sweep(body: SweepRequest, who: User) -> dict[str, Any]:
        return sweeps.create(body.spec, body.axes, who, mode=body.mode, max_parallel=body.max_parallel)

    @router.get("/sweeps")
    def list_sweeps(_: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return sweeps.list(limit)

    @router.get("/sweeps/{sweep_id}")
    def get_sweep(sweep_id: int, _: User) -> dict[str, Any]:
        return sweeps.view(sweep_id)

    # ------------------------------------------------------------ batch

    @router.post("/jobs/batch", status_code=201)
    def batch(body: BatchRequest, who: User) -> dict[str, Any]:
        return {"jobs": submit_batch(service, body.specs, who)}

    # ------------------------------------------------------------ schedules

    @router.post("/schedules", status_code=201)
    def add_schedule(body: ScheduleRequest, who: User) -> dict[str, Any]:
        return schedules.add(body, who)

    @router.get("/schedules")
    def list_schedules(_: User) -> list[dict[str, Any]]:
        return schedules.list()

    @router.get("/schedules/{name}")
    def get_schedule(name: str, _: User) -> dict[str, Any]:
        return schedules.get(name)

    @router.post("/schedules/{name}/pause")
    def pause_schedule(name: str, _: User) -> dict[str, Any]:
        return schedules.pause(name)

    @router.post("/schedules/{name}/resume")
    def resume_schedule(name: str, _: User) -> dict[str, Any]:
        return schedules.resume(name)

    @router.delete("/schedules/{name}", status_code=204)
    def remove_schedule(name: str, _: User) -> Response:
        schedules.remove(name)
        return Response(status_code=204)

    return router
