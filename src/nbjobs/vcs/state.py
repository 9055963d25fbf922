"""What a job records about the repository its notebook came from.

For a notebook run from a working tree: the commit checked out, the branch, the
remote (credentials stripped), whether the tree is dirty, which files differ,
and a sha256 that identifies the uncommitted changes exactly:

    sha256( `git diff --binary HEAD`                      (tracked files, staged or not)
            + for each untracked, not ignored file, in path order:
              b"\\0untracked\\0" + path + b"\\0" + its bytes (a symlink: its target) )

Two runs with the same commit and the same hash ran the same files (submodule
contents and ignored files aside). A run from a snapshot is clean by construction.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nbjobs.vcs.git import GitFailed, git_ok, run_git, strip_credentials

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's well-known empty tree object
# Fixed diff options: the hash must not depend on the user's diff configuration.
_DIFF_OPTIONS = [
    "diff",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--diff-algorithm=myers",
    "--indent-heuristic",
    "--unified=3",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-O/dev/null",
]


@dataclass(frozen=True)
class RepoState:
    """One job's view of its repository; `as_record()` is what the store and notebook keep."""

    repo: str  # the repository's root folder, or its URL without credentials
    path: str | None  # the notebook, relative to the repository root (POSIX separators)
    commit: str | None  # None in a repository without commits
    branch: str | None = None  # None when detached
    remote: str | None = None  # URL without credentials
    dirty: bool = False
    modified: list[str] = field(default_factory=list)  # changed, staged, deleted and untracked paths
    diff_sha256: str | None = None  # None when clean
    ref: str | None = None  # the ref asked for (`git_ref`), for a run from a snapshot
    source: Literal["working_tree", "snapshot"] = "working_tree"

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def find_root(path: Path) -> Path | None:
    """The top folder of the work tree holding `path` (or its nearest existing parent)."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    top = git_ok(["rev-parse", "--show-toplevel"], folder)
    return Path(top).resolve() if top else None


def describe(notebook: Path) -> RepoState | None:
    """The state of the work tree holding `notebook`; None outside any repository (or without git)."""
    root = find_root(notebook)
    if root is None:
        return None
    try:
        path = notebook.resolve().relative_to(root).as_posix()
    except ValueError:
        path = None
    commit = git_ok(["rev-parse", "--verify", "-q", "HEAD^{commit}"], root) or None
    branch = git_ok(["symbolic-ref", "--short", "-q", "HEAD"], root) or None
    try:
        modified, untracked = _status(root)
        diff = _diff_sha256(root, commit, untracked) if modified else None
    except GitFailed:  # e.g. a corrupt index: record what we know rather than refuse the run
        modified, diff = ["(git status failed)"], None
    return RepoState(
        repo=str(root),
        path=path,
        commit=commit,
        branch=branch,
        remote=default_remote_url(root, branch),
        dirty=bool(modified),
        modified=modified,
        diff_sha256=diff,
    )


def default_remote_url(root: Path, branch: str | None) -> str | None:
    """The URL of the branch's upstream remote, else `origin`, else the first remote; stripped."""
    remotes = (git_ok(["remote"], root) or "").split()
    if not remotes:
        return None
    upstream = git_ok(["config", "--get", f"branch.{branch}.remote"], root) if branch else None
    name = upstream if upstream in remotes else "origin" if "origin" in remotes else remotes[0]
    url = git_ok(["remote", "get-url", "--", name], root)
    return strip_credentials(url) if url else None


def _status(root: Path) -> tuple[list[str], list[str]]:
    """(every path that differs from HEAD, the untracked ones among them), sorted."""
    out = run_git(
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules=none"],
        root,
    ).stdout
    modified, untracked = set(), set()
    for entry in out.split("\0"):
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        modified.add(path)
        if code == "??":
            untracked.add(path)
    return sorted(modified), sorted(untracked)


def _diff_sha256(root: Path, commit: str | None, untracked: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(run_git([*_DIFF_OPTIONS, commit or EMPTY_TREE], root, text=False).stdout)
    for path in untracked:
        digest.update(b"\0untracked\0" + os.fsencode(path) + b"\0")
        file = root / path
        try:
            if file.is_symlink():
                digest.update(os.fsencode(os.readlink(file)))
                continue
            with file.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:  # vanished or unreadable: still part of the state, by name
            digest.update(f"\0unreadable: {exc.strerror}\0".encode())
    return digest.hexdigest()
