"""Pieces every backend shares: the runner's code folder, its argv, capped logs."""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import IO

from ..safefs import TreeTooLarge, walk
from .base import MOUNTS, RunJob

RUNNER_SOURCE = Path(__file__).resolve().parent.parent / "runner"


@cache
def runner_root() -> Path:
    """A folder holding only ``harness/__init__.py`` (empty) and ``harness/runner/``.

    Backends mount it read-only as ``/opt/harness``: the sandbox sees the runner's code
    and nothing else of the harness.
    """
    root = Path(tempfile.mkdtemp(prefix="harness-runner-"))
    atexit.register(shutil.rmtree, root, True)
    pkg = root / "harness"
    (pkg / "runner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for src in RUNNER_SOURCE.glob("*.py"):
        shutil.copy2(src, pkg / "runner" / src.name)
    os.chmod(root, 0o755)
    return root


def runner_args(mapped: dict[str, str]) -> list[str]:
    """The runner's arguments (after ``python -m harness.runner``), given where each job
    folder appears to it."""
    return [
        "--job",
        mapped["job"],
        "--submission",
        mapped["submission"],
        "--inputs",
        mapped["inputs"],
        "--output",
        mapped["output"],
    ]


def host_paths(job: RunJob) -> dict[str, str]:
    return {
        "submission": str(job.submission_dir),
        "inputs": str(job.inputs_dir),
        "job": str(job.job_dir),
        "output": str(job.output_dir),
        "code": str(runner_root()),
    }


def sandbox_paths() -> dict[str, str]:
    return dict(MOUNTS)


SAFE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONHASHSEED": "0",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def thread_env(cpus: float) -> dict[str, str]:
    """Thread counts for the math libraries: torch.set_num_threads does not lift
    MKL_NUM_THREADS=1, and a single-threaded MKL makes linear layers up to 1.6x slower."""
    threads = str(max(1, int(cpus)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


class CappedLog:
    """Reads a stream to its end in a thread, keeping at most ``cap`` bytes (head and tail)."""

    def __init__(self, stream: IO[bytes], cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        half = self.cap // 2
        while chunk := stream.read(65536):
            self.total += len(chunk)
            if len(self.head) < half:
                take = half - len(self.head)
                self.head += chunk[:take]
                chunk = chunk[take:]
            if chunk:
                self.tail += chunk
                if len(self.tail) > half:
                    del self.tail[: len(self.tail) - half]

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        body = bytes(self.head)
        if self.total > len(self.head) + len(self.tail):
            skipped = self.total - len(self.head) - len(self.tail)
            body += f"\n[... {skipped} bytes of output cut ...]\n".encode()
        body += bytes(self.tail)
        return body.decode("utf-8", errors="replace")


def folder_size(folder: Path) -> int:
    """Bytes in the regular files below ``folder`` (links not followed); past the caps on
    entries or depth, more than any output limit."""
    total = 0
    try:
        for _path, info, _depth in walk(folder):
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    except TreeTooLarge:
        return 1 << 62
    return total
