"""Immutable snapshots of commits, shared by the jobs that run them and removed after.

Layout under `$NBJOBS_HOME/snapshots/`:

    <sha>/            the commit's files (read-only; no .git), one folder per commit
    <sha>.leases/     one JSON file per holder: {pid, started, host, holder, created}
    <sha>.lock        serialises building, leasing and removing that snapshot

A snapshot is reference-counted by its lease files. Taking one adds a lease
(building the folder first if it is missing); releasing removes the lease, and
the last release removes the folder. A lease whose process has died on this host
(pid and start time, so a reused pid does not count) is stale: any release and
`nbjobs gc` drop such leases, so a crashed run leaves nothing behind for long.

A foreground job takes its lease in `prepare` and releases it when it ends. A
pipeline takes one snapshot for its run and hands it to each task (`share`
gives each its own lease), then releases its own.

The files come from `git read-tree` into a private index and `git checkout-index`
into the folder: the same bytes a checkout gives (attributes and filters
applied), with nothing written to the source repository. Submodules are not
checked out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from nbjobs.errors import InvalidInput
from nbjobs.vcs.git import GitFailed, run_git
from nbjobs.vcs.locking import locked
from nbjobs.vcs.refs import Repository

BUILD_PREFIX = ".build-"
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names


@dataclass(frozen=True)
class Snapshot:
    """The files of `commit` at `path`, held by this object's lease until `release()`."""

    path: Path
    commit: str
    lease: Path

    def release(self) -> bool:
        """Drop this lease; True if that was the last one and the snapshot was removed."""
        return SnapshotStore(self.path.parent).release(self)


@dataclass(frozen=True)
class Lease:
    file: Path
    pid: int | None
    started: float | None
    host: str
    holder: str

    @property
    def is_stale(self) -> bool:
        """Its process is gone (known only for processes of this host)."""
        if self.pid is None or self.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - (self.started or 0.0)) > 0.01
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False


class SnapshotStore:
    """The snapshots under `root` (normally `$NBJOBS_HOME/snapshots`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, commit: str) -> Path:
        return self.root / commit

    def _leases(self, commit: str) -> Path:
        return self.root / f"{commit}.leases"

    def _lock(self, commit: str) -> Path:
        return self.root / f"{commit}.lock"

    def acquire(self, repository: Repository, commit: str, holder: str = "") -> Snapshot:
        """A lease on the snapshot of `commit` (a full SHA), built from `repository` if needed."""
        with locked(self._lock(commit)):
            target = self.folder(commit)
            if not target.is_dir():
                self._build(repository, commit, target)
            return Snapshot(target, commit, self._add_lease(commit, holder))

    def share(self, snapshot: Snapshot, holder: str = "") -> Snapshot:
        """Another lease on a snapshot someone holds (e.g. a pipeline handing it to a task)."""
        with locked(self._lock(snapshot.commit)):
            if not snapshot.path.is_dir() or not snapshot.lease.exists():
                raise InvalidInput(f"Snapshot {str(snapshot.path)!r} was released; take a new one.")
            return Snapshot(snapshot.path, snapshot.commit, self._add_lease(snapshot.commit, holder))

    def release(self, snapshot: Snapshot) -> bool:
        with locked(self._lock(snapshot.commit)) as lock:
            snapshot.lease.unlink(missing_ok=True)
            if self.live_leases(snapshot.commit):
                return False
            self._remove(snapshot.commit)
            lock.remove = True
            return True

    def live_leases(self, commit: str) -> list[Lease]:
        """The leases on `commit` whose holders may still be alive; stale ones are deleted. Hold its lock."""
        live = []
        folder = self._leases(commit)
        for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            lease = _read_lease(file)
            if lease is None or lease.is_stale:
                file.unlink(missing_ok=True)
            else:
                live.append(lease)
        return live

    def commits(self) -> list[str]:
        """Commits with a snapshot, leases or an unfinished build here."""
        found = set()
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            name = entry.name
            if name.startswith(BUILD_PREFIX):
                name = name[len(BUILD_PREFIX) :].split("-", 1)[0]
            found.add(name.split(".", 1)[0])
        return sorted(c for c in found if _COMMIT.match(c))

    def gc(self) -> list[str]:
        """Remove snapshots nobody holds (after dropping stale leases); the commits removed."""
        removed = []
        for commit in self.commits():
            with locked(self._lock(commit)) as lock:
                for build in self.root.glob(f"{BUILD_PREFIX}{commit}-*"):
                    remove_tree(build)  # an unfinished build: its builder held this lock and is gone
                if self.live_leases(commit):
                    continue
                if self.folder(commit).exists() or self._leases(commit).exists():
                    removed.append(commit)
                self._remove(commit)
                lock.remove = True
        return removed

    def _add_lease(self, commit: str, holder: str) -> Path:
        folder = self._leases(commit)
        folder.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        lease = {
            "pid": pid,
            "started": psutil.Process(pid).create_time(),
            "host": socket.gethostname(),
            "holder": holder,
            "created": datetime.now(UTC).isoformat(),
        }
        file = folder / f"{uuid.uuid4().hex}.json"
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(lease), encoding="utf-8")
        os.replace(tmp, file)  # a lease is whole or absent: a half-written one would read as stale
        return file

    def _build(self, repository: Repository, commit: str, target: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{commit}-", dir=self.root))
        try:
            tree = build / "tree"
            tree.mkdir()
            private_index = {"GIT_INDEX_FILE": str(build / "index")}
            run_git(["read-tree", commit], repository.workdir, env=private_index)
            run_git(
                ["--work-tree", str(tree), "checkout-index", "--all", "--force"],
                repository.workdir,
                env=private_index,
            )
            os.rename(tree, target)
            make_read_only(target)
        except GitFailed as exc:
            remove_tree(target)
            raise InvalidInput(
                f"Could not write the files of commit {commit[:12]} from {repository.location!r}: {exc}"
            ) from None
        finally:
            remove_tree(build)

    def _remove(self, commit: str) -> None:
        remove_tree(self.folder(commit))
        shutil.rmtree(self._leases(commit), ignore_errors=True)


def _read_lease(file: Path) -> Lease | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return Lease(file, data.get("pid"), data.get("started"), str(data.get("host", "")), str(data.get("holder", "")))
    except (OSError, ValueError, AttributeError):
        return None


def make_read_only(tree: Path) -> None:
    """Take write permission off every file and folder: jobs must not change a shared snapshot."""
    for folder, _dirs, files in os.walk(tree, topdown=False):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)
        Path(folder).chmod(0o555)


def remove_tree(path: Path) -> None:
    """Delete a (possibly read-only) tree; missing is fine."""
    if not path.exists() and not path.is_symlink():
        return
    for folder, _dirs, _files in os.walk(path):
        Path(folder).chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)
