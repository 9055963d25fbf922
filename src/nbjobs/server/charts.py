"""Inline SVG charts for the dashboard: no script, no library, readable without JavaScript."""

from __future__ import annotations

from html import escape
from typing import Any

from markupsafe import Markup

from nbjobs.spec import format_size


def _points(xs: list[float], ys: list[float], x_max: float, y_max: float, w: int, h: int, pad: int) -> str:
    def sx(x: float) -> float:
        return pad + (w - 2 * pad) * (x / x_max if x_max else 0)

    def sy(y: float) -> float:
        return h - pad - (h - 2 * pad) * (y / y_max if y_max else 0)

    return " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=False))


def usage_chart(
    series: dict[str, Any], *, memory_limit: int | None = None, cpus: float | None = None, width: int = 640
) -> Markup | None:
    """Memory (bytes) and CPU (cores) over the attempt's time, with what was requested as dashed lines.

    `series` is an attempt's `usage.series`: {"t": [...], "memory": [...], "cpu": [...]}.
    """
    t = [float(x) for x in series.get("t") or []]
    memory = [float(x or 0) for x in series.get("memory") or []]
    cpu = [float(x or 0) for x in series.get("cpu") or []]
    if len(t) < 2 or len(memory) != len(t):
        return None
    h, pad = 180, 28
    t_max = max(t[-1], 1e-9)
    mem_max = max([*memory, float(memory_limit or 0)]) * 1.1 or 1.0
    cpu_max = max([*cpu, float(cpus or 0), 1.0]) * 1.1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {h}" role="img" aria-label="memory and CPU over time" '
        'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{h - 2 * pad}" class="frame"/>',
        f'<polyline class="mem" points="{_points(t, memory, t_max, mem_max, width, h, pad)}"/>',
    ]
    if len(cpu) == len(t):
        parts.append(f'<polyline class="cpu" points="{_points(t, cpu, t_max, cpu_max, width, h, pad)}"/>')
    if memory_limit:
        y = _points([0, t_max], [memory_limit, memory_limit], t_max, mem_max, width, h, pad)
        parts.append(f'<polyline class="mem limit" points="{y}"/>')
    if cpus:
        y = _points([0, t_max], [cpus, cpus], t_max, cpu_max, width, h, pad)
        parts.append(f'<polyline class="cpu limit" points="{y}"/>')
    label = f"memory (max {format_size(int(max(memory)))})"
    cpu_label = f"CPU cores (max {max(cpu or [0]):.2f})"
    parts += [
        f'<text x="{pad}" y="{pad - 8}" class="mem">{escape(label)}</text>',
        f'<text x="{width - pad}" y="{pad - 8}" class="cpu" text-anchor="end">{escape(cpu_label)}</text>',
        f'<text x="{width - pad}" y="{h - 8}" text-anchor="end">{t_max:.1f} s</text>',
        f'<text x="{pad}" y="{h - 8}">0 s</text>',
        "</svg>",
    ]
    return Markup("".join(parts))
