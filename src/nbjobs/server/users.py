"""Users, their API tokens and their browser sessions, in the store.

A token is shown once, when it is made; the store keeps only its sha256 (a
token is 32 random bytes, so a plain hash is enough: there is nothing to
guess). A token's `id` is public: `nbjobs token ls` shows it and `nbjobs token
revoke ID` takes it. A browser session is a random cookie value whose sha256 is
a row of `sessions`; revoking the token that opened it ends it too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from nbjobs.errors import Conflict, InvalidInput, NotFound
from nbjobs.store import Store
from nbjobs.store.people_models import BrowserSession, Token, User
from nbjobs.store.repository import utcnow

USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,99}$")
SESSION_DAYS = 7
LAST_USED_EVERY = 60.0  # seconds: a token's last use is written at most this often


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    is_admin: bool

    def can_see(self, owner: str) -> bool:
        """Admins see every job; a user sees their own."""
        return self.is_admin or owner == self.name


def _info(user: User) -> UserInfo:
    return UserInfo(user.id, user.name, bool(user.is_admin))


class Accounts:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ users

    def ensure_first_admin(self, name: str, local_token: str) -> UserInfo:
        """At server start: the first admin exists (named after the OS user) and owns the local token."""
        with self.store.session() as s, s.begin():
            admin = s.scalar(select(User).where(User.is_admin.is_(True)).order_by(User.id).limit(1))
            if admin is None:
                admin = s.scalar(select(User).where(User.name == name))
                if admin is None:
                    admin = User(name=name, is_admin=True, webhook_secret=secrets.token_hex(32), created=utcnow())
                    s.add(admin)
                admin.is_admin = True
                s.flush()
            # A revoked local token stays revoked: its hash is still there.
            if s.scalar(select(Token.id).where(Token.hash == digest(local_token))) is None:
                token_id = "local" if s.get(Token, "local") is None else f"local-{secrets.token_hex(4)}"
                s.add(Token(id=token_id, user_id=admin.id, hash=digest(local_token), label="local", created=utcnow()))
            return _info(admin)

    def add_user(self, name: str, *, admin: bool = False) -> tuple[UserInfo, str, str]:
        """A new user and their first token: (user, token id, token)."""
        if not USER_NAME.match(name):
            raise InvalidInput(
                f"User name {name!r} (`name`) is not valid: use 1 to 100 letters, digits, '_', '.', '@' or '-', "
                "not starting with '.', '@' or '-'."
            )
        try:
            with self.store.session() as s, s.begin():
                user = User(name=name, is_admin=admin, webhook_secret=secrets.token_hex(32), created=utcnow())
                s.add(user)
                s.flush()
                info = _info(user)
        except IntegrityError:
            raise Conflict(f"A user named {name!r} already exists.") from None
        token_id, token = self.create_token(info.name, label="first token")
        return info, token_id, token

    def get_user(self, name: str) -> UserInfo:
        with self.store.session() as s:
            user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"No user named {name!r}; `nbjobs user ls` lists them.")
        return _info(user)

    def list_users(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            tokens = dict(
                s.execute(
                    select(Token.user_id, func.count()).where(Token.revoked.is_(None)).group_by(Token.user_id)
                ).all()
            )
            return [
                {
                    "id": u.id,
                    "name": u.name,
                    "admin": bool(u.is_admin),
                    "created": u.created,
                    "tokens": tokens.get(u.id, 0),
                }
                for u in s.scalars(select(User).order_by(User.id))
            ]

    def webhook_secret(self, user: UserInfo) -> str:
        with self.store.session() as s:
            return s.scalar(select(User.webhook_secret).where(User.id == user.id)) or ""

    def webhook_secret_of(self, name: str) -> str | None:
        with self.store.session() as s:
            return s.scalar(select(User.webhook_secret).where(User.name == name))

    # ----------------------------------------------------------------- tokens

    def create_token(self, user_name: str, label: str | None = None) -> tuple[str, str]:
        """(token id, token); the token itself is never stored."""
        user = self.get_user(user_name)
        token_id = secrets.token_hex(6)
        token = f"nbj_{token_id}_{secrets.token_urlsafe(32)}"
        with self.store.session() as s, s.begin():
            s.add(Token(id=token_id, user_id=user.id, hash=digest(token), label=label, created=utcnow()))
        return token_id, token

    def list_tokens(self, user: UserInfo, *, everyone: bool = False) -> list[dict[str, Any]]:
        query = select(Token, User.name).join(User, User.id == Token.user_id).order_by(Token.created)
        if not everyone:
            query = query.where(Token.user_id == user.id)
        with self.store.session() as s:
            return [
                {
                    "id": t.id,
                    "user": name,
                    "label": t.label,
                    "created": t.created,
                    "last_used": t.last_used,
                    "revoked": t.revoked,
                }
                for t, name in s.execute(query).all()
            ]

    def revoke_token(self, token_id: str, by: UserInfo) -> None:
        """Revoke a token (one's own; an admin any), and end the browser sessions it opened."""
        with self.store.session() as s, s.begin():
            token = s.get(Token, token_id)
            if token is None or not (by.is_admin or token.user_id == by.id):
                raise NotFound(f"No token with id {token_id!r} of yours; `nbjobs token ls` lists them.")
            if token.revoked is None:
                token.revoked = utcnow()
            s.execute(delete(BrowserSession).where(BrowserSession.token_id == token_id))

    def authenticate(self, token: str) -> tuple[UserInfo, str] | None:
        """The user and token id of a valid, unrevoked token; None otherwise."""
        if not token or len(token) > 200:
            return None
        wanted = digest(token)
        with self.store.session() as s:
            row = s.execute(
                select(Token.id, Token.hash, Token.revoked, User)
                .join(User, User.id == Token.user_id)
                .where(Token.hash == wanted)
            ).first()
        # The lookup is by hash; comparing again in constant time costs nothing and keeps the rule simple.
        if row is None or row.revoked is not None or not hmac.compare_digest(row.hash, wanted):
            return None
        self._touch(row.id)
        return _info(row.User), row.id

    def _touch(self, token_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_used.get(token_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
                return
            self._last_used[token_id] = now
        with self.store.session() as s, s.begin():
            s.execute(update(Token).where(Token.id == token_id).values(last_used=utcnow()))

    # --------------------------------------------------------------- sessions

    def open_session(self, user: UserInfo, token_id: str | None) -> str:
        """A new browser session; returns the cookie value."""
        value = secrets.token_urlsafe(32)
        now = utcnow()
        with self.store.session() as s, s.begin():
            s.execute(delete(BrowserSession).where(BrowserSession.expires < now))
            s.add(
                BrowserSession(
                    hash=digest(value),
                    user_id=user.id,
                    token_id=token_id,
                    created=now,
                    expires=now + timedelta(days=SESSION_DAYS),
                )
            )
        return value

    def session_user(self, value: str) -> UserInfo | None:
        if not value or len(value) > 200:
            return None
        with self.store.session() as s:
            row = s.execute(
                select(BrowserSession.expires, User)
                .join(User, User.id == BrowserSession.user_id)
                .where(BrowserSession.hash == digest(value))
            ).first()
        if row is None or row.expires < utcnow():
            return None
        return _info(row.User)

    def close_session(self, value: str) -> None:
        with self.store.session() as s, s.begin():
            s.execute(delete(BrowserSession).where(BrowserSession.hash == digest(value)))


def csrf_token(session_value: str) -> str:
    """The anti-forgery value a logged-in page sends back with POSTs: derived from the session cookie,
    which another site can neither read nor send (SameSite=Strict)."""
    return hashlib.sha256(b"nbjobs-csrf:" + session_value.encode()).hexdigest()[:40]
