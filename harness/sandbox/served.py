"""``grade serve``: a batch's warm sandboxes and runners, kept warm between commands.

Each command pays seconds before its first run: a runner imports torch, then the
``torch.export`` stack (which imports ``torch._dynamo``), then exports a model of its own.
``grade serve`` pays that once per machine and user, for two kinds of warm runner:

- **the process backend's fork servers** (``forkserver.py``): one per environment and
  preloads; each command gets a control socket of its own to the one it needs
  (``ForkServer.attach``) and forks its runs from it as from a server of its own: the
  command still follows each run, enforces its wall clock, kills its group and reads its
  log, so a command that ends (or is killed) takes its runs with it. Only the imports are
  shared, never a run's state: every run is a fresh fork of the server.
- **bwrap's and docker's warm sandboxes** (``served_sandboxes.py``, ``Broker``): the
  daemon runs a command's jobs through ``WarmSandboxes`` of its own (the zygote, the
  predictors), which stay open between commands; the command sends each job and waits
  for its outcome.

Who may use it: the socket lies in a folder only its owner can enter (``serve_dir``), and
both ends check the other's uid (``SO_PEERCRED``). Which harness: the socket's name
carries a digest of the harness version and all of its code, the Python interpreter, the
versions of the libraries the runners import and the Docker engine named, so a command
never uses a daemon of other code; it uses sandboxes of its own then, as it does when no
``grade serve`` runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache, partial
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from ..errors import UserError
from . import forkserver
from .layout import RUNNER_SOURCE
from .watch import ABANDONED

SERVED_LIBRARIES = ("torch", "torchvision", "timm", "numpy", "safetensors", "docker")
ENGINE_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY")
REPLY_SECONDS = forkserver.READY_SECONDS  # the server may be starting a fork server
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def serve_dir() -> Path:
    """``HARNESS_SERVE_DIR``, else ``$XDG_RUNTIME_DIR/harness``, else a folder of this
    user's in the temporary folder."""
    configured = os.environ.get("HARNESS_SERVE_DIR")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "harness"
    return Path(tempfile.gettempdir()) / f"harness-serve-{os.geteuid()}"


@cache
def code_digest() -> str:
    """What ``grade serve`` must share with a command it serves: the harness and all of
    its code (the daemon runs the host side of bwrap's and docker's runs), the Python (its
    prefix: a virtual environment's own), the versions of what the runners import (read
    from their metadata: a command imports none of them to ask), the Docker engine named."""
    from .. import __version__

    python = f"{sys.prefix}\0{os.path.realpath(sys.executable)}\0{sys.version}"
    libraries = "\0".join(_version(name) for name in SERVED_LIBRARIES)
    engine = "\0".join(f"{name}={os.environ.get(name, '')}" for name in ENGINE_ENV)
    h = hashlib.sha256(f"{__version__}\0{python}\0{libraries}\0{engine}\0".encode())
    package = RUNNER_SOURCE.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _version(distribution: str) -> str:
    try:
        return f"{distribution}=={metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return f"{distribution} missing"


def socket_path() -> Path:
    return serve_dir() / f"serve-{code_digest()}.sock"


def private(folder: Path) -> bool:
    """A real folder (not a link) of this user's that nobody else may enter."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def may_answer() -> bool:
    """Whether a ``grade serve`` of this code may be listening (its socket is there, in a
    private folder): cheap enough for every batch and every runner's start."""
    return private(serve_dir()) and socket_path().exists()


def attach(env: dict[str, str], preload: tuple[str, ...]) -> socket.socket | None:
    """A control socket to a served fork server for ``env`` and ``preload``; None when no
    ``grade serve`` of this code answers (the caller starts a server of its own)."""
    fds: list[int] = []
    try:
        with _connected() as chan:
            chan.sendall(json.dumps({"env": env, "preload": list(preload)}).encode())
            data, fds, _flags, _addr = socket.recv_fds(chan, forkserver.MAX_MESSAGE, 1)
    except OSError:
        return None
    if data != b"ok" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    ctl = socket.socket(fileno=fds[0])
    ctl.setblocking(True)
    return ctl


