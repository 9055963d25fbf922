"""Repositories nbjobs reads commits from, and refs resolved to commits.

A local repository is used in place. A repository URL is fetched into a bare
cache under `$NBJOBS_HOME/repos/`, one per URL (credentials stripped before the
URL names anything), holding all its branches and tags; the cache is never
given the URL with credentials, so nothing on disk holds them.

A ref missing from a local repository is looked up on its remotes and fetched
(objects only: no branch or tag of the user's repository changes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nbjobs.errors import InvalidInput
from nbjobs.vcs.git import GitFailed, Remote, git_ok, git_out, is_url, require_git, run_git
from nbjobs.vcs.locking import locked
from nbjobs.vcs.state import find_root

_HEX = re.compile(r"^[0-9a-fA-F]{7,64}$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
REMOTE_HEAD = "refs/nbjobs/remote-head"  # the remote's default branch, in a URL's cache


@dataclass(frozen=True)
class Repository:
    """Where commits come from: a local repository, or the cache of a repository URL."""

    location: str  # what is recorded: the local root folder, or the URL without credentials
    workdir: Path  # where git commands run
    remote: Remote | None = None  # for a URL: how to fetch it (may carry credentials)

    @property
    def is_remote(self) -> bool:
        return self.remote is not None


@dataclass(frozen=True)
class Commit:
    sha: str
    ref: str  # as asked for
    branch: str | None  # the branch `ref` names, if it names one


def open_repository(repo: str, home: Path) -> Repository:
    """The repository named by `--repo`: a folder (a work tree or a bare repository) or a URL."""
    require_git()
    if is_url(repo):
        remote = Remote(repo)
        key = hashlib.sha256(remote.shown.encode()).hexdigest()[:20]
        cache = home / "repos" / f"{key}.git"
        if not (cache / "HEAD").exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            with locked(cache.with_suffix(".lock")):
                if not (cache / "HEAD").exists():
                    run_git(["init", "--quiet", "--bare", str(cache)], cache.parent)
        return Repository(location=remote.shown, workdir=cache, remote=remote)
    folder = Path(repo).expanduser().resolve()
    if not folder.is_dir():
        raise InvalidInput(
            f"Repository {repo!r} (`repo`) is not a folder; give a local git repository or a URL "
            "(https://, ssh://, git@host:path, file://)."
        )
    root = find_root(folder)
    if root is None and git_ok(["rev-parse", "--is-bare-repository"], folder) == "true":
        root = Path(git_out(["rev-parse", "--absolute-git-dir"], folder)).resolve()
    if root is None:
        raise InvalidInput(f"{str(folder)!r} (`repo`) is not a git repository (`git init` makes one).")
    return Repository(location=str(root), workdir=root)


def repository_containing(notebook: Path) -> Repository:
    """The local repository whose work tree holds `notebook` (for `git_ref` without `repo`)."""
    require_git()
    root = find_root(notebook)
    if root is None:
        raise InvalidInput(
            f"`git_ref` needs a git repository, but {str(notebook)!r} is not inside one; "
            "run from a repository, or name one with --repo PATH_OR_URL."
        )
    return Repository(location=str(root), workdir=root)


def notebook_in_repository(notebook: str, repository: Repository) -> str:
    """`notebook` as a path relative to the repository root (how a commit names it)."""
    path = Path(notebook).expanduser()
    if path.is_absolute():
        if repository.is_remote:
            raise InvalidInput(
                f"Notebook {notebook!r} is an absolute path, but the repository is a URL; "
                "give the notebook's path inside the repository, e.g. notebooks/report.ipynb."
            )
        try:
            path = path.resolve().relative_to(repository.workdir)
        except ValueError:
            raise InvalidInput(
                f"Notebook {notebook!r} is not inside repository {repository.location!r}; "
                "give its path relative to the repository root."
            ) from None
    relative = PurePosixPath(path.as_posix())
    if ".." in relative.parts or not relative.parts or relative.as_posix() == ".":
        raise InvalidInput(
            f"Notebook {notebook!r} must be a path inside the repository, relative to its root "
            "(no `..`), e.g. notebooks/report.ipynb."
        )
    return relative.as_posix()


def resolve(repository: Repository, ref: str) -> Commit:
    """The commit `ref` names, fetching it when this repository does not have it yet."""
    if repository.is_remote:
        if _FULL_SHA.match(ref) and (sha := _rev_parse(repository, ref)):
            return Commit(sha, ref, None)  # a commit is immutable: no need to reach the remote
        _fetch_all(repository)
        asked = REMOTE_HEAD + ref[4:] if ref == "HEAD" or ref.startswith(("HEAD~", "HEAD^")) else ref
        sha = _rev_parse(repository, asked)
        if sha is None and _HEX.match(ref):
            _fetch_quietly(repository, repository.remote.shown, ref, repository.remote)  # type: ignore[union-attr]
            sha = _rev_parse(repository, ref)
        if sha is None:
            raise _unknown_ref(repository, ref, f"{repository.location} has no such branch, tag or commit")
        return Commit(sha, ref, branch_named(repository, ref))
    sha = _rev_parse(repository, ref)
    if sha is None:
        sha = _fetch_from_remotes(repository, ref)
    return Commit(sha, ref, branch_named(repository, ref))


def _rev_parse(repository: Repository, ref: str) -> str | None:
    return git_ok(["rev-parse", "--verify", "-q", "--end-of-options", f"{ref}^{{commit}}"], repository.workdir)


def branch_named(repository: Repository, ref: str) -> str | None:
    full = git_ok(["rev-parse", "--symbolic-full-name", "--end-of-options", ref], repository.workdir) or ""
    return full.removeprefix("refs/heads/") if full.startswith("refs/heads/") else None


def _fetch_all(repository: Repository) -> None:
    """Bring the cache of a URL up to date: every branch and tag, and the remote's HEAD."""
    remote = repository.remote
    assert remote is not None
    fetch = ["fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", "--end-of-options", remote.shown]
    refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", f"+HEAD:{REMOTE_HEAD}"]
    with locked(repository.workdir.with_suffix(".lock")):
        try:
            run_git([*fetch, *refspecs], repository.workdir, remote=remote)
        except GitFailed as exc:
            raise InvalidInput(
                f"Could not fetch repository {remote.shown!r}: {_one_line(str(exc))}. "
                "Check the URL, your network and your access (credentials may be given in the URL; "
                "they are used, never stored or shown)."
            ) from None


