"""Where a job's notebook comes from: the working tree as it is, or a snapshot of a commit.

- Without `git_ref` and `repo`, the notebook runs from the working tree, and the
  state of its repository (commit, branch, remote, dirty files, diff hash) is
  recorded; `require_clean` refuses a dirty tree here, before a job exists.
- With `git_ref` and/or `repo`, the notebook runs from an immutable snapshot of
  that commit (`nbjobs.vcs.snapshots`); `notebook` is its path inside the
  repository. Without `repo`, the repository is the one holding the notebook
  path; without `git_ref`, the repository's HEAD (a URL: its default branch).

The spec that is stored says where the notebook came from in lasting terms (the
path inside the repository, the repository's root or its URL without
credentials), never the snapshot's folder, which is gone once the job ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from nbjobs.errors import InvalidInput
from nbjobs.notebook.io import parse_notebook
from nbjobs.spec import JobSpec
from nbjobs.vcs import (
    Commit,
    Repository,
    RepoState,
    Snapshot,
    describe,
    notebook_in_repository,
    open_repository,
    repository_containing,
    resolve,
    snapshot_store,
)
from nbjobs.vcs.refs import branch_named, missing_at_commit, read_blob
from nbjobs.vcs.state import default_remote_url

SHOWN_FILES = 20


@dataclass(frozen=True)
class NotebookSource:
    notebook: Path  # the file to run
    cwd: Path  # the kernel's working directory
    spec: JobSpec  # as it will be stored
    git: dict[str, Any] | None  # RepoState.as_record(), or None outside a repository
    snapshot: Snapshot | None  # this job's lease, released when the job ends


def from_ref(spec: JobSpec) -> bool:
    return spec.git_ref is not None or spec.repo is not None


def read_at_ref(notebook: str, *, repo: str | None, ref: str | None, home: Path) -> tuple[NotebookNode, str, str]:
    """The notebook at a ref (to read its `metadata.nbjobs`), its path in the repository, the repository."""
    repository, path = _repository_and_path(notebook, repo, home)
    commit = resolve(repository, ref or "HEAD")
    text = read_blob(repository, commit, path).decode("utf-8", "replace")
    nb = parse_notebook(text, f"{path!r} at {commit.ref}")
    return nb, path, repo if repo is not None else repository.location


def locate(spec: JobSpec, *, home: Path, snapshot: Snapshot | None = None) -> NotebookSource:
    """Where `spec`'s notebook runs from; a snapshot is leased here, for the job to release."""
    if snapshot is None and not from_ref(spec):
        return _working_tree(spec)
    return _snapshot(spec, home, snapshot)


def _working_tree(spec: JobSpec) -> NotebookSource:
    notebook = Path(spec.notebook).expanduser().resolve()
    state = describe(notebook)
    if spec.require_clean:
        check_clean(notebook, state)
    cwd = Path(spec.cwd).expanduser().resolve() if spec.cwd else notebook.parent
    stored = spec.model_copy(update={"notebook": str(notebook), "cwd": str(cwd)})
    return NotebookSource(notebook, cwd, stored, state.as_record() if state else None, None)


def check_clean(notebook: Path, state: RepoState | None) -> None:
    if state is None:
        raise InvalidInput(
            f"`require_clean` is set, but notebook {str(notebook)!r} is not in a git repository, so "
            "nothing shows that it is committed; run it from a repository, or drop --require-clean."
        )
    if state.dirty:
        files = ", ".join(state.modified[:SHOWN_FILES]) + (", ..." if len(state.modified) > SHOWN_FILES else "")
        raise InvalidInput(
            f"`require_clean` is set, but repository {state.repo!r} has uncommitted changes in "
            f"{len(state.modified)} file(s): {files}. Commit or stash them, run a commit with --git-ref, "
            "or drop --require-clean."
        )


def _repository_and_path(notebook: str, repo: str | None, home: Path) -> tuple[Repository, str]:
    if repo is not None:
        repository = open_repository(repo, home)
        return repository, notebook_in_repository(notebook, repository)
    absolute = Path(notebook).expanduser().resolve()
    repository = repository_containing(absolute)
    return repository, notebook_in_repository(str(absolute), repository)


def _snapshot(spec: JobSpec, home: Path, given: Snapshot | None) -> NotebookSource:
    repository, path = _repository_and_path(spec.notebook, spec.repo, home)
    ref = spec.git_ref or "HEAD"
    store = snapshot_store(home)
    holder = f"job running {path} at {ref}"
    if given is not None:
        commit = Commit(given.commit, ref, branch_named(repository, ref))
        leased = store.share(given, holder)
    else:
        commit = resolve(repository, ref)
        leased = store.acquire(repository, commit.sha, holder)
    try:
        notebook = leased.path / path
        if not notebook.is_file():
            raise missing_at_commit(repository, commit, path)
        cwd, stored_cwd = _snapshot_cwd(spec, repository, leased, notebook)
        state = RepoState(
            repo=repository.location,
            path=path,
            commit=commit.sha,
            branch=commit.branch,
            remote=repository.location if repository.is_remote else default_remote_url(repository.workdir, None),
            ref=ref,
            source="snapshot",
        )
        stored = spec.model_copy(update={"notebook": path, "repo": repository.location, "cwd": stored_cwd})
        return NotebookSource(notebook, cwd, stored, state.as_record(), leased)
    except BaseException:
        leased.release()
        raise


def _snapshot_cwd(spec: JobSpec, repository: Repository, leased: Snapshot, notebook: Path) -> tuple[Path, str | None]:
    """The kernel's folder: the notebook's in the snapshot, or `cwd` (inside the repository: mapped into it)."""
    if not spec.cwd:
        return notebook.parent, None
    given = Path(spec.cwd).expanduser().resolve()
    if not repository.is_remote and given.is_relative_to(repository.workdir):
        return leased.path / given.relative_to(repository.workdir), str(given)
    return given, str(given)
