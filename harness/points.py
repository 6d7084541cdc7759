"""The points rule of a task: one function from a primary-metric value to points.

Points are linear in the primary metric between the task's ``grading.zero_marks_at``
(0 points) and ``grading.full_marks_at`` (``grading.max_score``), clipped to that range;
a grading without a finite value earns 0. The gradebook CSV, ``leaderboard.csv`` and
Gradescope's ``results.json`` all call ``points_for``.
"""

from __future__ import annotations

import math

from .tasks import TaskSpec


def points_for(task: TaskSpec, value: float | None) -> float:
    """The points a primary-metric value earns on ``task`` (0 when there is no value)."""
    if value is None or not math.isfinite(value):
        return 0.0
    g = task.grading
    if g.full_marks_at == g.zero_marks_at:
        from .metrics import METRICS

        higher = METRICS.get(task.metrics.primary).direction == "max"
        good = value >= g.full_marks_at if higher else value <= g.full_marks_at
        fraction = 1.0 if good else 0.0
    else:
        fraction = (value - g.zero_marks_at) / (g.full_marks_at - g.zero_marks_at)
    return round(g.max_score * min(1.0, max(0.0, fraction)), 2)
