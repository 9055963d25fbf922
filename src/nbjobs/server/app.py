"""The HTTP API (FastAPI). Every route needs a token (or a dashboard session):
see nbjobs.server.access; a user sees and acts on their own jobs, an admin on all.

Errors are JSON `{"detail": "<one paragraph>"}`: 400 invalid input, 401 no or a
wrong token, 404 unknown id, 409 a request the job's state does not allow,
422 a body that is not a valid spec (the message names the field).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from nbjobs import __version__
from nbjobs.errors import Conflict, InvalidInput, NotFound
from nbjobs.server.access import CurrentUser as User
from nbjobs.server.access import visible_job
from nbjobs.service import JobService
from nbjobs.spec import JobSpec, JobState
from nbjobs.storage import read_text
from nbjobs.store import JobRecord

if TYPE_CHECKING:
    from nbjobs.server.people import People

JobId = Annotated[int, PathParam(ge=1, le=2**62, description="A job id")]


class RunRequest(BaseModel):
    spec: JobSpec
    timeout: float = Field(600.0, gt=0, le=86_400, description="Seconds to wait for the end")


def create_app(service: JobService, token: str, people: People | None = None) -> FastAPI:
    from nbjobs.server.people import People

    app = FastAPI(title="nbjobs", version=__version__, summary="Run Jupyter notebooks as jobs")
    app.state.service = service
    if people is None:
        people = People.create(service.store, service.settings.home)
    people.ensure_admin(token)  # the local token belongs to the first admin, named after the OS user
    people.install(app, service)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(InvalidInput)
    async def invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
            if err.get("type") == "json_invalid":  # the location is a character offset, not a field
                field = "body"
            problems.append(f"`{field}`: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
        return JSONResponse({"detail": "Invalid request: " + "; ".join(problems) + "."}, status_code=422)

    @app.get("/api/health")
    def health(_: User) -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.post("/api/jobs", status_code=201, response_model=JobRecord)
    def submit(spec: JobSpec, who: User) -> Any:
        people.check_spec(spec, who)
        record, created = service.submit(spec, who.name)
        if not created:
            return JSONResponse(record.model_dump(mode="json"), status_code=200)
        return record

    @app.get("/api/jobs", response_model=list[JobRecord])
    def list_jobs(
        who: User,
        state: Annotated[list[JobState] | None, Query()] = None,
        name: Annotated[str | None, Query(max_length=200)] = None,
        tag: Annotated[str | None, Query(max_length=100)] = None,
        owner: Annotated[str | None, Query(max_length=100, description="An admin's filter")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        before: Annotated[int | None, Query(ge=1, le=2**62, description="Only ids below this (keyset paging)")] = None,
    ) -> Any:
        """Your jobs (an admin's: everyone's, or `owner`'s), newest first."""
        owner = owner if who.is_admin else who.name
        return service.store.list(
            states=state or [], name=name, tag=tag, limit=limit, offset=offset, owner=owner, before=before
        )

    @app.get("/api/jobs/{job_id}", response_model=JobRecord)
    def get_job(job_id: JobId, who: User) -> Any:
        return visible_job(service.store, job_id, who)

    @app.post("/api/jobs/{job_id}/cancel", response_model=JobRecord)
    async def cancel(job_id: JobId, who: User) -> Any:
        visible_job(service.store, job_id, who)
        return await service.cancel(job_id)

    @app.post("/api/jobs/{job_id}/retry", response_model=JobRecord)
    def retry(job_id: JobId, who: User) -> Any:
        visible_job(service.store, job_id, who)
        return service.retry(job_id)

    @app.get("/api/jobs/{job_id}/wait", response_model=JobRecord)
    async def wait(job_id: JobId, who: User, timeout: Annotated[float, Query(gt=0, le=300)] = 30.0) -> Any:
        visible_job(service.store, job_id, who)
        return await service.wait(job_id, timeout)

    @app.get("/api/jobs/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: JobId, who: User, attempt: Annotated[int | None, Query(ge=1, le=1000)] = None) -> str:
        record = visible_job(service.store, job_id, who)
        chosen = [a for a in record.attempts if attempt is None or a.number == attempt]
        text = read_text(chosen[-1].log) if chosen and chosen[-1].log else None  # a path, or a storage URL
        if text is None:
            raise NotFound(f"Job {job_id} has no log {'for that attempt ' if attempt else ''}yet.")
        return text

    @app.post("/api/run", response_model=JobRecord)
    async def run_and_wait(body: RunRequest, who: User) -> Any:
        """Run a job and answer with its record (state, results) once it has ended."""
        people.check_spec(body.spec, who)
        return await service.run_and_wait(body.spec, who.name, body.timeout)

    @app.get("/api/queue")
    def queue(_: User) -> dict[str, Any]:
        return service.queue()

    from nbjobs.server.groups import groups_router  # imported here: it uses this module's `User`

    app.include_router(groups_router(service))  # pipelines, sweeps, schedules, batch submit
    return app
