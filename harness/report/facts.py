"""What the reports need to know about a metric, a number or a date, in one place.

Metric facts (label, direction, format) come from the metric registry; nothing here
keeps a second table of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..results import ResultDocument, graded_when
from ..tasks import TaskSpec

VIEWS = ("public", "private", "all")
VIEW_TITLES = {
    "public": "public part of the hidden test split",
    "private": "private part of the hidden test split",
    "all": "whole hidden test split",
}


def _metric(name: str) -> Any:
    from ..metrics import METRICS

    return METRICS.get(name)


def label(name: str) -> str:
    return str(_metric(name).label)


def direction(name: str) -> str:
    """``"max"`` when a higher value is better, ``"min"`` when a lower one is."""
    return str(_metric(name).direction)


def better(name: str, a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` for metric ``name``."""
    return a > b if direction(name) == "max" else a < b


def sort_value(name: str, value: float) -> float:
    """A key that sorts the best value first."""
    return -value if direction(name) == "max" else value


def fmt(name: str, value: float | None) -> str:
    """``value`` written the way the metric registry says (an em dash when missing)."""
    if value is None or not math.isfinite(value):
        return "—"
    spec: str | Callable[[float], str] = _metric(name).fmt
    if callable(spec):
        return str(spec(value))
    if "{" in spec:
        return spec.format(value)
    return format(value, spec)


def fmt_interval(name: str, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    return f"[{fmt(name, interval[0])}, {fmt(name, interval[1])}]"


def arrow(name: str) -> str:
    return "higher is better" if direction(name) == "max" else "lower is better"


def fmt_count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def when(doc: ResultDocument) -> datetime:
    """``graded_at`` as an aware datetime (naive stamps are taken as UTC)."""
    return graded_when(doc)


def fmt_when(doc: ResultDocument, *, zone: bool = True) -> str:
    """``graded_at`` in UTC to the minute (``zone=False`` leaves out the " UTC")."""
    stamp = when(doc)
    if stamp.year == 1:
        return doc.graded_at
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M" + (" UTC" if zone else ""))


def effective_view(task: TaskSpec, view: str) -> str:
    """The view whose numbers are shown: a task with no private part shows everything."""
    if view != "all" and task.leaderboard.public_fraction >= 1:
        return "all"
    return view


def view_metrics(doc: ResultDocument, task: TaskSpec, view: str) -> dict[str, float]:
    """The document's metric values on one view of the hidden split."""
    view = effective_view(task, view)
    if view == "all":
        return dict(doc.metrics)
    return dict(doc.views.get(view, {}))


def view_interval(
    doc: ResultDocument, task: TaskSpec, view: str, metric: str
) -> tuple[float, float] | None:
    """The 95 % bootstrap interval of ``metric`` on one view, when the pipeline computed it.

    The whole split's intervals are ``doc.intervals``; the public and private parts'
    are ``doc.details["view_intervals"][view]``.
    """
    view = effective_view(task, view)
    if view == "all":
        pair = doc.intervals.get(metric)
    else:
        pair = doc.details.get("view_intervals", {}).get(view, {}).get(metric)
    if not pair or len(pair) != 2:
        return None
    lo, hi = float(pair[0]), float(pair[1])
    return (min(lo, hi), max(lo, hi))
