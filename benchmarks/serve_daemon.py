"""A ``grade serve`` for a benchmark's "served" rows: started before the timed commands,
waited for until its runners are warm (its start is not a command's time, as a machine's
boot is not), stopped after; and the CPU time of its process tree, where the served
runs' time lands (they are its descendants, not the timed command's)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

WARM_SECONDS = 300.0  # the daemon's imports on a loaded machine


@contextlib.contextmanager
def grade_serve(folder: Path, env: dict[str, str], cwd: Path) -> Iterator[Daemon]:
    """``grade serve`` with its socket in ``folder`` (made private), once warm."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    env = {**env, "HARNESS_SERVE_DIR": str(folder)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "serve", "--idle-minutes", "0"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:  # "serving ... at SOCKET", then "N of M runners ... warm"
            lines.append(line)
            if "warm in" in line:
                break
        else:
            raise SystemExit(f"grade serve ended before it was warm:\n{''.join(lines)}")
        print(f"grade serve: {lines[-1].strip()}", file=sys.stderr)
        yield Daemon(proc.pid, env)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


class Daemon:
    def __init__(self, pid: int, env: dict[str, str]) -> None:
        self.pid, self.env = pid, env

    def cpu_s(self) -> float:
        """User + system seconds of the daemon's tree so far, the children each process
        reaped included (a run's time reaches its fork server when its supervisor ends)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in process_tree(self.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / tick


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name)
                )
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
