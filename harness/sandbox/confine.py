"""Watching and judging a run, for the backends: the argv of the in-sandbox supervisor
(``harness/runner/supervisor.py``, the sandbox's PID 1; bwrap and docker), the log pump
with a flood limit and the capped log, the output watcher and folder size, killing a
process group, starting a process that must outlive the thread that asks for it, and the
verdict on a finished run."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TypeVar

from ..runner.supervisor import PROCESS_LIMIT_EXIT
from ..safefs import TreeTooLarge, read_under, walk
from .base import RunStatus, SandboxPolicy

MAX_OUTPUT_FILES = 10_000
MAX_OUTPUT_DEPTH = 32
REPORT_MAX_BYTES = 1 << 20

RUNNER_BOOT = (
    "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
    "sys.argv[0] = 'harness.runner'; runpy.run_module('harness.runner', run_name='__main__')"
)


def supervised_argv(
    python: str, rlimits: dict[str, int], code_root: str, runner_args: list[str]
) -> list[str]:
    """argv for the sandbox's first process: the supervisor, then the runner under it."""
    spec = ",".join(f"{name}={value}" for name, value in rlimits.items())
    runner = [python, "-I", "-u", "-c", RUNNER_BOOT, code_root, *runner_args]
    supervisor = f"{code_root}/harness/runner/supervisor.py"
    return [python, "-I", "-S", supervisor, spec, *runner]


T = TypeVar("T")
_LAUNCHES: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
_LAUNCHER: list[threading.Thread] = []
_LAUNCHER_LOCK = threading.Lock()


def from_lasting_thread(start: Callable[[], T]) -> T:
    """``start()`` (a ``Popen``) called from one thread that lives as long as this process.

    The kernel's parent-death signal (``PR_SET_PDEATHSIG``, bwrap's ``--die-with-parent``)
    follows the *thread* that forked a process, not the process: a warm sandbox started
    from a thread that then ends (a prewarm, a grading's worker) is SIGKILLed at that
    thread's end, or, when that races bwrap's own setup, leaves its sandbox orphaned. A
    process started here dies only with the grading process, as meant."""
    with _LAUNCHER_LOCK:
        if not _LAUNCHER or not _LAUNCHER[0].is_alive():
            _LAUNCHER[:] = [threading.Thread(target=_launch, name="sandbox-launcher", daemon=True)]
            _LAUNCHER[0].start()
    done: Future[object] = Future()
    _LAUNCHES.put((start, done))
    return done.result()  # type: ignore[return-value]


def _launch() -> None:
    while True:
        start, done = _LAUNCHES.get()
        try:
            done.set_result(start())
        except BaseException as exc:  # noqa: BLE001  (the caller's error, raised there)
            done.set_exception(exc)


def zygote_argv(
    python: str, rlimits: dict[str, int], code_root: str, preload: tuple[str, ...] = ()
) -> list[str]:
    """argv for a zygote sandbox's first process: the runner's zygote, which sets the
    rlimits and supervises itself (``runner/zygote.py``); ``preload``: the batch's
    optional preloads (``harness/preloads.py``)."""
    spec = ",".join(f"{name}={value}" for name, value in rlimits.items())
    return [python, "-I", "-u", "-c", RUNNER_BOOT, code_root, "zygote", spec, ",".join(preload)]


def kill_group(pid: int) -> None:
    """SIGKILL a run's whole process group (gone already, or not ours: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def exit_code_of(raw: int | None) -> int | None:
    """The supervisor's ``128 + N`` as ``-N`` (signal N), as ``subprocess`` reports it."""
    if raw is not None and 128 < raw < 128 + 65:
        return 128 - raw
    return raw


