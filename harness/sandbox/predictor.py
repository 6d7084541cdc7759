"""Phase B for a whole batch: one warm predictor per backend and batch.

Phase B runs only host-checked programs (no submission code), so one sandbox can serve a
batch: ``python -m harness.runner serve /spool`` (``runner/serve.py``) imports torch once
(one CUDA context on a GPU) and runs each request with the same phase-B code and report as
a fresh run. ``SpoolPredictor`` is the host side, for bwrap and docker:

- the sandbox is started lazily on the first ``predict``; it sees the runner's code and
  the spool folder (read-write at ``/spool``), nothing else of the host;
- a request is ``spool/<seq>/`` holding ``job/`` (``job.json``, ``program.pt2``),
  ``inputs/`` (hard links to the job's files when the sandbox runs as another user and
  the filesystem allows, else copies) and an empty ``out/``; the host writes the ``ready``
  marker last (atomically), the server writes ``log`` and then ``done`` (its exit code:
  0 ok, 3 failed, as a run's). Requests are serialized (a lock) and the host removes each
  folder once read, so the spool never holds more than the request being served;
- the host enforces per request what ``Backend.run`` enforces per run, with the same
  watch loop and verdict (``watch``): the job's wall clock (the first request's also
  covers the sandbox's start), the output cap on ``out/``, the log cap and flood limit on
  ``log``; the sandbox as a whole has the predictor policy's memory and process limits;
- a request that times out, breaks a limit or ends the sandbox gets that outcome, the
  sandbox is killed, and the next request starts a fresh one: one bad program costs only
  its own team; a sandbox that ended between requests (killed from outside) costs none:
  it is replaced before the next request is written, and the operator is warned.

``PerRun`` (each ``predict`` is ``backend.run``) serves the process backend,
whose runs already fork from a pre-imported server, and any backend without a warm one;
it is also the process backend's runner (``zygote.py`` is bwrap's and docker's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from ..runner import serve
from ..safefs import discard, open_under, walk
from ..staging import owned_temp
from .base import Backend, RunJob, RunOutcome, SandboxPolicy
from .confine import LogPump, exit_code_of, kill_group, output_over, share_folders
from .watch import Ending, Watched, outcome, watch

SPOOL = "/spool"
SIGXCPU = 24  # the kernel's signal at a CPU-time limit
POLL_SECONDS = 0.005
READY, DONE, LOG, OUT = "ready", "done", "log", "out"

log = logging.getLogger(__name__)


class PerRun:
    """A predictor, or a runner, that runs each job as its own sandbox run
    (``backend.run``): it serves any number of jobs at once."""

    parallel = True

    def __init__(self, backend: Backend, run: Callable[[RunJob], RunOutcome] | None = None) -> None:
        """``run``: how each job runs (default: ``backend.run``)."""
        self.backend = backend
        self._run = run or backend.run

    def predict(self, job: RunJob) -> RunOutcome:
        return self._run(job)

    def run(self, job: RunJob) -> RunOutcome:
        return self._run(job)

    def start(self) -> None:
        pass

    def ready(self, seconds: float) -> bool:
        return True  # each run forks from the backend's own pre-imported server

    def close(self) -> None:
        pass

    def __enter__(self) -> PerRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server(Protocol):
    """A started predictor sandbox, seen from the host."""

    ident: str  # the sandbox's host pid or container id
    log: LogPump  # its own stdout and stderr (requests log to their own files)

    def ended(self, seconds: float) -> bool:
        """Whether the sandbox has ended, waiting at most ``seconds``."""

    def ending(self) -> Ending:
        """How it ended (after ``ended()`` or ``kill()``)."""

    def kill(self) -> None:
        """Kill the whole sandbox and wait for it (idempotent)."""


Heard = Callable[[bytes], None]  # what a warm sandbox says, chunk by chunk
StartServer = Callable[[SandboxPolicy, Path, Heard], Server]
IMPORTED = serve.IMPORTED.encode()  # the server's first words: its imports are done


class WarmSandbox(ABC):
    """What the host side of a warm sandbox (this predictor, the zygote) shares: one job at
    a time under ``_lock``, the running ``_server``, and closing (``_close``)."""

    _lock: threading.Lock
    _server: Server | None
    backend: str
    kind: str  # what the operator's warning calls it

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def sandbox(self) -> str | None:
        """The running sandbox's host pid or container id (None: none running)."""
        return self._server.ident if self._server is not None else None

    def close(self) -> None:
        with self._lock:
            self._close()

    @abstractmethod
    def _close(self) -> None:
        """Stop the sandbox and remove its host folders (``_lock`` held)."""

    def _ended_idle(self) -> bool:
        """Whether the running sandbox ended while it held no job (killed from outside,
        the kernel's out-of-memory killer): no job's doing, so the caller starts a fresh
        one for the next job instead of failing it. The operator is told (``_lock``
        held)."""
        server = self._server
        if server is None or not server.ended(0):
            return False
        log.warning(
            "the %s %s ended between jobs (exit code %s): the next job gets a fresh one",
            self.backend,
            self.kind,
            server.ending().exit_code,
        )
        return True


