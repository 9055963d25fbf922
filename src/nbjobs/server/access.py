"""Who is asking: a bearer token (CLI, scripts) or a session cookie (the dashboard).

Every API route depends on `current_user`; pages depend on `page_user`, which
sends a visitor without a session to the login page. A job that is not the
user's own is answered 404, exactly like one that does not exist, so ids of
other users' jobs leak nothing.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nbjobs.errors import NotFound
from nbjobs.server.users import Accounts, UserInfo, csrf_token
from nbjobs.store import JobRecord, Store

SESSION_COOKIE = "nbjobs_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

bearer = HTTPBearer(auto_error=False, description="A token from `nbjobs token create` or $NBJOBS_HOME/token")


class LoginRequired(Exception):
    """A page was asked for without a session: the app answers with a redirect to the login page."""


def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts  # type: ignore[no-any-return]


def _unauthorized(message: str = "A valid bearer token is required.") -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def user_from_request(request: Request, creds: HTTPAuthorizationCredentials | None) -> UserInfo | None:
    accounts = _accounts(request)
    if creds is not None:
        found = accounts.authenticate(creds.credentials)
        return found[0] if found else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    user = accounts.session_user(cookie)
    if user is not None and request.method not in SAFE_METHODS:
        # A cookie is sent by the browser on its own: a change must also prove it comes from our page.
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()):
            raise HTTPException(403, f"Missing or wrong {CSRF_HEADER} header for a request made with a session.")
    return user


def current_user(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> UserInfo:
    """The user of the bearer token or session cookie; 401 without a valid one."""
    user = user_from_request(request, creds)
    if user is None:
        raise _unauthorized()
    return user


def admin_user(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
    if not user.is_admin:
        raise HTTPException(403, "Only an admin may do this.")
    return user


def page_user(request: Request) -> UserInfo:
    """The logged-in user of a dashboard page (a session, or a bearer token for scripts)."""
    header = request.headers.get("authorization", "")
    creds = None
    if header.lower().startswith("bearer "):
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:].strip())
    user = user_from_request(request, creds)
    if user is None:
        raise LoginRequired()
    return user


CurrentUser = Annotated[UserInfo, Depends(current_user)]
AdminUser = Annotated[UserInfo, Depends(admin_user)]
PageUser = Annotated[UserInfo, Depends(page_user)]


def visible_job(store: Store, job_id: int, user: UserInfo) -> JobRecord:
    """The job if this user may see it; NotFound (404) otherwise, the same as for no such job."""
    record = store.get(job_id)
    if not user.can_see(record.owner):
        raise NotFound(f"No job with id {job_id}; `nbjobs ls` lists the jobs there are.")
    return record
