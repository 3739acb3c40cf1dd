"""Named users of the app and their passwords, for a server several people log in to.

Kept in `users.json` under the data directory, readable by this app's user alone (0600);
passwords are stored only as Argon2id hashes (argon2-cffi), never as themselves. Managed with
`python -m mssl_core users add|list|remove`. With no users, the app has no per-user log-in
(open on 127.0.0.1, or one shared password: MSSL_PASSWORD).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mssl_core.project.store import data_dir

MIN_PASSWORD = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,59}")
_hasher = PasswordHasher()


@functools.cache
def _unknown_user_hash() -> str:
    """Checked when the user name is unknown, so that a wrong name takes as long as a wrong
    password; made on first use, not when the app starts (a hash takes a noticeable moment)."""
    return _hasher.hash("no such user")


def users_file() -> Path:
    return data_dir() / "users.json"


def list_users() -> list[str]:
    """The user names, sorted; empty when the app has no per-user log-in."""
    return sorted(_read())


def add_user(name: str, password: str) -> bool:
    """Add a user, or give an existing one a new password; True if the user is new. Refuses a
    name outside letters, digits and `. _ @ -` (at most 60) and a password under MIN_PASSWORD."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"user name {name!r}: use 1 to 60 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit"
        )
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password needs at least {MIN_PASSWORD} characters")
    users = _read()
    new = name not in users
    users[name] = _hasher.hash(password)
    _write(users)
    return new


def remove_user(name: str) -> None:
    """Remove a user (their decisions stay in the audit trail under their name)."""
    users = _read()
    if name not in users:
        raise KeyError(f"no user named {name!r}")
    del users[name]
    _write(users)


def password_is_right(name: str, password: str) -> bool:
    """Whether `password` is `name`'s. An unknown name costs the same time as a known one."""
    stored = _read().get(name)
    try:
        return _hasher.verify(stored or _unknown_user_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _read() -> dict[str, str]:
    try:
        return json.loads(users_file().read_text())["users"]
    except FileNotFoundError:
        return {}


def _write(users: dict[str, str]) -> None:
    """Replace the file atomically; created 0600 whatever the umask (it holds password hashes)."""
    target = users_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".json.part")
    partial.unlink(missing_ok=True)  # one left by a crash may have other permissions
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"users": users}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(target)
