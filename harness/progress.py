"""The progress display of a batch: one line per team being graded, with its stage, and
an overall line with an estimate from the gradings already done.

The pipeline reports stages through one narrow callback, ``on_stage(task, team, stage)``
(``STAGES`` in order); the display only listens. It is shown on a terminal only.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from .console import STATUS_STYLE, cached, err_console, time_text
from .results import ResultDocument

STAGES = ("validate", "count", "export", "check", "predict", "score")


def eta_seconds(durations: list[float], remaining: int, jobs: int) -> float | None:
    """Time left: the mean wall time of the gradings done so far (stored ones excluded),
    times the gradings left, shared between ``jobs`` at once; None before the first."""
    if not durations:
        return None
    return sum(durations) / len(durations) * remaining / max(1, min(jobs, remaining or 1))


def eta_text(seconds: float | None, remaining: int) -> str:
    if remaining == 0:
        return "done"
    if seconds is None:
        return "ETA after the first grading"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours:d}:{minutes:02d}:{secs:02d}"


class Progress:
    """Per-team stages and an overall bar with an estimate, for batches on a terminal."""

    def __init__(
        self,
        *,
        total: int | None = None,
        enabled: bool = True,
        jobs: int = 1,
        since: datetime | None = None,
        console: Console | None = None,
    ) -> None:
        self.console = console or err_console
        self.enabled = enabled and self.console.is_terminal and (total or 0) > 0
        self.total = total or 0
        self.jobs = jobs
        self.since = since
        self.durations: list[float] = []
        self.done = 0
        self._bar: RichProgress | None = None
        self._overall: TaskID | None = None
        self._rows: dict[tuple[str, str], TaskID] = {}
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._overall = self._bar.add_task(
                self._overall_text(), total=self.total, info=eta_text(None, self.total)
            )
        return self

    def _overall_text(self) -> str:
        return f"grading {self.done}/{self.total}"

    def stage(self, task: str, team: str, stage: str) -> None:
        """The pipeline's ``on_stage``: ``team`` of ``task`` entered ``stage``."""
        if self._bar is None:
            return
        with self._lock:
            key = (task, team)
            if key not in self._rows:
                label = f"  {escape(team)}" + (f" [dim]({escape(task)})[/]" if task else "")
                self._rows[key] = self._bar.add_task(label, total=None, info=stage)
            else:
                self._bar.update(self._rows[key], info=stage)

    def advance(self, doc: ResultDocument) -> None:
        """The pipeline's ``on_done``: one team finished (graded, stored, or failed)."""
        with self._lock:
            self.done += 1
            if not cached(doc, self.since) and "total_s" in doc.timing:
                self.durations.append(float(doc.timing["total_s"]))
            if self._bar is None or self._overall is None:
                return
            row = self._rows.pop((doc.task, doc.team), None)
            if row is not None:
                self._bar.remove_task(row)
            remaining = self.total - self.done
            self._bar.update(
                self._overall,
                advance=1,
                description=self._overall_text(),
                info=eta_text(eta_seconds(self.durations, remaining, self.jobs), remaining),
            )
            style = STATUS_STYLE.get(doc.status, "")
            took = escape(time_text(doc, self.since))
            self._bar.console.print(
                f"  {escape(doc.team)}: [{style}]{doc.status}[/] ({took})",
                highlight=False,
                soft_wrap=True,
            )

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, e, tb)
