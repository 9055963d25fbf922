"""Webhooks: a signed JSON POST when a job starts or ends.

Targets come from the job's spec (`webhooks: [{url, events}]`) and from its
owner's own webhooks (`nbjobs webhook add`). Each notification is a row of
`webhook_deliveries` (the owner reads them: API and job page) and is tried up
to `TRIES` times with doubling waits; a 2xx answer delivers it. The body is
signed with the owner's webhook secret: `X-Nbjobs-Signature: sha256=<hex HMAC-SHA256 of the body>`.

`NBJOBS_WEBHOOK_HOSTS` (comma-separated host names or IPs) restricts where
webhooks may point, checked when one is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, select, update

from nbjobs.errors import InvalidInput, NotFound
from nbjobs.server.events import StreamEvent
from nbjobs.server.users import Accounts, UserInfo
from nbjobs.spec import WEBHOOK_EVENTS, JobSpec, JobState
from nbjobs.store import Store
from nbjobs.store.models import Job
from nbjobs.store.people_models import User, UserWebhook, WebhookDelivery
from nbjobs.store.repository import utcnow

log = logging.getLogger(__name__)

TRIES = 5
FIRST_WAIT = 0.5  # seconds; doubled after each failed try
TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Nbjobs-Signature"


def webhook_event(state: str) -> str | None:
    """The webhook event name of a state change (None: not one that is reported)."""
    name = "started" if state == JobState.RUNNING.value else state
    return name if name in WEBHOOK_EVENTS else None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def allowed_hosts() -> set[str] | None:
    raw = os.environ.get("NBJOBS_WEBHOOK_HOSTS", "").strip()
    return {h.strip().lower() for h in raw.split(",") if h.strip()} or None


def check_url(url: str, field: str = "url") -> None:
    hosts = allowed_hosts()
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError as exc:
        raise InvalidInput(f"`{field}` is not a valid URL: {exc}.") from None
    if hosts is not None and host not in hosts:
        raise InvalidInput(
            f"`{field}` points to {host!r}, which this server does not send webhooks to "
            f"(NBJOBS_WEBHOOK_HOSTS allows: {', '.join(sorted(hosts))})."
        )


def check_spec_webhooks(spec: JobSpec) -> None:
    for i, hook in enumerate(spec.webhooks):
        check_url(hook.url, f"webhooks.{i}.url")


class Webhooks:
    def __init__(self, store: Store, accounts: Accounts) -> None:
        self.store = store
        self.accounts = accounts
        self.tries = TRIES
        self.first_wait = FIRST_WAIT
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------- user's webhooks

    def add(self, user: UserInfo, url: str, events: list[str]) -> dict[str, Any]:
        check_url(url)
        with self.store.session() as s, s.begin():
            row = UserWebhook(user_id=user.id, url=url, events=list(dict.fromkeys(events)), created=utcnow())
            s.add(row)
            s.flush()
            return {"id": row.id, "url": row.url, "events": row.events, "created": row.created}

    def list(self, user: UserInfo) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.scalars(select(UserWebhook).where(UserWebhook.user_id == user.id).order_by(UserWebhook.id))
            return [{"id": r.id, "url": r.url, "events": r.events, "created": r.created} for r in rows]

    def remove(self, user: UserInfo, webhook_id: int) -> None:
        with self.store.session() as s, s.begin():
            gone = s.execute(delete(UserWebhook).where(UserWebhook.id == webhook_id, UserWebhook.user_id == user.id))
            if gone.rowcount == 0:
                raise NotFound(f"You have no webhook with id {webhook_id}; `nbjobs webhook ls` lists yours.")

    def deliveries(self, *, owner: str | None, job_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(WebhookDelivery.owner == owner)
        if job_id is not None:
            query = query.where(WebhookDelivery.job_id == job_id)
        with self.store.session() as s:
            return [
                {
                    "id": d.id,
                    "job_id": d.job_id,
                    "url": d.url,
                    "event": d.event,
                    "status": d.status,
                    "tries": d.tries,
                    "response_code": d.response_code,
                    "error": d.error,
                    "created": d.created,
                    "updated": d.updated,
                }
                for d in s.scalars(query)
            ]

    # ------------------------------------------------------------- delivery

    def on_event(self, event: StreamEvent) -> None:
        """The hub's listener: state changes that webhooks report start deliveries."""
        if event.kind != "state" or event.job_id is None:
            return
        name = webhook_event(str(event.data.get("state")))
        if name is None:
            return
        targets = self._targets(event.job_id, name)
        if targets:
            task = asyncio.get_running_loop().create_task(self._notify(event, name, targets))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _targets(self, job_id: int, name: str) -> list[str]:
        with self.store.session() as s:
            row = s.execute(select(Job.spec, Job.owner).where(Job.id == job_id)).first()
            if row is None:
                return []
            urls = [h["url"] for h in row.spec.get("webhooks", []) if name in h.get("events", [])]
            hooks = s.execute(
                select(UserWebhook.url, UserWebhook.events)
                .join(User, User.id == UserWebhook.user_id)
                .where(User.name == row.owner)
            ).all()
        urls += [url for url, events in hooks if name in events]
        return list(dict.fromkeys(urls))

    async def _notify(self, event: StreamEvent, name: str, urls: list[str]) -> None:
        job = await asyncio.to_thread(self._job_payload, event.job_id or 0)
        if job is None:
            return
        secret = await asyncio.to_thread(self.accounts.webhook_secret_of, job["owner"]) or ""
        now = utcnow()
        with self.store.session() as s, s.begin():
            rows = [
                WebhookDelivery(
                    job_id=job["id"],
                    owner=job["owner"],
                    url=url,
                    event=name,
                    status="pending",
                    tries=0,
                    created=now,
                    updated=now,
                )
                for url in urls
            ]
            s.add_all(rows)
            s.flush()
            ids = [r.id for r in rows]
        await asyncio.gather(
            *(self._deliver(delivery, url, name, job, event, secret) for delivery, url in zip(ids, urls, strict=True))
        )

    def _job_payload(self, job_id: int) -> dict[str, Any] | None:
        try:
            record = self.store.get(job_id)
        except NotFound:
            return None
        keys = ("id", "name", "state", "reason", "owner", "notebook", "tags", "created", "started", "ended", "results")
        return {k: v for k, v in record.model_dump(mode="json").items() if k in keys} | {
            "attempt": len(record.attempts)
        }

    async def _deliver(
        self, delivery: int, url: str, name: str, job: dict[str, Any], event: StreamEvent, secret: str
    ) -> None:
        body = json.dumps(
            {"event": name, "delivery": delivery, "at": event.at.isoformat(), "job": job}, default=str
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "X-Nbjobs-Event": name,
            "X-Nbjobs-Delivery": str(delivery),
            "User-Agent": "nbjobs-webhook",
        }
        wait = self.first_wait
        for attempt in range(1, self.tries + 1):
            code: int | None = None
            error: str | None = None
            try:
                response = await self._client().post(url, content=body, headers=headers)
                code = response.status_code
                if 200 <= code < 300:
                    self._record(delivery, "delivered", attempt, code, None)
                    return
                error = f"answered {code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            final = attempt == self.tries
            self._record(delivery, "failed" if final else "pending", attempt, code, error)
            if not final:
                await asyncio.sleep(wait)
                wait *= 2

    def _record(self, delivery: int, status: str, tries: int, code: int | None, error: str | None) -> None:
        with self.store.session() as s, s.begin():
            s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery)
                .values(status=status, tries=tries, response_code=code, error=error, updated=utcnow())
            )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
        return self._http

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
