"""How two jobs differ: code (commits and the commits between), inputs, results, cost, cells.

The result is plain JSON (`nbjobs diff --json`); `nbjobs.terminal` renders it as
text. Output notebooks are compared cell by cell: cells are aligned by their
sources (so an inserted cell does not make every later cell "changed"), then
sources and text outputs are diffed line by line with difflib. Outputs are
compared as text: streams, `text/plain`, recorded results, `ename: evalue` of
errors (tracebacks hold paths that differ between runs), and for rich outputs
without text a hash of the data.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat

from nbjobs.notebook.params import INJECTED_TAG
from nbjobs.notebook.results import RESULT_MIME_TYPE
from nbjobs.notebook.runner import BANNER_TAG, MARKER_TAG
from nbjobs.store import JobRecord
from nbjobs.vcs import commits_between, workdir_of

Cell = dict[str, Any]
INJECTED_KEY = "\0injected-parameters"
SIMILAR = 0.5  # sources at least this alike (difflib ratio) are one cell, edited


def compare_jobs(a: JobRecord, b: JobRecord, *, home: Path) -> dict[str, Any]:
    usage_a = a.attempts[-1].usage if a.attempts else {}
    usage_b = b.attempts[-1].usage if b.attempts else {}
    return {
        "a": _summary(a),
        "b": _summary(b),
        "git": compare_git(a, b, home),
        "parameters": compare_mappings(a.parameters, b.parameters),
        "results": compare_mappings(a.results, b.results),
        "duration": {
            "a": a.duration,
            "b": b.duration,
            "change": None if a.duration is None or b.duration is None else b.duration - a.duration,
        },
        "usage": {"a": usage_a, "b": usage_b, **compare_mappings(usage_a, usage_b)},
        "cells": compare_notebooks(a.output, b.output),
    }


def _summary(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "reason": record.reason,
        "notebook": record.notebook,
        "started": record.started.isoformat() if record.started else None,
        "output": record.output,
        "commit": record.git.commit if record.git else None,
    }


def compare_mappings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Keys whose values differ, keys only on one side, and keys with equal values."""
    return {
        "changed": {k: {"a": a[k], "b": b[k]} for k in sorted(a.keys() & b.keys()) if a[k] != b[k]},
        "only_a": {k: a[k] for k in sorted(a.keys() - b.keys())},
        "only_b": {k: b[k] for k in sorted(b.keys() - a.keys())},
        "same": {k: a[k] for k in sorted(a.keys() & b.keys()) if a[k] == b[k]},
    }


def compare_git(a: JobRecord, b: JobRecord, home: Path) -> dict[str, Any]:
    ga, gb = a.git, b.git
    out: dict[str, Any] = {
        "a": ga.model_dump() if ga else None,
        "b": gb.model_dump() if gb else None,
        "same_repo": bool(ga and gb and ga.repo == gb.repo),
        "same_commit": bool(ga and gb and ga.commit and ga.commit == gb.commit),
        "same_files": bool(ga and gb and ga.commit == gb.commit and ga.diff_sha256 == gb.diff_sha256),
        "log": None,
    }
    if out["same_repo"] and ga and gb and ga.commit and gb.commit and not out["same_commit"]:
        workdir = workdir_of(ga.repo, home)
        if workdir is not None:
            ahead = commits_between(workdir, ga.commit, gb.commit)
            behind = commits_between(workdir, gb.commit, ga.commit)
            if ahead is not None and behind is not None:
                # `a..b`: commits in b's history and not a's (b is newer); `b..a` the other way round.
                out["log"] = {"a..b": ahead, "b..a": behind}
    return out


def compare_notebooks(path_a: str | None, path_b: str | None) -> dict[str, Any]:
    missing = [p or "(none)" for p in (path_a, path_b) if not p or not Path(p).is_file()]
    if missing:
        return {"available": False, "missing": missing, "counts": {}, "changes": []}
    cells_a = notebook_cells(Path(path_a))  # type: ignore[arg-type]
    cells_b = notebook_cells(Path(path_b))  # type: ignore[arg-type]
    changes = []
    counts = {"unchanged": 0, "modified": 0, "added": 0, "removed": 0}
    for left, right in align_cells(cells_a, cells_b):
        change = compare_cells(left, right)
        counts[change["change"]] += 1
        if change["change"] != "unchanged":
            changes.append(change)
    return {"available": True, "missing": [], "counts": counts, "changes": changes}


