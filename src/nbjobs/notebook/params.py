"""Papermill-compatible parameters: read the declared ones, inject the given ones.

The parameters cell (tagged `parameters`) declares names and defaults; nbjobs
inserts a cell tagged `injected-parameters` right after it, written by
`nbjobs.notebook.literals`.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import re
import tokenize
from dataclasses import dataclass
from typing import Any

import nbformat
from nbformat import NotebookNode

from nbjobs.errors import ParameterError
from nbjobs.notebook.literals import (
    HEADER,
    SUPPORTED_LANGUAGES,
    canonical_language,
    load_yaml_parameters,
    parameter_error,
    parse_cli_value,
    raise_problems,
    render_all,
    render_assignments,
    render_value,
    supported_language,
    validate_name,
)

__all__ = [
    "HEADER",
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "SUPPORTED_LANGUAGES",
    "DeclaredParameter",
    "declared_parameters",
    "find_parameters_cell",
    "inject_parameters",
    "load_yaml_parameters",
    "notebook_language",
    "parse_cli_value",
    "render_assignments",
    "render_value",
    "validate_name",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


@dataclass(frozen=True)
class DeclaredParameter:
    """One assignment in the notebook's parameters cell."""

    name: str
    default: str  # source text of the default value
    type: str | None  # the annotation, else inferred from a literal default
    help: str | None  # the comment ending the line


def notebook_language(nb: NotebookNode) -> str:
    """The kernel's language, lower-cased, ``python3`` read as ``python``; default python."""
    meta = nb.get("metadata") or {}
    kernelspec, info = meta.get("kernelspec") or {}, meta.get("language_info") or {}
    return canonical_language(kernelspec.get("language") or info.get("name") or "python")


def _tags(cell: NotebookNode) -> list[str]:
    return list((cell.get("metadata") or {}).get("tags") or [])


def find_parameters_cell(nb: NotebookNode) -> int | None:
    """Index of the first code cell tagged ``parameters``."""
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in _tags(cell):
            return index
    return None


def _python_type(node: ast.expr) -> str | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand  # -1 and -0.5 are literals too
    if isinstance(node, ast.Constant):
        if node.value is None:
            return "None"
        return type(node.value).__name__ if type(node.value) in (bool, int, float, str) else None
    return {ast.List: "list", ast.Dict: "dict"}.get(type(node))


