"""The job definition: one validated pydantic model and its parts.

This module imports nothing else of nbjobs (see DESIGN.md): it is the vocabulary
every other layer speaks. Loading a spec from its sources (flags, files, notebook
metadata) lives in `nbjobs.spec_sources`.
"""

from __future__ import annotations

import math
import re
import string
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)


class JobState(StrEnum):
    """Lifecycle of a job; every end state carries a one-line reason."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KERNEL_DIED = "kernel_died"
    MEMORY_EXCEEDED = "memory_exceeded"
    CANCELLED = "cancelled"
    LOST = "lost"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self not in (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)


END_STATES = tuple(s for s in JobState if s.is_final)

# Exit codes of `nbjobs run` / `nbjobs wait`, one per end state (documented in the README).
EXIT_CODES: dict[JobState, int] = {
    JobState.SUCCEEDED: 0,
    JobState.FAILED: 1,
    JobState.TIMED_OUT: 3,
    JobState.KERNEL_DIED: 4,
    JobState.MEMORY_EXCEEDED: 5,
    JobState.LOST: 6,
    JobState.SKIPPED: 7,
    JobState.CANCELLED: 130,
}
EXIT_INVALID_INPUT = 2

# ---------------------------------------------------------------- byte sizes

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
SIZE_HELP = "a positive size such as 512MiB, 2GB, 1.5GiB or a number of bytes"


def parse_size(value: Any) -> int:
    """Bytes from `512MiB`, `2GB`, `1.5G` or an int; ValueError says what is valid."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {value!r}; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB")
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    return int(size)


def format_size(size: int) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(lambda v: v, return_type=int),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^[0-9.]+\s*([KMGT]i?B?|B)?$"},
            ],
            "description": "Bytes, or a size with a unit: 512MiB, 2GB, 1.5GiB",
        }
    ),
]

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=128)]


class _Model(BaseModel):
    # Unknown fields are a typo far more often than a wish: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(_Model):
    """What a job asks for. Enforced on the kernel and measured (see nbjobs.resources)."""

    cpus: float | None = Field(None, gt=0, le=4096, description="CPU cores (may be fractional)")
    memory: ByteSize | None = Field(None, description="Memory limit for the kernel's process tree")
    gpus: int = Field(0, ge=0, le=1024, description="Number of whole GPUs")
    custom: dict[Identifier, Annotated[int, Field(gt=0)]] = Field(
        default_factory=dict, description="Named counts defined by the host's config, e.g. licenses"
    )

    def is_empty(self) -> bool:
        return self.cpus is None and self.memory is None and not self.gpus and not self.custom


class RetryPolicy(_Model):
    """How many tries a job gets and how long to wait between them."""

    attempts: int = Field(1, ge=1, le=100, description="Total tries, the first included")
    backoff: float = Field(10.0, ge=0, description="Seconds before the second try")
    backoff_factor: float = Field(2.0, ge=1, description="Multiplier for each later wait")
    max_backoff: float = Field(600.0, ge=0, description="Cap on any one wait, seconds")
    on: list[JobState] = Field(
        default_factory=lambda: [JobState.KERNEL_DIED, JobState.LOST],
        description="End states that cause a retry",
    )

    @field_validator("on")
    @classmethod
    def _only_end_states(cls, states: list[JobState]) -> list[JobState]:
        for state in states:
            if not state.is_final or state in (JobState.SUCCEEDED, JobState.SKIPPED):
                valid = ", ".join(s.value for s in END_STATES if s not in (JobState.SUCCEEDED, JobState.SKIPPED))
                raise ValueError(f"{state.value!r} cannot trigger a retry; valid: {valid}")
        return states

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before try number `attempt` (2 is the first retry)."""
        if attempt <= 1:
            return 0.0
        return min(self.max_backoff, self.backoff * self.backoff_factor ** (attempt - 2))


OUTPUT_FIELDS = ("job_id", "name", "notebook", "date", "attempt")


class Outputs(_Model):
    """What a job keeps: the executed notebook always, an HTML rendering on request."""

    formats: list[Literal["ipynb", "html"]] = Field(default_factory=lambda: ["ipynb"])
    clean_input: bool = Field(
        False,
        description=(
            "Before running, strip what an interactive session left in the input: besides outputs and "
            "execution counts (always cleared), cell execution timings, collapsed/scrolled state and "
            "widget state, so the output notebook carries only this run's data"
        ),
    )
    path: str | None = Field(
        None,
        description=(
            "Output notebook path template; fields: {job_id}, {name}, {notebook} (input stem), "
            "{date} (YYYY-MM-DD), {attempt}. Default: the job's folder in the store."
        ),
    )

    @field_validator("formats")
    @classmethod
    def _ipynb_always(cls, formats: list[str]) -> list[str]:
        return ["ipynb", *sorted(set(formats) - {"ipynb"})]

    @field_validator("path")
    @classmethod
    def _known_fields(cls, template: str | None) -> str | None:
        if template is None:
            return None
        if "\x00" in template:
            raise ValueError("must not contain a NUL character")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad template {template!r}: {exc}") from None
        unknown = names - set(OUTPUT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)} in {template!r}; valid: "
                + ", ".join("{" + f + "}" for f in OUTPUT_FIELDS)
            )
        return template


def _git_ref(value: Any) -> Any:
    # YAML reads `git_ref: 2024` or an all-digit short SHA as a number; a ref is text.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and (not value or value.startswith("-") or any(c.isspace() for c in value)):
        raise ValueError(
            f"{value!r} is not a git ref; give a branch, tag or commit SHA (no spaces, not starting with '-')"
        )
    return value


def _repo(value: Any) -> Any:
    if isinstance(value, str) and (not value.strip() or value.startswith("-")):
        raise ValueError(f"{value!r} is not a repository; give a folder or a URL (not starting with '-')")
    return value


GitRef = Annotated[str, BeforeValidator(_git_ref), Field(max_length=256)]


class RunIf(StrEnum):
    """When a dependent job may start, by its upstream jobs' end states."""

    ALL_SUCCEEDED = "all_succeeded"
    ALL_DONE = "all_done"
    ANY_FAILED = "any_failed"
    NONE_FAILED = "none_failed"


