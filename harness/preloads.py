"""Which optional libraries a batch's warm runners import ahead of its runs
(``OPTIONAL_PRELOADS``): those that the batch's own code imports, read from the import
lines of its Python files (text only; nothing of it runs here). Each then costs its
import once per batch instead of once per submission's run (torchvision: about 1.6 s of
CPU on a 2-core VM), and a batch that never imports one never pays for it."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .runner.contract import OPTIONAL_PRELOADS
from .safefs import TreeTooLarge, walk

_IMPORT = re.compile(
    rb"^[ \t]*(?:from|import)[ \t]+(" + b"|".join(n.encode() for n in OPTIONAL_PRELOADS) + rb")\b",
    re.MULTILINE,
)
MAX_FILE_BYTES = 1 << 20  # a submission's source file is small; only this much is read


def batch_preloads(folders: Iterable[Path]) -> tuple[str, ...]:
    """The optional libraries any of ``folders`` imports, in ``OPTIONAL_PRELOADS`` order
    (timm imports torchvision: both)."""
    found: set[str] = set()
    for folder in folders:
        found |= _imports(folder)
    if "timm" in found:
        found.add("torchvision")
    return tuple(name for name in OPTIONAL_PRELOADS if name in found)


def _imports(folder: Path) -> set[str]:
    names: set[str] = set()
    try:
        for path, info, _depth in walk(folder):
            if path.suffix == ".py" and stat.S_ISREG(info.st_mode):  # links: never read
                names |= {m.decode() for m in _IMPORT.findall(_read(path))}
    except TreeTooLarge:
        pass  # the validate stage refuses such a folder with its own message
    return names


def _read(path: Path) -> bytes:
    """At most ``MAX_FILE_BYTES`` of a regular file, never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.read(fd, MAX_FILE_BYTES) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)
