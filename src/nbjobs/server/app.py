"""The HTTP API (FastAPI). Every route needs the bearer token.

Errors are JSON `{"detail": "<one paragraph>"}`: 400 invalid input, 401 no or a
wrong token, 404 unknown id, 409 a request the job's state does not allow,
422 a body that is not a valid spec (the message names the field).
"""

from __future__ import annotations

import getpass
import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from nbjobs import __version__
from nbjobs.errors import Conflict, InvalidInput, NotFound
from nbjobs.service import JobService
from nbjobs.spec import JobSpec, JobState
from nbjobs.storage import read_text
from nbjobs.store import JobRecord

bearer = HTTPBearer(auto_error=False)


def current_user(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The user the bearer token belongs to; 401 without a valid one."""
    token: str = request.app.state.token
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, "A valid bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
    return request.app.state.owner


User = Annotated[str, Depends(current_user)]


class RunRequest(BaseModel):
    spec: JobSpec
    timeout: float = Field(600.0, gt=0, le=86_400, description="Seconds to wait for the end")


def create_app(service: JobService, token: str) -> FastAPI:
    app = FastAPI(title="nbjobs", version=__version__, summary="Run Jupyter notebooks as jobs")
    app.state.service = service
    app.state.token = token
    app.state.owner = getpass.getuser()  # the local token belongs to the user running the server

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
            problems.append(f"`{field}`: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
        return JSONResponse({"detail": "Invalid request: " + "; ".join(problems) + "."}, status_code=422)

    @app.get("/api/health")
    def health(_: User) -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.post("/api/jobs", status_code=201, response_model=JobRecord)
    def submit(spec: JobSpec, who: User) -> Any:
        record, created = service.submit(spec, who)
        if not created:
            return JSONResponse(record.model_dump(mode="json"), status_code=200)
        return record

    @app.get("/api/jobs", response_model=list[JobRecord])
    def list_jobs(
        _: User,
        state: Annotated[list[JobState] | None, Query()] = None,
        name: str | None = None,
        tag: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        return service.store.list(states=state or [], name=name, tag=tag, limit=limit, offset=offset)

    @app.get("/api/jobs/{job_id}", response_model=JobRecord)
    def get_job(job_id: int, _: User) -> Any:
        return service.store.get(job_id)

    @app.post("/api/jobs/{job_id}/cancel", response_model=JobRecord)
    async def cancel(job_id: int, _: User) -> Any:
        return await service.cancel(job_id)

    @app.post("/api/jobs/{job_id}/retry", response_model=JobRecord)
    def retry(job_id: int, _: User) -> Any:
        return service.retry(job_id)

    @app.get("/api/jobs/{job_id}/wait", response_model=JobRecord)
    async def wait(job_id: int, _: User, timeout: Annotated[float, Query(gt=0, le=300)] = 30.0) -> Any:
        return await service.wait(job_id, timeout)

    @app.get("/api/jobs/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: int, _: User, attempt: Annotated[int | None, Query(ge=1)] = None) -> str:
        record = service.store.get(job_id)
        chosen = [a for a in record.attempts if attempt is None or a.number == attempt]
        text = read_text(chosen[-1].log) if chosen and chosen[-1].log else None  # a path, or a storage URL
        if text is None:
            raise NotFound(f"Job {job_id} has no log {'for that attempt ' if attempt else ''}yet.")
        return text

    @app.post("/api/run", response_model=JobRecord)
    async def run_and_wait(body: RunRequest, who: User) -> Any:
        """Run a job and answer with its record (state, results) once it has ended."""
        return await service.run_and_wait(body.spec, who, body.timeout)

    @app.get("/api/queue")
    def queue(_: User) -> dict[str, Any]:
        return service.queue()

    return app
