"""Users' secrets, encrypted at rest, handed to the kernels of their jobs.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`)
under a key kept in $NBJOBS_HOME/secret.key (mode 0600, made at first use). The
store alone (a copied database, a backup) does not reveal them; whoever can
read the key file and the store can. No API answer ever contains a value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select

from nbjobs.errors import InvalidInput, NotFound
from nbjobs.spec import JobSpec
from nbjobs.store import Store
from nbjobs.store.models import Job
from nbjobs.store.people_models import Secret, User
from nbjobs.store.repository import utcnow

KEY_FILE = "secret.key"
MAX_VALUE_BYTES = 64 * 1024


def load_key(home: Path) -> bytes:
    path = home / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


class Vault:
    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self._fernet = Fernet(load_key(home))

    def _user_id(self, s: Any, user_name: str) -> int:
        user_id = s.scalar(select(User.id).where(User.name == user_name))
        if user_id is None:
            raise NotFound(f"No user named {user_name!r}.")
        return int(user_id)

    def put(self, user_name: str, name: str, value: str) -> bool:
        """Set a secret; True if it is new, False if it replaced an older value."""
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidInput(f"Secret `value` is larger than {MAX_VALUE_BYTES // 1024} KiB.")
        if not value:
            raise InvalidInput("Secret `value` is empty.")
        token = self._fernet.encrypt(value.encode())
        now = utcnow()
        with self.store.session() as s, s.begin():
            user_id = self._user_id(s, user_name)
            row = s.scalar(select(Secret).where(Secret.user_id == user_id, Secret.name == name))
            if row is not None:
                row.value, row.updated = token, now
                return False
            s.add(Secret(user_id=user_id, name=name, value=token, created=now, updated=now))
        return True

    def names(self, user_name: str) -> list[dict[str, Any]]:
        """Names and dates only: values never leave the server except into the owner's kernels."""
        with self.store.session() as s:
            user_id = self._user_id(s, user_name)
            rows = s.execute(
                select(Secret.name, Secret.created, Secret.updated)
                .where(Secret.user_id == user_id)
                .order_by(Secret.name)
            ).all()
        return [{"name": n, "created": c, "updated": u} for n, c, u in rows]

    def remove(self, user_name: str, name: str) -> None:
        with self.store.session() as s, s.begin():
            user_id = self._user_id(s, user_name)
            if s.execute(delete(Secret).where(Secret.user_id == user_id, Secret.name == name)).rowcount == 0:
                raise NotFound(f"You have no secret named {name!r}; `nbjobs secret ls` lists yours.")

    def check_names(self, user_name: str, names: list[str]) -> None:
        """At submit: every secret a spec names exists for its owner."""
        if not names:
            return
        have = {s["name"] for s in self.names(user_name)}
        missing = [n for n in names if n not in have]
        if missing:
            raise InvalidInput(
                f"`secrets` names {', '.join(repr(n) for n in missing)}, which you have not set; "
                f"set with `nbjobs secret set NAME`. Yours: {', '.join(sorted(have)) or 'none'}."
            )

    def values(self, user_name: str, names: list[str]) -> dict[str, str]:
        """Decrypted values of `names` for `user_name`; InvalidInput when one is gone."""
        if not names:
            return {}
        with self.store.session() as s:
            user_id = self._user_id(s, user_name)
            rows = dict(
                s.execute(
                    select(Secret.name, Secret.value).where(Secret.user_id == user_id, Secret.name.in_(names))
                ).all()
            )
        missing = [n for n in names if n not in rows]
        if missing:
            raise InvalidInput(f"secret(s) {', '.join(missing)} of {user_name!r} no longer exist")
        try:
            return {n: self._fernet.decrypt(rows[n]).decode() for n in names}
        except InvalidToken:
            raise InvalidInput(
                f"a secret of {user_name!r} cannot be decrypted: {KEY_FILE} in NBJOBS_HOME has changed"
            ) from None

    def for_job(self, job_id: int, spec: JobSpec) -> dict[str, str]:
        """The secrets a job's kernel gets (the backend's hook): those its spec names, of its owner."""
        if not spec.secrets:
            return {}
        with self.store.session() as s:
            owner = s.scalar(select(Job.owner).where(Job.id == job_id))
        if owner is None:
            raise InvalidInput(f"job {job_id} is gone")
        return self.values(owner, list(spec.secrets))


def check_secret_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
        raise InvalidInput(
            f"Secret name {name!r} (`name`) is not valid: it becomes an environment variable, so use letters, "
            "digits and '_', not starting with a digit (at most 128)."
        )
    return name
