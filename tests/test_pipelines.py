"""Pipelines: DAG rules, refusals before anything runs, and real runs on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbjobs.scheduler import dag
from nbjobs.spec import JobState, RunIf

from conftest import job_json, wait_for

# ---------------------------------------------------------------- pure rules


def up(job_id: int, state: JobState, reason: str | None = None, name: str = "") -> dag.Upstream:
    return dag.Upstream(job_id, name or f"t{job_id}", state, reason)


@pytest.mark.parametrize(
    ("run_if", "states", "verdict"),
    [
        (RunIf.ALL_SUCCEEDED, ["succeeded", "succeeded"], "release"),
        (RunIf.ALL_SUCCEEDED, ["failed", "running"], "skip"),  # decided before the other ends
        (RunIf.ALL_SUCCEEDED, ["succeeded", "running"], "wait"),
        (RunIf.ALL_DONE, ["failed", "cancelled"], "release"),
        (RunIf.ALL_DONE, ["failed", "running"], "wait"),
        (RunIf.ANY_FAILED, ["failed", "succeeded"], "release"),
        (RunIf.ANY_FAILED, ["succeeded", "succeeded"], "skip"),
        (RunIf.ANY_FAILED, ["failed", "running"], "wait"),
        (RunIf.NONE_FAILED, ["succeeded", "skipped"], "release"),
        (RunIf.NONE_FAILED, ["timed_out", "succeeded"], "skip"),
    ],
)
def test_run_if_conditions(run_if, states, verdict):
    ups = [up(i + 1, JobState(s)) for i, s in enumerate(states)]
    assert dag.evaluate({run_if: ups}).verdict == verdict


def test_failure_skips_propagate_but_not_needed_skips_do_not():
    failed_skip = up(1, JobState.SKIPPED, "upstream extract failed")
    assert dag.evaluate({RunIf.ANY_FAILED: [failed_skip]}).verdict == "release"
    benign = up(2, JobState.SKIPPED, "not needed: no upstream failed (x; any_failed)")
    assert dag.evaluate({RunIf.ANY_FAILED: [benign]}).verdict == "skip"
    decision = dag.evaluate({RunIf.ALL_SUCCEEDED: [up(3, JobState.FAILED, name="extract")]})
    assert decision.reason == "upstream extract failed"
    waiting = dag.evaluate({RunIf.ALL_SUCCEEDED: [up(12, JobState.RUNNING)]})
    assert waiting.reason == "waiting for job 12 (running)"


def test_cycles_levels_and_references():
    graph = {"extract": ["train"], "train": ["extract"], "report": ["train"]}
    assert dag.describe_cycle(dag.find_cycle(graph)) in ("extract -> train -> extract", "train -> extract -> train")
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]
    diamond = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert dag.levels(diamond) == [["a"], ["b", "c"], ["d"]]
    assert dag.descendants(diamond, ["b"]) == {"b", "d"}
    chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(5000)}  # deep: no recursion limit
    assert dag.find_cycle(chain) is None and len(dag.levels(chain)) == 5000

    results = {("x", "rows"): 7, ("x", "stats"): {"mean": [1.5, 2]}}

    def lookup(ref: dag.Reference):  # type: ignore[no-untyped-def]
        return dag.follow_path(results[(ref.source, ref.name)], ref)

    assert dag.resolve("${x.rows}", lookup) == 7
    assert dag.resolve("n=${x.rows}, m=${x.stats.mean.0}", lookup) == "n=7, m=1.5"
    assert dag.resolve({"a": ["${x.stats}", "$${x.rows}"]}, lookup) == {"a": [{"mean": [1.5, 2]}, "${x.rows}"]}
    with pytest.raises(dag.BadReference):
        dag.find_references("${rows}")


def test_run_outcome_follows_leaves():
    ok = dag.TaskView(JobState.SUCCEEDED, None)
    failed = dag.TaskView(JobState.FAILED, "boom", ("a",))
    skipped = dag.TaskView(JobState.SKIPPED, "upstream b failed", ("b",))
    handler = dag.TaskView(JobState.SUCCEEDED, None, ("b",), RunIf.ANY_FAILED)
    assert dag.run_outcome({"a": ok, "b": failed})[0] == "failed"
    assert dag.run_outcome({"a": ok, "b": failed, "c": skipped})[0] == "failed"
    assert dag.run_outcome({"a": ok, "b": failed, "c": skipped, "h": handler})[0] == "succeeded_with_failures"
    benign = dag.TaskView(JobState.SKIPPED, "not needed: no upstream failed", ("a",), RunIf.ANY_FAILED)
    assert dag.run_outcome({"a": ok, "h": benign})[0] == "succeeded"


# ---------------------------------------------------------------- refused before anything runs


def write_pipeline(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


RECORDS = "import nbjobs\nnbjobs.record('rows', 3)"


def test_bad_pipelines_are_refused_naming_the_problem(cli, notebook, tmp_path):
    notebook([RECORDS], name="extract.ipynb")
    notebook([("rows = 0", ["parameters"]), "print(rows)"], name="train.ipynb")
    cases = {
        "extract:\n    notebook: extract.ipynb\n    depends_on: [train]\n"
        "  train:\n    notebook: train.ipynb\n    depends_on: [extract]\n": "cycle: extract -> train -> extract",
        "train:\n    notebook: train.ipynb\n    depends_on: [extrct]\n": "unknown task 'extrct'",
        "extract:\n    notebook: nope.ipynb\n": "nope.ipynb' does not exist",
        "extract:\n    notebook: extract.ipynb\n  train:\n    notebook: train.ipynb\n"
        "    params: {rows: '${extract.rows}'}\n": "not upstream of 'train'",
        "extract:\n    notebook: extract.ipynb\n  train:\n    notebook: train.ipynb\n    depends_on: [extract]\n"
        "    params: {rows: '${extract.count}'}\n": "only rows",
        "train:\n    notebook: train.ipynb\n    params: {rows: '${params.n}'}\n": "names no run parameter",
        "train:\n    notebook: train.ipynb\n    params: {colums: 1}\n": "`colums` is not declared",
        "train:\n    notebook: train.ipynb\n    run_if: sometimes\n": "run_if",
    }
    for tasks, expected in cases.items():
        path = write_pipeline(tmp_path, "name: p\ntasks:\n  " + tasks)
        result = cli("pipeline", "validate", path)
        assert result.exit_code == 2, (tasks, result.output)
        assert expected in result.stderr, (expected, result.stderr)
        assert "Traceback" not in result.output
    good = write_pipeline(
        tmp_path,
        "name: p\ntasks:\n  extract: {notebook: extract.ipynb}\n"
        "  train: {notebook: train.ipynb, depends_on: [extract], params: {rows: '${extract.rows}'}}\n",
    )
    result = cli("pipeline", "validate", good, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["levels"] == [["extract"], ["train"]]
    schema = json.loads(cli("schema", "pipeline").stdout)
    assert "tasks" in schema["properties"] and "run_if" in json.dumps(schema)


# ---------------------------------------------------------------- real runs


def run_json(cli, path: Path, *params: str) -> dict:  # type: ignore[no-untyped-def]
    result = cli("pipeline", "run", path, *params, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_run(cli, run_id: int) -> dict:  # type: ignore[no-untyped-def]
    result = cli("pipeline", "wait", run_id, "--timeout", "90", "--json")
    return json.loads(result.stdout) | {"exit_code": result.exit_code}


def test_diamond_passes_results_down(cli, notebook, tmp_path, start_server):
    start_server()
    notebook(
        [("n = 1", ["parameters"]), "import time\ntime.sleep(1.5)", "import nbjobs\nnbjobs.record('n', n)"], "a.ipynb"
    )
    # b sleeps so that d is seen waiting on a running upstream (the check polls through the CLI).
    notebook(
        [("x = 0", ["parameters"]), "import time\ntime.sleep(2)", "import nbjobs\nnbjobs.record('y', x + 1)"], "b.ipynb"
    )
    notebook([("x = 0", ["parameters"]), "import nbjobs\nnbjobs.record('y', x * 10)"], "c.ipynb")
    notebook(
        [
            ("left = 0\nright = 0\nlabel = ''", ["parameters"]),
            "import nbjobs\nnbjobs.record('total', [label, left + right])",
        ],
        "d.ipynb",
    )
    path = write_pipeline(
        tmp_path,
        """