def _fetch_quietly(repository: Repository, target: str, what: str, remote: Remote | None = None) -> bool:
    """Fetch `what` (a ref or commit) from `target` (a remote's name or URL); False on failure."""
    try:
        run_git(
            ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options", target, what],
            repository.workdir,
            remote=remote,
        )
    except GitFailed:
        return False
    return True


def _fetch_from_remotes(repository: Repository, ref: str) -> str:
    """A ref only a remote has: find it there and fetch its objects; InvalidInput if none can."""
    remotes = sorted((git_ok(["remote"], repository.workdir) or "").split(), key=lambda name: name != "origin")
    failures = []
    for name in remotes:
        # The configured URL may hold credentials: git uses them; we only show the stripped URL.
        configured = Remote(git_ok(["remote", "get-url", "--", name], repository.workdir) or name)
        label = f"remote {name} ({configured.shown})"
        try:
            listing = git_out(
                ["ls-remote", "--end-of-options", name, ref], repository.workdir, secrets=configured.secrets
            )
        except GitFailed as exc:
            failures.append(f"{label} could not be reached: {_one_line(str(exc))}")
            continue
        listed = {}  # ref name -> object it points to
        for line in listing.splitlines():
            sha, _, refname = line.partition("\t")
            if refname:
                listed[refname] = sha
        if listed:
            # `ls-remote` matches ref names by their tail: prefer the branch, then the tag, as git would.
            full = next((n for n in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}") if n in listed), next(iter(listed)))
            if _fetch_quietly(repository, name, full) and (sha := _rev_parse(repository, listed[full])):
                return sha
            failures.append(f"{label} lists {ref!r} but fetching it failed")
        elif _HEX.match(ref) and _fetch_quietly(repository, name, ref) and (sha := _rev_parse(repository, ref)):
            return sha
        else:
            failures.append(f"{label} has no ref {ref!r}")
    where = "; ".join(failures) if failures else "it is not here and the repository has no remotes to fetch it from"
    raise _unknown_ref(repository, ref, where)


def _unknown_ref(repository: Repository, ref: str, why: str) -> InvalidInput:
    branches = (git_ok(["for-each-ref", "--format=%(refname:short)", "refs/heads"], repository.workdir) or "").split()
    tags = (git_ok(["for-each-ref", "--format=%(refname:short)", "--sort=-creatordate", "refs/tags"],
                   repository.workdir) or "").split()  # fmt: skip
    known = []
    if branches:
        known.append("branches: " + ", ".join(branches[:10]) + (", ..." if len(branches) > 10 else ""))
    if tags:
        known.append("tags: " + ", ".join(tags[:10]) + (", ..." if len(tags) > 10 else ""))
    listing = f" Known {'; '.join(known)}." if known else ""
    return InvalidInput(
        f"Unknown git ref {ref!r} in repository {repository.location!r}: {why}. "
        f"Give a branch, a tag or a commit SHA.{listing}"
    )


def read_blob(repository: Repository, commit: Commit, path: str) -> bytes:
    """The bytes of file `path` at `commit`; InvalidInput naming the notebooks there if absent."""
    done = run_git(["cat-file", "blob", f"{commit.sha}:{path}"], repository.workdir, check=False, text=False)
    if done.returncode == 0:
        return done.stdout
    raise missing_at_commit(repository, commit, path)


def missing_at_commit(repository: Repository, commit: Commit, path: str) -> InvalidInput:
    listing = git_ok(["ls-tree", "-r", "--name-only", "--end-of-options", commit.sha], repository.workdir) or ""
    notebooks = [p for p in listing.splitlines() if p.endswith(".ipynb")]
    there = ", ".join(notebooks[:10]) + (", ..." if len(notebooks) > 10 else "") if notebooks else "none"
    at = commit.ref if commit.ref == commit.sha else f"{commit.ref} ({commit.sha[:12]})"
    return InvalidInput(
        f"Notebook {path!r} is not in repository {repository.location!r} at {at}; paths are relative "
        f"to the repository root. Notebooks at that commit: {there}."
    )


def commits_between(workdir: Path, old: str, new: str) -> list[str] | None:
    """`git log --oneline old..new`; None when either commit is not in this repository."""
    out = git_ok(["log", "--oneline", "--no-decorate", "--no-color", f"{old}..{new}", "--"], workdir)
    return None if out is None else [line for line in out.splitlines() if line]


def workdir_of(location: str, home: Path) -> Path | None:
    """Where git can run for a recorded `repo`: the folder itself, or the cache of a URL."""
    if is_url(location):
        cache = home / "repos" / f"{hashlib.sha256(location.encode()).hexdigest()[:20]}.git"
        return cache if cache.is_dir() else None
    folder = Path(location)
    return folder if folder.is_dir() else None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if line.lower().startswith(("fatal:", "error:"))] or lines
    return (useful[-1] if useful else text).removeprefix("fatal: ").removeprefix("error: ").rstrip(".")
