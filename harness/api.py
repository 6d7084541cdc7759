"""The public API: ``grade`` and ``check`` over submission folders, keyword-only, with
``GradeOptions``. The CLI and notebooks call these; they find the folders and hand them to
an executor (``executors.py``), which runs each through the stages (``pipeline.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .executors import get_executor
from .options import GradeOptions, Mode, OnStage
from .pipeline import check_batch
from .results import ResultDocument
from .submission import find_submissions

__all__ = ["GradeOptions", "check", "grade"]


def grade(
    paths: list[Path],
    *,
    options: GradeOptions = GradeOptions(),
    on_done: Callable[[ResultDocument], None] | None = None,
    on_stage: OnStage | None = None,
) -> list[ResultDocument]:
    """Grade every submission under ``paths`` on its task's hidden split; ``on_done`` hears
    of each document, ``on_stage`` of each stage a team enters."""
    return _batch(paths, options, "grade", on_done, on_stage)


def check(
    paths: list[Path],
    *,
    options: GradeOptions = GradeOptions(),
    on_done: Callable[[ResultDocument], None] | None = None,
    on_stage: OnStage | None = None,
) -> list[ResultDocument]:
    """The same pipeline on each task's public validation split (for students)."""
    return _batch(paths, options, "check", on_done, on_stage)


def _batch(
    paths: list[Path],
    options: GradeOptions,
    mode: Mode,
    on_done: Callable[[ResultDocument], None] | None,
    on_stage: OnStage | None = None,
) -> list[ResultDocument]:
    folders = find_submissions(paths)
    check_batch(folders, options)
    executor = get_executor(options.executor)
    return executor.run(folders, options=options, mode=mode, on_done=on_done, on_stage=on_stage)
