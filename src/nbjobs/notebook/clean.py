"""Strip what an interactive session left in a notebook (`outputs.clean_input`).

The runner always clears outputs and execution counts of code cells before a run
(nothing stale may pass for this run's result). This goes further, for an output
notebook that carries only this run's data: editor state and timings recorded by
Jupyter front ends and extensions are removed too. Tags and other cell metadata
that notebooks rely on are kept.
"""

from __future__ import annotations

from nbformat import NotebookNode

# Cell metadata written by front ends, not by the notebook's author.
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
VOLATILE_NOTEBOOK_KEYS = ("widgets",)


def clean_input(nb: NotebookNode) -> None:
    """Remove outputs, execution counts and volatile metadata from `nb`, in place."""
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
