"""Running the `git` command line, and keeping credentials out of what it stores and says.

Every git call goes through `run_git`: no prompts (a job must never hang on a
password question), C locale (messages we parse), no optional index writes
(describing a repository must not race the user's own git commands).

A repository URL may carry credentials (`https://user:token@host/repo.git`).
They are used for that one git process, handed over by an inline credential
helper reading environment variables, so they appear neither in its argument
list (visible to other users in `ps`) nor in any config or record; what git
prints is redacted before anyone sees it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from nbjobs.errors import InvalidInput, NbjobsError

GIT_TIMEOUT = 600.0  # a fetch of a large repository is slow, but never endless
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# scp-like syntax: [user@]host:path, with no slash before the colon (git's own rule).
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]{2,}:(?!//)")
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}
# Shell snippet git runs as a credential helper: answers `get` from our environment only.
_HELPER = (
    '!f() { test "$1" = get && '
    'printf "username=%s\\npassword=%s\\n" "$NBJOBS_GIT_USERNAME" "$NBJOBS_GIT_PASSWORD"; }; f'
)


class GitFailed(NbjobsError):
    """A git command failed; the message is git's own, redacted."""


class GitMissing(GitFailed):
    """The `git` executable is not installed."""


def is_url(repo: str) -> bool:
    """True for anything git would fetch over a transport rather than open as a folder."""
    return bool(_URL_SCHEME.match(repo) or (_SCP_LIKE.match(repo) and not Path(repo).exists()))


def strip_credentials(url: str) -> str:
    """`url` without a password, and without the user name too for web URLs (often a token)."""
    if not _URL_SCHEME.match(url):
        return url  # a path, or scp-like `git@host:path` (no password possible there)
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if parts.scheme.lower() in _SSH_SCHEMES and user else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Remote:
    """A URL to fetch from: what git is given, what it needs privately, what may be shown."""

    url: str  # as given; may carry credentials: never store or print it
    shown: str = field(init=False)  # without credentials

    def __post_init__(self) -> None:
        object.__setattr__(self, "shown", strip_credentials(self.url))

    @property
    def secrets(self) -> list[str]:
        """Strings to redact from git's messages."""
        if self.shown == self.url:
            return []
        userinfo = urlsplit(self.url).netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        found = [self.url, password, unquote(password)]
        if not password and len(user) >= 8:  # a token given as the user name
            found += [user, unquote(user)]
        return [s for s in found if s]

    def git_options(self) -> tuple[list[str], dict[str, str]]:
        """`-c` options and environment that hand this URL's credentials to git, if any."""
        if self.shown == self.url or urlsplit(self.url).scheme.lower() in _SSH_SCHEMES:
            return [], {}  # ssh does not take passwords from URLs: nothing to hand over
        userinfo = urlsplit(self.url).netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        # The empty helper first clears the user's helpers, so none of them stores these credentials.
        options = ["-c", "credential.helper=", "-c", f"credential.helper={_HELPER}"]
        return options, {"NBJOBS_GIT_USERNAME": unquote(user), "NBJOBS_GIT_PASSWORD": unquote(password)}


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    env.pop("GIT_DIR", None)  # an inherited GIT_DIR would point every command at another repository
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    return {**env, **(extra or {})}


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    remote: Remote | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    text: bool = True,
    secrets: Sequence[str] = (),
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Run `git ARGS` in `cwd`; GitFailed (redacted stderr) when it exits non-zero and `check`.

    `remote` hands its credentials to git; its secrets and `secrets` are redacted from errors.
    """
    options, secret_env = remote.git_options() if remote else ([], {})
    secrets = [*secrets, *(remote.secrets if remote else [])]
    command = ["git", "-c", "protocol.ext.allow=never", *options, *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=git_env({**(env or {}), **secret_env}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=text,
            timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise GitMissing("git is not installed (no `git` executable on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} took longer than {GIT_TIMEOUT:g} s") from None
    if check and done.returncode != 0:
        stderr = done.stderr if text else done.stderr.decode("utf-8", "replace")
        message = redact(stderr.strip(), secrets) or f"exit code {done.returncode}"
        raise GitFailed(message)
    return done


def git_out(args: Sequence[str], cwd: Path, **kw: object) -> str:
    """Stdout of a git command, stripped."""
    return run_git(args, cwd, **kw).stdout.strip()  # type: ignore[arg-type]


def git_ok(args: Sequence[str], cwd: Path) -> str | None:
    """Stdout of a git command, or None when it fails (used for questions: is this a branch?)."""
    try:
        done = run_git(args, cwd, check=False)
    except GitMissing:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def require_git() -> None:
    """InvalidInput when git is missing: asked only where the user asked for git."""
    try:
        run_git(["--version"], Path("/"))
    except GitMissing as exc:
        raise InvalidInput(f"{exc}; install git to run notebooks at a git ref (--git-ref, --repo).") from None
