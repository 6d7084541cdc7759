"""The sandbox's first process (PID 1 of its PID namespace), for the bwrap and docker
backends: ``python3 -I -S supervisor.py LIMITS RUNNER_ARGV...``. Standard library only.

It sets the resource limits (``LIMITS``: ``name=value`` pairs, comma-separated, each an
``RLIMIT_<NAME>``; ``tasks=N`` is the process watch below), starts the runner as its
child, reaps every process, and exits with the runner's status (``128 + N`` when signal
N killed it). Nothing inside can kill it: the kernel drops a namespace's own signals to
its PID 1. When it exits, the kernel kills every process left in the namespace.

It also watches the number of tasks (processes and threads) in the namespace, 20 times a
second: the kernel only makes ``fork`` fail at the process limit (a fork bomb that
ignores the failures would run on), so reaching the limit ends the run with
``PROCESS_LIMIT_EXIT``. A runner status equal to it is reported as 1, so it cannot be
forged by exiting with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import time

PROCESS_LIMIT_EXIT = 250
PR_SET_DUMPABLE = 4
WATCH_SECONDS = 0.05


def set_limits(spec: str) -> int:
    """Apply the rlimits in ``spec``; return the task cap (0: none)."""
    cap = 0
    for item in filter(None, spec.split(",")):
        name, value = item.split("=")
        if name == "tasks":
            cap = int(value)
        else:
            limit = getattr(resource, "RLIMIT_" + name.upper())
            resource.setrlimit(limit, (int(value), int(value)))
    return cap


def start(argv: list[str]) -> int:
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"sandbox: cannot start {argv[0]}: {exc}\n".encode())
        os._exit(127)
    with contextlib.suppress(Exception):  # the sandbox cannot ptrace the supervisor
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return child


def tasks() -> int:
    """Processes and threads in this PID namespace."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                n += len(os.listdir("/proc/" + pid + "/task"))
    return n


def supervise(child: int, cap: int) -> int:
    """Reap until the runner ends (its status) or the task cap is reached."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            return 1 if code == PROCESS_LIMIT_EXIT else code
        if pid:
            continue
        if cap and tasks() >= cap - 1:
            return PROCESS_LIMIT_EXIT
        time.sleep(WATCH_SECONDS)


def main(argv: list[str]) -> None:
    spec, runner = argv[0], argv[1:]
    cap = set_limits(spec)
    child = start(runner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # PID 1: no signal from the run reaches it
    os._exit(supervise(child, cap))


if __name__ == "__main__":
    main(sys.argv[1:])
