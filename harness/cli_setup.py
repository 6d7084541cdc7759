"""``grade`` commands that set a course up: prepare a task's data, check its reference
solutions, build the evaluation image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_options import data_root_option, debug_option, friendly, results_option, sandbox_option


@click.group("data")
def data_group() -> None:
    """Prepare task datasets."""


@data_group.command("prepare")
@click.argument("task_id")
@click.option("--split", "splits", multiple=True, help="Only these splits [default: all].")
@data_root_option()
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
@debug_option()
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


@click.command("validate-references")
@click.option("--task", "tasks", multiple=True, help="Only these tasks [default: all].")
@data_root_option(help="Where the real datasets are; their scores are checked when present.")
@sandbox_option(help="[default: docker if its engine answers and sets the limits, else bwrap]")
@results_option(
    help="Store the trained references' gradings here (they appear on the leaderboard)."
)
@debug_option()
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


@click.group("image")
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
@debug_option()
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


def _image_present(tag: str) -> bool:
    from .sandbox.docker import engine

    try:
        engine.image_info(engine.client_or_error(), tag)
    except Exception:  # not found, or no engine: build_image then says which
        return False
    return True


COMMANDS = (data_group, validate_cmd, image_group)
