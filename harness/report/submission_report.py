"""One report per submission: ``report.html``, ``report.md``, ``plots/`` and ``results.json``.

The report explains the score without a TA: status, metrics with intervals, the
comparison with each reference solution, the parameter count per layer, the
predictions' plots, the training curves in words and the Gradescope ``results.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..results import Flag, ResultDocument, write_atomic
from ..tasks import TaskSpec
from . import plots
from .context import report_context
from .curves import Findings, analyse, curves
from .gradescope import gradescope_results
from .templating import css, render

PLOTS = "plots"
PLOT_FILES = (
    "confusion.png",
    "per_class_accuracy.png",
    "scatter.png",
    "residuals.png",
    "training_curves.png",
)


def write_submission_report(
    doc: ResultDocument,
    task: TaskSpec,
    folder: Path,
    *,
    references: Sequence[ResultDocument] = (),
    instructor: bool = False,
) -> list[Path]:
    """Write the report of ``doc`` into ``folder``; returns the files written.

    ``references`` are the reference solutions' result documents to compare with.
    ``instructor=True`` adds the submission's own output and instructor-only flags;
    never hand that version to students.
    """
    folder.mkdir(parents=True, exist_ok=True)
    findings = analyse(doc.history, doc.training.get("learning_rate"))
    figures, written = _figures(doc, task, folder, findings)
    context = report_context(
        doc, task, references=references, findings=findings, figures=figures, instructor=instructor
    )
    html = render("report.html.j2", css_href="", inline_css=css(), **context)
    markdown = render("report.md.j2", **context)
    for name, text in (("report.html", html), ("report.md", markdown)):
        write_atomic(folder / name, text)
        written.append(folder / name)
    results = folder / "results.json"
    write_atomic(results, json.dumps(gradescope_results(doc, task), indent=2) + "\n")
    written.append(results)
    return written


class _Figures:
    """The figures drawn so far, by report section, and the files they went to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sections: dict[str, list[dict[str, str]]] = {"predictions": [], "training": []}
        self.written: list[Path] = []

    def add(self, section: str, path: Path, alt: str, caption: str) -> None:
        self.written.append(path)
        self.sections[section].append(
            {"src": f"{PLOTS}/{path.name}", "alt": alt, "caption": caption}
        )


def _figures(
    doc: ResultDocument, task: TaskSpec, folder: Path, findings: Findings
) -> tuple[dict[str, list[dict[str, str]]], list[Path]]:
    """Draw the plots the document has data for; returns {section: [figure]} and the files."""
    figs = _Figures(folder / PLOTS)
    for stale in PLOT_FILES:  # a previous grading's figures must not outlive it
        (figs.folder / stale).unlink(missing_ok=True)
    if doc.status == "graded" and task.kind == "classification":
        _classification_figures(doc.details, list(task.classes), figs)
    if doc.status == "graded" and task.kind == "regression":
        _regression_figures(doc.details, figs)
    if doc.history:
        try:  # the student's own numbers: a plot that cannot be drawn is a note, not a crash
            drawn = plots.training(
                curves(doc.history), findings, figs.folder / "training_curves.png"
            )
        except Exception as exc:
            doc.flags.append(
                Flag(
                    code="plot_failed",
                    audience="student",
                    message="the training curves could not be drawn from the submitted "
                    f"history ({type(exc).__name__}); the rest of the report stands",
                )
            )
        else:
            figs.add(
                "training",
                drawn,
                "Training and validation loss per epoch; what they show is listed below.",
                "From the submitted history.csv.",
            )
    return figs.sections, figs.written


def _classification_figures(d: dict[str, Any], classes: list[str], figs: _Figures) -> None:
    if _square(d.get("confusion_matrix"), len(classes)):
        figs.add(
            "predictions",
            plots.confusion(d["confusion_matrix"], classes, figs.folder / "confusion.png"),
            _confusion_alt(d["confusion_matrix"], classes),
            "Normalized confusion matrix: row i shows how the images of true class i "
            "were classified.",
        )
    accuracy = _per_class(d.get("per_class_accuracy"), classes)
    if accuracy is not None:
        figs.add(
            "predictions",
            plots.per_class(accuracy, classes, figs.folder / "per_class_accuracy.png"),
            _per_class_alt(accuracy, classes),
            "Accuracy on each class of the hidden test split; the dashed line is the mean.",
        )


def _regression_figures(d: dict[str, Any], figs: _Figures) -> None:
    scatter = d.get("scatter") or {}
    true, pred = scatter.get("true") or [], scatter.get("pred") or []
    if not true or len(true) != len(pred):
        return
    target = str(d.get("target", "value"))
    figs.add(
        "predictions",
        plots.scatter(true, pred, figs.folder / "scatter.png", target=target),
        f"Scatter plot of {len(true):,} predicted against true values with the identity line.",
        "Each dot is one test image; on the dashed line the prediction is exact.",
    )
    figs.add(
        "predictions",
        plots.residuals(true, pred, figs.folder / "residuals.png", target=target),
        "Residuals (predicted minus true) against the true value, with the mean residual per bin.",
        "Points above zero are over-estimates; a sloped mean line shows a bias that "
        "depends on the value.",
    )


def _square(matrix: object, n: int) -> bool:
    return (
        isinstance(matrix, list)
        and len(matrix) == n
        and all(isinstance(row, list) and len(row) == n for row in matrix)
    )


def _per_class(values: object, classes: list[str]) -> list[float] | None:
    """Per-class accuracy in class order, from a list or a {class: accuracy} mapping."""
    if isinstance(values, dict):
        if not all(c in values for c in classes):
            return None
        values = [values[c] for c in classes]
    if not isinstance(values, list) or len(values) != len(classes):
        return None
    return [math.nan if v is None else float(v) for v in values]  # None: no test images


def _confusion_alt(matrix: list[list[float]], classes: list[str]) -> str:
    worst_i, worst_j, worst = 0, 1, -1.0
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, v in enumerate(row):
            if i != j and v / total > worst:
                worst_i, worst_j, worst = i, j, v / total
    return (
        f"Heatmap of the normalized confusion matrix over {len(classes)} classes; the most "
        f"frequent confusion is true {classes[worst_i]} predicted as {classes[worst_j]} "
        f"({worst:.0%} of {classes[worst_i]})."
    )


def _per_class_alt(accuracy: list[float], classes: list[str]) -> str:
    known = [i for i, a in enumerate(accuracy) if math.isfinite(a)]
    if not known:
        return "Bar chart of per-class accuracy: no class had test images."
    best = max(known, key=accuracy.__getitem__)
    worst = min(known, key=accuracy.__getitem__)
    return (
        f"Bar chart of per-class accuracy: best {classes[best]} ({accuracy[best]:.1%}), "
        f"worst {classes[worst]} ({accuracy[worst]:.1%})."
    )


__all__ = ["write_submission_report"]
