"""The runner's report: rewritten atomically after every stage, so a run that dies
midway still tells the host which stage it reached."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from . import RUNNER_VERSION

MAX_TEXT = 4000
MAX_FRAMES = 8


def _relative(filename: str, root: Path | None) -> str | None:
    """``filename`` relative to the submission folder, or None when it lies elsewhere."""
    if root is None or not filename:
        return None
    try:
        rel = Path(os.path.realpath(filename)).relative_to(os.path.realpath(root))
    except ValueError:
        return None
    return rel.as_posix()


def student_frames(exc: BaseException, root: Path | None) -> list[dict[str, Any]]:
    """The frames of the submission's own files (innermost last), from the raised error,
    else from the first error in its chain that has some; harness and library frames out."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = [
            {"file": rel, "line": f.lineno or 0, "function": f.name, "code": (f.line or "")[:200]}
            for f in traceback.extract_tb(current.__traceback__)
            if (rel := _relative(f.filename, root))
        ]
        if frames:
            return frames[-MAX_FRAMES:]
        current = current.__cause__ or current.__context__
    return []


class Report:
    def __init__(self, output: Path, phase: str, submission: Path | None = None) -> None:
        self.path = output / "report.json"
        self.submission = submission
        self.data: dict[str, Any] = {
            "runner_version": RUNNER_VERSION,
            "phase": phase,
            "stage": "start",
            "completed": [],
            "ok": False,
            "error": None,
            "timings": {},
        }
        self._t0 = time.perf_counter()
        self._pid = os.getpid()
        self.flush()

    def start(self, stage: str) -> float:
        self.data["stage"] = stage
        self.flush()
        return time.perf_counter()

    def done(self, stage: str, started: float) -> None:
        self.data["completed"].append(stage)
        self.data["timings"][f"{stage}_s"] = round(time.perf_counter() - started, 6)
        self.flush()

    def fail(self, stage: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.data["ok"] = False
        self.data["error"] = {
            "stage": stage,
            "type": type(exc).__name__,
            "message": str(exc)[:MAX_TEXT],
            "traceback": text[-MAX_TEXT:],
            "frames": student_frames(exc, self.submission),
        }
        self.flush()

    def finish(self) -> None:
        self.data["ok"] = True
        self.data["stage"] = "done"
        self.data["timings"]["total_s"] = round(time.perf_counter() - self._t0, 6)
        self.flush()

    def flush(self) -> None:
        """Only the runner's own process writes: a copy of it that the submission forked
        (a fork bomb's thousands, a child that raises) would otherwise write the same
        file at once, and leave the host a torn report or the child's error."""
        if os.getpid() != self._pid:
            return
        tmp = self.path.with_name(".report.json.tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        os.replace(tmp, self.path)
