"""Results a notebook records: named JSON values carried as a display output.

Any kernel can record a result by displaying a bundle with `RESULT_MIME_TYPE`
whose data is `{"name": ..., "value": ...}`; in Python, `nbjobs.record()` does it.
The runner collects them from the executed notebook, so a kernel environment
without nbjobs installed can record too (display that bundle by hand).
"""

from __future__ import annotations

import json
from typing import Any

RESULT_MIME_TYPE = "application/vnd.nbjobs.result+json"


def record(name: str, value: Any) -> None:
    """Record `value` (JSON-serialisable) under `name` for this job; call from a notebook."""
    if not isinstance(name, str) or not name:
        raise ValueError("result name must be a non-empty string")
    json.dumps(value, allow_nan=False)  # fail in the cell that records, not later
    from IPython.display import display

    display(
        {RESULT_MIME_TYPE: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"},
        raw=True,
    )


def collect_results(nb: Any) -> dict[str, Any]:
    """Every recorded result in an executed notebook; a later record of a name wins."""
    results: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {}).get(RESULT_MIME_TYPE)
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                results[data["name"]] = data.get("value")
    return results
