"""Bad input: one paragraph naming the problem, exit 2, no traceback, no job recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_notebook


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "good.ipynb", [("a = 1\nb = 'x'", ["parameters"]), "print(a, b)"])


def _files(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


CASES = {
    "missing notebook": (lambda t, g: ["run", t / "nope.ipynb"], "does not exist"),
    "not JSON": (lambda t, g: ["run", _files(t, "x.ipynb", "{not json")], "is not JSON"),
    "JSON but not a notebook": (lambda t, g: ["run", _files(t, "x.ipynb", '{"a": 1}')], "not a notebook"),
    "invalid notebook": (
        lambda t, g: [
            "run",
            _files(
                t,
                "x.ipynb",
                json.dumps({"cells": [{"cell_type": "code"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
            ),
        ],
        "not a valid",
    ),
    "unknown kernel": (lambda t, g: ["run", g, "--kernel", "cobol-77"], "Unknown kernel 'cobol-77'"),
    "unknown parameter": (lambda t, g: ["run", g, "-p", "c", "1"], "a, b"),
    "parameter name not an identifier": (lambda t, g: ["run", g, "-p", "1abc", "1", "--allow-unknown-params"], "1abc"),
    "parameter name a keyword": (lambda t, g: ["run", g, "-p", "class", "1", "--allow-unknown-params"], "class"),
    "value that cannot be rendered": (lambda t, g: ["run", g, "-y", "a: !!binary aGVsbG8="], "`a`"),
    "malformed YAML job file": (
        lambda t, g: ["run", g, "--spec", _files(t, "job.yaml", "timeout: [1,\n")],
        "not valid YAML at line",
    ),
    "malformed TOML job file": (
        lambda t, g: ["run", g, "--spec", _files(t, "job.toml", "timeout = \n")],
        "not valid TOML",
    ),
    "unknown spec field": (
        lambda t, g: ["run", g, "--spec", _files(t, "job.yaml", "timout: 5\n")],
        "`timout` is not a known field",
    ),
    "negative timeout": (lambda t, g: ["run", g, "--timeout", "-5"], "`timeout`"),
    "non-numeric timeout": (lambda t, g: ["run", g, "--cell-timeout", "soon"], "`cell_timeout`"),
    "non-numeric memory": (lambda t, g: ["run", g, "--memory", "lots"], "`resources.memory`"),
    "negative memory": (lambda t, g: ["run", g, "--memory", "-1GB"], "`resources.memory`"),
    "output dir missing": (lambda t, g: ["run", g, t / "no" / "such" / "out.ipynb"], "does not exist"),
    "output dir not writable": (lambda t, g: ["run", g, "/sys/out.ipynb"], "not writable"),
    "output is a directory": (lambda t, g: ["run", g, t], "is a directory"),
    "bad output template field": (
        lambda t, g: ["run", g, "--spec", _files(t, "job.yaml", "outputs: {path: 'out/{jobid}.ipynb'}\n")],
        "{job_id}",
    ),
    "bad field in notebook metadata": (
        lambda t, g: ["run", write_notebook(t / "m.ipynb", ["x = 1"], metadata={"nbjobs": {"priority": "high"}})],
        "metadata.nbjobs",
    ),
    "bad retries": (lambda t, g: ["run", g, "--retries", "many"], "--retries"),
    "bad env flag": (lambda t, g: ["run", g, "--env", "NOEQUALS"], "KEY=VALUE"),
    "unknown job": (lambda t, g: ["show", "999"], "No job with id 999"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_refused_cleanly(case, cli, good, tmp_path, home):
    make_args, expected = CASES[case]
    result = cli(*make_args(tmp_path, good))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 4, (
        result.stderr
    )  # one paragraph (click adds usage lines), not a dump
    jobs = json.loads(cli("ls", "--json").stdout)
    assert jobs == []


def test_unknown_parameter_message_lists_declared_ones(cli, good):
    result = cli("run", good, "-p", "c", "1")
    assert "declares: a, b" in result.stderr and "--allow-unknown-params" in result.stderr


def test_invalid_input_writes_no_output_file(cli, good, tmp_path):
    target = tmp_path / "out.ipynb"
    cli("run", good, target, "--timeout", "-1")
    assert not target.exists()