def align_cells(cells_a: list[Cell], cells_b: list[Cell]) -> list[tuple[Cell | None, Cell | None]]:
    """Pairs of corresponding cells, in order; None where a cell has no counterpart.

    Identical cells pair first (difflib on whole sources; the injected-parameters
    cells always pair, whatever their values); between them, a cell pairs with the
    next one of the same type whose source is similar, else it was added or removed.
    """
    keys_a, keys_b = [_key(c) for c in cells_a], [_key(c) for c in cells_b]
    pairs: list[tuple[Cell | None, Cell | None]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_opcodes():
        if op == "equal":
            pairs.extend(zip(cells_a[a0:a1], cells_b[b0:b1], strict=True))
        else:
            pairs.extend(_pair_similar(cells_a[a0:a1], cells_b[b0:b1]))
    return pairs


def _key(cell: Cell) -> tuple[str, str]:
    return (cell["type"], INJECTED_KEY if cell["injected"] else cell["source"])


def _pair_similar(left: list[Cell], right: list[Cell]) -> list[tuple[Cell | None, Cell | None]]:
    pairs: list[tuple[Cell | None, Cell | None]] = []
    j = 0
    for cell in left:
        match = next(
            (k for k in range(j, len(right)) if right[k]["type"] == cell["type"] and _similar(cell, right[k])), None
        )
        if match is None:
            pairs.append((cell, None))
            continue
        pairs.extend((None, added) for added in right[j:match])
        pairs.append((cell, right[match]))
        j = match + 1
    pairs.extend((None, added) for added in right[j:])
    return pairs


def _similar(a: Cell, b: Cell) -> bool:
    return difflib.SequenceMatcher(None, a["source"], b["source"], autojunk=False).ratio() >= SIMILAR


def compare_cells(a: Cell | None, b: Cell | None) -> dict[str, Any]:
    source = _unified(a["source"] if a else "", b["source"] if b else "", a, b, "source")
    outputs = _unified(a["outputs"] if a else "", b["outputs"] if b else "", a, b, "outputs")
    status = {"a": a["status"] if a else None, "b": b["status"] if b else None}
    if a is None:
        change = "added"
    elif b is None:
        change = "removed"
    else:
        change = "modified" if source or outputs or status["a"] != status["b"] else "unchanged"
    return {
        "change": change,
        "a": a["index"] if a else None,
        "b": b["index"] if b else None,
        "type": (a or b or {}).get("type"),
        "status": status,
        "source": source,
        "outputs": outputs,
    }


def _unified(text_a: str, text_b: str, a: Cell | None, b: Cell | None, what: str) -> list[str]:
    if text_a == text_b:
        return []
    name_a = f"a/cell {a['index']} {what}" if a else "/dev/null"
    name_b = f"b/cell {b['index']} {what}" if b else "/dev/null"
    return list(difflib.unified_diff(text_a.splitlines(), text_b.splitlines(), name_a, name_b, lineterm="", n=2))


def notebook_cells(path: Path) -> list[Cell]:
    """The cells of an output notebook as run (without nbjobs' error banner and marker)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if not set(c.metadata.get("tags", [])) & {BANNER_TAG, MARKER_TAG}]
    return [
        {
            "index": index,
            "type": cell.cell_type,
            "source": cell.source,
            "outputs": "".join(output_text(o) for o in cell.get("outputs", [])),
            "status": cell.metadata.get("nbjobs", {}).get("status"),
            "injected": INJECTED_TAG in cell.metadata.get("tags", []),
        }
        for index, cell in enumerate(cells)
    ]


def output_text(output: Any) -> str:
    """One output as comparable text, ending in a newline."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
    elif kind == "error":
        text = f"{output.get('ename', '')}: {output.get('evalue', '')}"
    elif kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if isinstance(result := data.get(RESULT_MIME_TYPE), dict):
            text = f"result {result.get('name')} = {json.dumps(result.get('value'), sort_keys=True)}"
        elif "text/plain" in data:
            text = _joined(data["text/plain"])
        elif data:
            mime = sorted(data)[0]
            digest = hashlib.sha256(_joined(data[mime]).encode()).hexdigest()[:12]
            text = f"[{mime} output, sha256 {digest}]"
        else:
            text = ""
    else:
        text = ""
    return text if not text or text.endswith("\n") else text + "\n"


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
