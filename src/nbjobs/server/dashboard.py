"""The dashboard: server-rendered pages under /ui, kept live by a little JavaScript
listening to the event stream (static/app.js).

Pages: login, jobs (filters, keyset pages), one job (parameters, spec, history,
cells, live log, results, resources, attempts, webhooks, the rendered notebook)
and the queue; the pages of pipeline runs and sweeps are in `group_pages`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from nbjobs.errors import InvalidInput, NotFound
from nbjobs.server.access import SESSION_COOKIE, PageUser, visible_job
from nbjobs.server.charts import usage_chart
from nbjobs.server.users import UserInfo, csrf_token
from nbjobs.spec import JobState, format_size
from nbjobs.store import JobRecord
from nbjobs.store.models import Job

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(FilePath(__file__).with_name("templates")))
PAGE_SIZE = 50
LOG_TAIL_BYTES = 32 * 1024
NOTEBOOK_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def _people(request: Request) -> Any:
    return request.app.state.people


def render_page(request: Request, name: str, user: UserInfo | None, **context: Any) -> HTMLResponse:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    context |= {"user": user, "csrf": csrf_token(cookie) if cookie else "", "states": [s.value for s in JobState]}
    response = templates.TemplateResponse(request, name, context)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-src 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


# --------------------------------------------------------------------- login


@router.get("/ui/login")
def login_page(request: Request, next: str = "/ui", error: str | None = None) -> HTMLResponse:
    return render_page(request, "login.html", None, next=_local(next), error=error)


@router.post("/ui/login")
def login(request: Request, token: Annotated[str, Form(max_length=200)] = "", next: str = Form("/ui")) -> Response:
    found = request.app.state.accounts.authenticate(token.strip())
    if found is None:
        return render_page(request, "login.html", None, next=_local(next), error="That token is not valid.")
    user, token_id = found
    value = request.app.state.accounts.open_session(user, token_id)
    response = RedirectResponse(_local(next), status_code=303)
    # Secure: browsers keep it on http only for localhost; behind TLS it is never sent in clear text.
    response.set_cookie(
        SESSION_COOKIE, value, max_age=7 * 86400, httponly=True, secure=True, samesite="strict", path="/"
    )
    return response


@router.post("/ui/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and csrf == csrf_token(cookie):
        request.app.state.accounts.close_session(cookie)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _local(target: str) -> str:
    """Only our own pages are redirect targets (no open redirect)."""
    return target if target.startswith("/ui") and "//" not in target and "\\" not in target else "/ui"


# ---------------------------------------------------------------------- jobs


@router.get("/ui")
def jobs_page(
    request: Request,
    user: PageUser,
    state: Annotated[list[str] | None, Query(max_length=20)] = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    store = request.app.state.service.store
    states = _states(state or [])
    owner = owner or None if user.is_admin else user.name
    records = store.list(
        states=states, name=name or None, tag=tag or None, owner=owner, before=before, limit=PAGE_SIZE + 1
    )
    more = len(records) > PAGE_SIZE
    records = records[:PAGE_SIZE]
    filters = {"state": [s.value for s in states], "owner": owner or "", "tag": tag or "", "name": name or ""}
    query = [("state", s) for s in filters["state"]] + [(k, filters[k]) for k in ("owner", "tag", "name") if filters[k]]
    older = f"/ui?{urlencode([*query, ('before', records[-1].id)])}" if more and records else None
    newest = f"/ui?{urlencode(query)}" if before else None
    return render_page(
        request,
        "jobs.html",
        user,
        jobs=records,
        filters=filters,
        older=older,
        newest=newest,
        counts=_counts(store, None if user.is_admin else user.name),
        last_event=_people(request).hub.last_id,
    )


def _states(values: list[str]) -> list[JobState]:
    known = {s.value: s for s in JobState}
    bad = [v for v in values if v and v not in known]
    if bad:
        raise InvalidInput(f"Unknown `state` {bad[0]!r}; valid: {', '.join(known)}.")
    return [known[v] for v in values if v]


def _counts(store: Any, owner: str | None) -> dict[str, int]:
    query = select(Job.state, func.count()).group_by(Job.state)
    if owner is not None:
        query = query.where(Job.owner == owner)
    with store.session() as s:
        return dict(s.execute(query).all())


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, user: PageUser, job_id: Annotated[int, Path(ge=1, le=2**62)]) -> HTMLResponse:
    store = request.app.state.service.store
    record = visible_job(store, job_id, user)
    people = _people(request)
    attempt = record.attempts[-1] if record.attempts else None
    usage = attempt.usage if attempt else {}
    requested = record.spec.get("resources", {})
    chart = usage_chart(usage.get("series") or {}, memory_limit=requested.get("memory"), cpus=requested.get("cpus"))
    return render_page(
        request,
        "job.html",
        user,
        job=record,
        log_tail=_log_tail(record),
        has_notebook=bool(record.output and FilePath(record.output).exists()),
        usage=usage,
        requested=requested,
        chart=chart,
        deliveries=people.webhooks.deliveries(owner=None, job_id=job_id, limit=50),
        spec_json=json.dumps(record.spec, indent=2, default=str),
        last_event=people.hub.last_id,
        fmt_size=format_size,
    )


def _log_tail(record: JobRecord) -> str:
    if not record.log or not FilePath(record.log).exists():
        return ""
    with open(record.log, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - LOG_TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    return text if size <= LOG_TAIL_BYTES else "…" + text.split("\n", 1)[-1]


@router.get("/ui/jobs/{job_id}/notebook")
def job_notebook(
    request: Request,
    user: PageUser,
    job_id: Annotated[int, Path(ge=1, le=2**62)],
    attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> Response:
    """The executed notebook as HTML, with a CSP that forbids its scripts and any request out."""
    record = visible_job(request.app.state.service.store, job_id, user)
    chosen = [a for a in record.attempts if attempt is None or a.number == attempt]
    output = chosen[-1].output if chosen else None
    if not output or not FilePath(output).exists():
        raise NotFound(f"Job {job_id} has no output notebook yet.")
    body = _render_notebook(FilePath(output))
    headers = {"Content-Security-Policy": NOTEBOOK_CSP, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(body, headers=headers)


_rendered: dict[str, tuple[float, str]] = {}


def _render_notebook(path: FilePath) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    mtime = path.stat().st_mtime
    cached = _rendered.get(str(path))
    if cached and cached[0] == mtime:
        return cached[1]
    nb = nbformat.read(path, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    if len(_rendered) > 64:
        _rendered.clear()
    _rendered[str(path)] = (mtime, body)
    return body


# --------------------------------------------------------------------- queue


@router.get("/ui/queue")
def queue_page(request: Request, user: PageUser) -> HTMLResponse:
    view = request.app.state.service.queue()
    if not user.is_admin:  # others' jobs show as counts only
        view["running_others"] = sum(1 for j in view["running"] if j["owner"] != user.name)
        view["waiting_others"] = sum(1 for j in view["waiting"] if j["owner"] != user.name)
        view["running"] = [j for j in view["running"] if j["owner"] == user.name]
        view["waiting"] = [j for j in view["waiting"] if j["owner"] == user.name]
    return render_page(
        request, "queue.html", user, queue=view, fmt_size=format_size, last_event=_people(request).hub.last_id
    )


def since(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def duration(record: JobRecord) -> str:
    return seconds(record.duration)


templates.env.filters["when"] = since
templates.env.filters["seconds"] = seconds
templates.env.globals["duration"] = duration
