"""Tables of the server for people: users, tokens, browser sessions, the event log,
secrets, webhooks and their deliveries (migration 0004_people)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nbjobs.store.models import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(100))  # HMAC key of this user's webhook signatures
    created: Mapped[datetime]


class Token(Base):
    """An API token: only its sha256 is kept; `id` is public (shown by `token ls`, used to revoke)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[datetime]
    last_used: Mapped[datetime | None]
    revoked: Mapped[datetime | None]


class BrowserSession(Base):
    """A logged-in browser: the cookie holds a random value, the row its sha256."""

    __tablename__ = "sessions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[str | None] = mapped_column(String(32))  # revoking the token ends the session
    created: Mapped[datetime]
    expires: Mapped[datetime]


class EventRow(Base):
    """One event of the stream (state change, cell progress, log text, usage sample), kept for replay."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: writes are batched, jobs may go
    owner: Mapped[str | None] = mapped_column(String(100))  # the job's owner, to filter without a join
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime]

    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"),)


class Secret(Base):
    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token (see nbjobs.server.secrets)
    created: Mapped[datetime]
    updated: Mapped[datetime]

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_secrets_user_name"),)


class UserWebhook(Base):
    """A webhook for every job of one user."""

    __tablename__ = "user_webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(JSON)
    created: Mapped[datetime]


class WebhookDelivery(Base):
    """One notification and how its delivery went (tries, last answer)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    tries: Mapped[int] = mapped_column(Integer, default=0)
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime]
    updated: Mapped[datetime]
