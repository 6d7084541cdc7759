"""The C heap of a run that predicts in batches (standard library only).

glibc serves each allocation above its mmap threshold (128 kB, raised on the fly up to
32 MB) with fresh pages from the kernel, and gives them back on ``free``. A batch's
activations are tens to hundreds of MB each, so every batch had them zeroed and
page-faulted in again: on the benchmark's batch a third of the bare loop's CPU time was
system time, and how much varied from run to run with where the threshold had drifted
(``benchmarks/README.md``). ``keep_freed_memory`` has ``malloc`` keep freed memory for
the next batch instead, whose tensors have the same sizes (phase B's batches are static).

A warm predictor serves many programs: ``release_freed_memory`` hands what the last one
kept back to the kernel between them, so one program's heap never counts against the
next one's memory limit. Where the C library is not glibc, both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # allocations up to 1 GiB come from the heap, which is not trimmed


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library, once: when it is glibc (``mallopt``, ``malloc_trim``)."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None)
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


def keep_freed_memory() -> bool:
    """From now on, serve large allocations from the heap and keep what is freed in it;
    True when the C library took both settings."""
    libc = _glibc()
    if libc is None:
        return False
    took = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1
    return bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1 and took)


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel now (``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
