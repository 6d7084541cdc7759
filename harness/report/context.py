"""What a submission report says, as plain data: a pure function of the result documents.

The HTML and the Markdown report render the same context, so they cannot disagree.
A student's context never holds the submission's own output or instructor-only flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..results import LayerCount, ResultDocument
from ..student_error import render as render_error
from ..tasks import TaskSpec
from . import facts
from .curves import Findings
from .gradescope import missing_training, points, scoring_rule

PARAMETER_KINDS = ("parameter", "constant", "created")
STATUS_TEXT = {
    "graded": "evaluated on the hidden test split.",
    "invalid": "the manifest or the folder breaks the submission format.",
    "over_limit": "the model has more parameters than the task allows.",
    "failed": "the model did not build, load, export or run, or its output broke the contract.",
    "timeout": "the run passed the task's time limit.",
    "killed": "the run passed the task's memory or process limits.",
}


def report_context(
    doc: ResultDocument,
    task: TaskSpec,
    *,
    references: Sequence[ResultDocument] = (),
    findings: Findings,
    figures: dict[str, list[dict[str, str]]],
    instructor: bool = False,
) -> dict[str, Any]:
    primary = task.metrics.primary
    return {
        "doc": doc,
        "task": task,
        "graded_at": facts.fmt_when(doc),
        "status_text": STATUS_TEXT[doc.status],
        "error_text": render_error(doc.error),  # the submission's own error, sanitized
        "score": {
            "points": points(doc, task),
            "max": task.grading.max_score,
            "rule": scoring_rule(task),
        },
        "primary_label": facts.label(primary),
        "metrics": _metrics(doc, task),
        "comparisons": _comparisons(doc, task, references),
        "params": _params(doc, task),
        "figures": figures,
        "findings": findings.statements,
        "training": [(k, _plain(v)) for k, v in doc.training.items()],
        "missing": missing_training(doc, task),
        "timing": _timing(doc),
        "flags": [f for f in doc.flags if instructor or f.audience == "student"],
        "write_up": str(doc.details.get("write_up", "") or ""),
        "instructor": instructor,
        "student_output": (
            doc.student_output if instructor or task.integrity.show_student_output else ""
        ),
    }


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_plain(v)}" for k, v in value.items())
    return str(value)


def _metrics(doc: ResultDocument, task: TaskSpec) -> list[dict[str, Any]]:
    rows = []
    for name in task.metrics.report:
        value = doc.metrics.get(name)
        if value is None:
            continue
        views = {v: facts.fmt(name, doc.views.get(v, {}).get(name)) for v in ("public", "private")}
        rows.append(
            {
                "name": name,
                "label": facts.label(name),
                "value": facts.fmt(name, value),
                "interval": facts.fmt_interval(name, facts.view_interval(doc, task, "all", name)),
                "arrow": facts.arrow(name),
                "primary": name == task.metrics.primary,
                "public": views["public"],
                "private": views["private"],
            }
        )
    return rows


def _comparisons(
    doc: ResultDocument, task: TaskSpec, references: Sequence[ResultDocument]
) -> list[dict[str, Any]]:
    """How the submission's primary metric compares with each reference solution."""
    primary = task.metrics.primary
    mine = doc.metrics.get(primary) if doc.status == "graded" else None
    mine_iv = facts.view_interval(doc, task, "all", primary)
    by_name = {r.team: r for r in references if r.status == "graded"}
    names = [spec.name for spec in task.references] + [
        n for n in by_name if n not in {s.name for s in task.references}
    ]
    expected = {spec.name: spec.expected for spec in task.references}
    out = []
    for name in names:
        ref = by_name.get(name)
        value = ref.metrics.get(primary) if ref else expected.get(name)
        if value is None or not math.isfinite(value):
            continue
        ref_iv = facts.view_interval(ref, task, "all", primary) if ref else None
        out.append(
            {
                "name": name,
                "value": facts.fmt(primary, value),
                "source": "measured" if ref else "expected",
                "verdict": _verdict(primary, mine, mine_iv, value, ref_iv),
                "difference": _difference(primary, mine, value),
            }
        )
    return out


def _difference(primary: str, mine: float | None, ref: float) -> str:
    if mine is None:
        return "—"
    delta = mine - ref
    sign = "+" if delta >= 0 else "−"
    return f"{sign}{facts.fmt(primary, abs(delta))}"


def _verdict(
    primary: str,
    mine: float | None,
    mine_iv: tuple[float, float] | None,
    ref: float,
    ref_iv: tuple[float, float] | None,
) -> str:
    if mine is None:
        return "not comparable (not graded)"
    if (
        mine_iv is not None
        and ref_iv is not None
        and mine_iv[0] <= ref_iv[1]
        and ref_iv[0] <= mine_iv[1]
    ):
        return "statistically tied (95 % intervals overlap)"
    if mine == ref:
        return "equal"
    return "better" if facts.better(primary, mine, ref) else "worse"


def _layer(layer: LayerCount) -> dict[str, Any]:
    return {
        "name": layer.name,
        "shape": " × ".join(str(s) for s in layer.shape) or "scalar",
        "numel": f"{layer.numel:,}",
        "kind": layer.kind,
    }


def _params(doc: ResultDocument, task: TaskSpec) -> dict[str, Any]:
    p = doc.params
    limit = task.parameter_limit if task.parameter_limit is not None else p.limit
    counted = p.counted
    over = counted is not None and limit is not None and counted > limit
    notes = []
    if not p.verified and counted is not None:
        notes.append("Unverified count: taken from the eager model, not the exported computation.")
    if p.model_reported is not None and counted is not None and p.model_reported != counted:
        notes.append(
            f"The model's own sum(p.numel()) is {p.model_reported:,}; the harness counted "
            f"{counted:,} (every tensor the computation uses counts)."
        )
    return {
        "counted": facts.fmt_count(counted),
        "limit": facts.fmt_count(limit) if limit is not None else None,
        "pct": f"{100 * counted / limit:.1f} %" if counted is not None and limit else None,
        "over": over,
        "weights_file": facts.fmt_count(p.weights_file),
        "buffers": facts.fmt_count(p.buffers),
        "notes": notes,
        "layers": [_layer(x) for x in p.per_layer if x.kind in PARAMETER_KINDS],
        "buffer_layers": [_layer(x) for x in p.per_layer if x.kind not in PARAMETER_KINDS],
    }


# where phase B predicted (``sandbox.device``, as the runner reported it)
DEVICES = {"cuda": "the GPU (CUDA)", "cpu": "the CPU"}


def _timing(doc: ResultDocument) -> list[tuple[str, str]]:
    t = doc.timing
    rows = []
    device = doc.sandbox.device if doc.sandbox else None
    if device:
        rows.append(("Predicted on", DEVICES.get(device, device)))
    if "inference_s" in t:
        rows.append(("Inference on the hidden split", facts.fmt_seconds(t["inference_s"])))
    if "images_per_s" in t:
        rows.append(("Throughput", f"{t['images_per_s']:,.0f} images/s"))
    if "total_s" in t:
        rows.append(("Whole grading", facts.fmt_seconds(t["total_s"])))
    return rows
