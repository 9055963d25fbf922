"""Where attempts that run on other hosts keep their output notebook, log and artifacts.

`storage_url` (config `[backend]`) is a path every worker and the server see (a
shared filesystem, `file://` allowed), or any fsspec URL such as `s3://bucket/nbjobs`
(with the matching fsspec package installed, e.g. s3fs). Under it each attempt
has `jobs/ID/attempt-N/`, as under NBJOBS_HOME for local jobs.

On a path, the worker writes in place, so a crash leaves the partial notebook
where the record points. On a URL, the worker writes into its own scratch folder
and copies the folder up while the job runs and once more at the end; the
record then holds URLs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nbjobs.errors import InvalidInput


def is_url(location: str) -> bool:
    """True for `proto://...` other than file:// (which is a plain path)."""
    scheme = urlparse(location).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive, not a protocol


def _as_path(location: str) -> Path:
    return Path(urlparse(location).path if location.startswith("file://") else location).expanduser().resolve()


class Storage:
    """One storage root: a local/shared folder, or a remote fsspec location."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or "/"
        self.local_root: Path | None = None if is_url(url) else _as_path(url)
        self._fs: Any = None
        if self.local_root is None:
            self._fs = remote_filesystem(self.url)

    def attempt_location(self, job_id: int, attempt: int) -> str:
        """The attempt's folder: a path when local, else a URL."""
        if self.local_root is not None:
            return str(self.local_root / "jobs" / str(job_id) / f"attempt-{attempt}")
        return f"{self.url}/jobs/{job_id}/attempt-{attempt}"

    def upload(self, folder: Path, location: str, sent: dict[str, tuple[int, int]] | None = None) -> None:
        """Copy the files of `folder` to `location`; `sent` remembers what was copied, to skip it next time."""
        if self._fs is None:
            return
        sent = {} if sent is None else sent
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rel = file.relative_to(folder).as_posix()
            stat = file.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if sent.get(rel) == stamp:
                continue
            target = f"{location}/{rel}"
            with contextlib.suppress(Exception):  # object stores have no folders to make
                self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self._fs.put_file(str(file), target)
            sent[rel] = stamp


def remote_filesystem(url: str) -> Any:
    """The fsspec filesystem for `url`, or InvalidInput saying what to install or fix."""
    try:
        import fsspec
    except ImportError:
        raise InvalidInput(
            f"storage_url {url!r} is a URL: that needs fsspec (pip install 'nbjobs[dask]'), "
            "or give a path every worker shares."
        ) from None
    try:
        fs, _ = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise InvalidInput(f"storage_url {url!r} needs a package that is not installed: {exc}.") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"storage_url {url!r} is not a location fsspec knows: {exc}.") from None
    return fs


def read_text(location: str) -> str | None:
    """The text at a path or URL (a log, say); None when there is nothing there yet."""
    if not is_url(location):
        path = _as_path(location)
        return path.read_text(encoding="utf-8") if path.is_file() else None
    fs = remote_filesystem(location)
    try:
        with fs.open(location, "rt", encoding="utf-8") as handle:
            return str(handle.read())
    except FileNotFoundError:
        return None
