"""Read models of the store: what `show --json`, `ls --json` and the API return.

The keys of `JobRecord` are a public contract: later versions add keys, they do
not rename these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from nbjobs.spec import JobState


class StateChange(BaseModel):
    state: JobState
    at: datetime
    attempt: int
    reason: str | None = None


class CellRecord(BaseModel):
    index: int
    status: str
    started: datetime | None = None
    ended: datetime | None = None


class AttemptRecord(BaseModel):
    number: int
    state: JobState
    reason: str | None = None
    host: str
    started: datetime | None = None
    ended: datetime | None = None
    output: str | None = None
    log: str | None = None
    artifacts: list[str] = Field(default_factory=list)
    usage: dict[str, Any] = Field(default_factory=dict)
    pid: int | None = Field(None, description="The kernel's process id")


class GitRecord(BaseModel):
    """The repository a job's notebook came from (see nbjobs.vcs.state for the diff hash)."""

    repo: str = Field(description="The repository's root folder, or its URL without credentials")
    path: str | None = Field(None, description="The notebook, relative to the repository root")
    commit: str | None = Field(None, description="Full SHA; null in a repository without commits")
    branch: str | None = None
    remote: str | None = Field(None, description="Remote URL, credentials stripped")
    dirty: bool = False
    modified: list[str] = Field(default_factory=list, description="Files that differ from the commit")
    diff_sha256: str | None = Field(None, description="sha256 of the uncommitted changes, untracked files included")
    ref: str | None = Field(None, description="The ref asked for (`git_ref`), when run from a snapshot")
    source: Literal["working_tree", "snapshot"] = "working_tree"


class JobRecord(BaseModel):
    id: int
    name: str
    state: JobState
    reason: str | None
    notebook: str
    owner: str
    host: str
    priority: int
    tags: list[str]
    parameters: dict[str, Any]
    output: str | None
    log: str | None
    created: datetime
    started: datetime | None
    ended: datetime | None
    duration: float | None = Field(description="Seconds from start to end of the last attempt")
    cells: list[CellRecord] = Field(description="Code cells of the latest attempt")
    results: dict[str, Any]
    artifacts: list[str]
    attempts: list[AttemptRecord]
    history: list[StateChange]
    spec: dict[str, Any]
    idempotency_key: str | None = None
    queue_reason: str | None = Field(None, description="Why a queued job waits")
    not_before: datetime | None = Field(None, description="A retry waits for its backoff until then")
    git: GitRecord | None = Field(None, description="The notebook's repository; null outside one")
    run_id: int | None = Field(None, description="The pipeline run this job is a task of")
    task: str | None = Field(None, description="Its task name in that run")
    sweep_id: int | None = Field(None, description="The sweep this job is an element of")
    sweep_index: int | None = Field(None, description="Its position in that sweep")


class UsageRecord(BaseModel):
    """What one finished job asked for and what its last attempt used (for `nbjobs report`)."""

    job_id: int
    name: str
    notebook: str
    owner: str
    tags: list[str]
    state: JobState
    requested: dict[str, Any] = Field(description="The spec's resources")
    usage: dict[str, Any] = Field(description="The last attempt's usage: summary, series, allocation")
