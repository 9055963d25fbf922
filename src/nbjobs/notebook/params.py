"""Papermill-compatible parameters: read the declared ones, parse the given ones, inject them.

Values are injected as literals of the kernel's language that evaluate back to exactly
the value given, or are refused with a message naming the parameter; no text given by
a user is ever spliced into code.

Values from the command line and parameter files are YAML read with the safe loader,
changed so that text looking like a date, a time or a zero-padded id stays text: no
timestamps (``2026-11-25`` is a str), no base-60 numbers (``12:30``), no leading-zero
octal (``0123``). Floats with an exponent but no dot or no exponent sign (``1e-3``) are
floats, as in YAML 1.2 and papermill. The rest is YAML 1.1: ``yes``/``no``/``on``/``off``
are booleans, ``nan`` is a str and ``.nan`` a float, ``~`` and ``null`` are None; as in
papermill, ``-p x None`` gives None.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import keyword
import math
import re
import tokenize
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import nbformat
import yaml
from nbformat import NotebookNode

from nbjobs.errors import ParameterError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
SUPPORTED_LANGUAGES = ("python", "r", "julia")
HEADER = "# Parameters injected by nbjobs"

_TYPES = "valid types are None, bool, int, float, str, list, dict"
_MAX_DEPTH = 100  # CPython's parser gives up at 200 nested brackets
_MAX_NODES = 1_000_000  # YAML aliases can blow a short file up into a huge value


@dataclass(frozen=True)
class DeclaredParameter:
    """One assignment in the notebook's parameters cell."""

    name: str
    default: str  # source text of the default value
    type: str | None  # the annotation, else inferred from a literal default
    help: str | None  # the comment ending the line


def _error(message: str) -> ParameterError:
    """The error for ``message``, written as one sentence like the rest of nbjobs' errors."""
    return ParameterError(message[:1].upper() + message[1:].rstrip(".") + ".")


# ---------------------------------------------------------------- YAML values


class _Loader(yaml.SafeLoader):
    """SafeLoader with the resolver changes described in the module docstring."""


