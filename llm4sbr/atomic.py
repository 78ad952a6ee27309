"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

A writer killed mid-write (SIGKILL, power loss) cannot remove its temporary file; the first
atomic write of a process into a folder removes such leftovers. A writer holds an exclusive
``flock`` on its temporary file for as long as it writes, so a leftover is a temporary file
nobody holds a lock on (the lock dies with its process).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no sweeping of leftovers
    fcntl = None

TMP_SUFFIX = ".atomic.tmp"
_swept: set[Path] = set()


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when someone holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def sweep_leftovers(folder: Path) -> int:
    """Remove the temporary files of atomic writes into ``folder`` whose writer died (their
    lock is free); returns how many. Done once per folder and process by :func:`atomic_writer`."""
    removed = 0
    if fcntl is None:
        return removed
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd):
                tmp.unlink(missing_ok=True)  # under the lock: its writer, if any, sees nlink 0
                removed += 1
        finally:
            os.close(fd)
    return removed


def _open_locked(path: Path, created: list[Path]) -> BinaryIO:
    """A new temporary file next to ``path``, locked; retried if a sweep removed it between its
    creation and the lock. Each name goes into ``created`` before its file exists, so the
    caller's cleanup finds it whenever an interrupt (Ctrl-C) lands."""
    while True:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        created.append(tmp)
        try:
            f = open(tmp, "xb")
        except FileExistsError:  # another writer's name: not ours to remove
            created.pop()
            continue
        if _lock(f.fileno()) and os.fstat(f.fileno()).st_nlink > 0:
            return f
        f.close()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block exits without an error.

    The data goes to a temporary file in the same folder, is fsynced, then renamed over ``path``
    (``os.replace`` is atomic on POSIX and Windows within one file system).
    """
    path = Path(path)
    folder = path.parent.resolve()
    if folder not in _swept:
        _swept.add(folder)
        sweep_leftovers(folder)
    created: list[Path] = []
    try:
        f = _open_locked(path, created)
        tmp = created[-1]
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # still locked: a concurrent sweep cannot take it
        finally:
            f.close()
        if fcntl is None:
            os.replace(tmp, path)  # Windows renames closed files only
    finally:
        for name in created:
            name.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
