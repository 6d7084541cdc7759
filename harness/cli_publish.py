"""``grade`` commands that publish what the store holds: the leaderboard site, the
gradebook, the Gradescope autograder folder and the instructor's integrity report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_options import data_root_option, debug_option, friendly, results_option, sandbox_option
from .errors import UserError


@click.command("leaderboard")
@results_option()
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
@debug_option()
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


@click.command("gradebook")
@click.argument("task_id")
@results_option()
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
@debug_option()
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


@click.command("gradescope")
@click.argument("task_id")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The autograder folder to write (zip its contents for Gradescope).",
)
@data_root_option(
    exists=True, help="Copy this datasets folder in (tasks whose hidden split comes from files)."
)
@click.option(
    "--wheels",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A folder of wheels: setup.sh then installs offline from it.",
)
@sandbox_option(
    choices=("auto", "bwrap", "process"),
    default="auto",
    show_default=True,
    help="auto: bubblewrap when it works in Gradescope's container, else process.",
)
@click.option("--no-seed", is_flag=True, help="Leave the secret seed out of the folder.")
@debug_option()
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


@click.command("integrity")
@click.argument("task_id")
@results_option()
@data_root_option()
@debug_option()
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


COMMANDS = (leaderboard_cmd, gradebook_cmd, gradescope_cmd, integrity_cmd)
