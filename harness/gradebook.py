"""Grades out: a task's gradebook, a pure function of its result documents.

One row per team (references left out): the grading that counts under the ranking
policy (``harness.ranking``), its status, its primary metric on the chosen view of the
hidden split, and the points the task's rule (``harness.points``) gives that value. A
team whose gradings are all stale gets 0 points and status ``stale``, with the reason;
a team whose counted grading did not grade gets 0 points and its status.

Two formats: ``csv`` (one file, ``gradebook-<task>.csv``) and ``gradescope`` (one
Gradescope ``results.json`` per team, ``<team>/results.json``, with the final scores
visible, for a course that runs the harness itself and uploads the scores).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from .report.leaderboard import Board, Row, build_board, row_points
from .report.templating import csv_cell
from .results import ResultDocument, write_atomic
from .tasks import TaskSpec

Format = Literal["csv", "gradescope"]
COLUMNS = (
    "team",
    "members",
    "status",
    "metric",
    "value",
    "points",
    "max_points",
    "graded_at",
    "view",
    "note",
)


def gradebook_rows(
    docs: Iterable[ResultDocument], task: TaskSpec, *, view: str = "all"
) -> list[dict[str, Any]]:
    """The gradebook of ``task``: one row per team, ranked teams first, in board order."""
    board = build_board(docs, task, view=view)
    rows = [_row(r, board, r.reason or "") for r in (*board.ranked, *board.unranked)]
    rows += [_row(r, board, r.reason) for r in board.stale]
    return rows


def _row(row: Row, board: Board, note: str) -> dict[str, Any]:
    doc, task = row.doc, board.task
    status = "stale" if row.kind == "stale" else doc.status
    if not note and doc.status != "graded":
        note = doc.message
    return {
        "team": doc.team,
        "members": "; ".join(doc.members),
        "status": status,
        "metric": task.metrics.primary,
        "value": "" if row.value is None or row.kind == "stale" else f"{row.value:.6g}",
        "points": f"{row_points(row, task):g}",
        "max_points": f"{task.grading.max_score:g}",
        "graded_at": doc.graded_at,
        "view": board.view,
        "note": " ".join(note.split())[:300],
    }


def gradebook_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_gradebook(
    docs: Iterable[ResultDocument],
    task: TaskSpec,
    out: Path,
    *,
    fmt: Format = "csv",
    view: str = "all",
) -> list[Path]:
    """Write the gradebook of ``task`` under ``out`` (a folder); returns the files written."""
    docs = list(docs)
    if fmt == "csv":
        path = out / f"gradebook-{task.id}.csv"
        write_atomic(path, gradebook_csv(gradebook_rows(docs, task, view=view)))
        return [path]
    from .report.gradescope import gradescope_results

    board = build_board(docs, task, view=view)
    written = []
    for row in (*board.ranked, *board.unranked, *board.stale):
        results = gradescope_results(row.doc, task, deadline_passed=True)
        if row.kind == "stale":
            results["score"] = 0.0
            results["output"] = f"Not counted: {row.reason}."
        path = out / row.team / "results.json"
        write_atomic(path, json.dumps(results, indent=2))
        written.append(path)
    return written
