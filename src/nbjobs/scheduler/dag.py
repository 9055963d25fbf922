"""Pipeline DAG logic: graphs of task names, run-if conditions, references, run outcomes.

Pure functions over names, states and strings: no store, no kernels, no clock,
so every rule here is testable on its own. The dispatcher's dependency gate and
the pipeline service call them with what they read from the store.

A graph maps each node to its upstreams (the nodes it depends on), in the order
the user wrote them; every function keeps that order so messages are stable.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nbjobs.spec import JobState, RunIf

Graph = Mapping[str, Sequence[str]]  # node -> its upstreams

# End states that count as a failure for run-if conditions (everything but succeeded and skipped).
FAILURE_STATES = frozenset(s for s in JobState if s.is_final and s not in (JobState.SUCCEEDED, JobState.SKIPPED))

# ---------------------------------------------------------------- graph shape


def unknown_upstreams(graph: Graph) -> list[tuple[str, str]]:
    """(node, upstream) pairs whose upstream is not a node of the graph."""
    return [(node, up) for node, ups in graph.items() for up in ups if up not in graph]


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as a closed path (`[a, b, a]`), or None; self-loops count."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        # Iterative DFS: a deep pipeline (thousands of tasks in a chain) must not hit the recursion limit.
        path: list[str] = [root]
        stack: list[Iterable[str]] = [iter(graph[root])]
        colour[root] = grey
        while stack:
            advanced = False
            for up in stack[-1]:
                if up not in colour:
                    continue
                if colour[up] == grey:
                    return [*path[path.index(up) :], up]
                if colour[up] == white:
                    colour[up] = grey
                    path.append(up)
                    stack.append(iter(graph[up]))
                    advanced = True
                    break
            if not advanced:
                colour[path.pop()] = black
                stack.pop()
    return None


def describe_cycle(cycle: Sequence[str]) -> str:
    """`extract -> train -> extract`, in the direction data flows."""
    return " -> ".join(reversed(cycle))


def downstreams(graph: Graph) -> dict[str, list[str]]:
    """The reverse graph: node -> the nodes that depend on it."""
    out: dict[str, list[str]] = {node: [] for node in graph}
    for node, ups in graph.items():
        for up in ups:
            out.setdefault(up, []).append(node)
    return out


def leaves(graph: Graph) -> list[str]:
    """Nodes nothing depends on: where a run ends."""
    below = downstreams(graph)
    return [node for node in graph if not below[node]]


def levels(graph: Graph) -> list[list[str]]:
    """Nodes by depth: level 0 has no upstreams, level n depends on level < n only."""
    depth: dict[str, int] = {}
    for node in topological_order(graph):
        depth[node] = 1 + max((depth[up] for up in graph[node]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in graph:
        out[depth[node]].append(node)
    return out


def topological_order(graph: Graph) -> list[str]:
    """Upstreams before downstreams, otherwise in definition order; ValueError on a cycle."""
    remaining = {node: len(ups) for node, ups in graph.items()}
    below = downstreams(graph)
    ready = deque(node for node, n in remaining.items() if n == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for down in below[node]:
            remaining[down] -= 1
            if remaining[down] == 0:
                ready.append(down)
    if len(order) != len(graph):
        raise ValueError("graph has a cycle")
    return order


def ancestors(graph: Graph, node: str) -> set[str]:
    """Every node `node` depends on, directly or through others."""
    seen: set[str] = set()
    todo = list(graph.get(node, ()))
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo.extend(graph.get(up, ()))
    return seen


def descendants(graph: Graph, nodes: Iterable[str]) -> set[str]:
    """`nodes` and every node that depends on one of them, directly or not."""
    below = downstreams(graph)
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(below.get(node, ()))
    return seen


# ---------------------------------------------------------------- run-if

# Skips caused by a failure upstream have reasons starting with this; skips because a
# condition simply did not apply (an any_failed task when nothing failed) never do. A
# downstream task tells the two apart by its upstream's reason: the first kind is a
# failure that propagates (an any_failed task below it runs), the second is not.
FAILURE_SKIP_PREFIX = "upstream "

_FAILURE_PHRASE = {
    JobState.FAILED: "failed",
    JobState.TIMED_OUT: "timed out",
    JobState.KERNEL_DIED: "failed (kernel died)",
    JobState.MEMORY_EXCEEDED: "failed (memory exceeded)",
    JobState.LOST: "failed (lost)",
    JobState.CANCELLED: "was cancelled",
}


def is_failure_skip(state: JobState, reason: str | None) -> bool:
    return state is JobState.SKIPPED and (reason or "").startswith(FAILURE_SKIP_PREFIX)


@dataclass(frozen=True)
class Upstream:
    """What a waiting job knows of one upstream: who it is and how it stands."""

    job_id: int
    name: str
    state: JobState
    reason: str | None = None

    @property
    def failed(self) -> bool:
        """Ended in failure, or was skipped because of a failure further up."""
        return self.state in FAILURE_STATES or is_failure_skip(self.state, self.reason)

    def failure_phrase(self) -> str:
        if self.state is JobState.SKIPPED:
            return "was skipped after a failure"
        return _FAILURE_PHRASE.get(self.state, self.state.value)


class Verdict(StrEnum):
    WAIT = "wait"
    RELEASE = "release"
    SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str | None = None  # why it waits, or why it is skipped


def evaluate(groups: Mapping[RunIf, Sequence[Upstream]], *, max_listed: int = 3) -> Decision:
    """Whether a job whose upstreams stand so may start, must wait, or is skipped.

    Each run-if condition applies to the upstreams that carry it; all must hold.
    A job is released only once every upstream has ended, and skipped as soon as
    its condition can no longer hold (all_succeeded with one upstream failed).
    """
    pending: list[Upstream] = []
    skips: list[str] = []
    for run_if, ups in groups.items():
        decision = _evaluate_one(run_if, ups)
        if decision.verdict is Verdict.SKIP:
            skips.append(decision.reason or "")
        pending.extend(u for u in ups if not u.state.is_final)
    if skips:
        # A failure-caused skip explains more than a condition that did not apply.
        skips.sort(key=lambda r: not r.startswith(FAILURE_SKIP_PREFIX))
        return Decision(Verdict.SKIP, skips[0])
    if pending:
        return Decision(Verdict.WAIT, wait_reason(pending, max_listed=max_listed))
    return Decision(Verdict.RELEASE)


def _evaluate_one(run_if: RunIf, ups: Sequence[Upstream]) -> Decision:
    done = all(u.state.is_final for u in ups)
    failed = next((u for u in ups if u.failed), None)
    if run_if is RunIf.ALL_SUCCEEDED:
        if failed is not None:
            return Decision(Verdict.SKIP, f"{FAILURE_SKIP_PREFIX}{failed.name} {failed.failure_phrase()}")
        benign = next((u for u in ups if u.state is JobState.SKIPPED), None)
        if benign is not None:
            return Decision(Verdict.SKIP, f"not needed: {benign.name} was skipped ({run_if.value})")
    elif run_if is RunIf.NONE_FAILED and failed is not None:
        return Decision(Verdict.SKIP, f"{FAILURE_SKIP_PREFIX}{failed.name} {failed.failure_phrase()}")
    elif run_if is RunIf.ANY_FAILED and done and failed is None:
        names = ", ".join(u.name for u in ups)
        return Decision(Verdict.SKIP, f"not needed: no upstream failed ({names}; {run_if.value})")
    return Decision(Verdict.RELEASE if done else Verdict.WAIT)


def wait_reason(pending: Sequence[Upstream], *, max_listed: int = 3) -> str:
    """`waiting for job 12 (running)`, listing a few and counting the rest."""
    listed = ", ".join(f"job {u.job_id} ({u.state.value})" for u in pending[:max_listed])
    more = f" and {len(pending) - max_listed} more" if len(pending) > max_listed else ""
    return f"waiting for {listed}{more}"


# ---------------------------------------------------------------- run outcome


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_FAILURES = "succeeded_with_failures"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self is not RunState.RUNNING


@dataclass(frozen=True)
class TaskView:
    """One task of a run as the outcome rules see it."""

    state: JobState
    reason: str | None
    upstreams: tuple[str, ...] = ()
    run_if: RunIf = RunIf.ALL_SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.state in FAILURE_STATES or is_failure_skip(self.state, self.reason)


def run_outcome(tasks: Mapping[str, TaskView], *, cancelled: bool = False) -> tuple[RunState, str]:
    """A run's state from its tasks': running until every task has ended, then by its leaves.

    - succeeded: nothing failed (tasks skipped because their condition did not apply are fine);
    - failed: a leaf task failed, or a failure stopped the run with no failure path taken;
    - succeeded_with_failures: something failed, but a planned failure path (a task with
      run_if any_failed or all_done below the failure) ran and succeeded, and no leaf failed.
    """
    unfinished = [n for n, t in tasks.items() if not t.state.is_final]
    if unfinished:
        return RunState.RUNNING, f"{len(unfinished)} of {len(tasks)} tasks unfinished"
    if cancelled:
        return RunState.CANCELLED, "cancelled by user"
    failed = [n for n, t in tasks.items() if t.state in FAILURE_STATES]
    if not failed and not any(t.failed for t in tasks.values()):
        skipped = sum(t.state is JobState.SKIPPED for t in tasks.values())
        note = f" ({skipped} not needed)" if skipped else ""
        return RunState.SUCCEEDED, f"{len(tasks) - skipped} tasks succeeded{note}"
    graph = {n: t.upstreams for n, t in tasks.items()}
    failed_leaves = [n for n in leaves(graph) if tasks[n].state in FAILURE_STATES]
    if failed_leaves:
        return RunState.FAILED, f"task {failed_leaves[0]} {_phrase(tasks[failed_leaves[0]].state)}"
    handlers = [
        n
        for n, t in tasks.items()
        if t.state is JobState.SUCCEEDED
        and t.run_if in (RunIf.ANY_FAILED, RunIf.ALL_DONE)
        and any(tasks[up].failed for up in t.upstreams if up in tasks)
    ]
    first = failed[0] if failed else next(n for n, t in tasks.items() if t.failed)
    if handlers:
        return RunState.SUCCEEDED_WITH_FAILURES, f"task {first} {_phrase(tasks[first].state)}; handled by " + (
            ", ".join(handlers)
        )
    return RunState.FAILED, f"task {first} {_phrase(tasks[first].state)}"


def _phrase(state: JobState) -> str:
    return _FAILURE_PHRASE.get(state, "was skipped after a failure" if state is JobState.SKIPPED else state.value)


# ---------------------------------------------------------------- references

# `${task.result}` or `${task.result.key...}`; `${params.name}` for the run's parameters;
# `$${...}` is a literal `${...}`.
_REFERENCE = re.compile(r"\$(\$?)\{([^{}]*)\}")
PARAMS_SOURCE = "params"


class BadReference(ValueError):
    """A `${...}` that is not `${task.result}` or `${params.name}`."""


@dataclass(frozen=True)
class Reference:
    source: str  # a task name, or "params"
    name: str  # the result (or parameter) name
    path: tuple[str, ...] = ()  # keys into a dict (or list indexes) inside the value

    @property
    def text(self) -> str:
        return "${" + ".".join((self.source, self.name, *self.path)) + "}"


def _parse(inner: str) -> Reference:
    parts = inner.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise BadReference(
            f"`${{{inner}}}` is not a reference; write `${{task.result}}` or `${{params.name}}` "
            "(`$${...}` for a literal `${...}`)"
        )
    return Reference(parts[0], parts[1], tuple(parts[2:]))


def find_references(value: Any) -> list[Reference]:
    """Every reference in a parameter value (strings inside lists and dicts included)."""
    found: list[Reference] = []
    if isinstance(value, str):
        found.extend(_parse(m.group(2)) for m in _REFERENCE.finditer(value) if not m.group(1))
    elif isinstance(value, list):
        for item in value:
            found.extend(find_references(item))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(find_references(item))
    return found


def resolve(value: Any, lookup: Callable[[Reference], Any]) -> Any:
    """`value` with its references replaced by `lookup(reference)`.

    A string that is exactly one reference becomes the referenced value with its
    JSON type (an int stays an int); a reference inside a longer string is
    interpolated as text (strings as they are, anything else as JSON).
    `lookup` raises KeyError (with a message) for a value that does not exist.
    """
    if isinstance(value, list):
        return [resolve(item, lookup) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, lookup) for key, item in value.items()}
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole and not whole.group(1):
        return lookup(_parse(whole.group(2)))

    def text(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        found = lookup(_parse(match.group(2)))
        return found if isinstance(found, str) else json.dumps(found)

    return _REFERENCE.sub(text, value)


def follow_path(value: Any, ref: Reference) -> Any:
    """The part of a result a reference's path points into; KeyError says where it stops."""
    for key in ref.path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.lstrip("-").isdigit() and -len(value) <= int(key) < len(value):
            value = value[int(key)]
        else:
            raise KeyError(f"{ref.text}: no {key!r} in {json.dumps(value)[:80]}")
    return value
