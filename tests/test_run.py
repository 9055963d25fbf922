"""`nbjobs run` on real ipykernel kernels: outputs, end states, markers, records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from nbjobs.notebook.results import RESULT_MIME_TYPE

from conftest import job_json

EXAMPLE = Path(__file__).parents[1] / "examples" / "hello.ipynb"
RECORD_KEYS = {
    "id",
    "name",
    "state",
    "reason",
    "output",
    "log",
    "created",
    "started",
    "ended",
    "cells",
    "results",
    "attempts",
}


def statuses(record: dict) -> list[str]:
    return [c["status"] for c in record["cells"]]


def test_example_runs_with_parameters_and_is_recorded(cli, home):
    result = cli("run", EXAMPLE, "-p", "n", "4", "-r", "greeting", "007", "--json", "--tag", "smoke")
    assert result.exit_code == 0, result.output
    record = job_json(result)
    assert record.keys() >= RECORD_KEYS
    assert record["state"] == "succeeded" and record["reason"] == "all cells completed"
    assert record["results"] == {"total": 10.0, "n": 4}
    assert record["artifacts"] == ["summary.txt"]
    assert record["tags"] == ["smoke"]  # a flag replaces the notebook metadata's list
    out = nbformat.read(record["output"], as_version=4)
    tags = [c.metadata.get("tags", []) for c in out.cells]
    params_at = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[params_at + 1]
    assert "greeting = '007'" in out.cells[params_at + 1].source and "n = 4" in out.cells[params_at + 1].source
    assert "hello" not in Path(record["log"]).read_text() and "007: the sum of 1..4" in Path(record["log"]).read_text()
    assert all(c["status"] == "completed" for c in record["cells"])
    assert all(c["started"] and c["ended"] for c in record["cells"])
    assert out.metadata["nbjobs_run"]["state"] == "succeeded"
    assert any(RESULT_MIME_TYPE in o.get("data", {}) for c in out.cells if c.cell_type == "code" for o in c.outputs)

    shown = job_json(cli("show", record["id"], "--json"))
    assert shown["id"] == record["id"] and shown["state"] == "succeeded"
    assert [h["state"] for h in shown["history"]] == ["queued", "starting", "running", "succeeded"]
    assert cli("logs", record["id"]).stdout.startswith("007: the sum")


def test_failing_cell_is_marked_and_later_cells_never_ran(cli, notebook):
    nb = notebook(["x = 1", "print('before')\nraise ValueError('bad input row 7')", "print('never')"])
    result = cli("run", nb, "--json", "--no-progress")
    assert result.exit_code == 1
    record = job_json(result)
    assert record["state"] == "failed"
    assert "ValueError: bad input row 7" in record["reason"] and "cell 1" in record["reason"]
    assert statuses(record) == ["completed", "failed", "pending"]
    out = nbformat.read(record["output"], as_version=4)
    assert "nbjobs-error-banner" in out.cells[0].metadata["tags"]
    assert "#nbjobs-error-cell" in out.cells[0].source
    marker = next(i for i, c in enumerate(out.cells) if "nbjobs-error-marker" in c.metadata.get("tags", []))
    assert 'id="nbjobs-error-cell"' in out.cells[marker].source
    failing, never = out.cells[marker + 1], out.cells[marker + 2]
    assert "raise ValueError" in failing.source and failing.outputs[-1].output_type == "error"
    assert never.execution_count is None and never.outputs == []
    assert never.metadata["nbjobs"]["status"] == "pending"


def test_raises_exception_and_skip_execution_tags_and_allow_errors(cli, notebook):
    nb = notebook([("1/0", ["raises-exception"]), ("raise SystemExit('skipped')", ["skip-execution"]), "y = 2"])
    record = job_json(cli("run", nb, "--json"))
    assert record["state"] == "succeeded"
    assert statuses(record) == ["completed", "skipped", "completed"]

    nb2 = notebook(["1/0", "print('after')"], name="errors.ipynb")
    record = job_json(cli("run", nb2, "--json", "--allow-errors"))
    assert record["state"] == "succeeded"
    assert "after" in Path(record["log"]).read_text()


def test_cell_timeout_ends_timed_out_and_leaves_rest_unexecuted(cli, notebook):
    nb = notebook(["print('start')", "import time\ntime.sleep(30)", "print('never')"])
    started = time.monotonic()
    result = cli("run", nb, "--json", "--cell-timeout", "1")
    assert time.monotonic() - started < 15
    assert result.exit_code == 3
    record = job_json(result)
    assert record["state"] == "timed_out"
    assert record["reason"] == "cell 1 exceeded its 1 s cell timeout"
    assert statuses(record) == ["completed", "timed_out", "pending"]


def test_whole_job_timeout_counts_across_cells(cli, notebook):
    nb = notebook(["import time\ntime.sleep(0.8)", "time.sleep(0.8)", "time.sleep(0.8)", "print('never')"])
    record = job_json(cli("run", nb, "--json", "--timeout", "2", "--cell-timeout", "10"))
    assert record["state"] == "timed_out"
    assert "job exceeded its 2 s timeout" in record["reason"]
    assert statuses(record)[0] == "completed" and statuses(record)[-1] == "pending"


def test_kernel_death_is_its_own_end_state(cli, notebook):
    nb = notebook(["print('alive')", "import os\nos._exit(3)", "print('never')"])
    result = cli("run", nb, "--json")
    assert result.exit_code == 4
    record = job_json(result)
    assert record["state"] == "kernel_died"
    assert record["reason"].startswith("kernel died while running cell 1")
    assert statuses(record) == ["completed", "kernel_died", "pending"]
    out = nbformat.read(record["output"], as_version=4)
    assert "kernel_died" in out.cells[0].source


def test_retry_after_kernel_death_keeps_each_attempt(cli, notebook, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("retry: {attempts: 2, backoff: 0.2}\n")
    nb = notebook(["import os\nos._exit(1)"])
    output = tmp_path / "out.ipynb"
    result = cli("run", nb, output, "--spec", spec, "--json")
    record = job_json(result)
    assert record["state"] == "kernel_died"
    assert [a["state"] for a in record["attempts"]] == ["kernel_died", "kernel_died"]
    assert [h["state"] for h in record["history"]].count("queued") == 2  # submitted, then the retry
    first, second = (Path(a["output"]) for a in record["attempts"])
    assert first.exists() and second == output and output.exists() and first != second


def test_output_argument_html_and_log_output(cli, notebook, tmp_path):
    nb = notebook(["import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)"])
    output = tmp_path / "result.ipynb"
    result = cli("run", nb, output, "--format", "html", "--log-output", "--no-progress")
    assert result.exit_code == 0
    assert "to stdout" in result.stdout and "to stderr" in result.stderr
    assert output.exists() and output.with_suffix(".html").exists()
    assert "to stdout" in output.with_suffix(".html").read_text()


def test_idempotency_key_returns_the_first_job(cli, notebook):
    nb = notebook(["x = 1"])
    first = job_json(cli("run", nb, "--idempotency-key", "daily-2026-11-26", "--json"))
    second = job_json(cli("run", nb, "--idempotency-key", "daily-2026-11-26", "--json"))
    assert first["id"] == second["id"]
    assert len(job_json(cli("ls", "--json"))) == 1


def test_ls_filters_and_newest_first(cli, notebook):
    ok = notebook(["x = 1"], name="ok.ipynb")
    bad = notebook(["1/0"], name="bad.ipynb")
    cli("run", ok, "--tag", "nightly")
    cli("run", bad)
    cli("run", ok, "--name", "special")
    jobs = job_json(cli("ls", "--json"))
    assert [j["name"] for j in jobs] == ["special", "bad", "ok"]
    assert [j["name"] for j in job_json(cli("ls", "--state", "failed", "--json"))] == ["bad"]
    assert [j["name"] for j in job_json(cli("ls", "--tag", "nightly", "--json"))] == ["ok"]
    assert [j["name"] for j in job_json(cli("ls", "--name", "spec", "--json"))] == ["special"]
    table = cli("ls").stdout
    assert "special" in table and "failed" in table


def _spawn_run(nb: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NBJOBS_HOME": str(home)}
    cmd = [sys.executable, "-m", "nbjobs.cli", "run", str(nb), "--no-progress", "--json", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_cell(home: Path, index: int, status: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for output in home.glob("jobs/*/attempt-1/output.ipynb"):
            try:
                nb = json.loads(output.read_text())
            except (OSError, ValueError):
                continue
            cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
            if cells[index]["metadata"].get("nbjobs", {}).get("status") == status:
                return output
        time.sleep(0.05)
    raise AssertionError(f"cell {index} never reached {status}")


def test_ctrl_c_cancels_and_saves_partial_notebook(notebook, home):
    nb = notebook(["print('first')", "import time\ntime.sleep(60)", "print('never')"])
    proc = _spawn_run(nb, home)
    output = _wait_for_cell(home, 1, "running")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    record = json.loads(stdout)
    assert record["state"] == "cancelled" and "SIGINT" in record["reason"]
    assert statuses(record) == ["completed", "cancelled", "pending"]
    saved = nbformat.read(output, as_version=4)
    nbformat.validate(saved)
    assert saved.metadata["nbjobs_run"]["state"] == "cancelled"


def test_killed_runner_leaves_a_valid_partial_notebook(notebook, home):
    nb = notebook(["print('first')", "import time\ntime.sleep(60)", "print('never')"])
    proc = _spawn_run(nb, home)
    output = _wait_for_cell(home, 1, "running")
    proc.kill()
    proc.wait(timeout=10)
    saved = nbformat.read(output, as_version=4)
    nbformat.validate(saved)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert code[0].metadata["nbjobs"]["status"] == "completed" and code[0].outputs[0].text == "first\n"
    assert code[1].metadata["nbjobs"]["status"] == "running"  # never "completed"
    assert code[2].metadata["nbjobs"]["status"] == "pending" and code[2].execution_count is None


@pytest.mark.parametrize("flag", ["--json", None])
def test_inspect_lists_declared_parameters(cli, flag):
    args = ["inspect", EXAMPLE] + ([flag] if flag else [])
    result = cli(*args)
    assert result.exit_code == 0
    if flag:
        params = {p["name"]: p for p in json.loads(result.stdout)["parameters"]}
        assert params["n"]["default"] == "10" and params["n"]["type"] == "int"
        assert params["n"]["help"] == "how many numbers to add"
        assert params["scale"]["type"] == "float"
    else:
        assert "greeting" in result.stdout and "how many numbers to add" in result.stdout


def test_schema_is_json_schema_of_a_job(cli):
    schema = json.loads(cli("schema").stdout)
    assert schema["type"] == "object"
    assert {"notebook", "parameters", "resources", "timeout", "retry", "outputs"} <= schema["properties"].keys()
    assert schema["additionalProperties"] is False
