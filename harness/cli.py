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
        executor=kw["executor"],
        address=kw["address"],
    )
    run = pipeline.grade if mode == "grade" else pipeline.check
    from .submission import find_submissions

    total = len(find_submissions(list(paths)))
    with Progress(total=total, enabled=not kw["as_json"]) as progress:
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


@cli.command("history")
@click.argument("team")
@click.option("--task", default=None, help="Only this task's gradings.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default="results")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON array.")
@click.option("--debug", is_flag=True)
@friendly
def history_cmd(team: str, task: str | None, results_dir: Path, as_json: bool, debug: bool) -> None:
    """List every grading run of TEAM recorded in the results store, oldest first."""
    from rich.console import Console
    from rich.table import Table

    from .store import STORE_NAME, ResultsStore

    if not (results_dir / STORE_NAME).is_file():
        raise UserError(f"{results_dir}: no results store here", "give the folder with --results")
    rows = [r.summary() for r in ResultsStore(results_dir).history(team, task)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    columns = ("graded_at", "task", "mode", "status", "metrics", "submission", "document")
    table = Table(*columns, title=f"{team}: {len(rows)} grading(s)")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console().print(table)


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
    help="Also write the public splits for students here: DIR/TASK/SPLIT/images.npy "
    "(uint8 N x C x H x W) and labels.npy (plus the dataset's own layout, if any).",
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


@cli.command("leaderboard")
@click.option(
    "--results",
    "results_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULTS.results_dir,
    show_default=True,
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("leaderboard"),
    show_default=True,
)
@click.option(
    "--reveal-private",
    is_flag=True,
    help="Rank on the private part of the hidden split (after the deadline).",
)
@click.option("--debug", is_flag=True)
@friendly
def leaderboard_cmd(results_dir: Path, out_dir: Path, reveal_private: bool, debug: bool) -> None:
    """Render the static leaderboard site (index, one page per task, CSV and JSON)."""
    from .console import err_console
    from .report import render_site

    if not results_dir.is_dir():
        raise UserError(
            f"{results_dir}: no results folder", "grade submissions first, or --results"
        )
    written = render_site(results_dir, out_dir, reveal_private=reveal_private)
    view = "private" if reveal_private else "public"
    err_console.print(
        f"wrote {len(written)} files to {out_dir} ({view} view); open {out_dir / 'index.html'}"
    )


@cli.command("validate-references")
@click.option("--task", "tasks", multiple=True, help="Only these tasks [default: all].")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the real datasets are; their scores are checked when present.",
)
@click.option(
    "--sandbox",
    type=click.Choice(["docker", "bwrap", "process"]),
    default=None,
    help="[default: docker if it answers, else bwrap]",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULTS.results_dir,
    show_default=True,
    help="Store the trained references' gradings here (they appear on the leaderboard).",
)
@click.option("--debug", is_flag=True)
@friendly
def validate_cmd(
    tasks: tuple[str, ...],
    data_root: Path | None,
    sandbox: str | None,
    results_dir: Path,
    debug: bool,
) -> None:
    """Check every task's reference solutions: build, strict load, limit, fixture run, score;
    the trained ones' gradings go to the results folder, so they show on the leaderboard."""
    from rich.console import Console

    from .validate import exit_code, render, validate_references

    rows = validate_references(
        data_root=data_root, sandbox=sandbox, only=tasks, results_dir=results_dir
    )
    Console(width=max(Console().width, 140)).print(render(rows))
    sys.exit(exit_code(rows))


@cli.group("image")
def image_group() -> None:
    """The evaluation image the docker sandbox runs."""


@image_group.command("build")
@click.option(
    "--base",
    default=None,
    help="Base image for the Dockerfile build "
    "(a PyTorch CUDA runtime image where a registry is reachable).",
)
@click.option(
    "--offline/--registry",
    "offline",
    default=None,
    help="Build from a debootstrapped Debian rootfs plus local wheels, or from the "
    "Dockerfile [default: the Dockerfile when the base image's registry answers].",
)
@click.option("--tag", default=None, help="[default: harness-eval:<version>-cpu|cuda]")
@click.option("--if-missing", is_flag=True, help="Do nothing when the tag already exists.")
@click.option("--debug", is_flag=True)
@friendly
def image_build(
    base: str | None, offline: bool | None, tag: str | None, if_missing: bool, debug: bool
) -> None:
    """Build the evaluation image (torch, numpy, safetensors, a non-root user)."""
    from .console import err_console
    from .sandbox.image import build_image, default_tag

    wanted = tag or default_tag("cpu" if offline is not False else "cuda")
    if if_missing and _image_present(wanted):
        err_console.print(f"{wanted} is already built")
        return
    built = build_image(
        base=base,
        offline=offline,
        tag=tag,
        progress=lambda line: err_console.print(line, highlight=False),
    )
    err_console.print(
        f"built {built.tag} ({built.image_id[:19]}, "
        f"{built.size_bytes / 2**20:.0f} MiB, {built.method}) in {built.seconds:.0f} s"
    )


@cli.command("integrity")
@click.argument("task_id")
@click.option(
    "--results",
    "results_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULTS.results_dir,
    show_default=True,
)
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--debug", is_flag=True)
@friendly
def integrity_cmd(task_id: str, results_dir: Path, data_root: Path | None, debug: bool) -> None:
    """Instructor-only: duplicate weights, prediction agreement and integrity flags of a task."""
    from .console import err_console
    from .data import prepare_split
    from .integrity import write_report
    from .tasks import load_task

    task = load_task(task_id)
    labels = prepare_split(task, task.splits.hidden, data_root=data_root).labels()
    path = write_report(task, results_dir, labels)
    findings = json.loads(path.read_text()).get("findings", [])
    err_console.print(f"{len(findings)} finding(s) for {task_id}; instructor report: {path}")
    for finding in findings[:20]:
        teams = " and ".join(finding["teams"])
        err_console.print(f"  - {finding['kind']}: {teams}: {finding['detail']}", highlight=False)


def _image_present(tag: str) -> bool:
    from .sandbox import docker_backend

    try:
        docker_backend.image_info(docker_backend.client_or_error(), tag)
    except Exception:  # not found, or no engine: build_image then says which
        return False
    return True


def main() -> None:
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
