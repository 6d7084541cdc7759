"""Emptying a folder someone else filled, for the host (``safefs``) and for the zygote
inside a sandbox (``runner/zygote.py``): standard library only.

A sandbox's folders hold whatever a submission left there: symlinks, trees thousands of
levels deep, folders with mode 000. ``empty_folder`` deletes all of it through directory
file descriptors, never following a link, never recursing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(root: Path) -> None:
    """Delete ``root`` and everything below it (``empty_folder``, then ``root``)."""
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(root)
        return
    empty_folder(root)
    os.rmdir(root)


def empty_folder(root: Path) -> None:
    """Delete everything below the folder ``root`` without following a link, at any depth,
    whatever modes were set.

    Each sub-folder found is first renamed to the top level of ``root`` (so the folders
    being emptied are always ``root``'s children: no recursion, no long paths, two file
    descriptors open), made writable through its own descriptor, emptied and removed."""
    _chmod_dir(root, None)
    top = os.open(root, DIR_FLAGS)
    try:
        pending = [name for name in os.listdir(top)]
        queue: list[str] = []
        counter = 0
        for name in pending:
            _remove_entry(top, name, queue)
        while queue:
            name = queue.pop()
            _chmod_dir(Path(name), top)
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=top)
            except OSError:
                continue
            try:
                for child in os.listdir(fd):
                    info = os.lstat(child, dir_fd=fd)
                    if stat.S_ISDIR(info.st_mode):
                        counter += 1
                        flat = f".rm-{counter}"
                        while _exists(flat, top):
                            counter += 1
                            flat = f".rm-{counter}"
                        _chmod_dir(Path(child), fd)  # moving a folder writes its ".."
                        os.rename(child, flat, src_dir_fd=fd, dst_dir_fd=top)
                        queue.append(flat)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(child, dir_fd=fd)
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)


def _remove_entry(top: int, name: str, queue: list[str]) -> None:
    info = os.lstat(name, dir_fd=top)
    if stat.S_ISDIR(info.st_mode):
        queue.append(name)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=top)


def _exists(name: str, top: int) -> bool:
    try:
        os.lstat(name, dir_fd=top)
    except FileNotFoundError:
        return False
    return True


def _chmod_dir(path: Path, dir_fd: int | None) -> None:
    """Give the owner rwx on a folder through an O_PATH descriptor of the folder itself
    (a link there fails to open: O_NOFOLLOW), so nothing else can be changed."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError:
        return
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o700 != 0o700:
            os.chmod(f"/proc/self/fd/{fd}", mode | 0o700)
    except OSError:
        pass
    finally:
        os.close(fd)
