"""The runner's report is written by the runner's own process only.

A submission that forks (a fork bomb's copies, a child that raises) runs copies of the
runner: each would catch its own error and write ``report.json`` through the same
temporary file, leaving the host a torn report ("exited before writing its report") or
a child's error in place of the run's own outcome."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from harness.runner.report import Report


def _read(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / "report.json").read_text())
    return data


def _forked(body: Callable[[], object]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def test_a_forked_child_that_fails_leaves_the_runners_report_alone(tmp_path: Path) -> None:
    report = Report(tmp_path, "export")
    report.start("export")
    pid = _forked(lambda: report.fail("export", RuntimeError("the child's own error")))
    os.waitpid(pid, 0)
    seen = _read(tmp_path)
    assert seen["stage"] == "export" and seen["error"] is None  # as the runner left it
    report.fail("export", BlockingIOError(11, "Resource temporarily unavailable"))
    error = _read(tmp_path)["error"]
    assert isinstance(error, dict) and error["type"] == "BlockingIOError"


def test_many_copies_failing_at_once_never_tear_it(tmp_path: Path) -> None:
    report = Report(tmp_path, "export")
    report.start("export")

    def fail_often() -> None:
        for _ in range(50):
            report.fail("export", BlockingIOError(11, "Resource temporarily unavailable"))

    live = {_forked(fail_often) for _ in range(32)}
    reads = 0
    while live:
        assert _read(tmp_path)["error"] is None  # whole, and the runner's own, throughout
        reads += 1
        live = {p for p in live if os.waitpid(p, os.WNOHANG) == (0, 0)}
    assert reads > 0 and _read(tmp_path)["error"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
