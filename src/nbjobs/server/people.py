"""The server's parts for people, made and wired in one place.

`People.create` is called by `nbjobs.server.main` before the backend exists (the
backend takes `hub.job_sink` and `vault.for_job`); `install` adds the routes,
the body size limit and the dashboard to the app; `start`/`stop` run the event
hub's writer and close webhook deliveries.
"""

from __future__ import annotations

import asyncio
import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from nbjobs.server.access import LoginRequired
from nbjobs.server.events import EventHub
from nbjobs.server.limits import BodySizeLimit
from nbjobs.server.users import Accounts, UserInfo
from nbjobs.server.vault import Vault
from nbjobs.server.webhooks import Webhooks, check_spec_webhooks
from nbjobs.spec import JobSpec
from nbjobs.store import Store

if TYPE_CHECKING:
    from nbjobs.server.metrics import Metrics
    from nbjobs.service import JobService

STATIC = Path(__file__).with_name("static")


@dataclass
class People:
    store: Store
    accounts: Accounts
    hub: EventHub
    vault: Vault
    webhooks: Webhooks
    metrics: Metrics | None = None
    admin: UserInfo | None = None

    @classmethod
    def create(cls, store: Store, home: Path) -> People:
        accounts = Accounts(store)
        hub = EventHub(store)
        store.state_listeners.append(hub.on_state)
        webhooks = Webhooks(store, accounts)
        hub.listeners.append(webhooks.on_event)
        return cls(store=store, accounts=accounts, hub=hub, vault=Vault(store, home), webhooks=webhooks)

    def ensure_admin(self, local_token: str) -> UserInfo:
        """The first admin, named after the OS user, owns the local token ($NBJOBS_HOME/token)."""
        self.admin = self.accounts.ensure_first_admin(getpass.getuser(), local_token)
        return self.admin

    def check_spec(self, spec: JobSpec, user: UserInfo) -> None:
        """At submit, beyond the service's checks: the secrets it names exist, its webhooks may be sent."""
        self.vault.check_names(user.name, list(spec.secrets))
        check_spec_webhooks(spec)

    def install(self, app: FastAPI, service: JobService) -> None:
        from nbjobs.server import dashboard, group_events, group_pages, people_api
        from nbjobs.server.metrics import Metrics

        self.metrics = Metrics(service)
        self.hub.listeners.append(self.metrics.on_event)
        app.state.people = self
        app.state.accounts = self.accounts
        app.add_middleware(BodySizeLimit)
        app.include_router(people_api.router)
        app.include_router(group_events.router)
        app.include_router(dashboard.router)
        app.include_router(group_pages.router)
        app.mount("/ui/static", StaticFiles(directory=STATIC), name="static")

        @app.exception_handler(LoginRequired)
        async def to_login(request: Request, _: LoginRequired) -> RedirectResponse:
            return RedirectResponse(f"/ui/login?next={request.url.path}", status_code=303)

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/ui", status_code=303)

    async def start(self) -> None:
        self.hub.start()

    async def close_streams_on_exit(self, server: Any) -> None:
        """Wait for uvicorn to begin its shutdown, then end the event streams so it need not wait for them."""
        while not server.should_exit:
            await asyncio.sleep(0.2)
        self.hub.close_streams()

    async def stop(self) -> None:
        await self.webhooks.close()
        await self.hub.stop()
