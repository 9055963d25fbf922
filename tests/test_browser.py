"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): log in, watch a job
submitted from the CLI go live, read its log as it comes, cancel it with the button, open its notebook.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from people_support import ARTIFACTS, Api

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def test_dashboard_live_job_log_cancel_and_notebook(browser, cli, notebook, start_server, monkeypatch):
    ARTIFACTS.mkdir(exist_ok=True)
    server = start_server()
    ivy = Api.admin(server).add_user("ivy")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)

    page.goto(server.url + "/ui")
    assert page.url.startswith(server.url + "/ui/login")
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "That token is not valid."
    page.fill("#token", ivy.token)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/ui")
    assert "ivy" in page.locator("header .who").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "nbjobs_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

    nb = notebook(
        [
            "print('first line', flush=True)",
            "import time\nfor i in range(8):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.6)",
            "time.sleep(120)",
        ]
    )
    monkeypatch.setenv("NBJOBS_TOKEN", ivy.token)
    submitted = cli("submit", nb, "--name", "browser-demo")
    assert submitted.exit_code == 0, submitted.output
    job_id = int(submitted.stdout.split()[1])

    page.wait_for_selector("#new-jobs:not([hidden])")  # the list hears of the new job live
    page.goto(f"{server.url}/ui/jobs/{job_id}")
    page.evaluate("window.loadedOnce = true")  # proves later changes came without a reload
    expect(page.locator("#state")).to_have_text("running", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("tick 1", timeout=30_000)
    log_while_running = page.locator("#log").inner_text()
    assert "first line" in log_while_running and "tick 7" not in log_while_running  # lines arrive as they come
    page.wait_for_selector("#cells li.cell-completed")
    page.screenshot(path=str(ARTIFACTS / "job-running.png"), full_page=True)

    page.click("#cancel")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=30_000)
    assert page.evaluate("window.loadedOnce") is True
    assert page.locator("#retry").is_visible() and not page.locator("#cancel").is_visible()
    assert "cancelled by user" in page.locator("#reason").inner_text()
    assert ivy.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
    page.screenshot(path=str(ARTIFACTS / "job-cancelled.png"), full_page=True)

    page.reload()
    frame = page.frame_locator("#notebook")
    frame.locator("text=first line").first.wait_for()
    assert page.locator("#notebook").get_attribute("sandbox") == ""
    with page.context.expect_page() as opened:
        page.click("#open-notebook")
    rendered = opened.value
    rendered.wait_for_load_state()
    assert "tick 0" in rendered.content() and "nbjobs: this job ended" in rendered.content()
    rendered.screenshot(path=str(ARTIFACTS / "notebook.png"), full_page=True)
    rendered.close()

    # A phone's width: nothing wider than the screen but the tables, which scroll inside their box.
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (
        (f"/ui/jobs/{job_id}", "job-narrow.png"),
        ("/ui", "jobs-narrow.png"),
        ("/ui/queue", "queue-narrow.png"),
    ):
        page.goto(server.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 392, path
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.goto(server.url + "/ui")
    assert page.locator(f'tr[data-job-id="{job_id}"] [data-role=state]').inner_text() == "cancelled"
