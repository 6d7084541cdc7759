"""``--sandbox process``: the runner as a plain child process. NO isolation.

Allowed only when asked for explicitly, or for ``grade check`` of one's own submission;
results record ``isolated: false``. It still keeps the pipeline's other promises: labels
are never in its inputs, its environment is scrubbed, and the wall clock is enforced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time

from .base import RunJob, RunOutcome
from .common import SAFE_ENV, CappedLog, folder_size, host_paths, runner_args, runner_root


class ProcessBackend:
    name = "process"
    isolated = False

    def unavailable_reason(self) -> str | None:
        return None

    def describe(self) -> dict[str, str]:
        return {"python": sys.executable}

    def run(self, job: RunJob) -> RunOutcome:
        paths = host_paths(job)
        env = {
            **SAFE_ENV,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OMP_NUM_THREADS": str(max(1, int(job.policy.cpus))),
        }
        with tempfile.TemporaryDirectory(prefix="harness-proc-") as home:
            env["HOME"] = home
            env["TMPDIR"] = home
            # -I (isolated mode) ignores PYTHONPATH: the boot line puts the runner root first
            argv = [sys.executable, "-I", "-c", _BOOT, str(runner_root()), *runner_args(paths)]
            return self._run(job, argv, env, home)

    def _run(self, job: RunJob, argv: list[str], env: dict[str, str], cwd: str) -> RunOutcome:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        log = CappedLog(proc.stdout, job.policy.log_bytes)
        status, reason = "ok", ""
        try:
            proc.wait(timeout=job.policy.wall_seconds)
        except subprocess.TimeoutExpired:
            status, reason = "timeout", f"wall-clock limit of {job.policy.wall_seconds:g} s"
        _kill_group(proc.pid)
        proc.wait()
        wall = time.perf_counter() - t0
        if status == "ok" and folder_size(job.output_dir) > job.policy.output_bytes:
            status, reason = "killed", f"output limit of {job.policy.output_bytes // 2**20} MiB"
        if status == "ok" and proc.returncode != 0:
            status = "error"
        return RunOutcome(
            status=status,  # type: ignore[arg-type]
            exit_code=proc.returncode,
            wall_seconds=wall,
            log=log.text(),
            output_dir=job.output_dir,
            reason=reason,
            backend=self.name,
        )


_BOOT = (
    "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
    "sys.argv[0] = 'harness.runner'; runpy.run_module('harness.runner', run_name='__main__')"
)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
