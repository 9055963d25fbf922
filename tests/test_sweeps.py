"""Sweeps and batch submit, on a real server: grids, max-parallel, result tables, all-or-nothing batches."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from nbjobs.errors import InvalidInput
from nbjobs.pipelines.sweeps import expand

from conftest import job_json, wait_for

TRIVIAL = [("lr = 0.1\nbatch = 8", ["parameters"]), "import nbjobs\nnbjobs.record('score', round(lr * batch, 4))"]


def test_expand_grid_and_zip():
    assert expand({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert expand({"a": [1, 2], "b": ["x", "y"]}, "zip") == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(InvalidInput, match="same number of values"):
        expand({"a": [1, 2], "b": [1]}, "zip")


def test_sweep_of_twelve_with_max_parallel_and_results_table(cli, notebook, start_server):
    start_server()
    nb = notebook(TRIVIAL)
    made = json.loads(
        cli(
            "sweep", nb, "-p", "lr", "0.1,0.01,0.001", "-p", "batch", "32,64,128,256", "--max-parallel", "2", "--json"
        ).stdout
    )
    assert made["size"] == 12
    first, last = made["jobs"]
    assert last - first == 11
    held = job_json(cli("show", last, "--json"))
    assert held["state"] == "queued" and held["queue_reason"] == f"sweep {made['id']} at its max-parallel 2"
    assert held["sweep_id"] == made["id"] and held["sweep_index"] == 11 and held["name"].endswith("[11]")
    assert held["parameters"] == {"lr": 0.001, "batch": 256}

    def running_now() -> int:
        return len(json.loads(cli("queue", "--json").stdout)["running"])

    peak = 0
    for record in (job_json(cli("wait", i, "--json")) for i in range(first, last + 1)):
        assert record["state"] == "succeeded"
        peak = max(peak, running_now())
    assert peak <= 2
    view = json.loads(cli("sweep", "show", made["id"], "--json", "--sort=-score").stdout)
    scores = [e["results"]["score"] for e in view["elements"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 25.6
    assert view["elements"][0]["parameters"] == {"lr": 0.1, "batch": 256}
    table = list(csv.DictReader(io.StringIO(cli("sweep", "show", made["id"], "--csv", "--sort", "score").stdout)))
    assert len(table) == 12 and list(table[0]) == ["index", "job", "lr", "batch", "state", "score"]
    assert table[0]["score"] == str(min(scores))
    text = cli("sweep", "show", made["id"]).stdout
    assert "score" in text and "max-parallel 2" in text
    bad_sort = cli("sweep", "show", made["id"], "--sort", "nope")
    assert bad_sort.exit_code == 2 and "no such column" in bad_sort.stderr


def test_thousand_element_sweep_submits_quickly(cli, notebook, start_server):
    start_server()
    nb = notebook(TRIVIAL)
    values = ",".join(str(i) for i in range(100))
    started = time.monotonic()
    result = cli("sweep", nb, "-p", "batch", values, "-p", "lr", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took < 20, f"1,000-element sweep took {took:.1f} s to submit"
    view = json.loads(cli("sweep", "show", 1, "--json").stdout)
    assert view["size"] == 1000 and len(view["elements"]) == 1000
    assert view["elements"][999]["parameters"] == {"batch": 99, "lr": 1.0}
    print(f"1,000-element sweep submitted in {took:.2f} s")


def test_sweep_refusals_store_nothing(cli, notebook, start_server):
    start_server()
    nb = notebook(TRIVIAL)
    cases = {
        ("-p", "nope", "1,2"): "`nope` is not declared",
        ("-p", "lr", "1,2", "-p", "batch", "1", "--zip"): "same number of values",
        ("-p", "lr", "1,2", "--idempotency-key", "k"): "no idempotency key",
        ("-p", "lr", "1,2", "--cpus", "4096"): "CPU",
    }
    for flags, expected in cases.items():
        result = cli("sweep", nb, *flags)
        assert result.exit_code == 2 and expected in result.stderr, (flags, result.stderr)
    assert json.loads(cli("sweep", "ls", "--json").stdout) == []
    assert json.loads(cli("ls", "--json").stdout) == []


def test_batch_submit_is_all_or_nothing(cli, notebook, start_server, tmp_path):
    start_server()
    nb = notebook(TRIVIAL)
    batch = tmp_path / "jobs.jsonl"
    lines = [{"notebook": nb.name, "parameters": {"lr": i / 10}} for i in range(1, 6)]
    lines[3]["parameters"] = {"learning_rate": 1}
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    refused = cli("submit", "--batch", batch)
    assert refused.exit_code == 2 and refused.stderr.startswith("Error: Line 4:"), refused.stderr
    assert "learning_rate" in refused.stderr
    assert json.loads(cli("ls", "--json").stdout) == []

    lines[3]["parameters"] = {"lr": 0.4}
    upstream = job_json(cli("submit", nb, "-p", "lr", "0.9", "--json"))["id"]
    lines.append({"notebook": nb.name, "parameters": {"lr": 0.6}, "depends_on": [upstream]})
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = cli("submit", "--batch", batch, "--tag", "batch", "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert [j["id"] for j in made] == [2, 3, 4, 5, 6, 7] and all(j["created"] for j in made)
    last = job_json(cli("wait", 7, "--json"))
    first = job_json(cli("show", upstream, "--json"))
    assert last["state"] == "succeeded" and last["started"] >= first["ended"]  # waited for its upstream
    assert last["results"] == {"score": 4.8} and last["tags"] == ["batch"]
    wait_for(lambda: all(job_json(cli("show", i, "--json"))["state"] == "succeeded" for i in range(2, 7)), 60)
