"""Telling a database file that can no longer be written from a bug, for every SQLite user
in mboard: a node's board and the control plane's state."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

# SQLite's words for "this database file cannot be written": a full disk (or a file size
# limit), an I/O error, a read-only or damaged file.
_STORAGE_ERRORS = (
    "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB",
    "SQLITE_CANTOPEN",
)  # fmt: skip


class StorageFailed(OSError):
    """SQLite cannot write a database file (full disk, I/O error, ...): nothing was stored."""


def storage_error(exc: BaseException) -> sqlite3.Error | None:
    """The SQLite error in ``exc``, or in what led to it, that says the database file cannot
    be written; None if there is none (a bug is not a broken disk)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # peewee re-raises SQLite's errors as its own, with the original as the first arg.
        for candidate in (current, *current.args[:1]):
            name = getattr(candidate, "sqlite_errorname", None) or ""
            if isinstance(candidate, sqlite3.Error) and name.startswith(_STORAGE_ERRORS):
                return candidate
        current = current.__cause__ or current.__context__
    return None


def storage_failure(exc: BaseException, path: str | Path) -> StorageFailed | None:
    """A StorageFailed naming ``path`` and SQLite's reason, if ``exc`` says the file cannot be
    written; None otherwise."""
    cause = storage_error(exc)
    if cause is None:
        return None
    return StorageFailed(f"cannot write {path}: {cause} ({cause.sqlite_errorname})")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Raise StorageFailed naming ``path`` where SQLite says the file cannot be written (a
    full disk at start-up is then one line, not a traceback); other errors pass as they are."""
    try:
        yield
    except Exception as exc:
        failure = storage_failure(exc, path)
        if failure is None:
            raise
        raise failure from exc
