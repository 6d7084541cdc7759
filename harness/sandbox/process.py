"""``--sandbox process``: the runner as a plain child process. NO isolation.

Allowed only when asked for explicitly, or for ``grade check`` of one's own submission;
results record ``isolated: false``. It still keeps the pipeline's other promises: labels
are never in its inputs, its environment is scrubbed, and the wall clock is enforced.

Runs are forked from a pre-imported runner (``forkserver``), one per environment for the
whole grading process, shared by every backend object: ``import torch`` is paid once per
process instead of once per run, and once, not once per call, where one process grades
again and again (the API in a notebook, a test session). When the
fork server cannot start, a run falls back to a fresh ``python`` process; either way the
policy (own session, scrubbed environment, temporary HOME and cwd, capped log, wall clock
killed from here) and the ``RunOutcome`` are the same. On a GPU, phase B of a batch goes
to one warm predictor (``runner serve``) instead: one CUDA context for the batch.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from ..devices import device_env
from .base import Predictor, RunJob, Runner, RunOutcome, SandboxPolicy
from .confine import CappedLog, folder_size, kill_group
from .forkserver import Finished, ForkServer, ForkServerError
from .layout import SAFE_ENV, host_paths, runner_args, runner_root, thread_env
from .predictor import Heard, PerRun, ProcessServer, Server, SpoolPredictor
from .served import attach as served_attach


class ProcessBackend:
    name = "process"
    isolated = False

    def __init__(self, *, fork: bool = True) -> None:
        """``fork=False`` starts a fresh interpreter per run (slower; for comparisons)."""
        self.fork = fork

    def unavailable_reason(self) -> str | None:
        return None

    def unavailable_hint(self) -> str:
        return ""

    def describe(self) -> dict[str, str]:
        return {"python": sys.executable}

    def predictor(self, policy: SandboxPolicy) -> Predictor:
        """On a CPU, runs fork from the pre-imported server already: a predictor per run is
        as warm. On a GPU, each such run would start a CUDA context of its own (about half
        a second): the batch gets one warm predictor and one context, as bwrap's does."""
        if policy.gpu:
            return SpoolPredictor(self.name, policy, self._serve, None)
        return PerRun(self)

    def runner(self, policy: SandboxPolicy, preload: tuple[str, ...] = ()) -> Runner:
        """Runs fork from the pre-imported server already: a runner per run is as warm
        (forked from a server that also imported ``preload``)."""
        return PerRun(self, functools.partial(self._run, preload=preload))

    def run(self, job: RunJob) -> RunOutcome:
        return self._run(job, ())

    def _run(self, job: RunJob, preload: tuple[str, ...]) -> RunOutcome:
        paths = host_paths(job)
        env = server_env(job.policy.cpus)
        with tempfile.TemporaryDirectory(prefix="harness-proc-") as home:
            finished = self._start(job, runner_args(paths), env, home, preload)
        return self._outcome(job, finished)

    def _serve(self, policy: SandboxPolicy, spool: Path, heard: Heard) -> Server:
        """Start ``harness.runner serve SPOOL`` as a plain process (this backend isolates
        nothing): the scrubbed environment of a run, its own home folder."""
        stack = ExitStack()
        home = tempfile.mkdtemp(prefix="harness-proc-")
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        env = {**server_env(policy.cpus), "HOME": home, "TMPDIR": home, **device_env(policy.gpu)}
        argv = [sys.executable, "-I", "-c", _BOOT, str(runner_root()), "serve", str(spool)]
        try:
            proc = _popen(argv, env, home)
        except BaseException:
            stack.close()
            raise
        return ProcessServer(proc, policy, stack, heard)

    def close(self) -> None:
        """Stop this process's fork servers now (a later run starts one again; they also
        stop when the process exits)."""
        _close_all()

    def _start(
        self,
        job: RunJob,
        args: list[str],
        env: dict[str, str],
        home: str,
        preload: tuple[str, ...],
    ) -> Finished:
        run_env = {**env, "HOME": home, "TMPDIR": home, **device_env(job.policy.gpu)}
        wall, cap = job.policy.wall_seconds, job.policy.log_bytes
        if self.fork:
            try:
                return self._server(env, preload).run(
                    args, env=run_env, cwd=home, wall_seconds=wall, log_bytes=cap
                )
            except ForkServerError:
                pass  # a fresh interpreter gives the same outcome, only later
        # -I (isolated mode) ignores PYTHONPATH: the boot line puts the runner root first
        argv = [sys.executable, "-I", "-c", _BOOT, str(runner_root()), *args]
        return _spawn(argv, run_env, home, wall, cap)

    def _server(self, env: dict[str, str], preload: tuple[str, ...] = ()) -> ForkServer:
        """This process's server for ``env`` that has imported ``preload`` (a server
        that imported more serves as well: a batch's predictions fork from the server
        of its own runs), else a new one; it runs on ``grade serve``'s when one answers."""
        key = tuple(sorted(env.items()))
        with _SERVERS_LOCK:
            for (served, loaded), server in _SERVERS.items():
                if served == key and set(preload) <= set(loaded):
                    return server
            attach = functools.partial(served_attach, env, preload)
            server = _SERVERS[key, preload] = ForkServer(runner_root(), env, preload, attach=attach)
            return server

    def served_server(self, env: dict[str, str], preload: tuple[str, ...]) -> ForkServer:
        """For ``grade serve``: the server it hands out for ``env`` and ``preload`` (it
        starts it itself: ``start`` and ``attach`` never attach to another)."""
        return self._server(env, preload)

    def runs_under_way(self) -> bool:
        """For ``grade serve``: whether a run forked from one of its servers (by a command
        attached to it) is under way."""
        with _SERVERS_LOCK:
            servers = list(_SERVERS.values())
        return any(server.runs_under_way for server in servers)

    def _outcome(self, job: RunJob, finished: Finished) -> RunOutcome:
        status, reason = "ok", ""
        if finished.timed_out:
            status, reason = "timeout", f"wall-clock limit of {job.policy.wall_seconds:g} s"
        if status == "ok" and folder_size(job.output_dir) > job.policy.output_bytes:
            status, reason = "killed", f"output limit of {job.policy.output_bytes // 2**20} MiB"
        if status == "ok" and finished.exit_code != 0:
            status = "error"
        return RunOutcome(
            status=status,  # type: ignore[arg-type]
            exit_code=finished.exit_code,
            wall_seconds=finished.wall_seconds,
            log=finished.log,
            output_dir=job.output_dir,
            reason=reason,
            backend=self.name,
        )


def server_env(cpus: float) -> dict[str, str]:
    """A run's environment: the fixed list, the host's PATH, the thread counts."""
    return {**SAFE_ENV, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **thread_env(cpus)}


def _popen(argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    """A runner process in its own session, stdin closed, stdout and stderr one pipe."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _spawn(argv: list[str], env: dict[str, str], cwd: str, wall: float, cap: int) -> Finished:
    t0 = time.perf_counter()
    proc = _popen(argv, env, cwd)
    assert proc.stdout is not None
    log = CappedLog(proc.stdout, cap)
    timed_out = False
    try:
        proc.wait(timeout=wall)
    except subprocess.TimeoutExpired:
        timed_out = True
    kill_group(proc.pid)
    proc.wait()
    return Finished(proc.returncode, timed_out, time.perf_counter() - t0, log.text())


# this process's fork servers, by environment and optional preloads (the runner's code
# folder is one per process)
_SERVERS: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def _close_all() -> None:
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.close()


atexit.register(_close_all)


_BOOT = (
    "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
    "sys.argv[0] = 'harness.runner'; runpy.run_module('harness.runner', run_name='__main__')"
)
