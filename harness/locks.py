"""The one file lock of the harness: an exclusive ``flock`` on a lock file.

The kernel holds the lock for the open file, so it is exclusive between processes and
between threads (each ``acquire`` opens the file anew), and it is dropped when the holder
closes it or dies, even by SIGKILL: a crashed grader never leaves a stale lock behind, and
nothing has to guess whether a lock file's owner is still alive. Keep lock files on a
local disk; ``flock`` on a network file system may not lock at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Lock:
    """A held lock, released by ``release`` (or leaving the ``with`` block)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: Path, *, wait: bool = True) -> Lock | None:
    """Lock ``path`` (created, with its folder, when missing): waiting for the holder when
    ``wait``, else None at once while another process or thread holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return Lock(fd)


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """``with held(path):`` the block runs holding the lock on ``path`` (waiting for it)."""
    lock = acquire(path)
    assert lock is not None
    with lock:
        yield
