"""Version control on real git repositories: records, policy, runs at a ref, snapshots, rerun, diff."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import text

from nbjobs import api, vcs
from nbjobs.config import Settings
from nbjobs.spec import JobSpec

from conftest import job_json, write_notebook

SECRET = "s3cret-t0ken"


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits without the user's git config (identity, signing, hooks)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def write_version(repo: Path, version: int, data: str | None = None) -> Path:
    """The notebook at analysis/nb.ipynb: records its version, a scaled parameter, its cwd and data.txt."""
    folder = repo / "analysis"
    folder.mkdir(exist_ok=True)
    if data is not None:
        (folder / "data.txt").write_text(data)
    code = (
        "import os\nimport nbjobs\n"
        f'nbjobs.record("version", {version})\n'
        f'nbjobs.record("scaled", {version} * scale)\n'
        'nbjobs.record("cwd", os.getcwd())\n'
        'nbjobs.record("data", open("data.txt").read())\n'
        f'print("this is version {version}")'
    )
    return write_notebook(folder / "nb.ipynb", ["md:# Versioned", ("scale = 1", ["parameters"]), code])


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository: version 1 tagged v1, then version 2 on main."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    write_version(path, 1, "one")
    commit_all(path, "version 1")
    git(path, "tag", "v1")
    write_version(path, 2, "two")
    commit_all(path, "version 2")
    return path.resolve()


def files_under(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def assert_secret_nowhere(home: Path, *texts: str) -> None:
    for chunk in texts:
        assert SECRET not in chunk
    for file in files_under(home):
        assert SECRET.encode() not in file.read_bytes(), file


def assert_refused(result, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ records


def test_clean_tree_is_recorded_in_store_notebook_and_show(cli, repo, home):
    git(repo, "remote", "add", "origin", f"https://alice:{SECRET}@example.com/team/analysis.git")
    result = cli("run", repo / "analysis" / "nb.ipynb", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    record = job_json(result)
    assert record["results"]["version"] == 2
    assert record["git"] == {
        "repo": str(repo),
        "path": "analysis/nb.ipynb",
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "remote": "https://example.com/team/analysis.git",
        "dirty": False,
        "modified": [],
        "diff_sha256": None,
        "ref": None,
        "source": "working_tree",
    }
    out = nbformat.read(record["output"], as_version=4)
    assert out.metadata["nbjobs_run"]["git"] == record["git"]
    shown = cli("show", record["id"])
    assert f"{record['git']['commit'][:12]} on main, clean" in shown.stdout
    assert "https://example.com/team/analysis.git" in shown.stdout
    assert_secret_nowhere(home, result.output, shown.output)


def test_dirty_tree_records_modified_files_and_a_diff_hash(cli, repo):
    write_version(repo, 3)
    (repo / "notes.txt").write_text("draft")
    record = job_json(cli("run", repo / "analysis" / "nb.ipynb", "--json", "--no-progress"))
    assert record["results"]["version"] == 3
    state = record["git"]
    assert state["dirty"] is True and state["commit"] == git(repo, "rev-parse", "HEAD")
    assert state["modified"] == ["analysis/nb.ipynb", "notes.txt"]
    assert re.fullmatch(r"[0-9a-f]{64}", state["diff_sha256"])

    def digest() -> str | None:
        described = vcs.describe(repo / "analysis" / "nb.ipynb")
        assert described is not None
        return described.diff_sha256

    assert digest() == state["diff_sha256"]  # same files, same hash
    git(repo, "add", "analysis/nb.ipynb")
    assert digest() == state["diff_sha256"]  # staged or not: the same change
    (repo / "notes.txt").write_text("draft, edited")
    assert digest() != state["diff_sha256"]  # untracked files count


def test_no_repository_records_null(cli, notebook):
    record = job_json(cli("run", notebook(["x = 1"]), "--json"))
    assert record["git"] is None
    assert nbformat.read(record["output"], as_version=4).metadata["nbjobs_run"]["git"] is None


# ------------------------------------------------------------------- policy


def test_require_clean_refuses_a_dirty_tree_and_lists_its_files(cli, repo, notebook):
    nb = repo / "analysis" / "nb.ipynb"
    assert cli("run", nb, "--require-clean", "--no-progress").exit_code == 0
    (repo / "analysis" / "data.txt").write_text("changed")
    (repo / "scratch.py").write_text("")
    result = cli("run", nb, "--require-clean")
    assert_refused(result, "uncommitted changes in 2 file(s): analysis/data.txt, scratch.py")
    outside = cli("run", notebook(["x = 1"]), "--require-clean")
    assert_refused(outside, "is not in a git repository")
    # A run at a ref does not use the dirty tree: the policy is met.
    assert cli("run", nb, "--require-clean", "--git-ref", "HEAD", "--no-progress").exit_code == 0
    assert len(job_json(cli("ls", "--json"))) == 2


# ---------------------------------------------------------------- run at a ref


def test_run_at_an_older_tag_while_the_tree_has_moved_on(cli, repo, home, tmp_path, monkeypatch):
    write_version(repo, 3, "three")  # uncommitted, on top of version 2
    v1 = git(repo, "rev-parse", "v1^{commit}")
    record = job_json(cli("run", repo / "analysis" / "nb.ipynb", "--git-ref", "v1", "--json", "--no-progress"))
    assert record["state"] == "succeeded", record["reason"]
    assert record["results"]["version"] == 1 and record["results"]["data"] == "one"
    assert record["results"]["cwd"] == str(home / "snapshots" / v1 / "analysis")
    assert record["git"]["commit"] == v1 and record["git"]["ref"] == "v1" and record["git"]["source"] == "snapshot"
    assert record["git"]["dirty"] is False
    assert record["notebook"] == "analysis/nb.ipynb" and record["spec"]["repo"] == str(repo)
    assert list((home / "snapshots").iterdir()) == []  # removed when the job ended
    assert "this is version 3" in (repo / "analysis" / "nb.ipynb").read_text()  # working tree untouched

    monkeypatch.chdir(tmp_path)  # with --repo, the notebook path is relative to the repository root
    again = job_json(cli("run", "analysis/nb.ipynb", "--repo", repo, "--git-ref", "v1", "--json", "--no-progress"))
    assert again["results"]["version"] == 1 and again["git"]["commit"] == v1
    head = job_json(cli("run", "analysis/nb.ipynb", "--repo", repo, "--json", "--no-progress"))
    assert head["results"]["version"] == 2 and head["git"]["ref"] == "HEAD"  # committed HEAD, not the tree


def test_job_file_names_the_repository_and_ref(cli, repo, tmp_path):
    (tmp_path / "job.yaml").write_text("repo: repo\ngit_ref: v1\nrequire_clean: true\nparameters: {scale: 4}\n")
    record = job_json(cli("run", "analysis/nb.ipynb", "--spec", tmp_path / "job.yaml", "--json", "--no-progress"))
    assert record["results"]["version"] == 1 and record["results"]["scaled"] == 4
    assert record["spec"]["repo"] == str(repo)  # relative to the job file, like its other paths


def test_ref_that_only_the_remote_has_is_fetched(cli, repo, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(repo, "checkout", "-q", "-b", "feature")
    write_version(repo, 7)
    feature = commit_all(repo, "version 7")
    record = job_json(cli("run", clone / "analysis" / "nb.ipynb", "--git-ref", "feature", "--json", "--no-progress"))
    assert record["results"]["version"] == 7 and record["git"]["commit"] == feature
    assert git(clone, "branch", "--list") == "* main"  # no local branch was made


def test_snapshot_is_shared_by_jobs_and_removed_with_its_last_holder(repo, home):
    settings = Settings.from_env()
    taken = vcs.snapshot(repo, "v1", home=home, holder="pipeline run")
    also = vcs.snapshot(repo, "v1", home=home)
    assert taken.path == also.path == home / "snapshots" / git(repo, "rev-parse", "v1^{commit}")
    assert (taken.path / "analysis" / "nb.ipynb").stat().st_mode & 0o222 == 0  # read-only
    spec = JobSpec(notebook="analysis/nb.ipynb", repo=str(repo), git_ref="v1")
    jobs = [api.run_prepared(api.prepare(spec, snapshot=taken, settings=settings), settings=settings) for _ in "ab"]
    assert [j.results["cwd"] for j in jobs] == [str(taken.path / "analysis")] * 2
    assert all(j.git and j.git.commit == taken.commit and j.git.ref == "v1" for j in jobs)
    assert taken.path.is_dir()  # the jobs released their own leases; two holders remain
    assert vcs.release(also) is False and taken.path.is_dir()
    assert vcs.release(taken) is True
    assert list((home / "snapshots").iterdir()) == []


def test_gc_removes_snapshots_whose_holders_died(cli, repo, home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = vcs.snapshot(repo, "v1", home=home)
    lease = json.loads(orphan.lease.read_text())
    orphan.lease.write_text(json.dumps({**lease, "pid": dead.pid}))  # as if its process had crashed
    held = vcs.snapshot(repo, "main", home=home)
    result = cli("gc", "--json")
    assert json.loads(result.stdout) == {"removed_snapshots": [orphan.commit]}
    assert not orphan.path.exists() and held.path.is_dir()
    assert vcs.release(held) is True


# ------------------------------------------------------------------- rerun


def test_rerun_uses_the_recorded_commit_and_parameters(cli, repo):
    nb = repo / "analysis" / "nb.ipynb"
    first = job_json(cli("run", nb, "-p", "scale", "5", "--json", "--no-progress"))
    assert first["results"]["scaled"] == 10
    write_version(repo, 3)
    commit_all(repo, "version 3")
    write_version(repo, 4)  # and uncommitted work on top
    result = cli("rerun", first["id"], "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    again = job_json(result)
    assert again["id"] != first["id"]
    assert again["results"]["version"] == 2 and again["results"]["scaled"] == 10
    assert again["parameters"] == {"scale": 5}
    assert again["git"]["commit"] == first["git"]["commit"] and again["git"]["source"] == "snapshot"

    dirty = job_json(cli("run", nb, "--json", "--no-progress"))
    assert dirty["results"]["version"] == 4
    noted = cli("rerun", dirty["id"], "--json", "--no-progress")
    assert "uncommitted changes (analysis/nb.ipynb)" in noted.stderr
    assert job_json(noted)["results"]["version"] == 3


# -------------------------------------------------------------------- diff


def test_diff_shows_commits_parameters_results_and_cells(cli, repo):
    nb = repo / "analysis" / "nb.ipynb"
    a = job_json(cli("run", nb, "--git-ref", "v1", "-p", "scale", "2", "--json", "--no-progress"))
    b = job_json(cli("run", nb, "-p", "scale", "3", "--json", "--no-progress"))
    result = cli("diff", a["id"], b["id"], "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["a"]["id"] == a["id"] and d["b"]["commit"] == b["git"]["commit"]
    assert d["git"]["same_repo"] is True and d["git"]["same_commit"] is False
    assert d["git"]["log"] == {"a..b": [f"{b['git']['commit'][:7]} version 2"], "b..a": []}
    assert d["parameters"]["changed"] == {"scale": {"a": 2, "b": 3}}
    assert d["results"]["changed"]["version"] == {"a": 1, "b": 2}
    assert d["results"]["changed"]["data"] == {"a": "one", "b": "two"}
    assert d["duration"]["a"] > 0 and d["duration"]["change"] is not None
    assert d["cells"]["counts"] == {"unchanged": 2, "modified": 2, "added": 0, "removed": 0}
    injected, code = d["cells"]["changes"]
    assert "-scale = 2" in injected["source"] and "+scale = 3" in injected["source"]
    assert '-nbjobs.record("version", 1)' in code["source"] and '+nbjobs.record("version", 2)' in code["source"]
    assert "-this is version 1" in code["outputs"] and "+this is version 2" in code["outputs"]

    shown = cli("diff", a["id"], b["id"])
    assert shown.exit_code == 0
    for expected in ("version 2", "scale: 2 -> 3", "version: 1 -> 2", "+this is version 2", "at v1, from a snapshot"):
        assert expected in shown.stdout, shown.stdout


# --------------------------------------------------------------- bad input


def test_bad_git_input_is_refused_cleanly(cli, repo, notebook, tmp_path, home):
    nb = repo / "analysis" / "nb.ipynb"
    assert_refused(cli("run", notebook(["x = 1"]), "--git-ref", "v1"), "is not inside one")
    unknown = cli("run", nb, "--git-ref", "nope")
    assert_refused(unknown, "Unknown git ref 'nope'")
    assert "tags: v1" in unknown.stderr and "branches: main" in unknown.stderr
    write_notebook(repo / "analysis" / "new.ipynb", ["x = 1"])
    commit_all(repo, "a new notebook")
    missing = cli("run", repo / "analysis" / "new.ipynb", "--git-ref", "v1")
    assert_refused(missing, "'analysis/new.ipynb' is not in repository")
    assert "Notebooks at that commit: analysis/nb.ipynb" in missing.stderr
    assert_refused(cli("run", "nb.ipynb", "--repo", tmp_path / "nowhere"), "is not a folder")
    assert_refused(cli("run", "nb.ipynb", "--repo", tmp_path), "is not a git repository")
    assert_refused(cli("run", "../x.ipynb", "--repo", repo), "no `..`")
    assert_refused(cli("run", nb, "--git-ref=--upload-pack=evil"), "is not a git ref")
    in_metadata = write_notebook(tmp_path / "m.ipynb", ["x = 1"], metadata={"nbjobs": {"git_ref": "v1"}})
    assert_refused(cli("run", in_metadata), "cannot set them itself")

    git(repo, "remote", "add", "origin", f"https://alice:{SECRET}@127.0.0.1:9/team/analysis.git")
    unreachable = cli("run", nb, "--git-ref", "feature")
    assert_refused(unreachable, "remote origin (https://127.0.0.1:9/team/analysis.git) could not be reached")
    assert job_json(cli("ls", "--json")) == []
    assert_secret_nowhere(home, unreachable.output)


@pytest.fixture
def http_repo(repo: Path, tmp_path: Path) -> Iterator[str]:
    """`repo` served over git's dumb HTTP protocol behind basic auth (alice / SECRET); its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(repo), "analysis.git")
    git(served / "analysis.git", "update-server-info")
    expected = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}/analysis.git"
    finally:
        server.shutdown()
        server.server_close()


