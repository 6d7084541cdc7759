"""A Gradescope autograder ``results.json`` from a result document.

Points are linear in the primary metric between the task's ``grading.zero_marks_at``
(0 points) and ``grading.full_marks_at`` (``max_score``), clipped to that range; a
submission that did not grade scores 0. Format:
https://gradescope-autograders.readthedocs.io/en/latest/specs/
"""

from __future__ import annotations

import math
from typing import Any

from ..points import points_for
from ..results import ResultDocument
from ..student_error import render as render_error
from ..tasks import TaskSpec
from . import facts
from .curves import analyse


def points(doc: ResultDocument, task: TaskSpec, view: str = "all") -> float:
    """The points the primary metric earns on one view (0 unless the status is ``graded``)."""
    if doc.status != "graded":
        return 0.0
    return points_for(task, facts.view_metrics(doc, task, view).get(task.metrics.primary))


def scoring_rule(task: TaskSpec) -> str:
    m, g = task.metrics.primary, task.grading
    return (
        f"{facts.label(m)} {facts.fmt(m, g.zero_marks_at)} or worse earns 0 points, "
        f"{facts.fmt(m, g.full_marks_at)} or better earns {g.max_score:g}; linear in between."
    )


def missing_training(doc: ResultDocument, task: TaskSpec) -> list[str]:
    """Items of ``[training]`` the task requires that the manifest leaves out or empty."""
    return [k for k in task.required_training if doc.training.get(k) in (None, "", [], {})]


def gradescope_results(
    doc: ResultDocument, task: TaskSpec, *, deadline_passed: bool = False
) -> dict[str, Any]:
    """The ``results.json`` Gradescope reads from ``/autograder/results/``.

    Before the deadline a student sees the public part of the hidden split only: the
    final score (computed on the whole split, private part included) is in a test, and
    a top-level ``score``, whose ``visibility`` is ``after_due_date``; the public part's
    test is ``visible``, and so is the leaderboard, which holds public-part values.
    ``stdout_visibility`` is ``hidden``: the autograder's own log never reaches students.
    ``deadline_passed`` makes everything visible (a gradebook written after the deadline).
    """
    primary = task.metrics.primary
    score = points(doc, task)
    private = facts.effective_view(task, "public") != "all" and not deadline_passed
    later = "after_due_date" if private else "visible"
    metric_out = _metric_text(doc, task, "all")
    status = _test(
        "Submission status", doc.status == "graded", f"{doc.status}: {doc.message}".strip(": ")
    )
    if doc.error is not None:  # the submission's own error, sanitized; shown as plain text
        status["output"] += "\n\n" + render_error(doc.error)
        status["output_format"] = "text"
    tests: list[dict[str, Any]] = [status]
    if facts.effective_view(task, "public") != "all":
        pct = round(task.leaderboard.public_fraction * 100)
        tests.append(
            _test(
                f"{facts.label(primary)} on the public {pct} % of the hidden test split",
                doc.status == "graded",
                f"{_metric_text(doc, task, 'public')}\nThe public part is what the leaderboard "
                "shows before the deadline; the points come from the whole hidden split and "
                "are shown after the deadline.",
            )
        )
    tests += [
        _test(
            f"{facts.label(primary)} on the hidden test split",
            doc.status == "graded",
            f"{metric_out}\n{scoring_rule(task)}",
            score=score,
            max_score=task.grading.max_score,
            visibility=later,
        ),
        _test("Parameter count", doc.status != "over_limit", _params_text(doc, task)),
    ]
    missing = missing_training(doc, task)
    if task.required_training:
        text = (
            f"Missing from [training]: {', '.join(missing)}."
            if missing
            else "All required items given."
        )
        tests.append(_test("Training record", not missing, text))
    if doc.history:
        tests.append(_test("Training curves", True, " ".join(analyse(doc.history).statements)))
    board_view = "private" if deadline_passed else "public"
    shown = _metric_text(doc, task, "public") if private else metric_out
    out: dict[str, Any] = {
        "score": score,
        "max_score": task.grading.max_score,
        "visibility": later,
        "stdout_visibility": "hidden",
        "output": f"{task.title}: {shown}",
        "tests": tests,
        "leaderboard": _leaderboard(doc, task, board_view),
    }
    if "total_s" in doc.timing:
        out["execution_time"] = round(doc.timing["total_s"], 1)
    return out


def _metric_text(doc: ResultDocument, task: TaskSpec, view: str) -> str:
    if doc.status != "graded":
        return f"Not graded: status {doc.status}."
    primary = task.metrics.primary
    value = facts.view_metrics(doc, task, view).get(primary)
    part = "" if facts.effective_view(task, view) == "all" else f" ({view} part)"
    interval = facts.fmt_interval(primary, facts.view_interval(doc, task, view, primary))
    return f"{facts.label(primary)}{part}: {facts.fmt(primary, value)} {interval}".strip()


def _test(
    name: str,
    passed: bool,
    output: str,
    *,
    score: float = 0.0,
    max_score: float = 0.0,
    visibility: str = "visible",
) -> dict[str, Any]:
    return {
        "name": name,
        "score": score,
        "max_score": max_score,
        "status": "passed" if passed else "failed",
        "output": output,
        "visibility": visibility,
    }


def _params_text(doc: ResultDocument, task: TaskSpec) -> str:
    counted = facts.fmt_count(doc.params.counted)
    if task.parameter_limit is None:
        return f"{counted} parameters (no limit)."
    return f"{counted} parameters; the limit is {task.parameter_limit:,}."


def _leaderboard(doc: ResultDocument, task: TaskSpec, view: str) -> list[dict[str, Any]]:
    """Gradescope's leaderboard columns: the metrics on one view (the public part before
    the deadline, so the board never shows what the private part scored)."""
    if doc.status != "graded":
        return []
    values = facts.view_metrics(doc, task, view)
    entries: list[dict[str, Any]] = []
    for name in task.metrics.report:
        value = values.get(name)
        if value is None or not math.isfinite(value):
            continue
        entry: dict[str, Any] = {"name": facts.label(name), "value": float(f"{value:.6g}")}
        if facts.direction(name) == "min":
            entry["order"] = "asc"
        entries.append(entry)
    if doc.params.counted is not None:
        entries.append({"name": "Parameters", "value": doc.params.counted, "order": "asc"})
    return entries
