"""What the CLI shows of job groups: pipeline runs as levels, sweep tables, schedules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.markup import escape

from nbjobs.spec import JobState
from nbjobs.terminal import _duration, _state, _table, out

RUN_STYLE = {
    "succeeded": "green",
    "running": "cyan",
    "succeeded_with_failures": "yellow",
    "cancelled": "magenta",
}


def _run_state(state: str) -> str:
    return f"[{RUN_STYLE.get(state, 'red')}]{state}[/]"


def _time(value: Any) -> str:
    if not value:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def print_run(run: dict[str, Any]) -> None:
    """A run as its graph's levels: each task with its state, job, attempts and results or reason."""
    reason = f": {escape(run['reason'])}" if run.get("reason") else ""
    out.print(f"Run {run['id']} [bold]{escape(run['name'])}[/] {_run_state(run['state'])}{reason}")
    if run.get("params"):
        out.print("  params: " + ", ".join(f"{k}={v!r}" for k, v in run["params"].items()))
    for warning in run.get("warnings", []):
        out.print(f"  [yellow]warning:[/] {escape(warning)}")
    tasks = {t["name"]: t for t in run["tasks"]}
    table = _table("level", "task", "state", "job", "tries", "duration", "after", "results / reason")
    for depth, names in enumerate(run["levels"]):
        for name in names:
            t = tasks[name]
            after = ", ".join(t["depends_on"])
            if after and t["run_if"] != "all_succeeded":
                after += f" ({t['run_if']})"
            detail = ", ".join(f"{k}={_short(v, 24)}" for k, v in t["results"].items())
            if t["state"] != "succeeded":
                detail = t.get("reason") or t.get("queue_reason") or detail
            table.add_row(
                str(depth),
                escape(name),
                _state(JobState(t["state"])),
                str(t["job_id"]),
                str(t["attempts"]),
                _duration(t.get("duration")),
                escape(after or "-"),
                escape(detail or ""),
            )
    out.print(table)
    out.print(f"  jobs: nbjobs show JOB · repair: nbjobs pipeline repair {run['id']}")


def print_runs(runs: Sequence[dict[str, Any]]) -> None:
    if not runs:
        out.print("No pipeline runs yet. Start one with `nbjobs pipeline run FILE`.")
        return
    table = _table("id", "name", "state", "created", "tasks", "reason")
    for r in runs:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items()))
        table.add_row(
            str(r["id"]),
            escape(r["name"]),
            _run_state(r["state"]),
            _time(r["created"]),
            counts,
            escape(r["reason"] or ""),
        )
    out.print(table)


# ---------------------------------------------------------------- sweeps


def print_sweep(sweep: dict[str, Any], columns: list[str], rows: list[dict[str, Any]]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep["counts"].items()))
    limit = f", max-parallel {sweep['max_parallel']}" if sweep.get("max_parallel") else ""
    out.print(
        f"Sweep {sweep['id']} [bold]{escape(sweep['name'])}[/]: {sweep['size']} jobs ({sweep['mode']}{limit}); {counts}"
    )
    table = _table(*columns, "")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(
                _state(JobState(value))
                if column == "state"
                else escape(_short(value, 24) if value is not None else "-")
            )
        table.add_row(*cells, "")
    out.print(table)


def print_sweeps(sweeps: Sequence[dict[str, Any]]) -> None:
    if not sweeps:
        out.print("No sweeps yet. Start one with `nbjobs sweep NOTEBOOK -p NAME V1,V2`.")
        return
    table = _table("id", "name", "size", "mode", "created", "jobs")
    for w in sweeps:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(w["counts"].items()))
        table.add_row(str(w["id"]), escape(w["name"]), str(w["size"]), w["mode"], _time(w["created"]), counts)
    out.print(table)


# ---------------------------------------------------------------- schedules


def print_schedules(schedules: Sequence[dict[str, Any]]) -> None:
    """One block per schedule: what it runs, then when and how (narrow terminals keep it readable)."""
    if not schedules:
        out.print("No schedules. Add one with `nbjobs schedule add NAME --notebook NB --cron '0 6 * * *'`.")
        return
    for s in schedules:
        out.print(f"[bold]{escape(s['name'])}[/]  {s['kind']}: {escape(str(s['target']))}")
        when = "[magenta]paused[/]" if s["paused"] else f"next {_time(s['next_fire_at'])}"
        out.print(
            f"  cron {escape(s['cron'])!r} {s['timezone']} · {when} · overlap {s['overlap']} · catch-up {s['catch_up']}"
        )
        last = (
            f"job {s['last_job_id']}" if s["last_job_id"] else (f"run {s['last_run_id']}" if s["last_run_id"] else "")
        )
        if last or s["last_note"]:
            out.print(f"  last: {last or '-'} {escape(s['last_note'] or '')}")
