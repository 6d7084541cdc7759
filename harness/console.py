"""What the CLI prints: the result table, progress, and errors as one sentence."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from .errors import UserError
from .metrics import METRICS
from .results import ResultDocument

err_console = Console(stderr=True)
STATUS_STYLE = {
    "graded": "green",
    "invalid": "yellow",
    "over_limit": "magenta",
    "failed": "red",
    "timeout": "red",
    "killed": "red",
}


def error(exc: UserError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


class Progress:
    """A progress bar with a time estimate, shown for batches on a terminal."""

    def __init__(self, *, total: int | None = None, enabled: bool = True) -> None:
        self.enabled = enabled and err_console.is_terminal and (total or 0) > 1
        self.total = total
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = RichProgress(
                TextColumn("grading"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("grading", total=self.total)
        return self

    def advance(self, doc: ResultDocument) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)
            self._bar.console.print(f"  {doc.team}: {doc.status}", highlight=False, soft_wrap=True)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(et, e, tb)


def _metric_text(doc: ResultDocument, name: str, with_interval: bool) -> str:
    if name not in doc.metrics:
        return "-"
    m = METRICS.get(name)
    text = m.fmt.format(doc.metrics[name])
    if with_interval and name in doc.intervals:
        low, high = doc.intervals[name]
        text += f" [dim]({m.fmt.format(low)}–{m.fmt.format(high)})[/]"
    return text


def _metric_names(docs: list[ResultDocument]) -> list[str]:
    names: list[str] = []
    for doc in docs:
        for name in doc.metrics:
            if name not in names:
                names.append(name)
    primary = [n for d in docs for n in d.intervals][:1]
    return primary + [n for n in names if n not in primary]


def print_results(docs: list[ResultDocument], *, mode: str, to_stderr: bool = False) -> None:
    console = err_console if to_stderr else Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)
    split = "hidden test split" if mode == "grade" else "public validation split (check)"
    for task in sorted({d.task for d in docs}):
        group = [d for d in docs if d.task == task]
        console.print(_table(group, f"{task}: {split}"))
    for doc in docs:
        _print_notes(console, doc, mode)


def _table(docs: list[ResultDocument], title: str) -> Table:
    names = _metric_names(docs)
    table = Table(title=title, title_justify="left")
    table.add_column("team", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for i, name in enumerate(names):
        label = METRICS.get(name).label + (" (95% CI)" if i == 0 else "")
        table.add_column(label, justify="right", no_wrap=i == 0)
    table.add_column("parameters / limit", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for doc in docs:
        limit = f"{doc.params.limit:,}" if doc.params.limit else "none"
        counted = f"{doc.params.counted:,}" if doc.params.counted is not None else "-"
        style = STATUS_STYLE.get(doc.status, "")
        table.add_row(
            doc.team,
            f"[{style}]{doc.status}[/]",
            *(_metric_text(doc, n, i == 0) for i, n in enumerate(names)),
            f"{counted} / {limit}",
            f"{doc.timing.get('total_s', 0):.1f} s",
        )
    return table


def _print_notes(console: Console, doc: ResultDocument, mode: str) -> None:
    if doc.status != "graded":
        console.print(
            f"[bold]{doc.team}[/]: [{STATUS_STYLE[doc.status]}]{doc.status}[/] {doc.message}",
            highlight=False,
        )
        for v in doc.violations[1:]:
            console.print(f"  - [{v.rule}] {v.message}", highlight=False, soft_wrap=True)
        if mode == "check" and doc.student_output.strip():
            console.print("[dim]your code's output:[/]")
            console.print(doc.student_output[-3000:], markup=False, highlight=False, soft_wrap=True)
    for flag in doc.flags:
        if flag.audience == "student" or mode == "grade":
            console.print(
                f"[yellow]note[/] {doc.team}: {flag.message}", highlight=False, soft_wrap=True
            )