class Dependency(_Model):
    """An upstream job (by id or name) this job waits for."""

    job: int | str = Field(description="Upstream job id, or a task name inside a pipeline")
    run_if: RunIf = RunIf.ALL_SUCCEEDED

    @model_validator(mode="before")
    @classmethod
    def _from_scalar(cls, value: Any) -> Any:
        return {"job": value} if isinstance(value, int | str) else value


class Schedule(_Model):
    """A cron expression in a time zone; used by `nbjobs schedule`."""

    cron: str = Field(min_length=1, description="Five-field cron expression, e.g. '0 6 * * 1-5'")
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Paris")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) not in (5, 6):
            raise ValueError(f"{cron!r} is not a cron expression; expected 5 fields like '0 6 * * *'")
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name like 'Europe/Paris'") from None
        return zone


# http(s), a host name or IPv4 address, an optional port and path: no user info, no IPv6 literal.
WEBHOOK_URL = r"^https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?(/[\x21-\x7e]*)?$"
WEBHOOK_EVENTS = ("started", "succeeded", "failed", "timed_out", "kernel_died", "memory_exceeded", "cancelled", "lost")
WebhookEvent = Literal[
    "started", "succeeded", "failed", "timed_out", "kernel_died", "memory_exceeded", "cancelled", "lost"
]


class Webhook(_Model):
    """A URL that gets a signed JSON POST when the job starts or ends (see the README's Webhooks)."""

    url: str = Field(pattern=WEBHOOK_URL, max_length=2000, description="http(s) URL to POST to")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: ["succeeded", "failed", "timed_out"],
        min_length=1,
        description="started, or the end states to report",
    )


SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class JobSpec(_Model):
    """One notebook execution request. Every field is optional except the notebook."""

    notebook: str = Field(min_length=1, description="Path of the input notebook")
    name: str | None = Field(None, max_length=200, description="Defaults to the notebook's stem")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Values injected into the notebook")
    kernel: str | None = Field(None, description="Kernelspec name; default: the notebook's own")
    cwd: str | None = Field(None, description="Working directory of the kernel; default: the notebook's folder")
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict, description="Extra environment variables for the kernel"
    )
    resources: Resources = Field(default_factory=Resources)
    timeout: Seconds | None = Field(None, description="Whole-job limit, seconds")
    cell_timeout: Seconds | None = Field(None, description="Per-cell limit, seconds")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    outputs: Outputs = Field(default_factory=Outputs)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first")
    pool: Identifier | None = Field(None, description="Named pool with its own concurrency limit")
    depends_on: list[Dependency] = Field(default_factory=list)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    schedule: Schedule | None = None
    allow_errors: bool = Field(False, description="Keep running after a cell raises")
    allow_unknown_params: bool = Field(False, description="Inject parameters the notebook does not declare")
    git_ref: GitRef | None = Field(
        None,
        description=(
            "Run the notebook as it is at this branch, tag or commit, from an immutable snapshot of that "
            "commit rather than the working tree"
        ),
    )
    repo: Annotated[str, BeforeValidator(_repo)] | None = Field(
        None,
        description=(
            "Repository to run from (a folder or a URL), at `git_ref` (default: its HEAD); `notebook` is "
            "then a path inside it. Credentials in a URL are used but never stored or shown"
        ),
    )
    require_clean: bool = Field(False, description="Refuse to run from a repository with uncommitted changes")
    secrets: list[SecretName] = Field(
        default_factory=list, max_length=100, description="The owner's secrets the kernel gets as environment variables"
    )
    webhooks: list[Webhook] = Field(default_factory=list, max_length=20, description="Notified on start and end")

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @field_validator("notebook", "name", "kernel", "cwd")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # A NUL byte cannot be in a path or a process argument: refuse it here, not deep in os calls.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @property
    def display_name(self) -> str:
        from pathlib import PurePath

        return self.name or PurePath(self.notebook).stem


def job_schema() -> dict[str, Any]:
    """JSON Schema of a job spec (what `nbjobs schema` prints)."""
    return JobSpec.model_json_schema()
