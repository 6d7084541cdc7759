"""Leaderboard site, per-submission reports and Gradescope results: pure functions of
result documents (``harness.results.ResultDocument``) and task specs."""

from __future__ import annotations

from .gradescope import gradescope_results
from .leaderboard import Board, build_board, leaderboard_frame, load_gradings
from .site import render_site
from .submission_report import write_submission_report

__all__ = [
    "Board",
    "build_board",
    "gradescope_results",
    "leaderboard_frame",
    "load_gradings",
    "render_site",
    "write_submission_report",
]
