"""Shared fixtures: a private NBJOBS_HOME per test, notebook builders, a CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner, Result
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbjobs.cli import main


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: what it needs must be installed by .ci/run."""
    if os.environ.get("CI") == "true":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped and session.exitstatus == 0:
            reporter.write_line(f"CI: {len(skipped)} test(s) skipped; skips count as failures in CI", red=True)
            session.exitstatus = 1


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("NBJOBS_HOME", str(path))
    monkeypatch.delenv("NBJOBS_DB_URL", raising=False)
    return path


Cell = str | tuple[str, Sequence[str]]  # source, or (source, tags); "md:" prefix for markdown


def write_notebook(path: Path, cells: Sequence[Cell], *, metadata: dict[str, Any] | None = None) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.update(metadata or {})
    for cell in cells:
        source, tags = (cell, ()) if isinstance(cell, str) else cell
        if source.startswith("md:"):
            nb.cells.append(new_markdown_cell(source[3:]))
        else:
            nb.cells.append(new_code_cell(source, metadata={"tags": list(tags)} if tags else {}))
    nbformat.write(nb, path)
    return path


@pytest.fixture
def notebook(tmp_path: Path) -> Callable[..., Path]:
    """`notebook(cells, name=..., metadata=...)` writes a notebook and returns its path."""

    def make(cells: Sequence[Cell], name: str = "nb.ipynb", metadata: dict[str, Any] | None = None) -> Path:
        return write_notebook(tmp_path / name, cells, metadata=metadata)

    return make


@pytest.fixture
def cli(home: Path) -> Callable[..., Result]:
    """Invoke the real CLI in-process; the result has exit_code, stdout, stderr."""
    runner = CliRunner()

    def invoke(*args: Any) -> Result:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """The predicate's first truthy value, polled; AssertionError after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def job_json(result: Result) -> dict[str, Any]:
    return json.loads(result.stdout)


class ServerProcess:
    """A real `nbjobs server` in a subprocess, on a free port, with its own NBJOBS_HOME."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.home = home
        self.env = {**os.environ, "NBJOBS_HOME": str(home), **(env or {})}
        self.args = list(args)  # more `nbjobs server` options, e.g. --backend dask
        self.proc: Any = None
        self.url = ""

    def start(self, timeout: float = 60) -> ServerProcess:
        import subprocess
        import sys
        import time

        announced = self.home / "server.json"
        announced.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = (self.home / "server-test.log").open("ab")
        cmd = [sys.executable, "-m", "nbjobs.cli", "server", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (announced.exists() and announced.read_text().endswith("}")):  # written, not just created
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()  # never leave a half-started server behind
                raise AssertionError("server did not start: " + (self.home / "server-test.log").read_text())
            time.sleep(0.05)
        self.url = json.loads(announced.read_text())["url"]
        return self

    def stop(self, kill: bool = False) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def start_server(home: Path) -> Any:
    """`start_server(config="...toml...", env={...})` starts a server; stopped after the test."""
    started: list[ServerProcess] = []

    def start(config: str = "", env: dict[str, str] | None = None) -> ServerProcess:
        home.mkdir(parents=True, exist_ok=True)
        if config:
            (home / "config.toml").write_text(config)
        proc = ServerProcess(home, env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def postgres() -> Any:
    """A PostgreSQL server started for this test session (skipped where PostgreSQL is not installed)."""
    from postgres import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: Any) -> str:
    """The URL of a new, empty PostgreSQL database for one test."""
    return str(postgres.create_database())
