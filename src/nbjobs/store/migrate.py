"""Bring a database to the newest schema with alembic, cheaply when it already is.

Importing alembic costs a few hundred milliseconds, which every `nbjobs` command
would pay; so the current revision is read with plain SQL and compared with
`HEAD`, and alembic is imported only when there is something to upgrade. A test
checks that `HEAD` names the newest migration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0006_scale"
MIGRATION_LOCK = 0x6E626A6F  # "nbjo": the advisory lock id migrations take on PostgreSQL


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}


def upgrade_to_head(engine: Engine) -> None:
    if current_revisions(engine) == {HEAD}:
        return
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Servers starting together on one database: one migrates, the others wait, then find it done.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
