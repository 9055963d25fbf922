"""Bring a database to the newest schema with alembic, cheaply when it already is."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x6E626A6F  # "nbjo": the advisory lock id migrations take on PostgreSQL


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    cfg = alembic_config()
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    with engine.connect() as conn:
        if set(MigrationContext.configure(conn).get_current_heads()) == heads:
            return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Servers starting together on one database: one migrates, the others wait, then find it done.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
