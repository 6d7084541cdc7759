"""What the CLI prints: the result table, progress, and errors as one sentence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import UserError
from .metrics import METRICS
from .results import ResultDocument
from .student_error import clean, render

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
    """A UserError as one sentence and a hint; the text is never read as console markup."""
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def say(text: str, console: Console | None = None) -> None:
    """Plain text on stderr (or ``console``): brackets in it stay brackets."""
    (console or err_console).print(text, markup=False, highlight=False, soft_wrap=True)


def cached(doc: ResultDocument, since: datetime | None) -> bool:
    """Whether ``doc`` was graded before this batch started (a stored grading reused)."""
    if since is None:
        return False
    try:
        return datetime.fromisoformat(doc.graded_at) < since.replace(microsecond=0)
    except ValueError:
        return False


def when(doc: ResultDocument) -> str:
    """The grading's time, minute precision, in the document's own zone (UTC)."""
    try:
        return datetime.fromisoformat(doc.graded_at).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return doc.graded_at


def time_text(doc: ResultDocument, since: datetime | None) -> str:
    took = f"{doc.timing.get('total_s', 0):.1f} s"
    return f"cached ({took} on {when(doc)})" if cached(doc, since) else took


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


def print_results(
    docs: list[ResultDocument],
    *,
    mode: str,
    to_stderr: bool = False,
    since: datetime | None = None,
    console: Console | None = None,
) -> None:
    """The result table per task, then each team's notes; a note that several teams share
    (the public-fallback-seed one, say) is printed once for the batch. ``since``: when the
    batch started, so stored gradings show as cached with their original time."""
    console = console or (err_console if to_stderr else Console())
    if not console.is_terminal:
        console.width = max(console.width, 140)
    split = "hidden test split" if mode == "grade" else "public validation split (check)"
    for task in sorted({d.task for d in docs}):
        group = [d for d in docs if d.task == task]
        console.print(_table(group, f"{task}: {split}", since))
    shared = batch_notes(docs, mode)
    for doc in docs:
        _print_notes(console, doc, mode, skip=set(shared))
    for (_code, message), teams in shared.items():
        who = f"all {len(teams)} teams" if len(teams) == len(docs) else f"{len(teams)} teams"
        console.print(
            f"[yellow]note[/] ({who}): {escape(message)}", highlight=False, soft_wrap=True
        )


def _shown(flag_audience: str, mode: str) -> bool:
    return flag_audience == "student" or mode == "grade"


def batch_notes(docs: list[ResultDocument], mode: str) -> dict[tuple[str, str], list[str]]:
    """Notes (code and text) that more than one team of the batch carries, with the teams."""
    teams: dict[tuple[str, str], list[str]] = defaultdict(list)
    for doc in docs:
        for flag in doc.flags:
            if _shown(flag.audience, mode):
                teams[(flag.code, flag.message)].append(doc.team)
    return {key: names for key, names in teams.items() if len(names) > 1}


def _table(docs: list[ResultDocument], title: str, since: datetime | None = None) -> Table:
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
            escape(doc.team),
            f"[{style}]{doc.status}[/]",
            *(_metric_text(doc, n, i == 0) for i, n in enumerate(names)),
            f"{counted} / {limit}",
            escape(time_text(doc, since)),
        )
    return table


def _print_notes(
    console: Console, doc: ResultDocument, mode: str, skip: Collection[tuple[str, str]] = ()
) -> None:
    if doc.status != "graded":
        console.print(
            f"[bold]{escape(doc.team)}[/]: [{STATUS_STYLE[doc.status]}]{doc.status}[/] "
            f"{escape(doc.message)}",
            highlight=False,
            soft_wrap=True,
        )
        for v in doc.violations[1:]:
            say(f"  - [{v.rule}] {v.message}", console)
        if doc.error is not None:  # the submission's own error: sanitized, capped
            say("\n".join(f"  {line}" for line in render(doc.error).split("\n")), console)
        elif mode == "check" and doc.student_output.strip():  # a timeout or a kill
            log = doc.student_output.rpartition("--- output ---\n")[2]
            if log.strip():
                say("your code's output:\n" + clean(log, 3000, 40), console)
    for flag in doc.flags:
        if _shown(flag.audience, mode) and (flag.code, flag.message) not in skip:
            console.print(
                f"[yellow]note[/] {escape(doc.team)}: {escape(flag.message)}",
                highlight=False,
                soft_wrap=True,
            )
