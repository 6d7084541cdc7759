"""The ``grade`` command: a thin shell over the keyword-only API in ``api``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import cli_publish, cli_serve, cli_setup
from .cli_options import (
    DEFAULTS,
    Decorator,
    data_root_option,
    debug_option,
    friendly,
    results_option,
    sandbox_option,
)
from .errors import UserError
from .options import GradeOptions


class DefaultGroup(click.Group):
    """``grade PATH...`` means ``grade run PATH...``; named verbs stay verbs. A first word
    that is neither a verb nor an existing path is an unknown verb, with a suggestion."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else ""
        if args and first not in self.commands and first not in GROUP_OPTIONS:
            if not first.startswith("-") and _looks_like_verb(first):
                _unknown_verb(first, sorted(self.commands))
            args = ["run", *args]  # `grade --task T submissions/` is `grade run --task T ...`
        return super().parse_args(ctx, args)


GROUP_OPTIONS = ("--help", "-h", "--version")


def _looks_like_verb(word: str) -> bool:
    """A bare word (no path separator, no dot) naming no file or folder here."""
    return "/" not in word and "." not in word and not Path(word).exists()


def _unknown_verb(word: str, verbs: list[str]) -> None:
    """Exit 2 with one sentence: the nearest verb, or the list of verbs."""
    import difflib

    from .console import error

    close = difflib.get_close_matches(word, [v for v in verbs if v != "run"], n=1, cutoff=0.6)
    hint = (
        f"did you mean `grade {close[0]}`?"
        if close
        else f"the verbs are {', '.join(verbs)}; `grade PATH...` grades submission folders"
    )
    error(UserError(f"`{word}` is neither a grade verb nor a file or folder here", hint))
    sys.exit(2)


def grading_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Decorator] = [
        click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path)),
        data_root_option(
            help="Folder with the datasets' files (hidden test sets in their layouts)."
        ),
        sandbox_option(default=DEFAULTS.sandbox),
        results_option(folder=False),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print a JSON array of the result documents on stdout, nothing else.",
        ),
        click.option(
            "--force", is_flag=True, help="Re-grade even when an identical grading is stored."
        ),
        click.option(
            "--jobs",
            "-j",
            type=click.IntRange(0),
            default=DEFAULTS.jobs,
            show_default=True,
            help="Submissions graded at once; 0: one per CPU core this process may use "
            "(HARNESS_CPUS caps them; the cores are split between the gradings).",
        ),
        click.option("--no-reports", is_flag=True, help="Skip the per-submission HTML/Markdown."),
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default=DEFAULTS.executor,
            show_default=True,
            help="Where gradings run: this machine, or a Ray cluster (pip install 'harness[ray]').",
        ),
        click.option(
            "--address",
            default=DEFAULTS.address,
            help="With --executor ray: the cluster's head, HOST:6379 [default: a local instance].",
        ),
        click.option(
            "--task",
            default=DEFAULTS.task,
            help="Grade every submission on this task; a manifest naming another is invalid.",
        ),
        click.option(
            "--roster",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            default=DEFAULTS.roster,
            help="CSV folder,team,members: each folder's team [default: the folder's name].",
        ),
        debug_option("Show tracebacks."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def cli() -> None:
    """Grade students' PyTorch models: `grade PATH...` grades submission folders."""


def _grade(mode: str, paths: tuple[Path, ...], **kw: Any) -> None:
    from datetime import UTC, datetime

    from . import api
    from .console import print_results
    from .progress import Progress

    options = GradeOptions(
        sandbox=kw["sandbox"],
        data_root=kw["data_root"],
        results_dir=kw["results_dir"],
        force=kw["force"],
        jobs=kw["jobs"],
        reports=not kw["no_reports"],
        executor=kw["executor"],
        address=kw["address"],
        task=kw["task"],
        roster=kw["roster"],
    )
    run = api.grade if mode == "grade" else api.check
    from .submission import find_submissions

    total = len(find_submissions(list(paths)))
    since = datetime.now(UTC)
    from .executors import jobs_for

    jobs = jobs_for(options, total)
    with Progress(total=total, enabled=not kw["as_json"], jobs=jobs, since=since) as shown:
        docs = run(list(paths), options=options, on_done=shown.advance, on_stage=shown.stage)
    if kw["as_json"]:
        print(json.dumps([d.model_dump(mode="json") for d in docs], indent=2))
    print_results(docs, mode=mode, to_stderr=kw["as_json"], since=since)
    sys.exit(0 if docs and all(d.status == "graded" for d in docs) else 1)


@cli.command("run")
@grading_options
@friendly
def run_cmd(paths: tuple[Path, ...], **kw: Any) -> None:
    """Grade submission folders on their tasks' hidden test splits."""
    _grade("grade", paths, **kw)


@cli.command("check")
@grading_options
@friendly
def check_cmd(paths: tuple[Path, ...], **kw: Any) -> None:
    """For students: the same pipeline on the task's public validation split."""
    _grade("check", paths, **kw)


@cli.command("history")
@click.argument("team")
@click.option("--task", default=None, help="Only this task's gradings.")
@results_option(folder=False, show_default=False)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON array.")
@debug_option()
@friendly
def history_cmd(team: str, task: str | None, results_dir: Path, as_json: bool, debug: bool) -> None:
    """List every grading run of TEAM recorded in the results store, oldest first.

    Each row shows the hidden split's fingerprint (never the seed; "public seed" when it was
    generated from the public fallback seed) and the sandbox it ran in.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .store import STORE_NAME, ResultsStore

    if not (results_dir / STORE_NAME).is_file():
        raise UserError(f"{results_dir}: no results store here", "give the folder with --results")
    rows = [r.summary() for r in ResultsStore(results_dir).history(team, task)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    columns = (
        "graded_at",
        "task",
        "mode",
        "status",
        "metrics",
        "split",
        "sandbox",
        "submission",
        "document",
    )
    table = Table(*columns, title=escape(f"{team}: {len(rows)} grading(s)"))
    for row in rows:
        table.add_row(*(escape(str(row[c])) for c in columns))
    Console(width=max(Console().width, 160)).print(table)


for command in (*cli_publish.COMMANDS, *cli_setup.COMMANDS, *cli_serve.COMMANDS):
    cli.add_command(command)


class _Warnings(logging.Handler):
    """What the harness logs for the operator (a warm sandbox that could not import its
    stack), printed like the CLI's other warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        from .console import warn

        warn(record.getMessage())


def print_harness_warnings() -> None:
    """Route the ``harness`` loggers' warnings to the CLI's stderr, as ``warning: ...``."""
    harness_log = logging.getLogger("harness")
    harness_log.addHandler(_Warnings(logging.WARNING))
    harness_log.propagate = False


def main() -> None:
    print_harness_warnings()
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
