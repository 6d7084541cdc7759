"""The host's only ways into a folder a sandbox wrote: never through a link, never recursive.

A sandbox's output folder and its workspace hold whatever the submission left there:
symlinks to ``/root`` or to another team's files, trees thousands of levels deep, millions
of entries, folders with mode 000. Every walk, chmod, read and delete of such a folder
goes through this module:

- ``walk`` lists a tree with ``lstat``, iteratively (no recursion limit), never entering a
  link, and stops with ``TreeTooLarge`` past a cap on entries or depth;
- ``open_under`` / ``read_under`` open a file below a root one component at a time with
  ``O_NOFOLLOW`` (a link anywhere on the way fails), and only a regular file;
- ``plain_file`` checks the same for a path handed on to a reader that takes paths;
- ``remove_tree`` deletes a tree through directory file descriptors, moving each sub-folder
  up to the top before emptying it, so depth never grows and no link is followed;
  ``discard`` does so where a failure must not stop the caller (a workspace, a spool).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .runner.emptying import DIR_FLAGS, remove_tree

__all__ = [
    "NotPlain",
    "TreeTooLarge",
    "discard",
    "open_under",
    "plain_file",
    "read_under",
    "remove_tree",
    "walk",
]

MAX_ENTRIES = 100_000
MAX_DEPTH = 64
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TreeTooLarge(Exception):
    """A walk passed its cap on entries or on depth."""


class NotPlain(OSError):
    """A path that is a link, or passes through one, or is not a regular file."""


def walk(
    root: Path, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH
) -> Iterator[tuple[Path, os.stat_result, int]]:
    """Every entry below ``root`` as (path, lstat, depth), parents first; links are listed,
    never entered. Raises TreeTooLarge past ``max_entries`` entries or ``max_depth`` levels."""
    stack: list[tuple[Path, int]] = [(root, 1)]
    seen = 0
    while stack:
        folder, depth = stack.pop()
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            seen += 1
            if seen > max_entries:
                raise TreeTooLarge(f"more than {max_entries:,} files and folders")
            path = folder / name
            try:
                info = os.lstat(path)
            except OSError:
                continue
            yield path, info, depth
            if stat.S_ISDIR(info.st_mode):
                if depth >= max_depth:
                    raise TreeTooLarge(f"folders nested more than {max_depth} levels deep")
                stack.append((path, depth + 1))


def open_under(root: Path, rel: str) -> BinaryIO:
    """Open ``root/rel`` for reading, refusing a link on any component below ``root`` and
    anything but a regular file (a FIFO or a device never blocks the host)."""
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise NotPlain(f"{rel!r} is not a path below the folder")
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise NotPlain(f"{rel}: {part} is not a plain folder ({exc.strerror})") from None
            os.close(fd)
            fd = nxt
        try:
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise NotPlain(f"{rel} is not a plain file ({exc.strerror})") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise NotPlain(f"{rel} is not a regular file")
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb")


def read_under(root: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of ``root/rel`` (see ``open_under``); NotPlain when over ``max_bytes``."""
    with open_under(root, rel) as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:
            raise NotPlain(f"{rel} is larger than {max_bytes:,} bytes")
        return fh.read(max_bytes + 1)[:max_bytes]


def plain_file(root: Path, path: Path) -> Path:
    """``path`` when it is a regular file below ``root`` reached through no link; else
    NotPlain. For readers that take a path, once the sandbox that wrote it has ended."""
    rel = path.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except OSError as exc:
            raise NotPlain(f"{rel}: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            raise NotPlain(f"{rel} is or passes through a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise NotPlain(f"{rel} is not a regular file")
    return path


def discard(path: Path) -> None:
    """``remove_tree``, quietly: what cannot be removed is left. Read-only folders (a
    job's 0555 ``inputs``) are removed as well, whoever runs the host: ``shutil.rmtree``
    empties them only for root."""
    with contextlib.suppress(OSError):
        remove_tree(path)
