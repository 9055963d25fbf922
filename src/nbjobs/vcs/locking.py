"""An exclusive lock on a file, safe to delete by its last holder.

`flock` locks an inode, not a path: if a holder unlinks the lock file, a waiter
may hold a lock on the deleted inode while a newcomer locks a new file at the
same path. So after locking we check that the path still names our inode, and
try again if not; then a holder may delete the file (`lock.remove = True`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class HeldLock:
    path: Path
    remove: bool = False  # delete the lock file on exit, while still holding it


@contextmanager
def locked(path: Path) -> Iterator[HeldLock]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # its last holder deleted it while we waited: lock the new file instead
    held = HeldLock(path)
    try:
        yield held
    finally:
        if held.remove:
            path.unlink(missing_ok=True)
        os.close(fd)
