"""Where nbjobs keeps its state, from the environment.

`NBJOBS_HOME` (default `~/.nbjobs`) holds the embedded SQLite store and one
folder per job; `NBJOBS_DB_URL` points the store elsewhere (e.g. PostgreSQL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("NBJOBS_HOME") or Path.home() / ".nbjobs").expanduser().resolve()
        db_url = os.environ.get("NBJOBS_DB_URL") or f"sqlite:///{home / 'nbjobs.db'}"
        return cls(home=home, db_url=db_url)

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def attempt_dir(self, job_id: int, attempt: int) -> Path:
        return self.jobs_dir / str(job_id) / f"attempt-{attempt}"
