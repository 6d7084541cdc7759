"""``python -m harness.runner zygote LIMITS``: the submissions' own runs for a batch (phase
A: convert, export, rebuild) from one pre-imported interpreter, for bwrap and docker. The
host side is ``sandbox/zygote.py``; standard library and torch only.

The zygote is the sandbox's PID 1, so the kernel drops every signal the sandbox sends it,
and it does the supervisor's job (``supervisor.py``): it sets the sandbox's rlimits
(``LIMITS``, as the supervisor reads them), reaps every process and watches the number of
tasks. It imports torch, the ``torch.export`` stack and the runner once, and exports a
tiny model of the runner's own in memory (``phase_a.warm_up``: the first export's lazy
imports and caches, before any submission is in the sandbox), then serves one request at
a time, each submission's run in a fresh fork:

1. The host empties ``/output`` and ``/log``, fills ``/submission``, ``/inputs`` and
   ``/job`` with this run's files (read-only here), then replaces ``/ctl/go`` (``/ctl``
   is read-only here too: nothing in the sandbox can make or change a request). The go
   names the run by a random token, never by its number: a run cannot learn how many
   came before it in its sandbox.
2. The zygote forks a child which: starts a new session; reads /dev/null and writes
   ``/log/<token>`` on stdout and stderr; closes every other descriptor; takes the request's
   CPU-time limit; gets the sandbox's environment as it was before the imports, fresh
   seeds, and ``/tmp`` as its working folder; and runs the runner's ``run`` on the
   same folders, with the same report and exit codes, as a fresh sandbox's runner.
3. When the child has ended (or the sandbox reached its task cap), the zygote SIGKILLs
   every other process in the sandbox (``kill(-1)``) until none is left, empties ``/tmp``
   and ``/dev/shm``, removes the SysV IPC objects, and only then prints
   ``@zygote done SEQ STATUS OOM`` on its own stdout (the status as the supervisor
   gives a fresh run's). No child holds that descriptor, and it
   cannot be reopened through ``/proc``: the zygote is not dumpable.

The host fills the next request only after that line, so the runs of two submissions
never meet in the sandbox, and nothing one leaves behind is there when the next starts.

If one of the imports (or the warm-up) fails, the zygote prints ``@zygote unfit REASON``
instead of serving and exits: the host then runs each request in a fresh sandbox, whose
runner imports for itself (and reports the import's own error, not the one a
half-imported module gives later).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .contract import OPTIONAL_PRELOADS
from .emptying import empty_folder
from .forked import run_forked
from .supervisor import PR_SET_DUMPABLE, set_limits, supervise

CTL, LOG = Path("/ctl"), Path("/log")
GO = "go"  # /ctl/go: {"token": run's token, "cpu": seconds (optional)}
TOKEN = re.compile(r"[0-9a-f]{16,64}")
FOLDERS = {"job": "/job", "submission": "/submission", "inputs": "/inputs", "output": "/output"}
SCRATCH = (Path("/tmp"), Path("/dev/shm"))
WRITABLE = (Path("/output"), LOG)
DONE = "@zygote done"  # the host reads "@zygote done SEQ STATUS OOM" (sandbox/zygote.py)
DONE_LINE = re.compile(rb"@zygote done (\d+) (\d+) ([01])\n")
POLL_SECONDS = 0.002
CLEAN_SECONDS = 5.0
PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "torch.export._trace",
    "torch._export.serde.serialize",
    "harness.runner.load",
    "harness.runner.inventory",
    "harness.runner.phase_a",
    "harness.runner.rebuild",
)

# "@zygote unfit REASON", said instead of serving when a preload failed: the host runs
# each request in a fresh sandbox instead, whose runner imports for itself
UNFIT = "@zygote unfit"
UNFIT_EXIT = 70

Run = Callable[[argparse.Namespace], int]


def preload(names: tuple[str, ...], optional: tuple[str, ...] = ()) -> str | None:
    """Import ``names``, then ``optional`` (skipped where not installed), in order; None,
    or what the first that failed raised. A module whose import failed halfway may have
    registered things already (torch's artifact factories): imported again in a run it
    fails differently, so a zygote must not serve after that."""
    for name in (*names, *optional):
        try:
            __import__(name)
        except Exception as exc:
            if isinstance(exc, ModuleNotFoundError) and name in optional and exc.name == name:
                continue  # not installed here: a run that imports it fails as it would
            return _said(f"import {name}", exc)
    return None


def _said(what: str, exc: Exception) -> str:
    """What failed and what it raised, on one line."""
    return " ".join(f"{what}: {type(exc).__name__}: {exc}".split())[:400]


def warmed() -> str | None:
    """Phase A's warm-up (``phase_a.warm_up``); None, or what it raised: like a failed
    import, it may have left half-registered state, so the zygote must not serve."""
    from .phase_a import warm_up

    try:
        warm_up()
    except Exception as exc:
        return _said("phase A's warm-up", exc)
    return None


def optional_preloads(argv: list[str]) -> tuple[str, ...]:
    """The batch's optional preloads (the host's comma-separated list), only known names."""
    wanted = argv[0].split(",") if argv else []
    return tuple(name for name in OPTIONAL_PRELOADS if name in wanted)


def zygote(argv: list[str], run: Run) -> int:
    cap = set_limits(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # PID 1: no signal from a run reaches it
    env = dict(os.environ)  # the sandbox's environment, before any import adds to it
    with contextlib.suppress(Exception):  # nothing in the sandbox may ptrace it or its fds
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    t = time.perf_counter()
    failed = preload(PRELOAD, optional_preloads(argv[1:])) or warmed()
    if failed is not None:  # a half-done import would break that module in every run
        print(f"{UNFIT} {failed}", flush=True)
        return UNFIT_EXIT
    took = time.perf_counter() - t
    print(f"zygote: imports and warm-up done in {took:.2f} s (pid {os.getpid()})", flush=True)
    seq, token = 0, ""
    while True:
        seq += 1
        request, token = _await(CTL / GO, token)
        for folder in WRITABLE:  # the host read them; what it could not remove goes now
            with contextlib.suppress(OSError):
                empty_folder(folder)
        before = oom_kills()
        code = _serve(token, request, run, cap, env)
        if not clean():
            print("zygote: a process outlived the cleanup; ending the sandbox", flush=True)
            return 1
        oom = int(oom_kills() > before)
        print(f"{DONE} {seq} {code} {oom}", flush=True)


def _await(go: Path, last: str) -> tuple[dict[str, int], str]:
    """The host's next go (its limits and its run's token): the first whose token is not
    ``last``'s."""
    while True:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(go.read_text())
            token = str(loaded.pop("token"))
            if token != last and TOKEN.fullmatch(token):
                return {k: int(v) for k, v in loaded.items()}, token
        _reap()
        time.sleep(POLL_SECONDS)