class SpoolPredictor(WarmSandbox):
    """The warm predictor of an isolated backend (see the module's docstring)."""

    kind = "predictor's sandbox"

    def __init__(
        self, backend: str, policy: SandboxPolicy, start: StartServer, uid: int | None
    ) -> None:
        """``uid``: the sandbox user's host uid when it differs from ours (root host)."""
        self.backend, self.policy, self._start, self.uid = backend, policy, start, uid
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._spool: Path | None = None
        self._seq = 0
        self._imported = threading.Event()  # the running server has imported torch
        self.starts = 0  # sandboxes started, for tests and benchmarks

    def _close(self) -> None:
        self._stop()
        if self._spool is not None:
            discard(self._spool)
            self._spool = None

    def predict(self, job: RunJob) -> RunOutcome:
        with self._lock:
            return self._predict(job)

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` until the started sandbox has imported torch (it said
        so); False at the deadline, or when none is running."""
        deadline = time.monotonic() + seconds
        while not self._imported.wait(POLL_SECONDS * 10):
            server = self._server
            if server is None or server.ended(0) or time.monotonic() > deadline:
                return False
        return True

    def _ensure(self) -> Server:
        if self._ended_idle():
            self._stop()
        if self._server is None:
            imported = self._imported = threading.Event()
            self._server = self._start(self.policy, self._spool_dir(), _listen(imported))
            self.starts += 1
        return self._server

    def _predict(self, job: RunJob) -> RunOutcome:
        t0 = time.perf_counter()
        share_folders([job.inputs_dir, job.job_dir], job.output_dir, None)
        spool = self._spool_dir()
        server = self._ensure()
        self._seq += 1
        request = spool / str(self._seq)
        try:
            self._write_request(request, job)
            p = job.policy
            log_file = request / LOG
            seen = watch(
                lambda: (request / DONE).exists() or server.ended(POLL_SECONDS),
                deadline=t0 + p.wall_seconds,
                policy=p,
                output_dir=request / OUT,
                flooded=lambda: size_of(log_file) > p.output_bytes,
            )
            return self._finish(job, request, server, seen, time.perf_counter() - t0)
        finally:
            discard(request)

    def _finish(
        self, job: RunJob, request: Path, server: Server, seen: Watched, wall: float
    ) -> RunOutcome:
        code = _done_code(request / DONE)
        if code is None or seen.timed_out or seen.killed_for:
            self._stop()  # the next request starts a fresh sandbox
        result = answered(
            self.backend,
            job,
            server,
            seen,
            code=code,
            flooded=size_of(request / LOG) > job.policy.output_bytes,
            output=request / OUT,
            log_file=request / LOG,
            wall=wall,
            info={"predictor": "warm", "request": str(self._seq), "sandbox": server.ident},
        )
        if result.status in ("timeout", "killed"):
            self._stop()  # a limit seen only in the report (memory, processes): fresh start
        return result

    def _spool_dir(self) -> Path:
        if self._spool is None:
            self._spool = owned_temp("harness-spool-")
        return self._spool

    def _write_request(self, request: Path, job: RunJob) -> None:
        """``request``'s folders, then the ready marker (renamed into place last)."""
        request.mkdir()
        for name, source in (("job", job.job_dir), ("inputs", job.inputs_dir)):
            target = request / name
            target.mkdir()
            for entry in os.scandir(source):
                if entry.is_file(follow_symlinks=False):
                    self._place(Path(entry.path), target / entry.name)
            os.chmod(target, 0o555)
        (request / OUT).mkdir()
        if self.uid is not None:
            for folder in (request, request / OUT):
                os.chown(folder, self.uid, self.uid)
        os.chmod(request, 0o755)
        os.chmod(request / OUT, 0o755)
        tmp = request / (".ready")
        tmp.write_text("")
        os.chmod(tmp, 0o444)
        os.replace(tmp, request / READY)

    def _place(self, source: Path, target: Path) -> None:
        """A hard link when the sandbox runs as another user (it cannot write the shared
        inode: the host's files are 0444 and not its own), else a copy."""
        if self.uid is not None:
            with contextlib.suppress(OSError):
                os.link(source, target)
                return
        shutil.copyfile(source, target)
        os.chmod(target, 0o444)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server = None
        if self._spool is not None:  # nothing of a killed sandbox's requests stays
            for entry in os.scandir(self._spool):
                discard(Path(entry.path))


def _listen(imported: threading.Event) -> Heard:
    """A sandbox's output, heard until it says that it has imported torch."""
    tail = b""

    def heard(chunk: bytes) -> None:
        nonlocal tail
        if not imported.is_set():
            tail = tail[-len(IMPORTED) :] + chunk
            if IMPORTED in tail:
                imported.set()

    return heard


def answered(
    backend: str,
    job: RunJob,
    server: Server,
    seen: Watched,
    *,
    code: int | None,
    flooded: bool,
    output: Path,
    log_file: Path,
    wall: float,
    info: dict[str, str],
    out_of_memory: bool = False,
    show_sandbox_log: bool = True,
    sandbox: str = "the predictor's sandbox",
) -> RunOutcome:
    """The outcome of one request to a warm sandbox (a predictor's or a zygote's), as
    ``Backend.run`` gives a run's: ``code`` is the exit code the sandbox answered (None:
    it ended, or was killed, without answering), ``output`` and ``log_file`` what the
    request wrote (the output is copied to the job's folder unless over its cap);
    ``show_sandbox_log``: whether a sandbox that ended unanswered adds its own log (not
    the zygote's, which holds other runs' statuses); ``sandbox``: what the note says
    ended."""
    p = job.policy
    if code is None:
        end = server.ending()
        if end.exit_code == 0:
            end.exit_code = 1  # it ended without answering: never "ok"
    else:
        end = Ending(code, out_of_memory=out_of_memory, timed_out=code == -SIGXCPU)
    end.flooded = end.flooded or flooded
    if not output_over(output, p):
        copy_tree(output, job.output_dir)
    log = capped(log_file, p.log_bytes)
    if code is None and not (seen.timed_out or seen.killed_for or flooded):
        log += f"\n[{sandbox} ended]\n"
        log += server.log.text(timeout=2.0) if show_sandbox_log else ""
    end.info = info
    return outcome(
        seen, end, policy=p, output_dir=job.output_dir, wall=wall, log=log, backend=backend
    )


def _done_code(path: Path) -> int | None:
    """The exit code in a done marker (None: no marker, or not a number)."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def size_of(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def capped(path: Path, cap: int) -> str:
    """The file's first and last ``cap // 2`` bytes, with a note of what was cut. The
    sandbox wrote the folder: a link or a FIFO in the file's place reads as nothing."""
    try:
        with open_under(path.parent, path.name) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= cap:
                body = fh.read(cap)
            else:
                head = fh.read(cap // 2)
                fh.seek(size - cap // 2)
                cut = f"\n[... {size - 2 * (cap // 2)} bytes of output cut ...]\n"
                body = head + cut.encode() + fh.read(cap // 2)
    except OSError:
        return ""
    return body.decode("utf-8", errors="replace")


def copy_tree(source: Path, target: Path) -> None:
    """Regular files and folders of ``source`` into ``target`` (links and the rest left).
    What the host may not read is left too: under rootless Docker the sandbox's user is
    not the host's, and a run's 0600 file or 0700 folder is closed to it. The runner's own
    files are readable; a run that closes them has no output, which is its own failure."""
    for path, info, _depth in walk(source):  # a folder it cannot list: not entered
        rel = path.relative_to(source)
        if stat.S_ISDIR(info.st_mode):
            (target / rel).mkdir(exist_ok=True)
        elif stat.S_ISREG(info.st_mode):
            with contextlib.suppress(PermissionError):
                shutil.copyfile(path, target / rel, follow_symlinks=False)


class ProcessServer:
    """A warm sandbox that is one host process (bwrap's predictor or zygote, the process
    backend's GPU predictor), seen from the host (``Server``)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        p: SandboxPolicy,
        stack: ExitStack,
        heard: Callable[[bytes], None] | None = None,
    ) -> None:
        assert proc.stdout is not None
        self.proc, self.stack = proc, stack
        self.ident = str(proc.pid)
        self._killing = threading.Lock()  # the log thread (on a flood) and the host may both kill
        self.log = LogPump.from_stream(
            proc.stdout, keep=p.log_bytes, budget=p.output_bytes, on_flood=self.kill, on_chunk=heard
        )

    def ended(self, seconds: float) -> bool:
        return ended_within(self.proc, seconds)

    def ending(self) -> Ending:
        code = exit_code_of(self.proc.wait())
        return Ending(code, flooded=self.log.flooded, timed_out=code == -SIGXCPU)

    def kill(self) -> None:
        """Kill the sandbox's process group and release its mounts; a second caller waits
        for the first (``ExitStack.close`` is not thread-safe)."""
        with self._killing:
            kill_group(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.stack.close()


def ended_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
