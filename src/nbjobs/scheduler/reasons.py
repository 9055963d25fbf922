"""Queue reasons: why a job is still waiting, as a kind (for code) and a sentence (for people).

Reasons are built once per distinct cause in a pass and shared by every job
with that cause, so a pass over hundreds of jobs formats a handful of strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Protocol

from nbjobs.spec import format_size


class WaitKind(StrEnum):
    RESOURCES = "resources"  # not enough free now
    RESERVATION = "reservation"  # would fit now, but would delay the reserved job
    POOL_LIMIT = "pool_limit"
    USER_LIMIT = "user_limit"
    QUEUE_ORDER = "queue_order"  # strict order: behind a job that waits (FIFO, or past the scan depth)
    NEVER_FITS = "never_fits"  # asks more than the host has; submit should have refused it


class WaitReason:
    """Why a job waits: a kind for code, a sentence for people.

    The sentence may be given as a function and is then written on first use:
    a pass finds hundreds of reasons and the caller usually reads a few.
    """

    __slots__ = ("_message", "_render", "kind")

    def __init__(self, kind: WaitKind, message: str | Callable[[], str]) -> None:
        self.kind = kind
        self._message, self._render = (message, None) if isinstance(message, str) else (None, message)

    @property
    def message(self) -> str:
        if self._message is None:
            assert self._render is not None
            self._message, self._render = self._render(), None
        return self._message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"WaitReason({self.kind.value}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WaitReason):
            return NotImplemented
        return self.kind == other.kind and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.kind, self.message))


class Amounts(Protocol):
    """Anything with the four resource counts (Counts, or the ledger's mutable free amounts)."""

    @property
    def cpus(self) -> float: ...
    @property
    def memory(self) -> int: ...
    @property
    def gpus(self) -> int: ...
    @property
    def custom(self) -> Mapping[str, int]: ...


def format_in(seconds: float) -> str:
    """A wait from now, short and readable: '+45 s', '+20 min', '+3.5 h'."""
    whole = max(0, math.ceil(seconds - 1e-9))
    if whole < 600:
        return f"+{whole} s"
    if whole < 7200:
        return f"+{round(whole / 60)} min"
    return f"+{whole / 3600:.1f} h"


def _cpus(value: float) -> str:
    return f"{max(value, 0.0):.3g}"


def _shortfalls(need: Amounts, have: Amounts, have_word: str) -> list[str]:
    """One phrase per resource that `have` lacks: 'needs 2 GPUs, 1 free'."""
    parts: list[str] = []
    if need.cpus > have.cpus + 1e-9:
        noun = "CPU" if need.cpus == 1 else "CPUs"
        parts.append(f"needs {_cpus(need.cpus)} {noun}, {_cpus(have.cpus)} {have_word}")
    if need.memory > have.memory:
        parts.append(f"needs {format_size(need.memory)} memory, {format_size(max(have.memory, 0))} {have_word}")
    if need.gpus > have.gpus:
        noun = "GPU" if need.gpus == 1 else "GPUs"
        parts.append(f"needs {need.gpus} {noun}, {max(have.gpus, 0)} {have_word}")
    for name, count in need.custom.items():
        available = have.custom.get(name, 0)
        if count > available:
            parts.append(f"needs {count} {name}, {max(available, 0)} {have_word}")
    return parts


def shortage(need: Amounts, free: Amounts) -> WaitReason:
    """Not enough free: 'needs 2 GPUs, 1 free; needs 4 GiB memory, 1.5 GiB free'.

    Written when first read, so from `free` as it stands then: the policy passes
    its live free amounts, and reasons are read after the pass, so every reason
    of a pass describes the same state, the one the pass left.
    """
    return WaitReason(WaitKind.RESOURCES, lambda: "; ".join(_shortfalls(need, free, "free")) or "waiting for resources")


def reserved_for(waiting: WaitReason, start_in: float) -> WaitReason:
    """The reservation holder's own reason: what holds it back, and when it is promised to start."""
    return WaitReason(waiting.kind, lambda: f"{waiting.message}; reserved to start by {format_in(start_in)}")


def never_fits(need: Amounts, total: Amounts) -> WaitReason:
    return WaitReason(WaitKind.NEVER_FITS, "cannot fit this host: " + "; ".join(_shortfalls(need, total, "in all")))


def pool_limit(pool: str, limit: int) -> WaitReason:
    return WaitReason(WaitKind.POOL_LIMIT, f"pool {pool} at its limit {limit}")


def user_limit(user: str, limit: int) -> WaitReason:
    return WaitReason(WaitKind.USER_LIMIT, f"user {user} at the per-user limit {limit}")


def blocked_by_reservation(holder_id: int, start_in: float) -> WaitReason:
    """Fits now, but starting it could push back the reserved job."""
    return WaitReason(WaitKind.RESERVATION, f"reserved: job {holder_id} starts first at {format_in(start_in)}")


def behind(ahead_id: int, by_priority: bool) -> WaitReason:
    """Waits its turn behind a job that waits (strict order, or not reached by the scan)."""
    how = "by priority" if by_priority else "in queue order"
    return WaitReason(WaitKind.QUEUE_ORDER, f"behind job {ahead_id} {how}")


def not_reached(depth: int) -> WaitReason:
    return WaitReason(WaitKind.QUEUE_ORDER, f"not reached yet: each pass looks at the first {depth} waiting jobs")