def request(message: dict[str, Any], *, reply_seconds: float) -> dict[str, Any] | None:
    """Ask ``grade serve`` to do ``message`` (a broker's operation: ``served_sandboxes``)
    and wait up to ``reply_seconds`` for its answer; None when no ``grade serve`` of this
    code answers, or it ended or failed before it answered."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _connected() as chan:
            socket.send_fds(chan, [json.dumps(message).encode()], [theirs.fileno()])
        theirs.close()
        ours.settimeout(reply_seconds)
        with ours.makefile("rb") as reply:
            value = json.loads(reply.read() or b"null")
    except (OSError, ValueError):
        return None
    finally:
        theirs.close()
        ours.close()
    return value if isinstance(value, dict) and "error" not in value else None


@contextlib.contextmanager
def _connected() -> Iterator[socket.socket]:
    """A connection to ``grade serve`` of this code, run by this user; ``OSError`` when
    there is none (no private folder, no socket, another user's)."""
    if not may_answer():
        raise FileNotFoundError("no grade serve here")
    chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        chan.settimeout(REPLY_SECONDS)
        chan.connect(str(socket_path()))
        if _peer_uid(chan) != os.geteuid():
            raise PermissionError("grade serve of another user")
        yield chan
    finally:
        chan.close()


def _peer_uid(chan: socket.socket) -> int:
    creds = chan.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


# ---- the server (``grade serve``) ----------------------------------------------------


Broker = Callable[[dict[str, Any]], dict[str, Any]]  # an operation in, its answer out


class Servers(Protocol):
    """What ``grade serve`` holds: ``ProcessBackend`` (its fork servers, by environment
    and preloads)."""

    def served_server(
        self, env: dict[str, str], preload: tuple[str, ...]
    ) -> forkserver.ForkServer: ...

    def runs_under_way(self) -> bool: ...

    def close(self) -> None: ...


def serve_forever(
    backend: Servers,
    broker: Broker,
    *,
    idle_seconds: float,
    warm: list[dict[str, str]],
    ready: Callable[[Path], None],
    warmed: Callable[[int, float], None] = lambda count, seconds: None,
) -> None:
    """Hand out ``backend``'s fork servers, and answer ``broker``'s operations (a run in
    bwrap's or docker's warm sandboxes), until interrupted, or ``idle_seconds`` (0: never)
    after the last request ended and the last run forked from those servers (a command
    that attached to one runs its batch there without asking again) was followed.
    ``warm``: environments whose fork servers start at once (no preloads), in the
    background (a command may come sooner); ``warmed(count, seconds)`` once they run."""
    folder = serve_dir()
    _make_private(folder)
    path = socket_path()
    listener, inode = _listen(path)
    busy = _Busy()
    try:
        threading.Thread(target=_warm_up, args=(backend, warm, warmed), daemon=True).start()
        ready(path)
        while True:
            timeout = None if not idle_seconds else max(1.0, idle_seconds / 10)
            listener.settimeout(timeout)
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                if backend.runs_under_way():
                    busy.touch()
                elif busy.idle_for() >= idle_seconds:
                    return
                continue
            busy.enter()
            answer = threading.Thread(target=_answer, args=(backend, broker, conn, busy))
            answer.daemon = True
            answer.start()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == inode:  # not a later server's
                path.unlink()
        backend.close()


def _make_private(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError(
            f"cannot make {folder} for grade serve's socket: {exc.strerror or exc}",
            "point HARNESS_SERVE_DIR at a folder of yours (it is made if missing)",
        ) from None
    if not private(folder):
        raise UserError(
            f"{folder} is not a folder of yours that only you may enter",
            "remove it, or point HARNESS_SERVE_DIR at another folder",
        )


def _listen(path: Path) -> tuple[socket.socket, int]:
    """The listening socket at ``path`` (a stale one removed), and its inode."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(str(path))
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket: its server is gone
    else:
        raise UserError(
            f"a `grade serve` of this harness already answers at {path}",
            "your commands use that one; stop it first to start another",
        )
    finally:
        probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(str(path))
    except OSError as exc:
        listener.close()
        raise UserError(
            f"cannot listen at {path}: {exc.strerror or exc}",
            "point HARNESS_SERVE_DIR at a short folder of yours (a socket's path has at "
            "most 107 bytes)",
        ) from exc
    os.chmod(path, 0o600)
    listener.listen(16)
    return listener, os.stat(path).st_ino


class _Busy:
    """Requests under way, and since when none is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._since = time.monotonic()

    def enter(self) -> None:
        with self._lock:
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count -= 1
            self._since = time.monotonic()

    def touch(self) -> None:
        """Idle from now at the earliest (a run is under way)."""
        with self._lock:
            self._since = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._count else time.monotonic() - self._since


def _warm_up(
    backend: Servers, envs: list[dict[str, str]], warmed: Callable[[int, float], None]
) -> None:
    """Start the servers for ``envs`` at once; then ``warmed`` with how many run."""
    t0 = time.perf_counter()
    started: list[bool] = []

    def start(env: dict[str, str]) -> None:
        with contextlib.suppress(forkserver.ForkServerError):
            backend.served_server(env, ()).start()
            started.append(True)

    threads = [threading.Thread(target=start, args=(env,), daemon=True) for env in envs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    warmed(len(started), time.perf_counter() - t0)


def _answer(backend: Servers, broker: Broker, conn: socket.socket, busy: _Busy) -> None:
    """One command's request, its uid checked: a control socket of its own to a fork
    server, or a broker's operation answered on the stream socket it came with."""
    fds: list[int] = []
    try:
        with conn:
            conn.settimeout(REPLY_SECONDS)
            if _peer_uid(conn) != os.geteuid():
                return  # another user: nothing (the folder keeps them out already)
            data, fds, _flags, _addr = socket.recv_fds(conn, forkserver.MAX_MESSAGE, 1)
            request = json.loads(data or b"null")
            if "op" in request:
                if len(fds) == 1:
                    _broker_answer(broker, request, fds.pop())
                return
            env, preload = request["env"], request["preload"]
            if not (_strings(env.keys()) and _strings(env.values()) and _strings(preload)):
                return
            try:
                ctl = backend.served_server(env, tuple(preload)).attach()
            except forkserver.ForkServerError as exc:
                conn.sendall(json.dumps({"error": str(exc)}).encode())
                return
            with ctl:
                socket.send_fds(conn, [b"ok"], [ctl.fileno()])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # that command starts a server of its own
    finally:
        for fd in fds:
            os.close(fd)
        busy.leave()


def _broker_answer(broker: Broker, request: dict[str, Any], reply_fd: int) -> None:
    """The operation, its run killed if the command closes its end first (``watch``)."""
    with socket.socket(fileno=reply_fd) as reply:
        asked = ABANDONED.set(partial(_gone, reply))
        try:
            answer = broker(request)
        except Exception as exc:  # the command does it itself, and reports it if it fails
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            ABANDONED.reset(asked)
        reply.setblocking(True)
        with contextlib.suppress(OSError):  # the command is gone: nobody to tell
            reply.sendall(json.dumps(answer).encode())


def _gone(reply: socket.socket) -> bool:
    """Whether the command closed its end of ``reply`` (it writes nothing on it, so
    anything to read there is its end)."""
    try:
        return reply.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _strings(values: Any) -> bool:
    return all(isinstance(v, str) for v in values)
