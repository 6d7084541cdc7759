"""The ``grade`` command: a thin shell over the keyword-only API in ``api``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from .errors import UserError
from .options import GradeOptions

DEFAULTS = GradeOptions()


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
            type=click.IntRange(0),
            default=DEFAULTS.jobs,
            show_default=True,
            help="Submissions graded at once; 0: one per CPU core (the cores are split "
            "between them).",
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
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default="results")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON array.")
@click.option("--debug", is_flag=True)
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
    from .console import say
    from .report import render_site

    if not results_dir.is_dir():
        raise UserError(
            f"{results_dir}: no results folder", "grade submissions first, or --results"
        )
    problems: list[tuple[str, str]] = []
    written = render_site(results_dir, out_dir, reveal_private=reveal_private, problems=problems)
    view = "private" if reveal_private else "public"
    say(f"wrote {len(written)} files to {out_dir} ({view} view); open {out_dir / 'index.html'}")
    _print_ignored(results_dir, problems)


def _print_ignored(results_dir: Path, problems: list[tuple[str, str]]) -> None:
    """Results the leaderboard left out, each with its reason (the site is still written)."""
    from .console import say
    from .report.site import ignored_results

    for path, reason in [*ignored_results(results_dir), *problems]:
        say(f"ignored {path}: {reason}")


@cli.command("gradebook")
@click.argument("task_id")
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
    default=Path("gradebook"),
    show_default=True,
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "gradescope"]),
    default="csv",
    show_default=True,
    help="csv: one row per team; gradescope: one results.json per team.",
)
@click.option(
    "--view",
    type=click.Choice(["all", "private", "public"]),
    default="all",
    show_default=True,
    help="Which part of the hidden split the points are computed on.",
)
@click.option("--debug", is_flag=True)
@friendly
def gradebook_cmd(
    task_id: str, results_dir: Path, out_dir: Path, fmt: str, view: str, debug: bool
) -> None:
    """Write TASK's grades (team, members, status, metric, points, graded_at) by its points rule."""
    from .console import say
    from .gradebook import write_gradebook
    from .report.leaderboard import load_gradings
    from .tasks import load_task

    task = load_task(task_id)
    if not results_dir.is_dir():
        raise UserError(
            f"{results_dir}: no results folder", "grade submissions first, or --results"
        )
    docs = load_gradings(results_dir).get(task.id, [])
    written = write_gradebook(docs, task, out_dir, fmt=fmt, view=view)  # type: ignore[arg-type]
    say(f"wrote {len(written)} file(s) to {out_dir} ({fmt}, {view} view)")


@cli.command("gradescope")
@click.argument("task_id")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The autograder folder to write (zip its contents for Gradescope).",
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Copy this datasets folder in (tasks whose hidden split comes from files).",
)
@click.option(
    "--wheels",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A folder of wheels: setup.sh then installs offline from it.",
)
@click.option(
    "--sandbox",
    type=click.Choice(["auto", "bwrap", "process"]),
    default="auto",
    show_default=True,
    help="auto: bubblewrap when it works in Gradescope's container, else process.",
)
@click.option("--no-seed", is_flag=True, help="Leave the secret seed out of the folder.")
@click.option("--debug", is_flag=True)
@friendly
def gradescope_cmd(
    task_id: str,
    out_dir: Path,
    data_root: Path | None,
    wheels: Path | None,
    sandbox: str,
    no_seed: bool,
    debug: bool,
) -> None:
    """Write a Gradescope autograder folder for TASK: setup.sh, run_autograder, task, references."""
    from .console import say
    from .gradescope_autograder import build_autograder
    from .settings import settings
    from .tasks import load_task

    task = load_task(task_id)
    build_autograder(
        task,
        out_dir,
        data_root=data_root,
        wheels=wheels,
        sandbox=sandbox,
        include_seed=not no_seed,
    )
    if settings().secret_seed is None or no_seed:
        say(
            "note: no secret seed in the folder: a generated hidden split will use the public "
            "fallback seed (set HARNESS_SECRET_SEED before `grade gradescope`)",
        )
    say(
        f"wrote the autograder to {out_dir}; upload a zip of its contents: "
        f"(cd {out_dir} && zip -r ../autograder.zip .)",
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
@click.option("--tag", default=None, help="[default: harness-eval:<version>-torch<pin>]")
@click.option("--if-missing", is_flag=True, help="Do nothing when the tag already exists.")
@click.option("--force", is_flag=True, help="Rebuild even when an identical image is there.")
@click.option("--debug", is_flag=True)
@friendly
def image_build(
    base: str | None,
    offline: bool | None,
    tag: str | None,
    if_missing: bool,
    force: bool,
    debug: bool,
) -> None:
    """Build the evaluation image (the pinned torch and torchvision, numpy, safetensors)."""
    from .console import say
    from .sandbox.docker.image import build_image, default_tag

    wanted = tag or default_tag()
    if if_missing and _image_present(wanted):
        say(f"{wanted} is already built")
        return
    built = build_image(
        base=base,
        offline=offline,
        tag=tag,
        force=force,
        progress=say,
    )
    say(
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
    from .console import say
    from .data import prepare_split
    from .integrity import write_report
    from .tasks import load_task

    task = load_task(task_id)
    labels = prepare_split(task, task.splits.hidden, data_root=data_root).labels()
    path = write_report(task, results_dir, labels)
    findings = json.loads(path.read_text()).get("findings", [])
    say(f"{len(findings)} finding(s) for {task_id}; instructor report: {path}")
    for finding in findings[:20]:
        teams = " and ".join(finding["teams"])
        say(f"  - {finding['kind']}: {teams}: {finding['detail']}")


def _image_present(tag: str) -> bool:
    from .sandbox.docker import engine

    try:
        engine.image_info(engine.client_or_error(), tag)
    except Exception:  # not found, or no engine: build_image then says which
        return False
    return True


def main() -> None:
    cli(prog_name="grade")


if __name__ == "__main__":
    main()