class LogPump:
    """Reads a byte stream in a thread, keeping the first and last ``keep // 2`` bytes.

    Past ``budget`` bytes in all it calls ``on_flood`` once (which kills the sandbox) and
    discards the rest: a submission cannot make the host keep gigabytes.
    """

    def __init__(
        self,
        chunks: Callable[[], bytes],
        *,
        keep: int,
        budget: int,
        on_flood: Callable[[], None],
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        """``on_chunk`` sees every chunk as it comes (a warm sandbox's own messages)."""
        self.keep, self.budget, self.on_flood = keep, budget, on_flood
        self.on_chunk = on_chunk
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.flooded = False
        self._read = chunks
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @classmethod
    def from_stream(cls, stream: IO[bytes], **kwargs: object) -> LogPump:
        return cls(lambda: stream.read1(65536), **kwargs)  # type: ignore[attr-defined, arg-type]

    def _pump(self) -> None:
        half = self.keep // 2
        with contextlib.suppress(Exception):
            while chunk := self._read():
                self.total += len(chunk)
                if self.on_chunk is not None:
                    self.on_chunk(chunk)
                if self.flooded:
                    continue  # drain what is left after the kill: an engine may wait for it
                if len(self.head) < half:
                    take = half - len(self.head)
                    self.head += chunk[:take]
                    chunk = chunk[take:]
                self.tail += chunk
                if len(self.tail) > half:
                    del self.tail[: len(self.tail) - half]
                if self.total > self.budget:
                    self.flooded = True
                    self.on_flood()

    def ended(self) -> bool:
        """Whether the stream has ended (the sandbox's output closed)."""
        return not self._thread.is_alive()

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        body = bytes(self.head)
        skipped = self.total - len(self.head) - len(self.tail)
        if skipped > 0:
            body += f"\n[... {skipped} bytes of output cut ...]\n".encode()
        body += bytes(self.tail)
        return body.decode("utf-8", errors="replace")


def output_over(folder: Path, policy: SandboxPolicy) -> str | None:
    """The output limit the folder passes, if any (bytes in all, or number of files)."""
    total = 0
    try:
        for _path, info, _depth in walk(
            folder, max_entries=MAX_OUTPUT_FILES, max_depth=MAX_OUTPUT_DEPTH
        ):
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if total > policy.output_bytes:
                return f"output limit of {_mib(policy.output_bytes)}"
    except TreeTooLarge as exc:
        return f"output limit: {exc}"
    return None


def limit_in_report(output_dir: Path, policy: SandboxPolicy) -> str | None:
    """The limit behind the runner's reported error, when the error is a limit's symptom.

    Inside the sandbox most limits make a system call fail rather than kill the process:
    ``fork`` gives EAGAIN at the process limit, allocations fail at the memory limit, writes
    give ENOSPC or EFBIG at the disk limits. The runner reports the exception; this reads
    it back (as JSON data only) and names the limit.
    """
    try:
        raw = read_under(output_dir, "report.json", REPORT_MAX_BYTES)
        error = json.loads(raw.decode("utf-8")).get("error") or {}
        kind, message = str(error.get("type", "")), str(error.get("message", ""))
    except (OSError, ValueError, AttributeError):
        return None
    return _limit_of(kind, message, policy)


def _limit_of(kind: str, message: str, policy: SandboxPolicy) -> str | None:
    text = message.lower()
    if kind == "MemoryError" or "can't allocate memory" in text or "cannot allocate memory" in text:
        return f"memory limit of {_mib(policy.memory_bytes)}"
    if "errno 11]" in text or "can't start new thread" in text or kind == "BlockingIOError":
        return f"process limit of {policy.pids} processes and threads"
    if "errno 28]" in text or "no space left on device" in text:
        return f"disk limit: /tmp holds at most {_mib(policy.tmpfs_bytes)} (so does /dev/shm)"
    if "errno 27]" in text or "file too large" in text:
        return f"output limit of {_mib(policy.output_bytes)} per file"
    return None


def verdict(
    exit_code: int | None,
    *,
    timed_out: bool,
    policy: SandboxPolicy,
    output_dir: Path,
    killed_for: str = "",
) -> tuple[RunStatus, str]:
    """The run's status and the limit it passed, in this order: wall clock; a limit the
    backend killed it for (memory, log flood, output); the output folder; a limit the
    runner's report shows; the exit code."""
    if timed_out:
        return "timeout", f"wall-clock limit of {policy.wall_seconds:g} s"
    if killed_for:
        return "killed", killed_for
    if exit_code == PROCESS_LIMIT_EXIT:
        return "killed", f"process limit of {policy.pids} processes and threads"
    over = output_over(output_dir, policy)
    if over:
        return "killed", over
    if exit_code == 0:
        return "ok", ""
    limit = limit_in_report(output_dir, policy)
    if limit:
        return "killed", limit
    return "error", ""


def share_folders(read_only: list[Path], writable: Path, uid: int | None) -> None:
    """Let the sandbox's user read the job folders and write the output folder.

    ``uid`` is the sandbox user's host uid when the host runs as root (the output folder is
    handed to it); None when the sandbox runs as the calling user, who owns it already.
    """
    for folder in read_only:
        _add_mode(folder, 0o555)
        for path, info, _depth in walk(folder):
            if stat.S_ISDIR(info.st_mode):
                _add_mode(path, 0o555)
            elif stat.S_ISREG(info.st_mode):
                _add_mode(path, 0o444)
    hand_over(writable, uid)


def hand_over(folder: Path, uid: int | None) -> None:
    """Make ``folder`` the sandbox user's to write: ``uid``, that user's host uid, is given
    only by a host running as root, and the folder becomes that user's alone; None: the
    sandbox runs as the caller, who owns the folder already."""
    if uid is not None:
        os.chown(folder, uid, uid)
        os.chmod(folder, 0o700)


def _add_mode(path: Path, bits: int) -> None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if not os.path.islink(path) and st.st_mode & bits != bits:
            os.chmod(path, (st.st_mode & 0o7777) | bits)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


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
