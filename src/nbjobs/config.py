"""Where nbjobs keeps its state, and the host's configuration file.

`NBJOBS_HOME` (default `~/.nbjobs`) holds the embedded SQLite store, one folder
per job, and `config.toml`; `NBJOBS_DB_URL` points the store elsewhere (e.g.
PostgreSQL); `NBJOBS_CONFIG` names another config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nbjobs.errors import InvalidInput
from nbjobs.spec import ByteSize, Identifier


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceConfig(_Section):
    """What this host offers beyond what is detected, and what stays for the system."""

    custom: dict[Identifier, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Named counts this host offers, e.g. {licenses = 2}"
    )
    reserve_cpus: int = Field(0, ge=0, description="CPUs kept for the system, never allocated")
    reserve_memory: ByteSize | None = Field(None, description="Memory kept for the system")
    gpu_sharing: bool = Field(False, description="Allow jobs asking a fraction of a GPU to share one")
    sample_interval: float = Field(1.0, gt=0, description="Seconds between usage samples")


class PoolConfig(_Section):
    limit: int = Field(ge=1, description="Most jobs of this pool running at once")


class SchedulerConfig(_Section):
    per_user_running: int | None = Field(None, ge=1, description="Most running jobs per user")
    default_time_bound: float = Field(3600.0, gt=0, description="Seconds assumed for a job without a timeout")
    pools: dict[Identifier, PoolConfig] = Field(default_factory=dict)


class KernelConfig(_Section):
    provider: Literal["auto", "plain", "pool", "zygote"] = Field(
        "auto",
        description="auto: zygote for Python ipykernel specs in a long-lived process (the server), "
        "plain for other kernels and for a foreground `nbjobs run`",
    )
    preload: list[str] = Field(default_factory=list, description="Modules the zygote imports ahead of jobs")
    ready: int = Field(1, ge=0, le=32, description="Kernels kept started ahead of demand (pool, zygote)")


class BackendConfig(_Section):
    """Where the server runs jobs (see nbjobs.backends), and where their outputs go."""

    kind: Literal["local", "dask"] = Field("local", description="local: this host; dask: a Dask cluster")
    scheduler_address: str | None = Field(None, description="Dask scheduler, e.g. tcp://10.0.0.5:8786")
    storage_url: str | None = Field(
        None, description="Outputs, logs, artifacts of jobs on Dask: a shared path or fsspec URL (s3://...)"
    )
    leader_lease: float = Field(15.0, ge=1, le=600, description="Seconds a scheduling leader's lease lasts")


class Config(_Section):
    resources: ResourceConfig = Field(default_factory=ResourceConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    kernels: KernelConfig = Field(default_factory=KernelConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)


def load_config(path: Path) -> Config:
    """The config file at `path`; defaults when it does not exist."""
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Config.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
    except ValidationError as exc:
        from nbjobs.spec_sources import describe_validation_error

        raise InvalidInput(describe_validation_error(exc, f"{str(path)!r}", "config", Config.model_fields)) from None


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    config_path: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("NBJOBS_HOME") or Path.home() / ".nbjobs").expanduser().resolve()
        db_url = os.environ.get("NBJOBS_DB_URL") or f"sqlite:///{home / 'nbjobs.db'}"
        config_path = Path(os.environ.get("NBJOBS_CONFIG") or home / "config.toml").expanduser()
        return cls(home=home, db_url=db_url, config_path=config_path)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def attempt_dir(self, job_id: int, attempt: int) -> Path:
        return self.jobs_dir / str(job_id) / f"attempt-{attempt}"