name: diamond
params: {start: 4}
tasks:
  a: {notebook: a.ipynb, params: {n: "${params.start}"}}
  b: {notebook: b.ipynb, depends_on: [a], params: {x: "${a.n}"}}
  c: {notebook: c.ipynb, depends_on: [a], params: {x: "${a.n}"}}
  d:
    notebook: d.ipynb
    depends_on: [b, c]
    params: {left: "${b.y}", right: "${c.y}", label: "from ${a.n}"}
""",
    )
    run = run_json(cli, path, "-p", "start", "3")
    jobs = {t["name"]: t["job_id"] for t in run["tasks"]}
    waiting = wait_for(lambda: job_json(cli("show", jobs["b"], "--json"))["queue_reason"] or "", 30)
    assert waiting.startswith(f"waiting for job {jobs['a']} (")
    wait_for(lambda: "(running)" in (job_json(cli("show", jobs["d"], "--json"))["queue_reason"] or "") or None, 30)

    final = wait_run(cli, run["id"])
    assert final["state"] == "succeeded" and final["exit_code"] == 0, final
    tasks = {t["name"]: t for t in final["tasks"]}
    assert tasks["b"]["parameters"] == {"x": 3} and tasks["c"]["parameters"] == {"x": 3}
    assert tasks["d"]["parameters"] == {"left": 4, "right": 30, "label": "from 3"}
    assert tasks["d"]["results"] == {"total": ["from 3", 34]}
    assert final["levels"] == [["a"], ["b", "c"], ["d"]]
    record = job_json(cli("show", jobs["d"], "--json"))
    assert record["run_id"] == run["id"] and record["task"] == "d" and record["name"] == "diamond/d"
    shown = cli("pipeline", "show", run["id"])
    assert shown.exit_code == 0 and "succeeded" in shown.stdout and "diamond" in shown.stdout
    listed = json.loads(cli("pipeline", "ls", "--json").stdout)
    assert listed[0]["id"] == run["id"] and listed[0]["counts"] == {"succeeded": 4}


def test_failure_in_the_middle_with_each_condition_then_repair(cli, notebook, tmp_path, start_server):
    start_server()
    fixed = tmp_path / "fixed"
    notebook([RECORDS], "extract.ipynb")
    notebook(
        [
            ("rows = 0", ["parameters"]),
            f"import os\nassert os.path.exists({str(fixed)!r}), 'bad data'",
            "import nbjobs\nnbjobs.record('acc', rows / 4)",
        ],
        "train.ipynb",
    )
    notebook(["import nbjobs\nnbjobs.record('ran', True)"], "step.ipynb")
    conditions = "".join(
        f"  {name}: {{notebook: step.ipynb, depends_on: [train], run_if: {name}}}\n"
        for name in ("all_succeeded", "all_done", "any_failed", "none_failed")
    )
    path = write_pipeline(
        tmp_path,
        "name: middle\ntasks:\n  extract: {notebook: extract.ipynb}\n"
        "  train: {notebook: train.ipynb, depends_on: [extract], params: {rows: '${extract.rows}'}}\n"
        + conditions
        + "  after_skip: {notebook: step.ipynb, depends_on: [all_succeeded]}\n",
    )
    run = run_json(cli, path)
    final = wait_run(cli, run["id"])
    tasks = {t["name"]: t for t in final["tasks"]}
    assert tasks["train"]["state"] == "failed"
    assert tasks["all_succeeded"]["state"] == "skipped" and tasks["all_succeeded"]["reason"] == "upstream train failed"
    assert tasks["none_failed"]["state"] == "skipped" and tasks["none_failed"]["reason"] == "upstream train failed"
    assert tasks["all_done"]["state"] == "succeeded" and tasks["any_failed"]["state"] == "succeeded"
    assert tasks["after_skip"]["state"] == "skipped" and tasks["after_skip"]["attempts"] == 0
    assert final["state"] == "succeeded_with_failures", final["reason"]
    assert "train failed" in final["reason"] and "any_failed" in final["reason"]

    refused = cli("pipeline", "cancel", run["id"])
    assert refused.exit_code == 2 and "already ended" in refused.stderr

    fixed.write_text("yes")
    repaired = json.loads(cli("pipeline", "repair", run["id"], "--json").stdout)
    assert set(repaired["repaired"]) == {
        "train",
        "all_succeeded",
        "all_done",
        "any_failed",
        "none_failed",
        "after_skip",
    }
    final = wait_run(cli, run["id"])
    tasks = {t["name"]: t for t in final["tasks"]}
    assert final["state"] == "succeeded", final
    assert tasks["extract"]["attempts"] == 1  # reused, not re-run
    assert tasks["train"]["results"] == {"acc": 0.75}
    train = job_json(cli("show", tasks["train"]["job_id"], "--json"))
    assert [a["state"] for a in train["attempts"]] == ["failed", "succeeded"]
    assert tasks["any_failed"]["state"] == "skipped" and tasks["all_succeeded"]["state"] == "succeeded"
    assert tasks["after_skip"]["state"] == "succeeded"


def test_cancel_a_running_pipeline(cli, notebook, tmp_path, start_server):
    start_server()
    notebook(["import time\ntime.sleep(60)"], "slow.ipynb")
    notebook(["x = 1"], "quick.ipynb")
    path = write_pipeline(
        tmp_path,
        "name: c\ntasks:\n  slow: {notebook: slow.ipynb}\n  next: {notebook: quick.ipynb, depends_on: [slow]}\n",
    )
    run = run_json(cli, path)
    slow = run["tasks"][0]["job_id"]
    wait_for(lambda: job_json(cli("show", slow, "--json"))["state"] == "running")
    assert cli("pipeline", "cancel", run["id"]).exit_code == 0
    final = wait_run(cli, run["id"])
    assert final["state"] == "cancelled" and final["exit_code"] == 130
    assert {t["state"] for t in final["tasks"]} == {"cancelled"}
