"""The published leaderboard: a static site that works from ``file://`` and any static host.

Writes ``index.html``, one ``task-<id>.html`` per task, ``plots/``, ``style.css`` and,
for gradebooks, ``leaderboard.csv`` and ``leaderboard.json``. Pages show the public part
of the hidden split until ``reveal_private``; no page ever shows a submission's own
output. Every link is relative; nothing is fetched from the network.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..ranking import policy_statement
from ..results import ResultDocument, read_result, write_atomic
from ..tasks import TaskSpec
from . import facts, plots
from .gradescope import scoring_rule
from .leaderboard import Board, Row, board_frame, build_board, load_gradings, row_points
from .templating import CSS_PATH, csv_cell, render


def render_site(
    results_dir: Path,
    out_dir: Path,
    *,
    tasks: Mapping[str, TaskSpec] | None = None,
    reveal_private: bool = False,
    problems: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """Render the leaderboard of every task under ``results_dir`` into ``out_dir``.

    ``tasks`` maps task ids to specs; when None, each task found in the results is
    loaded from the tasks folder. Returns the files written. A task whose page cannot be
    drawn is left out of the site, never the others; ``problems`` receives (task, reason).
    """
    gradings = load_gradings(results_dir)
    if tasks is None:
        tasks, _ = known_tasks(gradings)
    view = "private" if reveal_private else "public"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_copy_css(out_dir)]
    boards: list[Board] = []
    for task_id in sorted(tasks):
        docs = gradings.get(task_id, [])
        try:
            board = build_board(docs, tasks[task_id], view=view)
            public = build_board(docs, tasks[task_id], view="public") if reveal_private else None
            written += _task_page(board, public, out_dir)
        except Exception as exc:
            if problems is not None:
                problems.append((task_id, f"its page failed: {type(exc).__name__}: {exc}"))
            continue
        boards.append(board)
    written.append(_write(out_dir / "index.html", _index(boards, reveal_private)))
    written += _tables(boards, out_dir)
    return written


def known_tasks(
    gradings: Mapping[str, list[ResultDocument]],
) -> tuple[dict[str, TaskSpec], list[tuple[str, str]]]:
    """The tasks of the results that load from the tasks folder, and (task, reason) for
    each one that does not: its results are left out, never the whole site."""
    from ..errors import UserError
    from ..tasks import load_task

    found: dict[str, TaskSpec] = {}
    ignored: list[tuple[str, str]] = []
    for task_id in sorted(gradings):
        try:
            found[task_id] = load_task(task_id)
        except UserError as exc:
            ignored.append((task_id, exc.message))
    return found, ignored


def ignored_results(results_dir: Path) -> list[tuple[str, str]]:
    """(path, reason) for every result a leaderboard leaves out: documents that do not
    read, and documents of tasks the tasks folder does not have."""
    out: list[tuple[str, str]] = []
    for path in sorted(results_dir.glob("*/*/result.json")):
        if read_result(path) is None:
            out.append((str(path), "not a readable result document of this schema version"))
    _, unknown = known_tasks(load_gradings(results_dir))
    for task_id, reason in unknown:
        out.append((str(results_dir / task_id), f"results of task {task_id!r}: {reason}"))
    return out


def page_name(task_id: str) -> str:
    return "task-" + re.sub(r"[^A-Za-z0-9._-]", "_", task_id) + ".html"


def _write(path: Path, text: str) -> Path:
    write_atomic(path, text)
    return path


def _copy_css(out_dir: Path) -> Path:
    target = out_dir / "style.css"
    shutil.copyfile(CSS_PATH, target)
    return target


def _view_note(board: Board) -> str:
    task = board.task
    view = facts.effective_view(task, board.view)
    pct = round(task.leaderboard.public_fraction * 100)
    if view == "all":
        return "Scores on the whole hidden test split."
    if view == "public":
        return (
            f"Public leaderboard: scores on the public {pct} % of the hidden test split. "
            f"The final ranking uses the other {100 - pct} % (the private part) and is "
            "revealed after the deadline."
        )
    return (
        f"Final leaderboard: scores on the private {100 - pct} % of the hidden test split, "
        f"which no one saw before the deadline. The public rank (on the other {pct} %) "
        "is shown for comparison."
    )


def _last_update(docs: list[ResultDocument]) -> str:
    return facts.fmt_when(docs[0]) if docs else "—"


def _index(boards: list[Board], reveal: bool) -> str:
    entries = []
    for board in boards:
        leader = board.leader
        entries.append(
            {
                "id": board.task.id,
                "title": board.task.title,
                "href": page_name(board.task.id),
                "metric": facts.label(board.primary),
                "leader": leader.team if leader else None,
                "leader_value": facts.fmt(board.primary, leader.value) if leader else "",
                "teams": board.teams,
                "updated": _last_update(board.history),
            }
        )
    return render(
        "index.html.j2",
        css_href="style.css",
        tasks=entries,
        view_title="final (private part)" if reveal else "public part",
    )


def _task_page(board: Board, public: Board | None, out_dir: Path) -> list[Path]:
    task = board.task
    primary = board.primary
    public_ranks = {r.team: r.rank for r in public.ranked} if public else {}
    rows = [_display_row(row, board, public_ranks) for row in board.table()]
    figure = None
    written: list[Path] = []
    plotted = [r for r in board.table() if r.value is not None]
    rel = f"plots/{page_name(task.id)[:-5]}-intervals.png"
    try:  # values no axis can hold (1e308) leave the page without its figure, never the site
        drawn = (
            plots.intervals(
                [
                    (_plot_label(r), r.value or 0.0, r.interval, r.kind == "reference")
                    for r in plotted
                ],
                out_dir / rel,
                metric=f"{facts.label(primary)} ({facts.arrow(primary)})",
                title=f"{facts.label(primary)} with 95 % bootstrap interval{_part(board)}",
                tick_format=lambda x: facts.fmt(primary, x),
            )
            if plotted
            else None
        )
    except (ValueError, OverflowError):
        drawn = None
    if drawn is not None:
        written.append(drawn)
        figure = {
            "src": rel,
            "alt": _figure_alt(board),
        }
    html = render(
        "task.html.j2",
        css_href="style.css",
        task=task,
        primary_label=facts.label(primary),
        arrow=facts.arrow(primary),
        secondary=[(m, facts.label(m)) for m in task.metrics.report if m != primary],
        rows=rows,
        unranked=[_unranked_row(r, board) for r in board.unranked],
        history=_history(board),
        note=_view_note(board),
        revealed=public is not None,
        figure=figure,
        count_rule="best" if task.leaderboard.count == "best" else "latest",
        policy=policy_statement(task.leaderboard.count),
        stale=[_stale_row(r, board) for r in board.stale],
        max_points=f"{task.grading.max_score:g}",
        points_rule=scoring_rule(task),
        updated=_last_update(board.history),
    )
    written.append(_write(out_dir / page_name(task.id), html))
    return written


def _part(board: Board) -> str:
    view = facts.effective_view(board.task, board.view)
    return "" if view == "all" else f" ({view} part)"


def _plot_label(row: Row) -> str:
    if row.kind == "reference":
        return f"{row.team} (reference)"
    return f"{row.rank}. {row.team}"


def _figure_alt(board: Board) -> str:
    leader = board.leader
    tied = [r.team for r in board.ranked if r.tied]
    text = f"Dot-and-interval chart of {facts.label(board.primary)} for every ranked team"
    if leader:
        text += f"; {leader.team} leads with {facts.fmt(board.primary, leader.value)}"
    if tied:
        text += f"; statistically tied with the leader: {', '.join(tied)}"
    return text + "."


def _params(doc: ResultDocument, task: TaskSpec) -> dict[str, Any]:
    counted, limit = doc.params.counted, task.parameter_limit
    pct = None if counted is None or not limit else min(100.0, 100.0 * counted / limit)
    return {
        "counted": facts.fmt_count(counted),
        "limit": facts.fmt_count(limit) if limit else None,
        "pct": pct,
        "over": counted is not None and limit is not None and counted > limit,
        "verified": doc.params.verified,
    }


def _display_row(row: Row, board: Board, public_ranks: Mapping[str, int | None]) -> dict[str, Any]:
    primary, doc, task = board.primary, row.doc, board.task
    return {
        "kind": row.kind,
        "rank": row.rank,
        "team": row.team,
        "members": ", ".join(doc.members),
        "value": facts.fmt(primary, row.value),
        "interval": facts.fmt_interval(primary, row.interval),
        "tied": row.tied,
        "leader": row.rank == 1,
        "secondary": [
            facts.fmt(m, row.metrics.get(m)) for m in task.metrics.report if m != primary
        ],
        "params": _params(doc, task),
        "inference": facts.fmt_seconds(doc.timing.get("inference_s")),
        "images_per_s": doc.timing.get("images_per_s"),
        "gradings": row.gradings,
        "graded_at": facts.fmt_when(doc, zone=False),
        "public_rank": public_ranks.get(row.team),
        "points": f"{row_points(row, task):g}",
    }


def _unranked_row(row: Row, board: Board) -> dict[str, Any]:
    doc = row.doc
    if doc.status == "over_limit":
        counted, limit = doc.params.counted, board.task.parameter_limit
        detail = f"{facts.fmt_count(counted)} parameters; the limit is {facts.fmt_count(limit)}."
    elif doc.status == "graded":
        detail = (
            f"No score on the {facts.VIEW_TITLES[facts.effective_view(board.task, board.view)]}."
        )
    else:
        detail = doc.message if len(doc.message) <= 160 else doc.message[:157] + "…"
    return {
        "team": row.team,
        "status": doc.status,
        "stage": doc.stage or "",
        "detail": detail,
        "gradings": row.gradings,
        "graded_at": facts.fmt_when(doc, zone=False),
    }


def _stale_row(row: Row, board: Board) -> dict[str, Any]:
    doc = row.doc
    return {
        "team": row.team,
        "value": facts.fmt(board.primary, row.value),
        "reason": row.reason,
        "sandbox": doc.sandbox.backend if doc.sandbox else "not recorded",
        "gradings": row.gradings,
        "graded_at": facts.fmt_when(doc, zone=False),
    }


def _history(board: Board) -> list[dict[str, Any]]:
    primary, task = board.primary, board.task
    return [
        {
            "team": doc.team + (" (reference)" if doc.reference else ""),
            "graded_at": facts.fmt_when(doc, zone=False),
            "status": doc.status,
            "value": facts.fmt(primary, facts.view_metrics(doc, task, board.view).get(primary)),
            "counted": board.counted(doc),
            "stale": board.stale_reason(doc) or "",
        }
        for doc in board.history
    ]


def _tables(boards: list[Board], out_dir: Path) -> list[Path]:
    frames = [board_frame(b) for b in boards]
    frames = [f for f in frames if not f.empty]
    frame = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", "team"])
    )
    csv_path, json_path = out_dir / "leaderboard.csv", out_dir / "leaderboard.json"
    write_atomic(csv_path, frame.map(csv_cell).to_csv(index=False))
    write_atomic(json_path, frame.to_json(orient="records", indent=2) or "[]")
    return [csv_path, json_path]