def test_repository_url_with_credentials_is_used_never_stored(cli, repo, http_repo, home):
    url = f"http://alice:{SECRET}@{http_repo}"
    result = cli("run", "analysis/nb.ipynb", "--repo", url, "--git-ref", "v1", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    record = job_json(result)
    assert record["results"]["version"] == 1
    assert record["git"]["repo"] == record["git"]["remote"] == record["spec"]["repo"] == f"http://{http_repo}"
    assert record["git"]["commit"] == git(repo, "rev-parse", "v1^{commit}")
    # A rerun needs no credentials: the commit is in the local cache of that URL.
    again = cli("rerun", record["id"], "--json", "--no-progress")
    assert again.exit_code == 0, again.output
    assert job_json(again)["results"]["version"] == 1
    wrong = cli("run", "analysis/nb.ipynb", "--repo", f"http://alice:wrong-password@{http_repo}")
    assert_refused(wrong, f"Could not fetch repository 'http://{http_repo}'")
    assert "wrong-password" not in wrong.output
    assert_secret_nowhere(home, result.output, again.output, wrong.output, cli("show", record["id"]).output)


def test_credentials_are_stripped_from_urls():
    strip = vcs.strip_credentials
    assert strip(f"https://alice:{SECRET}@example.com/a.git") == "https://example.com/a.git"
    assert strip(f"https://{SECRET}@example.com/a.git") == "https://example.com/a.git"
    assert strip(f"ssh://git:{SECRET}@example.com:22/a.git") == "ssh://git@example.com:22/a.git"
    assert strip("git@example.com:team/a.git") == "git@example.com:team/a.git"
    assert strip("/srv/repos/a.git") == "/srv/repos/a.git"


# ------------------------------------------------------- deterministic output


def _volatile_removed(path: str) -> dict:
    nb = json.loads(Path(path).read_text())
    for key in ("job_id", "started", "ended"):
        nb["metadata"]["nbjobs_run"].pop(key)
    for cell in nb["cells"]:
        for key in ("started", "ended", "duration"):
            cell["metadata"].get("nbjobs", {}).pop(key, None)
    return nb


def _keys_sorted(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys), keys
    return dict(pairs)


def test_output_notebooks_are_deterministic(cli, notebook):
    nb = notebook(["md:# Title", ("n = 1", ["parameters"]), "print(n * 2)", "1/0"])
    first, second = (job_json(cli("run", nb, "-p", "n", "4", "--json")) for _ in "ab")
    assert first["state"] == second["state"] == "failed"
    assert _volatile_removed(first["output"]) == _volatile_removed(second["output"])
    written = json.loads(Path(first["output"]).read_text(), object_pairs_hook=_keys_sorted)
    ids = [c["id"] for c in written["cells"]]
    assert {"injected-parameters", "nbjobs-error-banner", "nbjobs-error-marker"} <= set(ids)
    assert not any("execution" in c["metadata"] for c in written["cells"])


def test_clean_input_strips_front_end_metadata(cli, notebook, tmp_path):
    path = notebook(["x = 1"], metadata={"widgets": {"state": {}}})
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].metadata.update(execution={"iopub.status.busy": "2020-01-01"}, collapsed=True, tags=["keep"])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="stale\n")]
    nbformat.write(nb, path)
    kept = nbformat.read(job_json(cli("run", path, "--json"))["output"], as_version=4)
    assert "execution" in kept.cells[0].metadata and "widgets" in kept.metadata
    assert kept.cells[0].outputs == []  # outputs of the input never survive a run
    cleaned = nbformat.read(job_json(cli("run", path, "--clean-input", "--json"))["output"], as_version=4)
    assert not {"execution", "collapsed"} & set(cleaned.cells[0].metadata)
    assert cleaned.cells[0].metadata["tags"] == ["keep"] and "widgets" not in cleaned.metadata


# ---------------------------------------------------------------- migration


def test_migration_adds_the_vcs_column_to_an_existing_store(tmp_path):
    from alembic import command

    from nbjobs.store import Store
    from nbjobs.store.migrate import alembic_config
    from nbjobs.store.repository import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO jobs (name, notebook, owner, host, state, spec, priority, attempt, results, created) "
                "VALUES ('old', '/nb.ipynb', 'me', 'h', 'succeeded', '{\"notebook\": \"/nb.ipynb\"}', 0, 0, '{}', "
                "'2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    with Store(url) as store:
        assert store.get(1).git is None
        job = store.create_job(JobSpec(notebook="/nb.ipynb"), owner="me", host="h", vcs={"repo": "/r", "commit": "a"})
        assert store.get(job).git is not None and store.get(job).git.repo == "/r"
    with make_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        assert "vcs" not in {row[1] for row in conn.execute(text("PRAGMA table_info(jobs)"))}