def _python_declared(source: str, where: str) -> list[DeclaredParameter]:
    try:
        tree = ast.parse(source)
    except SyntaxError as first:
        # IPython magics and shell escapes are not Python: blank them, keeping line numbers.
        source = re.sub(r"(?m)^[ \t]*[%!].*$", "", source)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            raise parameter_error(
                f"{where} is not valid Python: line {first.lineno}: {first.msg}; fix the cell "
                "so that it holds plain assignments such as `alpha = 0.1`"
            ) from first
    comments: dict[int, tuple[int, str]] = {}
    with contextlib.suppress(tokenize.TokenError, SyntaxError):  # help texts are a nicety
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
    last_on_line = {stmt.end_lineno: stmt for stmt in tree.body}
    found: dict[str, DeclaredParameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, annotation = stmt.targets[0], None
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, annotation = stmt.target, ast.get_source_segment(source, stmt.annotation)
        else:
            continue
        if isinstance(target, ast.Name):
            col, text = comments.get(stmt.end_lineno or 0, (-1, ""))
            ends_line = last_on_line[stmt.end_lineno] is stmt and col >= (stmt.end_col_offset or 0)
            found[target.id] = DeclaredParameter(  # a name set twice keeps its last default
                target.id,
                ast.get_source_segment(source, stmt.value) or "",
                annotation or _python_type(stmt.value),
                (text or None) if ends_line else None,
            )
    return list(found.values())


# One line each: `name <- value` or `name = value` (R), `name[::Type] = value` (Julia).
_LINE = {
    "r": re.compile(r"\s*(?P<name>[^\W\d_][\w.]*|\.[^\W\d][\w.]*)\s*(?:<-|=(?![=>]))\s*(?P<v>.+?)\s*"),
    "julia": re.compile(r"\s*(?P<name>[^\W\d]\w*!?)\s*(?:::\s*(?P<type>.+?))?\s*=(?![=>])\s*(?P<v>.+?)\s*"),
}
_FLOAT = r"[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN"
_LITERAL = {  # the group that matches a whole default names its type
    "r": re.compile(
        rf"(?P<bool>TRUE|FALSE|T|F)|(?P<None>NULL)|(?P<int>[-+]?\d+L)|(?P<float>{_FLOAT})"
        r"|(?P<str>\".*\"|'.*')|(?P<list>(?:c|list)\(.*)"
    ),
    "julia": re.compile(
        rf"(?P<bool>true|false)|(?P<None>nothing)|(?P<int>[-+]?\d[\d_]*)|(?P<float>{_FLOAT})"
        r"|(?P<str>\".*\")|(?P<list>(?:Any)?\[.*)|(?P<dict>Dict.*)"
    ),
}


def _split_comment(line: str, quotes: str) -> tuple[str, str | None]:
    """Split at the first ``#`` outside a string literal."""
    quote, escaped = None, False
    for index, char in enumerate(line):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in quotes:
            quote = char
        elif char == "#":
            return line[:index], line[index + 1 :].strip() or None
    return line, None


def _line_declared(source: str, lang: str) -> list[DeclaredParameter]:
    found: dict[str, DeclaredParameter] = {}
    for line in source.splitlines():
        code, help_text = _split_comment(line, "\"'`" if lang == "r" else '"')
        match = _LINE[lang].fullmatch(code)
        if match:
            literal = _LITERAL[lang].fullmatch(match["v"])
            kind = match.groupdict().get("type") or (literal.lastgroup if literal else None)
            found[match["name"]] = DeclaredParameter(match["name"], match["v"], kind, help_text)
    return list(found.values())


def declared_parameters(nb: NotebookNode, language: str) -> list[DeclaredParameter] | None:
    """Assignments in the parameters cell, in order; None when there is no such cell."""
    lang = supported_language(language)
    index = find_parameters_cell(nb)
    if index is None:
        return None
    source = nb.cells[index].get("source", "")
    source = source if isinstance(source, str) else "".join(source)
    if lang == "python":
        where = f"the cell tagged '{PARAMETERS_TAG}' (cell {index + 1} of the notebook)"
        return _python_declared(source, where)
    return _line_declared(source, lang)


def _undeclared(nb: NotebookNode, params: dict[str, Any], lang: str) -> list[str]:
    """Errors for parameters that the notebook does not declare."""
    hint = f"or pass --allow-unknown-params to inject {'it' if len(params) == 1 else 'them'} anyway"
    try:
        declared = declared_parameters(nb, lang)
    except ParameterError as exc:
        return [str(exc)]
    if declared is None:
        return [
            f"the notebook has no cell tagged '{PARAMETERS_TAG}' to say which parameters it "
            "takes; add that tag to the code cell holding the defaults (in JupyterLab: Property "
            f"Inspector, Cell Tags), {hint} at the top of the notebook"
        ]
    names = [p.name for p in declared]
    # Invalid names have been reported already.
    unknown = [n for n in params if isinstance(n, str) and n.isidentifier() and n not in names]
    if not unknown:
        return []
    what = "parameter" if len(unknown) == 1 else "parameters"
    return [
        f"{what} {', '.join(f'`{n}`' for n in unknown)} {'is' if len(unknown) == 1 else 'are'} "
        f"not declared in the parameters cell (notebook declares: "
        f"{', '.join(names) or 'no parameters'}); check the spelling, {hint}"
    ]


def inject_parameters(
    nb: NotebookNode, params: dict[str, Any], language: str, *, allow_unknown: bool = False
) -> NotebookNode:
    """A copy of ``nb`` with ``params`` in a new cell tagged ``injected-parameters``."""
    out = copy.deepcopy(nb)
    out.cells = [cell for cell in out.cells if INJECTED_TAG not in _tags(cell)]
    if not params:
        return out
    lang = supported_language(language)
    lines, errors = render_all(params, lang)
    if not allow_unknown:
        errors += [str(parameter_error(problem)) for problem in _undeclared(out, params, lang)]
    raise_problems(errors)
    cell = nbformat.v4.new_code_cell(source="\n".join([HEADER, *lines]))
    cell.metadata["tags"] = [INJECTED_TAG]
    cell.id = INJECTED_TAG  # not random: the same job writes the same notebook
    if (out.get("nbformat", 4), out.get("nbformat_minor", 0)) < (4, 5):
        del cell["id"]  # cell ids are invalid before nbformat 4.5
    index = find_parameters_cell(out)
    out.cells.insert(0 if index is None else index + 1, cell)
    return out
