"""A real ``grade serve`` in a folder of a test's own (``harness/sandbox/served.py``,
``harness/served_sandboxes.py``), and the runs of a backend through its warm sandboxes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.sandbox import Backend, RunJob, RunOutcome
from harness.served_sandboxes import ServedSandboxes
from harness.warm import WarmSandboxes


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def fork_servers_of(pid: int) -> list[int]:
    """The fork servers among ``pid``'s children."""
    found = []
    for child in children(pid):
        try:
            if b"forkserver.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


class ServeDaemon:
    """``grade serve`` with its socket in ``folder`` (made 0700), started at once; ``stop``
    (SIGTERM) gives what it printed, ``close`` also removes the folder."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        folder.chmod(0o700)
        self.env = {**os.environ, "HARNESS_SERVE_DIR": str(folder)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "serve", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()  # printed once it listens
        self.warm_line = ""
        self._served: dict[str, ServedSandboxes] = {}

    def wait_warm(self) -> str:
        """The line that says its runners are warm (read from its output)."""
        assert self.proc.stdout is not None
        while "warm in" not in self.warm_line:
            line = self.proc.stdout.readline()
            assert line, "grade serve ended before its runners were warm"
            self.warm_line = line
        return self.warm_line

    @property
    def servers(self) -> list[int]:
        """The pids of the fork servers it started."""
        return fork_servers_of(self.proc.pid)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """This process's commands find this daemon meanwhile."""
        before = os.environ.get("HARNESS_SERVE_DIR")
        os.environ["HARNESS_SERVE_DIR"] = str(self.folder)
        try:
            yield
        finally:
            if before is None:
                del os.environ["HARNESS_SERVE_DIR"]
            else:
                os.environ["HARNESS_SERVE_DIR"] = before

    def runs(self, backend: Backend) -> Callable[[RunJob], RunOutcome]:
        """``backend``'s runs (the submissions' own: its zygote) through this daemon's warm
        sandboxes, each checked to have been served (no fallback to the test's own)."""

        def run(job: RunJob) -> RunOutcome:
            with self.answering():
                served = self._served.get(backend.name)
                if served is None:
                    served = self._served[backend.name] = ServedSandboxes(backend, jobs=1)
                    assert served.answers(), "grade serve does not serve " + backend.name
                outcome = served.run(job)
            assert not served.fell_back, "the run was not served"
            return outcome

        return run

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return self.first_line + self.warm_line + out

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def spied_warm_sandboxes() -> Iterator[list[WarmSandboxes]]:
    """The batch's warm sandboxes of each grading meanwhile (served or the command's)."""
    from harness import executors, served_sandboxes

    made: list[WarmSandboxes] = []

    def spied(*args: Any) -> WarmSandboxes:
        made.append(served_sandboxes.warm_sandboxes(*args))
        return made[-1]

    before = executors.warm_sandboxes
    executors.warm_sandboxes = spied
    try:
        yield made
    finally:
        executors.warm_sandboxes = before


@contextmanager
def through_grade_serve(served: bool) -> Iterator[None]:
    """With ``served``: what runs meanwhile goes through a fresh ``grade serve``'s warm
    sandboxes (one batch, checked to have been served throughout), which is stopped, its
    sandboxes closed, before this returns. Without: nothing changes."""
    if not served:
        yield
        return
    daemon = ServeDaemon(Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp")))
    try:
        with daemon.answering(), spied_warm_sandboxes() as made:
            yield
        assert [type(w).__name__ for w in made] == ["ServedSandboxes"]
        assert not made[0].fell_back, "the daemon failed a run: the batch left it"  # type: ignore[attr-defined]
    finally:
        daemon.close()
