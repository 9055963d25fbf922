"""What the CLI shows a person: progress, live output, job tables and details."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nbjobs.events import CellFinished, CellSkipped, CellStarted, Event, StreamText
from nbjobs.resources.monitor import hoarding_advice
from nbjobs.resources.report import GroupUsage
from nbjobs.spec import JobState, Resources, format_size
from nbjobs.store import GitRecord, JobRecord

STATE_STYLE = {
    JobState.SUCCEEDED: "green",
    JobState.RUNNING: "cyan",
    JobState.STARTING: "cyan",
    JobState.QUEUED: "yellow",
    JobState.CANCELLED: "magenta",
    JobState.SKIPPED: "dim",
}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class ProgressBar:
    """A bar over the notebook's code cells, on stderr."""

    def __init__(self, total: int, title: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self.title = title
        self.task = self.progress.add_task(title, total=total)
        self.progress.start()

    def __call__(self, event: Event) -> None:
        match event:
            case CellStarted(index=i):
                self.progress.update(self.task, description=f"{self.title} · cell {i}")
            case CellFinished() | CellSkipped():
                self.progress.advance(self.task)

    def close(self) -> None:
        self.progress.stop()


class LogStreamer:
    """The notebook's stdout and stderr, live, on ours."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, StreamText):
            stream = sys.stderr if event.name == "stderr" else sys.stdout
            stream.write(event.text)
            stream.flush()


def _state(state: JobState) -> str:
    return f"[{STATE_STYLE.get(state, 'red')}]{state.value}[/]"


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def print_job(record: JobRecord, *, brief: bool = False) -> None:
    reason = f": {escape(record.reason)}" if record.reason else ""
    out.print(
        f"Job {record.id} [bold]{escape(record.name)}[/] {_state(record.state)} in {_duration(record.duration)}{reason}"
    )
    out.print(f"  output: {record.output or '-'}")
    out.print(f"  log:    {record.log or '-'}")
    if record.results:
        out.print("  results: " + ", ".join(f"{k}={v!r}" for k, v in record.results.items()))
    if record.git:
        out.print(f"  git:    {escape(describe_git(record.git))}")
    if brief:
        out.print(f"  record: nbjobs show {record.id}")
        return
    rows = [
        ("notebook", record.notebook),
        ("owner", f"{record.owner}@{record.host}"),
        ("created", _when(record.created)),
        ("started", _when(record.started)),
        ("ended", _when(record.ended)),
        ("tags", ", ".join(record.tags) or "-"),
        ("parameters", ", ".join(f"{k}={v!r}" for k, v in record.parameters.items()) or "-"),
        ("artifacts", ", ".join(record.artifacts) or "-"),
    ]
    for key, value in rows:
        out.print(f"  {key + ':':<11} {escape(str(value))}")
    for key, value in usage_lines(record):
        out.print(f"  {key + ':':<11} {escape(value)}")
    counts: dict[str, int] = {}
    for cell in record.cells:
        counts[cell.status] = counts.get(cell.status, 0) + 1
    out.print("  cells:      " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "-"))
    if record.attempts:
        table = _table("attempt", "state", "started", "duration", "reason")
        for a in record.attempts:
            took = (a.ended - a.started).total_seconds() if a.started and a.ended else None
            table.add_row(str(a.number), _state(a.state), _when(a.started), _duration(took), escape(a.reason or ""))
        out.print(table)


def describe_git(git: GitRecord) -> str:
    """One line: commit, branch or ref, clean or dirty, repository and remote."""
    commit = git.commit[:12] if git.commit else "(no commit yet)"
    where = (
        f"at {git.ref}" if git.source == "snapshot" and git.ref else f"on {git.branch}" if git.branch else "detached"
    )
    if git.source == "snapshot":
        state = "from a snapshot"
    elif git.dirty:
        shown = ", ".join(git.modified[:5]) + (", ..." if len(git.modified) > 5 else "")
        state = f"dirty: {len(git.modified)} file(s) ({shown}), diff sha256 {(git.diff_sha256 or '-')[:12]}"
    else:
        state = "clean"
    remote = f", remote {git.remote}" if git.remote and git.remote != git.repo else ""
    return f"{commit} {where}, {state} · {git.repo}{remote}"


def _resources_text(resources: dict[str, Any]) -> str:
    parts = []
    if resources.get("cpus") is not None:
        parts.append(f"{resources['cpus']:g} CPUs")
    if resources.get("memory") is not None:
        parts.append(format_size(int(resources["memory"])))
    if resources.get("gpus"):
        parts.append(f"{resources['gpus']} GPUs")
    parts += [f"{name}={count}" for name, count in sorted((resources.get("custom") or {}).items())]
    return ", ".join(parts) or "nothing in particular"


def usage_lines(record: JobRecord) -> list[tuple[str, str]]:
    """Requested vs used for `show`: the last attempt's measurements and advice."""
    requested = record.spec.get("resources") or {}
    lines = [("requested", _resources_text(requested))]
    usage = record.attempts[-1].usage if record.attempts else {}
    allocation = usage.get("allocation") or {}
    given = []
    if allocation.get("cpus"):
        given.append("CPU ids " + ",".join(str(c) for c in allocation["cpus"]))
    if allocation.get("gpus"):
        given.append("GPUs " + ",".join(allocation["gpus"]))
    if allocation.get("memory"):
        given.append(f"memory limit {format_size(allocation['memory'])} ({usage.get('enforcement', '?')})")
    if given:
        lines.append(("allocated", "; ".join(given)))
    summary = usage.get("summary") or {}
    if summary.get("samples"):
        used = [
            f"peak memory {format_size(int(summary['peak_memory']))}",
            f"mean CPU {summary['mean_cpu']:.2f} cores",
            f"CPU time {_duration(summary['cpu_time'])}",
            f"wall {_duration(summary['wall_time'])}",
        ]
        if summary.get("peak_gpu_memory") is not None:
            used.append(f"peak GPU memory {format_size(int(summary['peak_gpu_memory']))}")
        lines.append(("used", ", ".join(used)))
        try:
            advice = hoarding_advice(Resources.model_validate(requested), summary)
        except ValueError:  # a spec from an older version: no advice rather than no `show`
            advice = None
        if advice:
            lines.append(("advice", advice))
    return lines


def print_usage_report(groups: list[GroupUsage], by: str) -> None:
    """One row per group: requested against used, averaged per job."""
    if not groups:
        out.print("No finished jobs yet.")
        return

    def size(value: float | None) -> str:
        return format_size(int(value)) if value else "-"

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    table = Table(box=None, padding=(0, 2))
    for name in ("jobs", "memory asked → peak", "used", "CPUs asked → used", "used"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column(by, overflow="fold")  # last: notebook paths and tags may be long
    for g in groups:
        table.add_row(
            str(g.jobs),
            f"{size(g.memory_requested_avg)} → {size(g.memory_peak_avg)}",
            number(g.memory_ratio, ".0%"),
            f"{number(g.cpus_requested_avg, '.1f')} → {number(g.cpu_used_avg, '.2f')}",
            number(g.cpu_ratio, ".0%"),
            escape(g.group),
        )
    out.print(table)
    out.print("Averages per job; 'used' is the share of what was asked that was used (jobs that asked).")


def _table(*columns: str) -> Table:
    """Columns that never wrap, except the last (reasons can be long)."""
    table = Table(box=None, padding=(0, 2))
    for name in columns[:-1]:
        table.add_column(name, no_wrap=True)
    table.add_column(columns[-1], overflow="fold")
    return table


def print_job_table(records: list[JobRecord]) -> None:
    if not records:
        out.print("No jobs yet. Run one with `nbjobs run NOTEBOOK`.")
        return
    table = _table("id", "name", "state", "created", "duration", "reason")
    for r in records:
        table.add_row(
            str(r.id), escape(r.name), _state(r.state), _when(r.created), _duration(r.duration), escape(r.reason or "")
        )
    out.print(table)


def print_parameters(notebook: str, declared: list[Any] | None) -> None:
    if declared is None:
        out.print(f"{notebook} has no cell tagged `parameters`.")
        return
    if not declared:
        out.print(f"{notebook}: the parameters cell declares nothing.")
        return
    table = _table("name", "type", "default", "help")
    for p in declared:
        table.add_row(p.name, p.type or "-", escape(p.default), escape(p.help or ""))
    out.print(table)


def print_queue(view: dict[str, Any]) -> None:
    free = view.get("free", {})
    out.print(
        f"capacity: {view['capacity']['text']}; free: {free.get('cpu_count', len(free.get('cpus', [])))} CPUs, "
        f"{format_size(free.get('memory', 0))}, {len(free.get('gpus', []))} GPUs"
    )
    table = _table("id", "name", "owner", "state", "reason")
    for job in view.get("running", []):
        table.add_row(str(job["id"]), escape(job["name"]), job["owner"], _state(JobState(job["state"])), "")
    for job in view.get("waiting", []):
        reason = escape(job["reason"] or "")
        table.add_row(str(job["id"]), escape(job["name"]), job["owner"], _state(JobState.QUEUED), reason)
    out.print(table if table.row_count else "The queue is empty.")


def _value(value: Any) -> str:
    return escape(repr(value))


def _print_mapping_diff(title: str, diff: dict[str, Any]) -> None:
    changed, only_a, only_b = diff["changed"], diff["only_a"], diff["only_b"]
    if not (changed or only_a or only_b):
        out.print(f"{title}: same" + (f" ({len(diff['same'])})" if diff["same"] else ""))
        return
    out.print(f"{title}:")
    for key, pair in changed.items():
        out.print(f"  {escape(key)}: {_value(pair['a'])} -> {_value(pair['b'])}")
    for key, value in only_a.items():
        out.print(f"  {escape(key)}: {_value(value)} -> (absent)")
    for key, value in only_b.items():
        out.print(f"  {escape(key)}: (absent) -> {_value(value)}")


def print_comparison(c: dict[str, Any]) -> None:
    """`nbjobs diff`: the two jobs, then what differs between them, A -> B."""
    for side in ("a", "b"):
        job = c[side]
        out.print(f"{side.upper()}: job {job['id']} [bold]{escape(job['name'])}[/] {job['state']}")
    git = c["git"]
    if git["a"] is None and git["b"] is None:
        out.print("git: neither job ran from a repository")
    else:
        for side in ("a", "b"):
            line = describe_git(GitRecord.model_validate(git[side])) if git[side] else "not in a repository"
            out.print(f"git {side.upper()}: {escape(line)}")
        if git["same_files"]:
            out.print("  same commit, same files")
        elif git["log"] is not None:
            newer, older = git["log"]["a..b"], git["log"]["b..a"]
            if newer:
                out.print(f"  {len(newer)} commit(s) in B and not in A (git log A..B):")
                for line in newer:
                    out.print(f"    {escape(line)}")
            if older:
                out.print(f"  {len(older)} commit(s) in A and not in B (git log B..A):")
                for line in older:
                    out.print(f"    {escape(line)}")
    _print_mapping_diff("parameters", c["parameters"])
    _print_mapping_diff("results", c["results"])
    duration = c["duration"]
    change = f" ({duration['change']:+.2f} s)" if duration["change"] is not None else ""
    out.print(f"duration: {_duration(duration['a'])} -> {_duration(duration['b'])}{change}")
    if c["usage"]["a"] or c["usage"]["b"]:
        _print_mapping_diff("resource use", c["usage"])
    cells = c["cells"]
    if not cells["available"]:
        out.print("cells: cannot compare, output notebook missing: " + ", ".join(cells["missing"]))
        return
    counts = cells["counts"]
    out.print("cells: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "cells: none")
    for change in cells["changes"]:
        a = "-" if change["a"] is None else change["a"]
        b = "-" if change["b"] is None else change["b"]
        status = change["status"]
        extra = (
            f" (status {status['a']} -> {status['b']})"
            if status["a"] != status["b"] and change["a"] is not None and change["b"] is not None
            else ""
        )
        out.print(f"[bold]cell A{a} / B{b}: {change['change']}{extra}[/]")
        for line in change["source"] + change["outputs"]:
            style = (
                "green"
                if line.startswith("+")
                else "red"
                if line.startswith("-")
                else "cyan"
                if line.startswith("@@")
                else ""
            )
            out.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
