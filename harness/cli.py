"""The ``grade`` command: a thin shell over the keyword-only API in ``pipeline``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from .errors import UserError
from .pipeline import GradeOptions

DEFAULTS = GradeOptions()


class DefaultGroup(click.Group):
    """``grade PATH...`` means ``grade run PATH...``; named verbs stay verbs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print UserError as one sentence and a hint (exit 2); tracebacks only with --debug."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if debug:
                raise
            from .console import error

            error(exc)
            sys.exit(2)

    return wrapper


def grading_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path)),
        click.option(
            "--data-root",
            type=click.Path(path_type=Path, file_okay=False),
            default=DEFAULTS.data_root,
            help="Folder with the datasets' files (hidden test sets in their layouts).",
        ),
        click.option(
            "--sandbox",
            type=click.Choice(["docker", "bwrap", "process"]),
            default=DEFAULTS.sandbox,
            help="Where submission code runs [default: docker if it answers, else bwrap].",
        ),
        click.option(
            "--results",
            "results_dir",
            type=click.Path(path_type=Path),
            default=DEFAULTS.results_dir,
            show_default=True,
        ),
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
            type=click.IntRange(1),
            default=DEFAULTS.jobs,
            show_default=True,
            help="Submissions graded at once.",
        ),
        click.option("--no-reports", is_flag=True, help="Skip the per-submission HTML/Markdown."),
        click.option("--debug", is_flag=True, help="Show tracebacks."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def cli() -> None:
    """Grade students' PyTorch models: `grade PATH...` grades submission folders."""


def _grade(mode: str, paths: tuple[Path, ...], **kw: Any) -> None:
    from . import pipeline
    from .console import Progress, print_results

    options = GradeOptions(
        sandbox=kw["sandbox"],
        data_root=kw["data_root"],
        results_dir=kw["results_dir"],
        force=kw["force"],
        jobs=kw["jobs"],
        reports=not kw["no_reports"],
    )
    run = pipeline.grade if mode == "grade" else pipeline.check
    with Progress(enabled=not kw["as_json"]) as progress:
        docs = run(list(paths), options=options, on_done=progress.advance)
    if kw["as_json"]:
        print(json.dumps([d.model_dump(mode="json") for d in docs], indent=2))
    print_results(docs, mode=mode, to_stderr=kw["as_json"])
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


@cli.group("data")
def data_group() -> None:
    """Prepare task datasets."""


@data_group.command("prepare")
@click.argument("task_id")
@click.option("--split", "splits", multiple=True, help="Only these splits [default: all].")
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option(
    "--download", is_flag=True, help="Download canonical datasets when the network allows."
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the public splits in the dataset's own layout here.",
)
@click.option("--force", is_flag=True, help="Prepare again even when cached.")
@click.option("--debug", is_flag=True)
@friendly
def data_prepare(
    task_id: str,
    splits: tuple[str, ...],
    data_root: Path | None,
    download: bool,
    export_dir: Path | None,
    force: bool,
    debug: bool,
) -> None:
    """Build a task's cached arrays (N x C x H x W uint8, labels apart)."""
    from .dataprep import prepare_task

    prepare_task(
        task_id,
        splits=list(splits),
        data_root=data_root,
        download=download,
        export_dir=export_dir,
        force=force,
    )


def main() -> None:
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
