"""A sweep as a table: one row per element, a column per parameter and per result; sorted; as CSV.

Shared by `nbjobs sweep show --sort/--csv`, `GET /api/sweeps/{id}/results.csv` and the sweep page,
so the three agree on columns and order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

from nbjobs.errors import InvalidInput

DURATION_COLUMN = "duration_s"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def result_names(elements: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every result name the elements recorded, in the order they first appear."""
    names: dict[str, None] = {}
    for element in elements:
        names.update(dict.fromkeys(element["results"]))
    return list(names)


def sweep_rows(
    sweep: Mapping[str, Any], sort: str | None = None, *, durations: bool = False, field: str = "--sort"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (index, job, parameters, state, results[, duration_s]) and one flat row per element.

    `sort` is a column name, `-` in front for descending; elements without a value in that
    column (not run yet) come last either way. `field` names the option in the refusal.
    """
    params = list(sweep["axes"])
    results = result_names(sweep["elements"])
    rows = [
        {"index": e["index"], "job": e["job_id"], **e["parameters"], "state": e["state"], **e["results"]}
        for e in sweep["elements"]
    ]
    columns = ["index", "job", *params, "state", *results]
    if durations and DURATION_COLUMN not in columns:
        columns.append(DURATION_COLUMN)
        for row, element in zip(rows, sweep["elements"], strict=True):
            row[DURATION_COLUMN] = element.get("duration")
    if sort:
        key, descending = sort.lstrip("-"), sort.startswith("-")
        if key not in columns:
            raise InvalidInput(f"{field} {key!r}: no such column; columns: {', '.join(columns)}.")
        present = [r for r in rows if r.get(key) is not None]
        missing = [r for r in rows if r.get(key) is None]
        present.sort(key=lambda r: _sort_key(r[key]), reverse=descending)
        rows = present + missing
    return columns, rows


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text; lists and mappings by their JSON, so mixed columns still sort."""
    if isinstance(value, bool | int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, default=str))


def sweep_csv(columns: list[str], rows: list[dict[str, Any]], *, for_spreadsheets: bool = False) -> str:
    """The rows as CSV; lists and mappings as JSON.

    `for_spreadsheets`: text that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`...)
    gets a leading `'`, since a downloaded file is opened by double-click. Numbers are untouched.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        if for_spreadsheets:
            cells = {k: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v for k, v in cells.items()}
        writer.writerow(cells)
    return buffer.getvalue()
