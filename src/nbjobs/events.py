"""What a running job tells the world: cell progress and output, as typed events.

The runner emits them to an `EventSink`; the store, the job's log file, the
terminal progress bar (and later the server's event stream) each subscribe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CellStarted:
    index: int
    at: datetime


@dataclass(frozen=True)
class CellFinished:
    index: int
    status: str  # completed | failed | timed_out | kernel_died | cancelled | memory_exceeded
    started: datetime
    ended: datetime


@dataclass(frozen=True)
class CellSkipped:
    index: int


@dataclass(frozen=True)
class StreamText:
    index: int
    name: str  # stdout | stderr
    text: str


Event = CellStarted | CellFinished | CellSkipped | StreamText
EventSink = Callable[[Event], None]


def fan_out(sinks: Iterable[EventSink | None]) -> EventSink:
    """One sink that forwards each event to every given sink, in order."""
    targets = [s for s in sinks if s is not None]

    def emit(event: Event) -> None:
        for sink in targets:
            sink(event)

    return emit
