"""A Gradescope autograder ``results.json`` from a result document.

Points are linear in the primary metric between the task's ``grading.zero_marks_at``
(0 points) and ``grading.full_marks_at`` (``max_score``), clipped to that range; a
submission that did not grade scores 0. Format:
https://gradescope-autograders.readthedocs.io/en/latest/specs/
"""

from __future__ import annotations

import math
from typing import Any

from ..results import ResultDocument
from ..student_error import render as render_error
from ..tasks import TaskSpec
from . import facts
from .curves import analyse


def points(doc: ResultDocument, task: TaskSpec) -> float:
    """The points the primary metric earns (0 unless the status is ``graded``)."""
    value = doc.metrics.get(task.metrics.primary)
    if doc.status != "graded" or value is None or not math.isfinite(value):
        return 0.0
    g = task.grading
    if g.full_marks_at == g.zero_marks_at:
        good = not facts.better(task.metrics.primary, g.full_marks_at, value)
        fraction = 1.0 if good else 0.0
    else:
        fraction = (value - g.zero_marks_at) / (g.full_marks_at - g.zero_marks_at)
    return round(g.max_score * min(1.0, max(0.0, fraction)), 2)


def scoring_rule(task: TaskSpec) -> str:
    m, g = task.metrics.primary, task.grading
    return (
        f"{facts.label(m)} {facts.fmt(m, g.zero_marks_at)} or worse earns 0 points, "
        f"{facts.fmt(m, g.full_marks_at)} or better earns {g.max_score:g}; linear in between."
    )


def missing_training(doc: ResultDocument, task: TaskSpec) -> list[str]:
    """Items of ``[training]`` the task requires that the manifest leaves out or empty."""
    return [k for k in task.required_training if doc.training.get(k) in (None, "", [], {})]


def gradescope_results(doc: ResultDocument, task: TaskSpec) -> dict[str, Any]:
    """The ``results.json`` Gradescope reads from ``/autograder/results/``."""
    primary = task.metrics.primary
    score = points(doc, task)
    value = doc.metrics.get(primary)
    metric_out = (
        f"{facts.label(primary)}: {facts.fmt(primary, value)} "
        f"{facts.fmt_interval(primary, facts.view_interval(doc, task, 'all', primary))}".strip()
        if doc.status == "graded"
        else f"Not graded: status {doc.status}."
    )
    status = _test(
        "Submission status", doc.status == "graded", f"{doc.status}: {doc.message}".strip(": ")
    )
    if doc.error is not None:  # the submission's own error, sanitized; shown as plain text
        status["output"] += "\n\n" + render_error(doc.error)
        status["output_format"] = "text"
    tests: list[dict[str, Any]] = [
        status,
        _test(
            f"{facts.label(primary)} on the hidden test split",
            doc.status == "graded",
            f"{metric_out}\n{scoring_rule(task)}",
            score=score,
            max_score=task.grading.max_score,
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
    out: dict[str, Any] = {
        "score": score,
        "max_score": task.grading.max_score,
        "output": f"{task.title}: {metric_out}",
        "tests": tests,
        "leaderboard": _leaderboard(doc, task),
    }
    if "total_s" in doc.timing:
        out["execution_time"] = round(doc.timing["total_s"], 1)
    return out


def _test(
    name: str, passed: bool, output: str, *, score: float = 0.0, max_score: float = 0.0
) -> dict[str, Any]:
    return {
        "name": name,
        "score": score,
        "max_score": max_score,
        "status": "passed" if passed else "failed",
        "output": output,
        "visibility": "visible",
    }


def _params_text(doc: ResultDocument, task: TaskSpec) -> str:
    counted = facts.fmt_count(doc.params.counted)
    if task.parameter_limit is None:
        return f"{counted} parameters (no limit)."
    return f"{counted} parameters; the limit is {task.parameter_limit:,}."


def _leaderboard(doc: ResultDocument, task: TaskSpec) -> list[dict[str, Any]]:
    if doc.status != "graded":
        return []
    entries: list[dict[str, Any]] = []
    for name in task.metrics.report:
        value = doc.metrics.get(name)
        if value is None or not math.isfinite(value):
            continue
        entry: dict[str, Any] = {"name": facts.label(name), "value": float(f"{value:.6g}")}
        if facts.direction(name) == "min":
            entry["order"] = "asc"
        entries.append(entry)
    if doc.params.counted is not None:
        entries.append({"name": "Parameters", "value": doc.params.counted, "order": "asc"})
    return entries
