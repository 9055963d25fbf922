"""Pages and event streams of pipeline runs and sweeps, on a real server with real kernels: only
their owner (and admins) see them; a run's stream resumes with Last-Event-ID; in headless Chromium
a run's graph changes live and its Cancel and Repair buttons work, and a sweep's table sorts.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from nbjobs.server.task_graph import GAP_Y, NODE_H, NODE_W, PAD, layout, order_levels, task_graph
from people_support import ARTIFACTS, Api, is_final, wait_for
from test_browser import browser  # noqa: F401  (the fixture: Debian's Chromium, headless)

RECORD_N = [("n = 1", ["parameters"]), "import nbjobs\nnbjobs.record('n', n)"]
DOUBLE = [("x = 0", ["parameters"]), "print('doubling', x, flush=True)", "import nbjobs\nnbjobs.record('y', x * 2)"]
SCORE = [
    ("x = 0", ["parameters"]),
    "import time\ntime.sleep(0.5)",
    "import nbjobs\nnbjobs.record('score', (x * 7) % 5)\nnbjobs.record('label', f'x{x}')",
]


def three_tasks(folder: Path, middle: str = "b.ipynb", run_if: str = "all_succeeded") -> Path:
    """a -> b -> c: b and c take their parameters from the results above them."""
    path = folder / "pipeline.yaml"
    path.write_text(
        "name: chain\nparams: {start: 3}\ntasks:\n"
        "  a: {notebook: a.ipynb, params: {n: '${params.start}'}}\n"
        f"  b: {{notebook: {middle}, depends_on: [a], params: {{x: '${{a.n}}'}}}}\n"
        f"  c: {{notebook: b.ipynb, depends_on: [b], params: {{x: '${{b.y}}'}}, run_if: {run_if}}}\n"
    )
    return path


def started_run(cli: Any, path: Path) -> dict[str, Any]:
    result = cli("pipeline", "run", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def new_user(cli: Any, server: Any, name: str) -> Api:
    made = cli("user", "add", name)
    assert made.exit_code == 0, made.output
    return Api(server.url, made.stdout.strip().splitlines()[-1])


def test_graph_levels_are_ordered_to_uncross_edges_and_names_are_escaped():
    # c hangs below a and d below b, but the run lists d first: the drawing puts c left, under a.
    assert order_levels([["a", "b"], ["d", "c"]], {"c": ["a"], "d": ["b"]}) == [["a", "b"], ["c", "d"]]
    placed, width, height = layout([["a"], ["b", "c"]])
    assert height == 2 * PAD + 2 * NODE_H + GAP_Y
    assert placed["a"].x * 2 + NODE_W == width and placed["b"].y == placed["c"].y > placed["a"].y
    run = {
        "id": 1,
        "levels": [["x<y"]],
        "tasks": [{"name": "x<y", "job_id": 7, "state": "queued", "depends_on": [], "run_if": "all_succeeded"}],
    }
    svg = str(task_graph(run))
    assert "x&lt;y" in svg and "x<y" not in svg and 'href="/ui/jobs/7"' in svg and ">queued</text>" in svg


def test_group_pages_csv_and_streams_are_their_owners_only(cli, notebook, tmp_path, start_server):
    server = start_server()
    admin = Api.admin(server)
    notebook(RECORD_N, "a.ipynb")
    notebook(DOUBLE, "b.ipynb")
    run = started_run(cli, three_tasks(tmp_path, run_if="none_failed"))
    tasks = {t["name"]: t["job_id"] for t in run["tasks"]}
    made = cli("sweep", notebook(SCORE, "score.ipynb"), "-p", "x", "1,2", "--json")
    sweep = json.loads(made.stdout)
    assert cli("pipeline", "wait", run["id"], "--timeout", "90").exit_code == 0
    for job_id in range(sweep["jobs"][0], sweep["jobs"][1] + 1):
        assert admin.wait(job_id)["state"] == "succeeded"

    listing = admin.get("/ui/pipelines").text
    assert f'href="/ui/pipelines/{run["id"]}"' in listing and f'href="/ui/sweeps/{sweep["id"]}"' in listing
    assert "chain" in listing and "succeeded 3" in listing and "succeeded 2" in listing and "<th>Owner</th>" in listing

    page = admin.get(f"/ui/pipelines/{run['id']}").text
    assert '<svg class="graph"' in page and page.count('class="node state-succeeded"') == 3
    for job_id in tasks.values():
        assert f'<a class="node state-succeeded" href="/ui/jobs/{job_id}"' in page
    assert page.count('class="edge"') == 1 and page.count('class="edge conditional"') == 1  # b->c: none_failed
    # Parameters as resolved from the results above: a.n = 3, b.y = 6, c.y = 12.
    assert "<dt>x</dt><dd><code>3</code></dd>" in page and "<dt>y</dt><dd><code>12</code></dd>" in page
    assert 'id="cancel-run" type="button" data-action="cancel" hidden' in page  # the run has ended

    sweep_page = admin.get(f"/ui/sweeps/{sweep['id']}").text
    assert f'href="/api/sweeps/{sweep["id"]}/results.csv"' in sweep_page
    assert re.findall(r'<th data-result="(\w+)">', sweep_page) == ["score", "label"]
    assert "data-sort='\"x1\"'" in sweep_page  # sort values as JSON, in attributes that hold quotes

    table = admin.get(f"/api/sweeps/{sweep['id']}/results.csv", params={"sort": "-score"})
    assert table.headers["content-type"].startswith("text/csv")
    assert "attachment" in table.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert list(rows[0]) == ["index", "job", "x", "state", "score", "label", "duration_s"]
    assert [r["score"] for r in rows] == ["4", "2"] and float(rows[0]["duration_s"]) > 0
    bad = admin.get(f"/api/sweeps/{sweep['id']}/results.csv", params={"sort": "nope"})
    assert bad.status_code == 400 and "`sort` 'nope': no such column" in bad.json()["detail"]

    # Another user: every page, stream and download of these is a 404, worded as for one that does not exist.
    mallory = new_user(cli, server, "mallory")
    for path in (
        f"/ui/pipelines/{run['id']}",
        f"/ui/sweeps/{sweep['id']}",
        f"/api/pipelines/runs/{run['id']}/events",
        f"/api/sweeps/{sweep['id']}/events",
        f"/api/sweeps/{sweep['id']}/results.csv",
        f"/api/pipelines/runs/{run['id']}",
        f"/api/sweeps/{sweep['id']}",
    ):
        theirs, missing = mallory.get(path), mallory.get(re.sub(r"/\d+(/|$)", r"/999\1", path, count=1))
        assert theirs.status_code == missing.status_code == 404, (path, theirs.status_code)
        assert theirs.json()["detail"].replace(str(run["id"]), "?").replace(str(sweep["id"]), "?") == missing.json()[
            "detail"
        ].replace("999", "?"), path
    theirs_listing = mallory.get("/ui/pipelines").text
    assert "chain" not in theirs_listing and "No pipeline runs yet" in theirs_listing
    assert mallory.get("/api/pipelines/runs").json() == [] and mallory.get("/api/sweeps").json() == []
    assert admin.get("/ui/pipelines/abc").status_code == 422 and "run_id" in admin.get("/ui/pipelines/abc").text

    # The run's stream: every task's events from the first, then from any id on (Last-Event-ID).
    path = f"/api/pipelines/runs/{run['id']}/events"
    seen = admin.events(
        path, until=lambda e: e["job_id"] == tasks["c"] and e["kind"] == "state" and is_final(e["state"])
    )
    assert {e["job_id"] for e in seen} == set(tasks.values())
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for name, job_id in tasks.items():
        states = [e["state"] for e in seen if e["job_id"] == job_id and e["kind"] == "state"]
        assert states[-3:] == ["starting", "running", "succeeded"], (name, states)
    assert any(e["kind"] == "cell_finished" for e in seen)
    assert "doubling 6\n" in [e["text"] for e in seen if e["kind"] == "log" and e["job_id"] == tasks["c"]]
    middle = seen[len(seen) // 2]
    resumed = admin.events(path, last_event_id=middle["id"], until=lambda e: e["id"] == ids[-1])
    assert [e["id"] for e in resumed] == ids[len(ids) // 2 + 1 :]
    after = admin.events(f"{path}?after={middle['id']}", until=lambda e: e["id"] == ids[-1])
    assert [e["id"] for e in after] == [e["id"] for e in resumed]
    sweep_jobs = set(range(sweep["jobs"][0], sweep["jobs"][1] + 1))
    sweep_seen = admin.events(
        f"/api/sweeps/{sweep['id']}/events",
        until=lambda e: e["kind"] == "state" and e["state"] == "succeeded" and e["job_id"] == max(sweep_jobs),
    )
    assert {e["job_id"] for e in sweep_seen} <= sweep_jobs


def test_run_page_live_graph_cancel_repair_and_sweep_sort(browser, cli, notebook, tmp_path, start_server):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    server = start_server()
    admin = Api.admin(server)
    flag = tmp_path / "go"
    notebook(RECORD_N, "a.ipynb")
    notebook(DOUBLE, "b.ipynb")
    # The middle task waits for a file, so the test decides when it may end.
    notebook(
        [
            ("x = 0", ["parameters"]),
            f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n"
            "    print('waiting', flush=True)\n    time.sleep(0.5)",
            "import nbjobs\nnbjobs.record('y', x * 2)",
        ],
        "gate.ipynb",
    )
    run = started_run(cli, three_tasks(tmp_path, middle="gate.ipynb"))

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    problems: list[str] = []  # script errors and refusals by the page's Content-Security-Policy
    page.on("console", lambda m: problems.append(f"{m.text} {m.location['url']}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/ui/login")
    page.fill("#token", admin.token)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/ui")
    page.goto(f"{server.url}/ui/pipelines/{run['id']}")
    page.evaluate("window.loadedOnce = true")  # proves later changes came without a reload

    node = {name: page.locator(f'svg.graph .node[data-task="{name}"]') for name in "abc"}
    expect(node["b"].locator(".label")).to_have_text("running")
    expect(node["b"]).to_have_class(re.compile(r"\bstate-running\b"))
    expect(node["a"].locator(".label")).to_have_text("succeeded")
    expect(node["c"].locator(".label")).to_have_text("queued")
    expect(page.locator("#log")).to_contain_text("b | waiting")
    expect(page.locator('#tasks tr[data-task="b"] [data-role="parameters"]')).to_contain_text("3")
    page.screenshot(path=str(ARTIFACTS / "pipeline-running.png"), full_page=True)

    page.click("#cancel-run")
    expect(page.locator("#run-state")).to_have_text("cancelled")
    expect(node["b"].locator(".label")).to_have_text("cancelled")
    expect(node["c"].locator(".label")).to_have_text(re.compile("cancelled|skipped"))  # whichever came first
    expect(page.locator("#repair-run")).to_be_visible()
    assert not page.locator("#cancel-run").is_visible()

    flag.write_text("go")
    page.click("#repair-run")
    expect(page.locator("#run-state")).to_have_text("succeeded")
    expect(node["c"].locator(".label")).to_have_text("succeeded")
    expect(node["c"]).to_have_class(re.compile(r"\bstate-succeeded\b"))
    expect(page.locator('#tasks tr[data-task="c"] [data-role="results"]')).to_contain_text("12")
    assert page.evaluate("window.loadedOnce") is True
    page.screenshot(path=str(ARTIFACTS / "pipeline-repaired.png"), full_page=True)
    with page.expect_navigation():
        node["c"].click()  # each node is a link to its job
    assert page.url.endswith(f"/ui/jobs/{run['tasks'][2]['job_id']}")
    page.click("#group")  # and the job's page links back to its run
    page.wait_for_url(f"{server.url}/ui/pipelines/{run['id']}")

    # A sweep opened while it runs: states, results (their columns too) arrive live; headers sort.
    made = cli("sweep", notebook(SCORE, "score.ipynb"), "-p", "x", "1,2,3,4", "--json")
    sweep = json.loads(made.stdout)
    page.goto(f"{server.url}/ui/sweeps/{sweep['id']}")
    page.evaluate("window.loadedOnce = true")
    rows = page.locator("#results tbody tr")
    expect(rows.locator(".badge.state-succeeded")).to_have_count(4, timeout=90_000)
    expect(page.locator("#counts")).to_have_text("succeeded 4")
    score = page.locator('#results th[data-result="score"]')
    expect(score).to_be_visible()
    # Every cell has its value once each element's results and duration came: index, x, state, 2 results, duration.
    wait_for(lambda: page.locator("#results tbody td[data-sort]").count() == 4 * 6)
    score.locator("button").click()
    assert first_column(page) == ["2", "0", "3", "1"]  # scores 1, 2, 3, 4
    assert score.get_attribute("aria-sort") == "ascending"
    score.locator("button").click()
    assert first_column(page) == ["1", "3", "0", "2"]
    assert score.get_attribute("aria-sort") == "descending"
    assert page.evaluate("window.loadedOnce") is True
    page.screenshot(path=str(ARTIFACTS / "sweep-sorted.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#csv")
    assert download.value.suggested_filename == f"sweep-{sweep['id']}.csv"

    # A phone's width: nothing wider than the screen but the tables and the graph, which scroll in their box.
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (
        (f"/ui/pipelines/{run['id']}", "pipeline-narrow.png"),
        (f"/ui/sweeps/{sweep['id']}", "sweep-narrow.png"),
        ("/ui/pipelines", "pipelines-narrow.png"),
    ):
        page.goto(server.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 392, (path, too_wide(page))
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    assert admin.token not in page.content()
    # Not ours: the browser's guess at a favicon, and the job page's notebook, sandboxed on purpose.
    expected = ("/favicon.ico", "'allow-scripts' permission is not set.")
    assert [p for p in problems if not any(e in p for e in expected)] == [], problems


def too_wide(page: Any) -> list[str]:
    """What sticks out of a 390 px screen, outside the boxes that scroll: for the failure message."""
    return page.evaluate(  # type: ignore[no-any-return]
        "[...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > 392 && !e.closest('.scroll'))"
        ".map(e => `${e.tagName} ${e.className} ${e.textContent.slice(0, 40)}`).slice(0, 5)"
    )


def first_column(page: Any) -> list[str]:
    return page.locator("#results tbody tr td:first-child").all_inner_texts()  # type: ignore[no-any-return]
