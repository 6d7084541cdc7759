"""What every ``grade`` command shares: the ``friendly`` error wrapper and one definition
of each option that several commands take (``--debug``, ``--results``, ``--data-root``,
``--sandbox``), so that their names, types and defaults cannot drift apart."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from .errors import UserError
from .options import GradeOptions

DEFAULTS = GradeOptions()
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


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


def debug_option(help: str | None = None) -> Decorator:
    return click.option("--debug", is_flag=True, help=help)


def results_option(
    *, folder: bool = True, show_default: bool = True, help: str | None = None
) -> Decorator:
    """``--results DIR``, the results folder (``folder``: refuse a file there)."""
    return click.option(
        "--results",
        "results_dir",
        type=click.Path(path_type=Path, file_okay=False) if folder else click.Path(path_type=Path),
        default=DEFAULTS.results_dir,
        show_default=show_default,
        help=help,
    )


def data_root_option(*, exists: bool = False, help: str | None = None) -> Decorator:
    """``--data-root DIR``, the datasets' files (hidden test sets in their layouts)."""
    return click.option(
        "--data-root",
        type=click.Path(path_type=Path, file_okay=False, exists=exists),
        default=None,
        help=help,
    )


def sandbox_option(
    *, choices: tuple[str, ...] = ("docker", "bwrap", "process"), **kw: Any
) -> Decorator:
    """``--sandbox NAME``: where submission code runs."""
    kw.setdefault("default", None)
    kw.setdefault(
        "help",
        "Where submission code runs [default: docker if its engine answers and sets "
        "the limits, else bwrap].",
    )
    return click.option("--sandbox", type=click.Choice(list(choices)), **kw)