def _serve(token: str, request: dict[str, int], run: Run, cap: int, env: dict[str, str]) -> int:
    """Fork the run and supervise it as the supervisor does a fresh run's runner: its
    status (``128 + N`` for signal N), or ``PROCESS_LIMIT_EXIT`` at the task cap."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        _child(token, request, run, env)  # never returns
    return supervise(child, cap)


def _child(token: str, request: dict[str, int], run: Run, env: dict[str, str]) -> NoReturn:
    try:
        log = os.open(LOG / token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def limits() -> None:  # no descriptor of the zygote's stays open in the run
            os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            if "cpu" in request:
                resource.setrlimit(resource.RLIMIT_CPU, (request["cpu"], request["cpu"]))

        args = argparse.Namespace(**{k: Path(v) for k, v in FOLDERS.items()})
        argv = ["harness.runner", *(a for k, v in FOLDERS.items() for a in (f"--{k}", v))]
        run_forked(log, cwd="/tmp", env=env, argv=argv, main=lambda: run(args), before=limits)
    finally:
        os._exit(1)  # only when the run could not start


def clean() -> bool:
    """No other process left, empty scratch folders, no SysV IPC objects. False when a
    process survived ``CLEAN_SECONDS`` of SIGKILLs (the host then ends the sandbox)."""
    deadline = time.perf_counter() + CLEAN_SECONDS
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # every process but PID 1 (this one): race-free
        _reap()
        if not _others():
            break
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.005)
    for folder in SCRATCH:
        with contextlib.suppress(OSError):
            empty_folder(folder)
    _remove_ipc()
    return True


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


def _others() -> list[int]:
    """Processes of this PID namespace other than this one that have not ended."""
    alive = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    alive.append(int(name))
    return alive


def _remove_ipc() -> None:
    """SysV shared memory, semaphores and message queues a run made (IPC_RMID)."""
    libc = ctypes.CDLL(None, use_errno=True)
    removers = {
        "shm": lambda i: libc.shmctl(i, 0, None),
        "sem": lambda i: libc.semctl(i, 0, 0),
        "msg": lambda i: libc.msgctl(i, 0, None),
    }
    for kind, remove in removers.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
            for row in rows:
                remove(int(row.split()[1]))


def oom_kills() -> int:
    """The memory cgroup's OOM kills so far (docker's; 0 where none is visible: bwrap)."""
    for path, key in (
        ("/sys/fs/cgroup/memory.events", "oom_kill"),
        ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
    ):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    return 0
