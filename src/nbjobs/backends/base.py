"""The backend interface the dispatcher drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nbjobs.attempt import AttemptPaths, AttemptResult
from nbjobs.resources.allocation import Allocation


@dataclass(frozen=True)
class Launch:
    """One attempt to run: which job, which try, its spec and what it was given."""

    job_id: int
    attempt: int
    spec: dict[str, Any]  # JobSpec as JSON: what travels to a remote worker
    allocation: Allocation | None = None


# Called once per launch, whatever happened: the result, and where the attempt wrote (None if nowhere).
FinishedCallback = Callable[[Launch, AttemptResult, AttemptPaths | None], Awaitable[None]]


class Backend(ABC):
    name: str

    @abstractmethod
    async def start(self, launch: Launch) -> None:
        """Begin the attempt and return at once; its end is reported to the finished callback."""

    @abstractmethod
    async def cancel(self, job_id: int, reason: str) -> bool:
        """Stop a running attempt (interrupt, grace, kill); False if it is not running here."""

    @abstractmethod
    def running(self) -> set[int]:
        """Ids of the jobs whose attempts run on this backend now."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything still running and release what is kept ahead of demand."""
