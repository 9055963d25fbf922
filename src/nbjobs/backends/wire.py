"""What travels between the server and a Dask worker, and the names both sides use.

The server submits one request (a dict) per attempt; the worker reports progress
as messages on the server's event topic (Dask's event log: `Worker.log_event`
on the worker, `Client.subscribe_topic` on the server) and returns the result as
the task's value. Messages must be msgpack-able, so events are flattened into
dicts of plain values here and rebuilt on the other side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nbjobs.attempt import AttemptResult
from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event, StreamText
from nbjobs.notebook.runner import RunOutcome
from nbjobs.spec import JobState

EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (CellStarted, CellFinished, CellSkipped, StreamText)}
_DATETIME = "$datetime"

# Kinds of message a worker sends about one attempt, in the order they come.
CLAIMED = "claimed"  # the task started on a worker: {worker, host}
BEGIN = "begin"  # the attempt is prepared: {host, output, log, folder, cells}
STATE = "state"  # {state}: starting, running
KERNEL = "kernel"  # {pid}
EVENT = "event"  # {event}: cell progress and output lines


@dataclass(frozen=True)
class LaunchNames:
    """Names of one attempt on the cluster: task key, cancel signal, started token."""

    key: str
    cancel: str  # a distributed.Event, set to cancel the attempt; a Variable of the same name holds the reason
    started: str  # a distributed.Event: set once a worker has begun the attempt

    @classmethod
    def of(cls, job_id: int, attempt: int, scope: str) -> LaunchNames:
        # `scope` keeps apart servers (and stores) that share one scheduler: each has its own job ids.
        base = f"{job_id}-{attempt}-{scope}"
        return cls(key=f"nbjobs-{base}", cancel=f"nbjobs-cancel-{base}", started=f"nbjobs-started-{base}")


def encode_event(event: Event) -> dict[str, Any] | None:
    """A flat dict of plain values for one runner event; None for an event of a kind we do not ship."""
    if not dataclasses.is_dataclass(event) or type(event).__name__ not in EVENT_TYPES:
        return None
    data: dict[str, Any] = {"type": type(event).__name__}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        data[field.name] = {_DATETIME: value.isoformat()} if isinstance(value, datetime) else value
    return data


def decode_event(data: dict[str, Any]) -> Event | None:
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        return None
    values = {
        k: datetime.fromisoformat(v[_DATETIME]) if isinstance(v, dict) and _DATETIME in v else v
        for k, v in data.items()
        if k != "type"
    }
    try:
        event: Event = cls(**values)
    except TypeError:  # a worker of another nbjobs version: drop what we cannot read
        return None
    return event


def result_to_wire(result: AttemptResult, cells: dict[int, str] | None = None) -> dict[str, Any]:
    """The task's return value: the attempt's result, plus each code cell's final status."""
    return {
        "state": result.outcome.state.value,
        "reason": result.outcome.reason,
        "failed_cell": result.outcome.failed_cell,
        "results": result.results,
        "artifacts": result.artifacts,
        "usage": result.usage,
        "cells": {str(index): status for index, status in (cells or {}).items()},
    }


def result_from_wire(data: dict[str, Any]) -> tuple[AttemptResult, dict[int, str]]:
    outcome = RunOutcome(JobState(data["state"]), str(data["reason"]), data.get("failed_cell"))
    result = AttemptResult(
        outcome,
        results=dict(data.get("results") or {}),
        artifacts=list(data.get("artifacts") or []),
        usage=dict(data.get("usage") or {}),
    )
    return result, {int(index): str(status) for index, status in (data.get("cells") or {}).items()}


def ended(state: JobState, reason: str) -> dict[str, Any]:
    """The task's value for an attempt that ended before it ran anything."""
    return result_to_wire(AttemptResult(RunOutcome(state, reason)))
