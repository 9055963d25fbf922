"""A pipeline run's task graph as inline SVG: one row per level, top to bottom, no script needed.

Each task is a link to its job's page, filled by its state (a `state-*` class,
coloured by app.css) and labelled with the state in words, so nothing rests on
colour alone. The page's script changes the class and label as tasks move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

NODE_W, NODE_H = 168, 50
GAP_X, GAP_Y, PAD = 28, 44, 10
NAME_CHARS = 20  # what fits in a node at 13px; the full name is in the tooltip and the tasks table


@dataclass(frozen=True)
class Placed:
    x: int
    y: int

    @property
    def top(self) -> tuple[int, int]:
        return self.x + NODE_W // 2, self.y

    @property
    def bottom(self) -> tuple[int, int]:
        return self.x + NODE_W // 2, self.y + NODE_H


def order_levels(levels: Sequence[Sequence[str]], upstreams: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each level sorted by where its upstreams sit (their mean slot), which uncrosses most edges."""
    slot: dict[str, float] = {}
    ordered: list[list[str]] = []
    for depth, names in enumerate(levels):
        row = list(names)
        if depth:
            # Position in the definition breaks ties, so the drawing is stable from one load to the next.
            def centre(name: str) -> float:
                ups = [slot[u] for u in upstreams.get(name, ()) if u in slot]
                return sum(ups) / len(ups) if ups else float("inf")

            row.sort(key=centre)
        slot.update({name: i - (len(row) - 1) / 2 for i, name in enumerate(row)})
        ordered.append(row)
    return ordered


def layout(levels: Sequence[Sequence[str]]) -> tuple[dict[str, Placed], int, int]:
    """Positions of the nodes (each row centred), and the drawing's width and height."""
    widest = max((len(row) for row in levels), default=0)
    width = 2 * PAD + widest * NODE_W + max(widest - 1, 0) * GAP_X
    height = 2 * PAD + len(levels) * NODE_H + max(len(levels) - 1, 0) * GAP_Y
    placed: dict[str, Placed] = {}
    for depth, row in enumerate(levels):
        row_width = len(row) * NODE_W + (len(row) - 1) * GAP_X
        left = (width - row_width) // 2
        for i, name in enumerate(row):
            placed[name] = Placed(left + i * (NODE_W + GAP_X), PAD + depth * (NODE_H + GAP_Y))
    return placed, width, height


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def task_graph(run: Mapping[str, Any]) -> Markup:
    """The SVG of a run view (`PipelineService.view`): its `levels` and its `tasks`."""
    tasks = {t["name"]: t for t in run["tasks"]}
    upstreams = {name: t["depends_on"] for name, t in tasks.items()}
    placed, width, height = layout(order_levels(run["levels"], upstreams))
    parts = [
        f'<svg class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="group" aria-label="task graph of run {int(run["id"])}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for name, task in tasks.items():
        for up in task["depends_on"]:
            if up not in placed or name not in placed:
                continue
            (x1, y1), (x2, y2) = placed[up].bottom, placed[name].top
            bend = (y2 - y1) / 2
            # A condition other than the default is drawn dashed, and named in the tooltip.
            conditional = task["run_if"] != "all_succeeded"
            kind = "edge conditional" if conditional else "edge"
            condition = f" (run if {escape(task['run_if'])})" if conditional else ""
            parts.append(
                f'<path class="{kind}" marker-end="url(#arrow)" '
                f'd="M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2 - 2}">'
                f"<title>{escape(up)} → {escape(name)}{condition}</title></path>"
            )
    for name, task in tasks.items():
        if name not in placed:
            continue
        p, state = placed[name], escape(task["state"])
        cx = p.x + NODE_W // 2
        parts.append(
            f'<a class="node state-{state}" href="/ui/jobs/{int(task["job_id"])}" data-job-id="{int(task["job_id"])}" '
            f'data-task="{escape(name)}" aria-label="task {escape(name)}: {state}">'
            f"<title>{escape(name)}: {state}</title>"
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text class="name" x="{cx}" y="{p.y + 21}">{escape(_short(name))}</text>'
            f'<text class="label" x="{cx}" y="{p.y + 39}">{state}</text>'
            "</a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
