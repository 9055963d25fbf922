"""Git: describe a repository's state, resolve a ref, snapshot a commit.

- `describe(notebook)`: what a job records about the work tree its notebook is in;
- `open_repository(repo)`, `resolve(repository, ref)`: a local folder or a URL, and a commit;
- `snapshot(repo, ref)` -> `Snapshot(path, commit)`, and `release(snapshot)`: an immutable
  copy of a commit's files, shared by every holder of the same commit, removed with the last.

It is a package rather than one module: plumbing, state, refs and snapshots each
have their own concern and grow independently.
"""

from __future__ import annotations

from pathlib import Path

from nbjobs.vcs.git import GitFailed, is_url, strip_credentials
from nbjobs.vcs.refs import (
    Commit,
    Repository,
    commits_between,
    notebook_in_repository,
    open_repository,
    repository_containing,
    resolve,
    workdir_of,
)
from nbjobs.vcs.snapshots import Snapshot, SnapshotStore
from nbjobs.vcs.state import RepoState, describe

__all__ = [
    "Commit",
    "GitFailed",
    "RepoState",
    "Repository",
    "Snapshot",
    "SnapshotStore",
    "commits_between",
    "describe",
    "is_url",
    "notebook_in_repository",
    "open_repository",
    "release",
    "repository_containing",
    "resolve",
    "snapshot",
    "snapshot_store",
    "strip_credentials",
    "workdir_of",
]


def default_home() -> Path:
    from nbjobs.config import Settings

    return Settings.from_env().home


def snapshot_store(home: Path | None = None) -> SnapshotStore:
    return SnapshotStore((home or default_home()) / "snapshots")


def snapshot(repo: str | Path, ref: str = "HEAD", *, home: Path | None = None, holder: str = "") -> Snapshot:
    """A lease on an immutable copy of `ref` in `repo` (a folder or URL); `release()` it when done."""
    home = home or default_home()
    repository = open_repository(str(repo), home)
    commit = resolve(repository, ref)
    return snapshot_store(home).acquire(repository, commit.sha, holder)


def release(snapshot: Snapshot) -> bool:
    """Drop `snapshot`'s lease; True if it was the last and the files were removed."""
    return snapshot.release()
