"""API routes for people: who am I, users, tokens, secrets, webhooks, event streams, metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from nbjobs.errors import InvalidInput
from nbjobs.server.access import AdminUser, CurrentUser, visible_job
from nbjobs.server.events import EventFilter, last_event_id, sse_response
from nbjobs.server.vault import check_secret_name
from nbjobs.spec import WEBHOOK_URL, WebhookEvent

router = APIRouter()
JobId = Annotated[int, Path(ge=1, le=2**62, description="A job id")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(_Body):
    name: str = Field(min_length=1, max_length=100, description="Letters, digits, '_', '.', '@', '-'")
    admin: bool = False


class NewToken(_Body):
    user: str | None = Field(None, min_length=1, max_length=100, description="Another user's (admins only)")
    label: str | None = Field(None, max_length=200)


class SecretValue(_Body):
    value: str = Field(min_length=1, max_length=64 * 1024)


class NewWebhook(_Body):
    url: str = Field(pattern=WEBHOOK_URL, max_length=2000)
    events: list[WebhookEvent] = Field(default_factory=lambda: ["succeeded", "failed", "timed_out"], min_length=1)


class Me(BaseModel):
    id: int
    name: str
    admin: bool


class TokenCreated(BaseModel):
    id: str
    user: str
    token: str = Field(description="Shown once: the server keeps only its hash")


class UserCreated(TokenCreated):
    admin: bool


class TokenInfo(BaseModel):
    id: str
    user: str
    label: str | None
    created: datetime
    last_used: datetime | None
    revoked: datetime | None


class SecretInfo(BaseModel):
    name: str
    created: datetime
    updated: datetime


class WebhookInfo(BaseModel):
    id: int
    url: str
    events: list[str]
    created: datetime


class Delivery(BaseModel):
    id: int
    job_id: int
    url: str
    event: str
    status: str
    tries: int
    response_code: int | None
    error: str | None
    created: datetime
    updated: datetime


def _people(request: Request) -> Any:
    return request.app.state.people


# ------------------------------------------------------------------ accounts


@router.get("/api/me", response_model=Me, tags=["users"])
def me(user: CurrentUser) -> Any:
    return {"id": user.id, "name": user.name, "admin": user.is_admin}


@router.get("/api/users", tags=["users"])
def list_users(request: Request, _: AdminUser) -> list[dict[str, Any]]:
    return _people(request).accounts.list_users()  # type: ignore[no-any-return]


@router.post("/api/users", status_code=201, response_model=UserCreated, tags=["users"])
def add_user(request: Request, body: NewUser, _: AdminUser) -> Any:
    user, token_id, token = _people(request).accounts.add_user(body.name, admin=body.admin)
    return {"id": token_id, "user": user.name, "admin": user.is_admin, "token": token}


@router.get("/api/tokens", response_model=list[TokenInfo], tags=["users"])
def list_tokens(request: Request, user: CurrentUser, everyone: bool = False) -> Any:
    """Your tokens (an admin may ask for everyone's)."""
    return _people(request).accounts.list_tokens(user, everyone=everyone and user.is_admin)


@router.post("/api/tokens", status_code=201, response_model=TokenCreated, tags=["users"])
def create_token(request: Request, body: NewToken, user: CurrentUser) -> Any:
    name = body.user or user.name
    if name != user.name and not user.is_admin:
        raise InvalidInput("Only an admin may create a token for another user (`user`).")
    token_id, token = _people(request).accounts.create_token(name, body.label)
    return {"id": token_id, "user": name, "token": token}


@router.delete("/api/tokens/{token_id}", status_code=204, tags=["users"])
def revoke_token(
    request: Request, user: CurrentUser, token_id: Annotated[str, Path(min_length=1, max_length=32)]
) -> Response:
    _people(request).accounts.revoke_token(token_id, user)
    return Response(status_code=204)


# ------------------------------------------------------------------- secrets


@router.get("/api/secrets", response_model=list[SecretInfo], tags=["secrets"])
def list_secrets(request: Request, user: CurrentUser) -> Any:
    """Names and dates of your secrets; values are never returned."""
    return _people(request).vault.names(user.name)


@router.put("/api/secrets/{name}", tags=["secrets"])
def set_secret(
    request: Request, user: CurrentUser, body: SecretValue, name: Annotated[str, Path(max_length=128)]
) -> dict[str, Any]:
    created = _people(request).vault.put(user.name, check_secret_name(name), body.value)
    return {"name": name, "created": created}


@router.delete("/api/secrets/{name}", status_code=204, tags=["secrets"])
def remove_secret(request: Request, user: CurrentUser, name: Annotated[str, Path(max_length=128)]) -> Response:
    _people(request).vault.remove(user.name, name)
    return Response(status_code=204)


# ------------------------------------------------------------------ webhooks


@router.get("/api/webhooks", response_model=list[WebhookInfo], tags=["webhooks"])
def list_webhooks(request: Request, user: CurrentUser) -> Any:
    return _people(request).webhooks.list(user)


@router.post("/api/webhooks", status_code=201, response_model=WebhookInfo, tags=["webhooks"])
def add_webhook(request: Request, user: CurrentUser, body: NewWebhook) -> Any:
    """A webhook for all your jobs."""
    return _people(request).webhooks.add(user, body.url, list(body.events))


@router.delete("/api/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
def remove_webhook(request: Request, user: CurrentUser, webhook_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    _people(request).webhooks.remove(user, webhook_id)
    return Response(status_code=204)


@router.get("/api/webhooks/secret", tags=["webhooks"])
def webhook_secret(request: Request, user: CurrentUser) -> dict[str, str]:
    """The key of your webhooks' `X-Nbjobs-Signature` (HMAC-SHA256 of the body)."""
    return {"secret": _people(request).accounts.webhook_secret(user)}


@router.get("/api/webhooks/deliveries", response_model=list[Delivery], tags=["webhooks"])
def list_deliveries(request: Request, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Your jobs' webhook deliveries, newest first (an admin's: everyone's)."""
    return _people(request).webhooks.deliveries(owner=None if user.is_admin else user.name, limit=limit)


@router.get("/api/jobs/{job_id}/webhooks", response_model=list[Delivery], tags=["webhooks"])
def job_deliveries(request: Request, user: CurrentUser, job_id: JobId) -> Any:
    visible_job(request.app.state.service.store, job_id, user)
    return _people(request).webhooks.deliveries(owner=None, job_id=job_id)


# -------------------------------------------------------------------- events

SSE = {200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}}


@router.get("/api/jobs/{job_id}/events", response_class=StreamingResponse, responses=SSE, tags=["events"])
def job_events(
    request: Request,
    user: CurrentUser,
    job_id: JobId,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="Resume after this event id")] = None,
) -> Response:
    """The job's events from its first (or after `Last-Event-ID`): state, cells, log text, usage."""
    visible_job(request.app.state.service.store, job_id, user)
    hub = _people(request).hub
    return sse_response(request, hub, EventFilter(job_ids=frozenset({job_id})), after=last_event_id(request, 0))


@router.get("/api/events", response_class=StreamingResponse, responses=SSE, tags=["events"])
def queue_events(
    request: Request,
    user: CurrentUser,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="Resume after this event id")] = None,
) -> Response:
    """Events of all your jobs (an admin's: everyone's) from now on (or after `Last-Event-ID`)."""
    hub = _people(request).hub
    flt = EventFilter(owner=None if user.is_admin else user.name)
    return sse_response(request, hub, flt, after=last_event_id(request, hub.last_id))


# ------------------------------------------------------------------- metrics


@router.get("/metrics", tags=["metrics"], response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request, _: CurrentUser) -> Response:
    """Prometheus metrics (text format 0.0.4)."""
    body = _people(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
