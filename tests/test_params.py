"""Tests for nbjobs.notebook.params: parsing, rendering and injecting parameters."""

from __future__ import annotations

import ast
import enum
import math
import shutil
import subprocess

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbjobs.errors import InvalidInput, ParameterError
from nbjobs.notebook.params import (
    INJECTED_TAG,
    PARAMETERS_TAG,
    DeclaredParameter,
    declared_parameters,
    find_parameters_cell,
    inject_parameters,
    load_yaml_parameters,
    notebook_language,
    parse_cli_value,
    render_assignments,
    render_value,
    validate_name,
)

# ---------------------------------------------------------------- helpers


def same(a: object, b: object) -> bool:
    """Exact equality: types must match, nan equals nan, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return a == b


def assert_only_literals(source: str) -> None:
    """The rendered Python is literals, unary minus and float('nan') / float('inf') only."""
    tree = ast.parse(source, mode="eval")
    calls = names = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            calls += 1
            assert isinstance(node.func, ast.Name) and node.func.id == "float", source
            assert not node.keywords and len(node.args) == 1, source
            assert isinstance(node.args[0], ast.Constant) and node.args[0].value in ("nan", "inf")
        elif isinstance(node, ast.Name):
            names += 1
            assert node.id == "float", source
        elif isinstance(node, ast.UnaryOp):
            assert isinstance(node.op, ast.USub), source
        else:
            allowed = (ast.Expression, ast.Constant, ast.List, ast.Dict, ast.USub, ast.Load)
            assert isinstance(node, allowed), (type(node).__name__, source)
    assert names == calls  # every Name is the callee of one of the allowed calls


def evaluate(source: str) -> object:
    assert_only_literals(source)
    return eval(source, {"__builtins__": {"float": float}})


def decode_string(literal: str, language: str) -> str:
    """An independent reading of an R or Julia double-quoted literal, as that lexer does it."""
    assert literal[0] == literal[-1] == '"' and len(literal) >= 2
    body, out, i = literal[1:-1], [], 0
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    if language == "julia":
        simple["$"] = "$"
    while i < len(body):
        char = body[i]
        assert char != '"', "unescaped quote"
        assert not (language == "julia" and char == "$"), "unescaped $ interpolates in Julia"
        assert char.isprintable(), f"raw unprintable {char!r}"
        if char != "\\":
            out.append(char)
            i += 1
            continue
        esc = body[i + 1]
        if esc in simple:
            out.append(simple[esc])
            i += 2
        elif language == "r" and esc in "uU":
            assert body[i + 2] == "{"
            end = body.index("}", i)
            out.append(chr(int(body[i + 3 : end], 16)))
            i = end + 1
        elif language == "julia" and esc in "uU":
            # Julia reads *up to* 4 (\u) or 8 (\U) hex digits, greedily.
            j = i + 2
            while j < len(body) and j < i + 2 + (4 if esc == "u" else 8) and body[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(body[i + 2 : j], 16)))
            i = j
        else:
            raise AssertionError(f"unknown escape \\{esc}")
    return "".join(out)


def notebook(*cells: nbformat.NotebookNode, language: str = "python") -> nbformat.NotebookNode:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "k", "display_name": "k", "language": language}
    return nb


def tagged(source: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


# ---------------------------------------------------------------- Python round trip

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**5000), max_value=2**5000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-0.0, 0.0, 5e-324, 1.7976931348623157e308, 2**53 + 1, -(2**63)])
    | text
)
keys = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(text, inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_python_rendering_evaluates_to_exactly_the_value(value: object) -> None:
    source = render_value(value, "python")
    assert same(evaluate(source), value), source


@pytest.mark.parametrize(
    "value",
    [
        10**5000,  # over Python's 4300-digit literal limit: written in hex
        -(10**5000),
        [float("nan"), float("inf"), -float("inf"), -0.0],
        {None: 1, True: 2, 3: 4, 1.5: 5, "k": 6, -0.0: 7},
        "quote ' \" backslash \\ newline \n nul \0 bell \a \u202e \u2028 😀 $x",
    ],
    ids=["huge", "-huge", "floats", "keys", "str"],
)
def test_python_tricky_values(value: object) -> None:
    assert same(evaluate(render_value(value, "python")), value)


def test_python_tuple_is_rendered_as_list_and_subclasses_as_base_types() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Shouty(str):
        def __repr__(self) -> str:
            return "__import__('os')"

    assert render_value((1, (2, "a")), "python") == "[1, [2, 'a']]"
    assert render_value(Colour.RED, "python") == "1"
    assert render_value(Shouty("hi"), "python") == "'hi'"


@settings(max_examples=300, deadline=None)
@given(text)
def test_r_and_julia_strings_decode_back(value: str) -> None:
    if "\0" not in value:
        assert decode_string(render_value(value, "r"), "r") == value
    assert decode_string(render_value(value, "julia"), "julia") == value


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_r_floats_are_shortest_decimal_or_hex(value: float) -> None:
    rendered = render_value(value, "r")
    if rendered == "-0":
        assert value == 0 and math.copysign(1, value) < 0
    elif "x" in rendered:
        assert float.fromhex(rendered) == value
    else:
        assert rendered == repr(value)


# ---------------------------------------------------------------- R and Julia text

R_CASES = [
    (None, "NULL"),
    (True, "TRUE"),
    (False, "FALSE"),
    (5, "5L"),
    (-2147483647, "-2147483647L"),
    (-2147483648, "-2147483648"),  # -2**31 is NA_integer_ in R: a double instead
    (3_000_000_000, "3000000000"),
    (2**53, "9007199254740992"),
    (0.1, "0.1"),
    (1e-05, "1e-05"),
    (3.14159, "3.14159"),
    (1.5e300, "0x1.1eb2d66005835p+997"),  # R's parser misreads some decimals: hex is exact
    (0.30000000000000004, "0x1.3333333333334p-2"),
    (float("nan"), "NaN"),
    (float("inf"), "Inf"),
    (-float("inf"), "-Inf"),
    (-0.0, "-0"),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("a\nb\tc\rd", '"a\\nb\\tc\\rd"'),
    ("$HOME and 'single'", "\"$HOME and 'single'\""),
    ("café 😀", '"café 😀"'),
    ("\x01\u202e\U000e0001", '"\\u{0001}\\u{202e}\\U{000e0001}"'),
    ([1, "a", None, [True]], 'list(1L, "a", NULL, list(TRUE))'),
    ({"a": 1.5, "b c": {"d": []}}, 'list("a" = 1.5, "b c" = list("d" = list()))'),
    ((1, 2), "list(1L, 2L)"),
]

JULIA_CASES = [
    (None, "nothing"),
    (True, "true"),
    (5, "5"),
    (-(2**63) + 1, "-9223372036854775807"),
    (-(2**63), "(-9223372036854775807 - 1)"),
    (2**63, 'big"9223372036854775808"'),
    (-(10**30), 'big"-1000000000000000000000000000000"'),
    (0.1, "0.1"),
    (1e300, "1e+300"),
    (float("nan"), "NaN"),
    (float("inf"), "Inf"),
    (-float("inf"), "-Inf"),
    (-0.0, "-0.0"),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("cost $x and $(rm())", '"cost \\$x and \\$(rm())"'),
    ("a\nb\tc", '"a\\nb\\tc"'),
    ("\0", '"\\u0000"'),
    ("\x01" + "abc", '"\\u0001abc"'),  # all four digits, so "abc" is not read as hex
    ("café 😀\u202e\U000e0001", '"café 😀\\u202e\\U000e0001"'),
    ([1, "a", None, [True]], 'Any[1, "a", nothing, Any[true]]'),
    ({"a": 1, 2: [], None: 0.5}, 'Dict{Any,Any}("a" => 1, 2 => Any[], nothing => 0.5)'),
    ({}, "Dict{Any,Any}()"),
]


@pytest.mark.parametrize(("value", "expected"), R_CASES)
def test_r_rendering(value: object, expected: str) -> None:
    assert render_value(value, "r") == expected


@pytest.mark.parametrize(("value", "expected"), JULIA_CASES)
def test_julia_rendering(value: object, expected: str) -> None:
    assert render_value(value, "julia") == expected


def test_huge_julia_int_is_written_in_full() -> None:
    rendered = render_value(-(10**5000), "julia")
    assert rendered == 'big"-1' + "0" * 5000 + '"'


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_r_reads_back_the_same_values() -> None:
    floats = [0.1, 1e-05, 1.5e300, 0.30000000000000004, 5e-324, 1.7976931348623157e308, -6.793921531704187]
    strings = ["café 😀", 'q"\\\n\t$\x01\u202e', ""]
    lines = [f"x <- {render_value(f, 'r')}; cat(sprintf('%.17g', x), 1/x > 0, '\\n')" for f in floats]
    lines += [f"cat(utf8ToInt({render_value(s, 'r')}), '\\n')" for s in strings]
    lines.append(f"cat(typeof({render_value(7, 'r')}), typeof({render_value(3_000_000_000, 'r')}), '\\n')")
    result = subprocess.run(["Rscript", "-e", "\n".join(lines)], capture_output=True, text=True, check=True, timeout=60)
    out = result.stdout.splitlines()
    for line, value in zip(out, floats, strict=False):
        number, positive = line.split()
        assert float(number) == value and (positive == "TRUE") == (value > 0)
    for line, value in zip(out[len(floats) :], strings, strict=False):
        assert [int(c) for c in line.split()] == [ord(c) for c in value]
    assert out[-1].split() == ["integer", "double"]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("value", "language", "fragment"),
    [
        ({"a": [1, 2, b"x"]}, "python", "`cfg['a'][2]`: value of type bytes"),
        ({"a": {1, 2}}, "julia", "`cfg['a']`: value of type set"),
        ([object()], "r", "`cfg[0]`: value of type object"),
        ({"a": "x\0y"}, "r", "`cfg['a']`: the string holds a NUL"),
        ({"a": {1: 2}}, "r", "`cfg['a'][1]`: dict key 1 cannot name an element of an R list"),
        ({"": 1}, "r", "`cfg['']`: dict key '' cannot name"),
        ({(1, 2): 3}, "python", "`cfg[(1, 2)]`: dict key of type tuple"),
        ([2**53 + 1], "r", "`cfg[0]`: integer 9007199254740993 is too large for R"),
        ({"s": "a\ud800"}, "julia", "`cfg['s']`: the string holds a lone surrogate U+D800"),
    ],
)
def test_refused_values_name_their_path(value: object, language: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as info:
        render_value(value, language, path="cfg")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unsupported_type_message_lists_valid_types() -> None:
    with pytest.raises(ParameterError, match="valid types are None, bool, int, float, str"):
        render_value(1j, "python", path="z")


def test_cycles_and_deep_nesting_are_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ParameterError, match=r"`x\[0\]`: the value contains itself"):
        render_value(loop, "python", path="x")
    deep: list[object] = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ParameterError, match="nested more than 100 levels"):
        render_value(deep, "python", path="x")
    shared = [1]
    assert render_value([shared, shared], "python") == "[[1], [1]]"  # shared is not a cycle


@pytest.mark.parametrize("language", ["scala", "bash", ""])
def test_unsupported_language(language: str) -> None:
    with pytest.raises(ParameterError, match="not supported for parameters; supported: python, r, julia"):
        render_value(1, language)


def test_language_names_are_normalised() -> None:
    assert render_value(True, "Python3") == "True"
    assert render_value(True, "R") == "TRUE"
    assert render_value(True, "Julia") == "true"
    assert issubclass(ParameterError, InvalidInput)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["1abc", "a-b", "class", "", 3, "a b", "None"])
def test_invalid_names(name: object) -> None:
    with pytest.raises(ParameterError) as info:
        validate_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["a", "_private", "learning_rate", "x2", "café", "__dunder__"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


def test_names_checked_against_the_kernel_language() -> None:
    with pytest.raises(ParameterError, match="reserved word in r"):
        validate_name("repeat", "r")
    with pytest.raises(ParameterError, match="cannot start with `_` in R"):
        validate_name("_x", "r")
    with pytest.raises(ParameterError, match="reserved word in julia"):
        validate_name("end", "julia")
    with pytest.raises(ParameterError, match="NFKC"):
        validate_name("\ufb01le")  # the ligature "fi": Python would assign `file`
    assert validate_name("end", "python") == "end"


# ---------------------------------------------------------------- values from the CLI


@pytest.mark.parametrize(
    ("text_value", "expected"),
    [
        ("1", 1),
        ("-7", -7),
        ("1.5", 1.5),
        ("1e-3", 0.001),  # YAML 1.1 would keep these as strings
        ("2.5E+2", 250.0),
        ("true", True),
        ("True", True),
        ("yes", True),  # YAML 1.1 booleans, as papermill's -y and -f read them
        ("None", None),
        ("null", None),
        ("~", None),
        ("2026-11-25", "2026-11-25"),
        ("2026-11-25T10:00:00", "2026-11-25T10:00:00"),
        ("12:30", "12:30"),
        ("0123", "0123"),
        ("0x1f", 31),
        ("abc", "abc"),
        ("[1, 2]", [1, 2]),
        ("{a: 1}", {"a": 1}),
        ("'quoted'", "quoted"),
        ("", ""),
        ("  ", "  "),
        ("nan", "nan"),  # YAML: only .nan is a float
        (".inf", math.inf),
        ("[None]", ["None"]),  # only a whole value of None is papermill's None
    ],
)
def test_parse_cli_value(text_value: str, expected: object) -> None:
    assert same(parse_cli_value(text_value), expected)


def test_parse_cli_value_nan() -> None:
    assert math.isnan(parse_cli_value(".nan"))


@pytest.mark.parametrize("bad", ["[1,", "{a: 1", "a: b: c", "'open"])
def test_parse_cli_value_rejects_malformed_yaml(bad: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_cli_value(bad, name="lr")
    message = str(info.value)
    assert message.startswith("Parameter `lr`: ")
    assert "not valid YAML" in message and "-r NAME VALUE" in message


def test_load_yaml_parameters() -> None:
    loaded = load_yaml_parameters("a: 1\nwhen: 2026-11-25\nlist: [x, 2]\n", "params.yaml")
    assert loaded == {"a": 1, "when": "2026-11-25", "list": ["x", 2]}
    assert load_yaml_parameters("# nothing\n", "-y") == {}


@pytest.mark.parametrize(
    ("text_value", "fragment"),
    [
        ("- 1\n- 2\n", "params.yaml: parameters must be a YAML mapping"),
        ("a: 1\nb: c: d\n", "params.yaml: not valid YAML at line 2, column 5"),
        ("1abc: 2\n", "params.yaml: Parameter name '1abc'"),
    ],
)
def test_load_yaml_parameters_errors(text_value: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as info:
        load_yaml_parameters(text_value, "params.yaml")
    assert fragment in str(info.value)


# ---------------------------------------------------------------- declared parameters

PY_CELL = """\
import os
a = 1  # help text
lr: float = 0.1
name = "x"
flag = True
items = [1, 2]
neg = -2.5  # negative
cfg = {"k": None}
nothing = None
computed = os.getcwd()
x, y = 1, 2
print(a)
"""


def test_declared_python_parameters() -> None:
    nb = notebook(new_markdown_cell("# title"), tagged(PY_CELL, PARAMETERS_TAG))
    assert find_parameters_cell(nb) == 1
    assert declared_parameters(nb, "python") == [
        DeclaredParameter("a", "1", "int", "help text"),
        DeclaredParameter("lr", "0.1", "float", None),
        DeclaredParameter("name", '"x"', "str", None),
        DeclaredParameter("flag", "True", "bool", None),
        DeclaredParameter("items", "[1, 2]", "list", None),
        DeclaredParameter("neg", "-2.5", "float", "negative"),
        DeclaredParameter("cfg", '{"k": None}', "dict", None),
        DeclaredParameter("nothing", "None", "None", None),
        DeclaredParameter("computed", "os.getcwd()", None, None),
    ]


def test_declared_python_parameters_with_magics() -> None:
    nb = notebook(tagged("%matplotlib inline\n!echo hi\nseed = 3\n", PARAMETERS_TAG))
    assert declared_parameters(nb, "python") == [DeclaredParameter("seed", "3", "int", None)]


def test_declared_python_syntax_error_names_cell_and_line() -> None:
    nb = notebook(new_code_cell("pass"), tagged("a = 1\nb = = 2\n", PARAMETERS_TAG))
    with pytest.raises(ParameterError) as info:
        declared_parameters(nb, "python")
    message = str(info.value)
    assert "tagged 'parameters' (cell 2 of the notebook)" in message and "line 2" in message


def test_no_parameters_cell() -> None:
    nb = notebook(new_code_cell("a = 1"), new_markdown_cell("x", metadata={"tags": ["parameters"]}))
    assert find_parameters_cell(nb) is None
    assert declared_parameters(nb, "python") is None


def test_declared_r_parameters() -> None:
    source = (
        "library(ggplot2)\n"
        "alpha <- 0.5  # learning rate\n"
        'title = "a # not a comment"  # the title\n'
        "n <- 5L\n"
        "flag <- TRUE\n"
        "xs <- c(1, 2)\n"
        "if (x == 1) y <- 2\n"
    )
    nb = notebook(tagged(source, PARAMETERS_TAG), language="R")
    assert notebook_language(nb) == "r"
    assert declared_parameters(nb, notebook_language(nb)) == [
        DeclaredParameter("alpha", "0.5", "float", "learning rate"),
        DeclaredParameter("title", '"a # not a comment"', "str", "the title"),
        DeclaredParameter("n", "5L", "int", None),
        DeclaredParameter("flag", "TRUE", "bool", None),
        DeclaredParameter("xs", "c(1, 2)", "list", None),
    ]


def test_declared_julia_parameters() -> None:
    source = (
        "using Dates\n"
        "alpha::Float64 = 0.5 # step size\n"
        's = "cost \\$5 # not a comment"\n'
        "n = 3\n"
        "v = [1, 2]\n"
        "d = Dict(1 => 2)\n"
        "ok = x == 1\n"
    )
    nb = notebook(tagged(source, PARAMETERS_TAG), language="julia")
    assert declared_parameters(nb, "julia") == [
        DeclaredParameter("alpha", "0.5", "Float64", "step size"),
        DeclaredParameter("s", '"cost \\$5 # not a comment"', "str", None),
        DeclaredParameter("n", "3", "int", None),
        DeclaredParameter("v", "[1, 2]", "list", None),
        DeclaredParameter("d", "Dict(1 => 2)", "dict", None),
        DeclaredParameter("ok", "x == 1", None, None),
    ]


def test_notebook_language() -> None:
    assert notebook_language(new_notebook()) == "python"
    nb = new_notebook()
    nb.metadata["language_info"] = {"name": "Python"}
    assert notebook_language(nb) == "python"
    assert notebook_language(notebook(language="python3")) == "python"
    assert notebook_language(notebook(language="Julia")) == "julia"


# ---------------------------------------------------------------- injection


def test_render_assignments() -> None:
    assert render_assignments({"a": 1, "s": "x"}, "python") == ("# Parameters injected by nbjobs\na = 1\ns = 'x'")
    assert render_assignments({"a": 1}, "r") == "# Parameters injected by nbjobs\na <- 1L"
    assert render_assignments({"a": 1}, "julia") == "# Parameters injected by nbjobs\na = 1"


def test_inject_after_parameters_cell() -> None:
    nb = notebook(new_code_cell("import x"), tagged("a = 1\nb = 'x'", PARAMETERS_TAG), new_code_cell("print(a)"))
    before = nbformat.writes(nb)
    out = inject_parameters(nb, {"a": 2, "b": "it's"}, "python")
    assert nbformat.writes(nb) == before  # the input is untouched
    assert [c.source for c in out.cells][:2] == ["import x", "a = 1\nb = 'x'"]
    injected = out.cells[2]
    assert injected.cell_type == "code" and injected.metadata.tags == [INJECTED_TAG]
    assert injected.source == '# Parameters injected by nbjobs\na = 2\nb = "it\'s"'
    assert out.cells[3].source == "print(a)"
    nbformat.validate(out)


def test_inject_replaces_an_earlier_injected_cell() -> None:
    nb = notebook(tagged("a = 1", PARAMETERS_TAG), new_code_cell("print(a)"))
    once = inject_parameters(nb, {"a": 2}, "python")
    twice = inject_parameters(once, {"a": 3}, "python")
    injected = [c for c in twice.cells if INJECTED_TAG in c.metadata.get("tags", [])]
    assert len(injected) == 1 and injected[0].source.endswith("a = 3")
    assert twice.cells[1] is not once.cells[1]
    cleared = inject_parameters(once, {}, "python")
    assert [c.source for c in cleared.cells] == ["a = 1", "print(a)"]


def test_inject_without_parameters_cell() -> None:
    nb = notebook(new_code_cell("print(a)"))
    with pytest.raises(ParameterError) as info:
        inject_parameters(nb, {"a": 1}, "python")
    message = str(info.value)
    assert "no cell tagged 'parameters'" in message and "--allow-unknown-params" in message
    out = inject_parameters(nb, {"a": 1}, "python", allow_unknown=True)
    assert out.cells[0].metadata.tags == [INJECTED_TAG]
    assert out.cells[0].source.endswith("a = 1")
    assert out.cells[1].source == "print(a)"


def test_inject_unknown_parameter_lists_declared_names() -> None:
    nb = notebook(tagged("alpha = 1\nbeta = 2", PARAMETERS_TAG))
    with pytest.raises(ParameterError) as info:
        inject_parameters(nb, {"alpah": 3}, "python")
    message = str(info.value)
    assert "`alpah`" in message and "notebook declares: alpha, beta" in message
    assert "--allow-unknown-params" in message
    out = inject_parameters(nb, {"alpah": 3}, "python", allow_unknown=True)
    assert out.cells[1].source.endswith("alpah = 3")


def test_inject_collects_every_problem_into_one_message() -> None:
    nb = notebook(tagged("a = 1", PARAMETERS_TAG))
    with pytest.raises(ParameterError) as info:
        inject_parameters(nb, {"1x": 1, "a": b"raw", "zz": 2}, "python")
    message = str(info.value)
    assert message.startswith("There are 3 problems with the parameters. ")
    assert "'1x'" in message and "`a`: value of type bytes" in message and "`zz`" in message
    assert "\n" not in message


def test_inject_into_an_r_notebook_and_an_old_nbformat() -> None:
    nb = notebook(tagged("alpha <- 0.5", PARAMETERS_TAG), language="R")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        cell.pop("id", None)
    out = inject_parameters(nb, {"alpha": 0.25}, notebook_language(nb))
    assert out.cells[1].source == "# Parameters injected by nbjobs\nalpha <- 0.25"
    assert "id" not in out.cells[1]
    nbformat.validate(out)


def test_inject_reports_a_broken_parameters_cell() -> None:
    nb = notebook(tagged("a = (", PARAMETERS_TAG))
    with pytest.raises(ParameterError, match="line 1"):
        inject_parameters(nb, {"a": 1}, "python")