_REPLACED = {f"tag:yaml.org,2002:{kind}" for kind in ("timestamp", "int", "float")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(?:0b[01_]+|0|[1-9][0-9_]*|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
        r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (problem or str(exc))


def parse_cli_value(text: str, *, name: str | None = None) -> Any:
    """The value of ``-p NAME VALUE``: YAML as above; empty text stays an empty str."""
    if not text.strip():
        return text  # YAML would say None, but `-p x ""` means the empty string
    if text == "None":
        return None
    try:
        return _load_yaml(text)
    except yaml.YAMLError as exc:
        who = f"parameter `{name}`: " if name else ""
        raise _error(
            f"{who}the value {text!r} is not valid YAML ({_yaml_problem(exc)}); quote it "
            "as YAML, or pass it with -r NAME VALUE to use it as a raw string"
        ) from exc


def load_yaml_parameters(text: str, source: str) -> dict[str, Any]:
    """The mapping in a ``-y`` string or ``-f`` file; ``source`` names it in errors."""
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        # `source` is kept verbatim (it may be a file name), so the message is built here.
        raise ParameterError(f"{source}: not valid YAML at {_yaml_problem(exc)}.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(
            f"{source}: parameters must be a YAML mapping of names to values such as "
            f"`alpha: 0.1`, not a {type(data).__name__}."
        )
    for key in data:
        try:
            validate_name(key)
        except ParameterError as exc:
            raise ParameterError(f"{source}: {exc}") from exc
    return data


# ---------------------------------------------------------------- values


def _fail(path: str, problem: str) -> ParameterError:
    return _error(f"parameter `{path}`: {problem}")


def _label(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 1000:  # repr() refuses huge ints
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _decimal(value: int) -> str:
    """str(value) without the int-to-str digit limit, which is process-wide state."""
    if value.bit_length() <= 1000:
        return str(value)
    if value < 0:
        return "-" + _decimal(-value)
    half = int(value.bit_length() * math.log10(2)) // 2
    high, low = divmod(value, 10**half)
    return _decimal(high) + _decimal(low).zfill(half)


def _python_int(value: int, path: str) -> str:
    # Python refuses decimal literals over its int-to-str limit (>= 640 digits); hex has none.
    return repr(value) if value.bit_length() <= 1000 else hex(value)


def _r_int(value: int, path: str) -> str:
    if abs(value) < 2**31:  # -2**31 is NA_integer_ in R
        return f"{value}L"
    if abs(value) <= 2**53:
        return str(value)  # a double in R, exact up to 2**53
    raise _fail(
        path,
        f"integer {_label(value)} is too large for R, which holds integers beyond 32 bits as "
        "doubles, exact only up to 2**53 = 9007199254740992; pass it as a str",
    )


def _julia_int(value: int, path: str) -> str:
    if abs(value) < 2**63:
        return str(value)
    if value == -(2**63):
        return "(-9223372036854775807 - 1)"  # the bare literal would be read as an Int128
    return f'big"{_decimal(value)}"'


def _round_bits(value: Fraction, bits: int) -> Fraction:
    """Positive ``value`` rounded to ``bits`` significant bits, ties to even."""
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    if value >= Fraction(2) ** exponent:
        exponent += 1  # now 2**(exponent - 1) <= value < 2**exponent
    ulp = Fraction(2) ** (exponent - bits)
    return round(value / ulp) * ulp


def _r_real(value: float) -> str:
    # R's parser is not correctly rounded: it divides the digits by a power of ten in x87
    # long double and rounds again to double, which misreads about 1 in 10,000 shortest
    # decimals. Keep the decimal when that double rounding provably gives `value` back
    # (few digits, small exponent: exact operands, so one IEEE operation on other
    # platforms), else write a hex float, which R reads exactly.
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits, power = int(whole + fraction), int(exponent or 0) - len(fraction)
    if digits <= 2**53 and abs(power) <= 22:
        exact = digits * Fraction(10) ** power
        if _round_bits(_round_bits(exact, 64), 53) == abs(value):
            return repr(value)
    return value.hex()


def _quoter(table: dict[str, str], code: str, wide: str) -> Callable[[str, str], str]:
    """A double-quoting function; characters that are not printable get numeric escapes."""

    def quote(text: str, path: str) -> str:
        out = []
        for char in text:
            if char in table or char.isprintable():
                out.append(table.get(char, char))
            else:
                out.append((code if char <= "\uffff" else wide) % ord(char))
        return '"' + "".join(out) + '"'

    return quote


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_r_quote = _quoter(_ESCAPES, "\\u{%04x}", "\\U{%08x}")  # R reads \u{...} up to 4 digits


def _r_str(text: str, path: str) -> str:
    if "\0" in text:
        raise _fail(path, "the string holds a NUL character, which R strings cannot hold")
    return _r_quote(text, path)


@dataclass(frozen=True)
class _Syntax:
    """How one language spells each kind of literal, and which names it reserves."""

    null: str
    true: str
    false: str
    nan: str
    inf: str
    neg_zero: str
    seq: tuple[str, str]
    mapping: tuple[str, str]
    pair: str
    assign: str
    integer: Callable[[int, str], str]
    string: Callable[[str, str], str]
    finite: Callable[[float], str]  # a finite float other than -0.0
    reserved: str  # space-separated
    str_keys_only: bool = False  # R lists are named by non-empty strings


_SYNTAX = {
    "python": _Syntax(
        "None", "True", "False", "float('nan')", "float('inf')", "-0.0", ("[", "]"), ("{", "}"),
        ": ", "=", _python_int, lambda text, path: repr(text), repr, " ".join(keyword.kwlist),
    ),
    "r": _Syntax(
        "NULL", "TRUE", "FALSE", "NaN", "Inf", "-0", ("list(", ")"), ("list(", ")"), " = ", "<-",
        _r_int, _r_str, _r_real,
        "if else repeat while function for next break in TRUE FALSE NULL Inf NaN NA "
        "NA_integer_ NA_real_ NA_character_ NA_complex_",
        str_keys_only=True,
    ),
    "julia": _Syntax(
        "nothing", "true", "false", "NaN", "Inf", "-0.0", ("Any[", "]"), ("Dict{Any,Any}(", ")"),
        " => ", "=", _julia_int,
        # Julia's \u and \U read up to 4 and 8 hex digits: writing all of them is unambiguous.
        _quoter({**_ESCAPES, "$": "\\$"}, "\\u%04x", "\\U%08x"), repr,
        "baremodule begin break catch const continue do else elseif end export false finally "
        "for function global if import let local macro module quote return struct true try "
        "using while abstract mutable primitive type public",
    ),
}  # fmt: skip


class _Writer:
    """Checks one value and writes it as a literal with one language's syntax."""

    def __init__(self, syntax: _Syntax) -> None:
        self.syntax = syntax
        self.nodes = 0
        self.open: set[int] = set()  # ids of the containers being written, to catch cycles

    def value(self, value: Any, path: str, depth: int = 0) -> str:
        s = self.syntax
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise _fail(path, f"the value has more than {_MAX_NODES:,} elements; pass less data")
        # Subclasses (IntEnum, numpy.float64, ...) are made base types first, so that an
        # overridden __repr__ can never write into the cell.
        if value is None or isinstance(value, bool):
            return {None: s.null, True: s.true, False: s.false}[value]
        if isinstance(value, int):
            return s.integer(int.__int__(value), path)
        if isinstance(value, float):
            return self.real(float.__float__(value))
        if isinstance(value, str):
            return s.string(self.text(str.__str__(value), path), path)
        if not isinstance(value, (list, tuple, dict)):
            raise _fail(path, f"value of type {type(value).__name__} cannot be passed; {_TYPES}")
        if depth >= _MAX_DEPTH:
            raise _fail(path, f"the value is nested more than {_MAX_DEPTH} levels deep")
        if id(value) in self.open:
            raise _fail(path, "the value contains itself, so it cannot be written as a literal")
        self.open.add(id(value))
        try:
            if isinstance(value, dict):
                pairs = []
                for key, item in value.items():
                    where = f"{path}[{_label(key)}]"
                    pairs.append(self.key(key, where) + s.pair + self.value(item, where, depth + 1))
                return s.mapping[0] + ", ".join(pairs) + s.mapping[1]
            items = [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
            return s.seq[0] + ", ".join(items) + s.seq[1]
        finally:
            self.open.discard(id(value))

    def real(self, value: float) -> str:
        if math.isnan(value):
            return self.syntax.nan
        if math.isinf(value):
            return self.syntax.inf if value > 0 else "-" + self.syntax.inf
        if value == 0 and math.copysign(1, value) < 0:
            return self.syntax.neg_zero
        return self.syntax.finite(value)

    def key(self, key: Any, path: str) -> str:
        if self.syntax.str_keys_only and not (isinstance(key, str) and key):
            raise _fail(
                path,
                f"dict key {_label(key)} cannot name an element of an R list; R lists are named "
                "by non-empty strings only",
            )
        if key is not None and not isinstance(key, (bool, int, float, str)):
            raise _fail(
                path,
                f"dict key of type {type(key).__name__} cannot be passed; valid key types are "
                "None, bool, int, float, str",
            )
        return self.value(key, path, _MAX_DEPTH)

    @staticmethod
    def text(text: str, path: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _fail(
                path,
                f"the string holds a lone surrogate U+{ord(text[exc.start]):04X}, which is not "
                "valid Unicode text; pass valid Unicode text",
            ) from None
        return text


def _language(language: str) -> str:
    lang = str(language).strip().lower()
    return "python" if lang.startswith("python") else lang


def _supported(language: str) -> str:
    lang = _language(language)
    if lang not in _SYNTAX:
        raise _error(
            f"kernel language {lang!r} is not supported for parameters; supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return lang


def validate_name(name: object, language: str = "python") -> str:
    """Return ``name`` if it can be assigned to in ``language``, else raise ParameterError."""
    valid = "use letters, digits and underscores, not starting with a digit, e.g. `learning_rate`"
    if not isinstance(name, str):
        raise _error(f"parameter name {name!r} is a {type(name).__name__}, not text; {valid}")
    if not name.isidentifier():
        raise _error(f"parameter name {name!r} is not a valid identifier; {valid}")
    if unicodedata.normalize("NFKC", name) != name:  # Python would assign the NFKC name
        raise _error(
            f"parameter name {name!r} is not in Unicode normal form NFKC; "
            f"write it as {unicodedata.normalize('NFKC', name)!r}"
        )
    lang = _language(language)
    if lang in _SYNTAX and name in _SYNTAX[lang].reserved.split():
        raise _error(f"parameter name {name!r} is a reserved word in {lang}; choose another, e.g. `{name}_`")
    if lang == "r" and name.startswith("_"):
        raise _error(f"parameter name {name!r} cannot start with `_` in R; {valid}")
    return name


def render_value(value: Any, language: str, *, path: str = "") -> str:
    """A literal that evaluates to exactly ``value`` in ``language``; ``path`` names it."""
    return _Writer(_SYNTAX[_supported(language)]).value(value, path or "value")


def _render_all(params: dict[str, Any], lang: str) -> tuple[list[str], list[str]]:
    lines, errors = [], []
    for name, value in params.items():
        try:
            validate_name(name, lang)
            lines.append(f"{name} {_SYNTAX[lang].assign} {render_value(value, lang, path=name)}")
        except ParameterError as exc:
            errors.append(str(exc))
    return lines, errors


def _raise_all(errors: list[str]) -> None:
    if len(errors) == 1:
        raise ParameterError(errors[0])
    if errors:
        raise ParameterError(f"There are {len(errors)} problems with the parameters. " + " ".join(errors))


def render_assignments(params: dict[str, Any], language: str) -> str:
    """Source of the injected cell: a header comment, then one assignment per parameter."""
    lines, errors = _render_all(params, _supported(language))
    _raise_all(errors)
    return "\n".join([HEADER, *lines])


# ---------------------------------------------------------------- notebooks


def notebook_language(nb: NotebookNode) -> str:
    """The kernel's language, lower-cased, ``python3`` read as ``python``; default python."""
    meta = nb.get("metadata") or {}
    kernelspec, info = meta.get("kernelspec") or {}, meta.get("language_info") or {}
    return _language(kernelspec.get("language") or info.get("name") or "python")


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
            raise _error(
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
    lang = _supported(language)
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
    hint = "or pass --allow-unknown-params to inject them anyway"
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
    lang = _supported(language)
    lines, errors = _render_all(params, lang)
    if not allow_unknown:
        errors += [str(_error(problem)) for problem in _undeclared(out, params, lang)]
    _raise_all(errors)
    cell = nbformat.v4.new_code_cell(source="\n".join([HEADER, *lines]))
    cell.metadata["tags"] = [INJECTED_TAG]
    cell.id = INJECTED_TAG  # not random: the same job writes the same notebook
    if (out.get("nbformat", 4), out.get("nbformat_minor", 0)) < (4, 5):
        del cell["id"]  # cell ids are invalid before nbformat 4.5
    index = find_parameters_cell(out)
    out.cells.insert(0 if index is None else index + 1, cell)
    return out
