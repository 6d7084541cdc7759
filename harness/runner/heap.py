"""The C heap of a run that predicts in batches (standard library only).

glibc serves each allocation above its mmap threshold (128 kB, raised on the fly up to
32 MB) with fresh pages from the kernel, and gives them back on ``free``. A batch's
activations are tens to hundreds of MB each, so every batch had them zeroed and
page-faulted in again: on the benchmark's batch a third of the bare loop's CPU time was
system time, and how much varied from run to run with where the threshold had drifted
(``benchmarks/README.md``). ``keep_freed_memory`` has ``malloc`` keep freed memory for
the next batch instead, whose tensors have the same sizes (phase B's batches are static).

Kept memory counts against the run's memory limit (bwrap's ``RLIMIT_DATA``, docker's
cgroup), and batches that allocate differently can leave it fragmented: the bare loop's
peak RSS grew by up to 19 %. So a run keeps it only while it uses under half of its
tightest limit (``room_to_keep``, after each batch); past that, ``plain_heap`` gives it
back and the rest of the run allocates as glibc does by default. A model near its limit
predicts as before this setting, slower but no closer to the limit.

A warm predictor serves many programs: ``release_freed_memory`` hands what the last one
kept back to the kernel between them, so one program's heap never counts against the
next one's memory limit. Where the C library is not glibc, all of these do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import resource
from pathlib import Path

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # allocations up to 1 GiB come from the heap, which is not trimmed
DEFAULT_BYTES = 128 * 1024  # glibc's default for both (without its dynamic raise)
ROOM = 0.5  # freed memory is kept while every limit is less than half used

# (the limit, what counts against it): a cgroup's files (v2, then v1), or a status field
_CGROUPS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)
_RLIMITS = ((resource.RLIMIT_DATA, "VmData:"), (resource.RLIMIT_AS, "VmSize:"))
_tight = False  # this program passed ``ROOM``: it keeps nothing until the next program


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library, once: when it is glibc (``mallopt``, ``malloc_trim``)."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None)
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


def _set(libc: ctypes.CDLL, size: int) -> bool:
    took = libc.mallopt(M_MMAP_THRESHOLD, size) == 1
    return bool(libc.mallopt(M_TRIM_THRESHOLD, size) == 1 and took)


def keep_freed_memory() -> bool:
    """From now on, serve large allocations from the heap and keep what is freed in it;
    True when the C library took both settings (never after ``plain_heap`` in this
    program)."""
    libc = _glibc()
    if libc is None or _tight:
        return False
    return _set(libc, KEEP_BYTES)


def plain_heap() -> None:
    """Allocate as by default again, for the rest of this program, and give back what
    was kept: the run is near its memory limit."""
    global _tight
    _tight = True
    libc = _glibc()
    if libc is not None:
        _set(libc, DEFAULT_BYTES)
        libc.malloc_trim(0)


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel now (``malloc_trim``): between a
    warm predictor's programs, each of which starts with room to keep memory again."""
    global _tight
    _tight = False
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def memory_use() -> list[tuple[int, int]]:
    """(bytes used, limit) for each memory limit this process runs under: its cgroup's,
    its address-space and data-segment rlimits."""
    pairs = []
    for limit_file, usage_file in _CGROUPS:
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(limit_file).read_text())  # "max" (no limit) raises
            if limit < 1 << 60:  # v1 writes its "no limit" as a huge number
                pairs.append((int(Path(usage_file).read_text()), limit))
            break
    status = ""
    for kind, field in _RLIMITS:
        soft = resource.getrlimit(kind)[0]
        if soft == resource.RLIM_INFINITY:
            continue
        status = status or Path("/proc/self/status").read_text()
        for line in status.splitlines():
            if line.startswith(field):
                pairs.append((int(line.split()[1]) * 1024, soft))
    return pairs


def room_to_keep() -> bool:
    """Whether every memory limit of this process is less than ``ROOM`` used."""
    return all(used < ROOM * limit for used, limit in memory_use())
