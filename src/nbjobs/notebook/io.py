"""Reading and writing notebook files, with errors that name the problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.validator import ValidationError

from nbjobs.errors import InvalidInput


def load_notebook(path: str | Path) -> NotebookNode:
    """A valid nbformat-4 notebook from `path`, or InvalidInput saying what is wrong."""
    file = Path(path)
    if not file.exists():
        raise InvalidInput(f"Notebook {str(file)!r} does not exist.")
    if not file.is_file():
        raise InvalidInput(f"Notebook {str(file)!r} is not a file.")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"Notebook {str(file)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    return parse_notebook(text, repr(str(file)))


def parse_notebook(text: str, source: str) -> NotebookNode:
    """A valid nbformat-4 notebook from its JSON text; `source` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"Notebook {source} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "A notebook is a .ipynb file written by Jupyter."
        ) from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise InvalidInput(
            f"Notebook {source} is JSON but not a notebook: it has no `cells` list. "
            "A notebook is a .ipynb file written by Jupyter."
        )
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise InvalidInput(
            f"Notebook {source} is not a valid nbformat 4 notebook: at `{where}`: {exc.message}."
        ) from None
    except Exception as exc:  # nbformat raises assorted errors for malformed structure
        raise InvalidInput(f"Notebook {source} is not a valid notebook: {exc}.") from None
    return nb


def save_notebook(nb: NotebookNode, path: Path) -> None:
    """Write atomically: readers see the previous or the new notebook, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
