"""cgroup v2: a memory-limited group per job, where this process may create one.

We look for the cgroup2 hierarchy this process lives in and a parent group
with the memory controller enabled for its children:

- our own group, when "memory" is already in its `cgroup.subtree_control`
  (the hierarchy's root, or a delegated group set up for us);
- else, when our group offers the controller and is writable, we enable it
  there. The kernel refuses that while processes live in the group itself
  ("no internal processes"), so we first move this process alone into a leaf
  `nbjobs-supervisor` beside the job groups; if the group still has other
  processes we move back and give up.

`NBJOBS_CGROUP=off` turns this off (jobs get the watchdog instead);
`NBJOBS_CGROUP=/sys/fs/cgroup/nbjobs` names the parent (created, and memory
enabled in it, when we may): the way out when our own group is shared with
other processes, as under a container runtime's or a batch system's shell.
Everything here fails soft: None means "no cgroup, use the watchdog".
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

SUPERVISOR = "nbjobs-supervisor"
CLEANUP_WAIT = 5.0


def cgroup2_mount() -> Path | None:
    """Where the cgroup2 hierarchy is mounted, if it is."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # mount-id parent major:minor root mount-point options ... - fstype source super-options
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5 and fields[3] == "/":
                return Path(fields[4])
    return None


def own_cgroup() -> Path | None:
    """The directory of this process's cgroup v2 group."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = mount / line[3:].lstrip("/")
            return path if path.is_dir() else None
    return None


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def _procs(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


_parent_cache: dict[str, Path | None] = {}


def memory_parent() -> Path | None:
    """A group under which we may create memory-limited job groups, or None (cached per process)."""
    setting = os.environ.get("NBJOBS_CGROUP", "auto").strip() or "auto"
    key = f"{os.getpid()}:{setting}"
    if key not in _parent_cache:
        _parent_cache[key] = _find_memory_parent(setting)
    return _parent_cache[key]


def _find_memory_parent(setting: str) -> Path | None:
    if setting.lower() in ("off", "no", "false", "0", "none"):
        return None
    if setting != "auto":
        # A parent named by an administrator: create it and enable memory in it when we may.
        group, mount = Path(setting), cgroup2_mount()
        if mount is None or mount not in group.parents:
            return None
        with contextlib.suppress(OSError):
            group.mkdir(exist_ok=True)
        if "memory" not in _words(group / "cgroup.subtree_control"):
            _write(group / "cgroup.subtree_control", "+memory")
        return group if "memory" in _words(group / "cgroup.subtree_control") else None
    group = own_cgroup()
    if group is None or "memory" not in _words(group / "cgroup.controllers") | _words(group / "cgroup.subtree_control"):
        return None
    if "memory" in _words(group / "cgroup.subtree_control"):
        return group if os.access(group, os.W_OK) else None
    if not os.access(group / "cgroup.subtree_control", os.W_OK):
        return None
    if _write(group / "cgroup.subtree_control", "+memory"):
        return group
    return _enable_by_moving_out(group)


def _enable_by_moving_out(group: Path) -> Path | None:
    """Move this process into a leaf so that `group` may enable memory for its children."""
    leaf = group / SUPERVISOR
    with contextlib.suppress(FileExistsError, OSError):
        leaf.mkdir()
    if not leaf.is_dir() or not _write(leaf / "cgroup.procs", str(os.getpid())):
        return None
    if _write(group / "cgroup.subtree_control", "+memory"):
        return group
    _write(group / "cgroup.procs", str(os.getpid()))  # others live here too: leave things as they were
    with contextlib.suppress(OSError):
        leaf.rmdir()
    return None


@dataclass
class JobCgroup:
    """One job's group: memory.max set, swap off, the whole group killed together on OOM."""

    path: Path
    limit: int

    @classmethod
    def create(cls, parent: Path, name: str, limit: int) -> JobCgroup | None:
        path = parent / name
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path, limit)
        if not _write(path / "memory.max", str(limit)):
            group.remove()
            return None
        # Best effort: without them the limit still holds, the job may swap or lose one process only.
        if (path / "memory.swap.max").exists():
            _write(path / "memory.swap.max", "0")
        if (path / "memory.oom.group").exists():
            _write(path / "memory.oom.group", "1")
        return group

    def contains(self, pid: int) -> bool:
        return pid in _procs(self.path)

    def events(self) -> dict[str, int]:
        """memory.events counters: oom (limit hit), oom_kill (processes killed for it), ..."""
        counters: dict[str, int] = {}
        try:
            text = (self.path / "memory.events").read_text()
        except OSError:
            return counters
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                counters[key] = int(value)
        return counters

    def oom_kills(self) -> int:
        return self.events().get("oom_kill", 0)

    def _read_int(self, name: str) -> int | None:
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def memory_current(self) -> int | None:
        return self._read_int("memory.current")

    def memory_peak(self) -> int | None:
        """Highest memory.current seen by the kernel (Linux >= 5.19)."""
        return self._read_int("memory.peak")

    def cpu_seconds(self) -> float | None:
        try:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def pids(self) -> list[int]:
        return _procs(self.path)

    def remove(self) -> None:
        """Kill what is left in the group, then remove it."""
        if not self.path.exists():
            return
        if not _write(self.path / "cgroup.kill", "1"):  # Linux < 5.14: one by one
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
        deadline = time.monotonic() + CLEANUP_WAIT
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:  # busy until the killed processes are gone
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
