"""A data directory belongs to one process: an exclusive lock on its ``LOCK`` file.

Two nodes on one database, or two control planes on one ``control.db``, would each take
the other's writes for their own; the second one to start refuses instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirInUse(OSError):
    """An OSError, so the CLI reports it in one line like a busy port."""


def lock(path: Path, role: str) -> int:
    """Take an exclusive lock on ``path`` for this process, or raise DataDirInUse naming
    the ``role`` ("mboard node", "mboard control plane") and pid that hold it.

    Returns the lock file descriptor; the lock lasts until it is closed or the process ends.
    """
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(
            f"data directory {path} is in use by another {role} (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
