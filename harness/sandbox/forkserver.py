"""A pre-imported runner for the process backend: torch is imported once per batch.

Starting ``python -m harness.runner`` costs seconds, almost all of it ``import torch``.
The fork server pays that once: a long-lived process imports torch, numpy, safetensors
and the runner, exports a tiny model of the runner's own (``phase_a.warm_up``: the first
export's lazy imports and caches), then forks one child per run. Each run gets the
process backend's policy: its own session, a scrubbed environment, cwd and HOME in a
fresh temporary folder, stdout and stderr into a log the grading process caps, and a wall
clock that the grading process enforces by killing the run's process group itself.

Process tree (each level in its own session, so no run can signal another's group)::

    grading process --control socket--> server (imports done; runs no submission)
                                          +-- supervisor (one per run; reports the exit)
                                                +-- run (the runner's main; dies with
                                                         its supervisor: PDEATHSIG)

A run that kills its process group, its supervisor or the server costs only itself: the
supervisor of every other run keeps reporting, and a dead server is started again on the
next run. Children never touch the control socket.

This file runs in two places. In the grading process, :class:`ForkServer` is the client.
Run as a script (``python -I forkserver.py --serve ROOT FD PRELOADS``) it is the server, which
imports only the standard library before it puts ``ROOT`` (the runner's code folder)
first on ``sys.path``; so the module's top level imports the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# imported by the server before it forks anything (best effort: a missing one is skipped)
PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "torch.export._trace",  # torch.export's first call imports dynamo, sympy, ... (seconds)
    "torch._export.serde.serialize",
    "torch.export.passes",
    "harness.runner.__main__",
    "harness.runner.load",
    "harness.runner.predict",
    "harness.runner.inventory",
    "harness.runner.phase_a",
    "harness.runner.phase_b",
    "harness.runner.interpreter",
)
READY_SECONDS = 120.0  # for the server's imports, on a loaded machine
ACK_SECONDS = 30.0  # from a request to the run's pid
MAX_MESSAGE = 1 << 16
ATTACH = b"attach"  # the owner hands the server one more client's control socket


class ForkServerError(Exception):
    """The fork server cannot start or answer; the caller may run the job another way."""


@dataclass(frozen=True)
class Finished:
    """How one run ended. ``exit_code`` follows ``subprocess``: negative for a signal."""

    exit_code: int | None
    timed_out: bool
    wall_seconds: float
    log: str


class ForkServer:
    """Client side: starts the server lazily, restarts it when it died, runs jobs.

    Thread-safe: runs from several grading threads go through one server at once.
    """

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        preload: tuple[str, ...] = (),
        *,
        attach: Callable[[], socket.socket | None] | None = None,
    ) -> None:
        """``preload``: the batch's optional preloads (``harness/preloads.py``);
        ``attach``: a control socket to a warm server of ``grade serve``'s for the same
        environment and preloads, or None (``served.attach``); tried before starting one."""
        self.root = root
        self.env = dict(env)
        self.preload = preload
        self._attach = attach
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None

    @property
    def attached(self) -> bool:
        """Whether runs go to a server this process did not start (``grade serve``'s)."""
        return self._ctl is not None and self._proc is None

    def start(self) -> None:
        """Start the server now, unless it runs (never one of ``grade serve``'s)."""
        with self._lock:
            self._ensure(remote=False)

    def attach(self) -> socket.socket:
        """A control socket of its own to this server for another client (``grade
        serve`` hands it out), starting the server first if needed."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                self._send(ATTACH, [theirs.fileno()], remote=False)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (for tests and diagnostics)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def runs_under_way(self) -> bool:
        """Whether a run forked from this server (started here) is under way: its
        supervisor, the server's child, lives until the client has followed the run."""
        pid = self.pid
        if pid is None:
            return False
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                return bool(fh.read().split())
        except OSError:
            return False

    def run(
        self, args: list[str], *, env: dict[str, str], cwd: str, wall_seconds: float, log_bytes: int
    ) -> Finished:
        """Run the runner's ``main(args)`` in a forked child; raises ``ForkServerError``
        only when no server can be made to answer (nothing of the job ran then)."""
        request = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
        for attempt in range(2):
            started = self._start_run(request, log_bytes, restart=attempt > 0)
            if started is not None:
                return _follow(started, wall_seconds=wall_seconds)
        raise ForkServerError("the fork server accepted no run after a restart")

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the server's lifetime --------------------------------------------------------
    def _start_run(self, request: bytes, log_bytes: int, *, restart: bool) -> _Started | None:
        from .confine import CappedLog  # the grading process only (see the module docstring)

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_r, log_w = os.pipe()
        try:
            with self._lock:
                if restart:  # a server of our own: a served one may be the one that failed
                    self._stop()
                self._send(request, [theirs.fileno(), log_w], remote=not restart)
                t0 = time.perf_counter()  # the run's clock: the server's start is not its time
        except BaseException:
            ours.close()
            os.close(log_r)
            raise
        finally:
            theirs.close()
            os.close(log_w)
        log = CappedLog(os.fdopen(log_r, "rb", buffering=0), log_bytes)
        ours.settimeout(ACK_SECONDS)
        first = _receive(ours)
        if first is None or "pid" not in first:
            ours.close()
            if first is not None and "error" in first:
                return _Started(ours, None, log, t0, str(first["error"]))
            log.text(timeout=1.0)
            return None  # the server died or hung before forking: restart it
        return _Started(ours, int(first["pid"]), log, t0, "")

    def _send(self, message: bytes, fds: list[int], *, remote: bool) -> None:
        """``message`` and ``fds`` to the server (under the lock); once more to a server
        started again when the send fails (it died since the last)."""
        try:
            socket.send_fds(self._ensure(remote=remote), [message], fds)
        except OSError:
            self._stop()
            socket.send_fds(self._ensure(remote=remote), [message], fds)

    def _ensure(self, *, remote: bool) -> socket.socket:
        """The control socket: the current one while its server lives (a served one until
        a send fails), else one from ``grade serve`` when ``remote``, else a new server."""
        if self._ctl is not None and (self._proc is None or self._proc.poll() is None):
            return self._ctl
        self._stop()
        if remote and self._attach is not None:
            served = self._attach()
            if served is not None:
                self._ctl = served
                return served
        mine, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-I", str(Path(__file__).resolve())]
        argv += ["--serve", str(self.root), str(child.fileno()), ",".join(self.preload)]
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(
                    argv,
                    env=self.env,
                    cwd="/",
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    pass_fds=(child.fileno(),),
                    start_new_session=True,
                )
            finally:
                child.close()
            mine.settimeout(READY_SECONDS)
            try:
                ready = mine.recv(64)
            except OSError:
                ready = b""
            if ready != b"ready":
                mine.close()
                _kill_group(proc.pid)
                proc.wait()
                errors.seek(0)
                text = errors.read()[-2000:].decode("utf-8", errors="replace").strip()
                raise ForkServerError(
                    f"the fork server did not start: {text or f'exit code {proc.returncode}'}"
                )
        mine.settimeout(None)
        self._proc, self._ctl = proc, mine
        return mine

    def _stop(self) -> None:
        """End the server now: it holds nothing worth a graceful exit, and each run has a
        session of its own, so killing the server's group ends no run. A served one is
        only let go: ``grade serve`` owns it."""
        if self._ctl is not None:
            self._ctl.close()
        if self._proc is not None:
            _kill_group(self._proc.pid)
            self._proc.wait()
        self._proc, self._ctl = None, None


@dataclass
class _Started:
    chan: socket.socket
    pid: int | None  # the run's pid, also its process group; None when it never started
    log: Any  # CappedLog
    t0: float
    error: str


def _follow(s: _Started, *, wall_seconds: float) -> Finished:
    """Wait for the run's end or its deadline; kill what is left of its group either way."""
    timed_out = False
    code: int | None = None
    if s.pid is None:
        return Finished(None, False, time.perf_counter() - s.t0, f"{s.error}\n{s.log.text()}")
    try:
        s.chan.settimeout(max(0.0, s.t0 + wall_seconds - time.perf_counter()))
        try:
            message = _receive(s.chan, deadline_raises=True)
        except TimeoutError:
            timed_out = True
            _kill_group(s.pid)
            s.chan.settimeout(5.0)
            message = _receive(s.chan)
        # no message: the supervisor died (the run killed it), and took the run with it
        code = int(message["exit"]) if message and "exit" in message else -signal.SIGKILL
        _kill_group(s.pid)  # leftovers; the run is a zombie until we close, so no pid reuse
    finally:
        s.chan.close()
    wall = time.perf_counter() - s.t0
    return Finished(code, timed_out, wall, s.log.text())


def _receive(chan: socket.socket, *, deadline_raises: bool = False) -> dict[str, Any] | None:
    try:
        data = chan.recv(MAX_MESSAGE)
    except TimeoutError:
        if deadline_raises:
            raise
        return None
    except OSError:
        return None
    if not data:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _kill_group(pid: int) -> None:
    """``confine.kill_group``, again: this module's top level imports the standard library
    only (it is also the server's script), so it cannot import it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# ---- the server side (runs as a script; standard library only until ROOT is on the path) --


def serve(root: str, control_fd: int, optional: list[str]) -> None:
    """Import once (``PRELOAD``, then the batch's ``optional`` preloads), then fork a
    supervisor per request until the control socket closes."""
    sys.path.insert(0, root)
    for name in (*PRELOAD, *filter(None, optional)):
        with contextlib.suppress(ImportError):
            __import__(name)
    phase_a = sys.modules.get("harness.runner.phase_a")
    if phase_a is not None:  # best effort, as the imports: a run that fails shows why
        with contextlib.suppress(Exception):
            phase_a.warm_up()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child could not use it
        sys.exit("the fork server's imports initialized CUDA; runs need fresh processes")
    ctl = socket.socket(fileno=control_fd)
    # reap supervisors as they end (not SIG_IGN: that would drop their CPU time from the
    # accounts of this process tree)
    signal.signal(signal.SIGCHLD, _reap)
    ctl.sendall(b"ready")
    channels = [ctl]  # the owner's control socket, then the ones attached through it
    try:
        while True:
            for chan in select.select(channels, [], [])[0]:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(chan, MAX_MESSAGE, 2)
                except OSError:
                    data, fds = b"", []
                if not data:
                    if chan is ctl:
                        return  # the owner is gone
                    channels.remove(chan)  # an attached client is gone
                    chan.close()
                elif chan is ctl and data == ATTACH and len(fds) == 1:
                    channels.append(socket.socket(fileno=fds[0]))
                elif len(fds) == 2:
                    _fork_supervisor(channels, data, fds[0], fds[1])
                else:
                    for fd in fds:
                        os.close(fd)
    finally:
        deadline = time.monotonic() + 5.0  # supervisors end once their client closes
        while _reap() and time.monotonic() < deadline:
            time.sleep(0.05)


def _reap(*_: object) -> bool:
    """Reap every ended child; True while some are still running."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        return False
    return True


def _fork_supervisor(channels: list[socket.socket], data: bytes, chan_fd: int, log_fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _send(socket.socket(fileno=chan_fd), {"error": f"could not fork: {exc}"})
        os.close(log_fd)
        return
    if pid == 0:
        code = 70
        try:
            for chan in channels:
                chan.close()
            _supervise(json.loads(data), chan_fd, log_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(chan_fd)
    os.close(log_fd)


def _supervise(request: dict[str, Any], chan_fd: int, log_fd: int) -> None:
    """Fork the run, tell the client its pid, report its exit without reaping it, then
    reap it once the client has killed its leftovers and closed the channel."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    chan = socket.socket(fileno=chan_fd)
    me = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        _send(chan, {"error": f"could not fork: {exc}"})
        return
    if pid == 0:
        chan.close()
        _run(request, log_fd, me)
    os.close(log_fd)
    _send(chan, {"pid": pid})
    _wait_exit(pid, chan)
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited: never None
    assert info is not None
    code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    _send(chan, {"exit": code})
    with contextlib.suppress(OSError):
        while chan.recv(MAX_MESSAGE):  # until the client closes
            pass
    os.waitpid(pid, 0)


def _wait_exit(pid: int, chan: socket.socket) -> None:
    """Block until the run exits; if the client goes away first, kill the run."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:  # Linux before 5.3: just wait
        return
    pidfd = opener(pid)
    try:
        while pidfd not in select.select([pidfd, chan], [], [])[0]:
            data = b""
            with contextlib.suppress(OSError):
                data = chan.recv(MAX_MESSAGE)
            if not data:  # the client is gone: nobody would enforce the wall clock
                _kill_group(pid)
                select.select([pidfd], [], [])
                return
    finally:
        os.close(pidfd)


def _run(request: dict[str, Any], log_fd: int, supervisor: int) -> None:
    """The run itself: the process backend's policy, then the runner's main. Never returns."""
    try:
        _die_with(supervisor)
        from harness.runner.__main__ import main
        from harness.runner.forked import run_forked

        args = request["args"]
        argv = ["harness.runner", *args]
        run_forked(
            log_fd, cwd=request["cwd"], env=request["env"], argv=argv, main=lambda: main(args)
        )
    finally:
        os._exit(1)  # only when the run could not start


def _die_with(supervisor: int) -> None:
    """SIGKILL this process when its supervisor dies (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != supervisor:  # it died before the call took effect
        os._exit(1)


def _send(chan: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        chan.send(json.dumps(message).encode())


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",") if sys.argv[4:] else [])
