"""Score validated predictions against the labels, on the host, in trusted code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import METRICS, bootstrap_interval, compute
from .tasks import TaskSpec


@dataclass
class Scores:
    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    views: dict[str, dict[str, float]]
    details: dict[str, Any] = field(default_factory=dict)


def predicted(task: TaskSpec, outputs: np.ndarray) -> np.ndarray:
    """What the metrics compare: the value (regression) or the argmax class."""
    if task.kind == "classification":
        return outputs.argmax(axis=1)
    return outputs


def view_masks(task: TaskSpec, n: int) -> dict[str, np.ndarray]:
    """The hidden split divided, seeded, into a public part and a private part."""
    rng = np.random.default_rng(task.leaderboard.split_seed)
    public = np.zeros(n, dtype=bool)
    k = int(round(n * task.leaderboard.public_fraction))
    public[rng.permutation(n)[:k]] = True
    return {"public": public, "private": ~public}


def score(task: TaskSpec, labels: np.ndarray, outputs: np.ndarray, *, views: bool) -> Scores:
    preds = predicted(task, outputs)
    names = task.metrics.report
    metrics, details = compute(task.kind, names, labels, preds, task.num_classes)
    primary = METRICS.get(task.metrics.primary)
    low, high = bootstrap_interval(
        primary,
        labels,
        preds,
        samples=task.metrics.bootstrap_samples,
        seed=task.metrics.bootstrap_seed,
    )
    result = Scores(
        metrics={k: float(v) for k, v in metrics.items()},
        intervals={primary.name: [low, high]},
        views={},
        details=details,
    )
    if views:
        view_intervals: dict[str, dict[str, list[float]]] = {}
        for view, mask in view_masks(task, len(labels)).items():
            if mask.any():
                part, _ = compute(task.kind, names, labels[mask], preds[mask], task.num_classes)
                result.views[view] = {k: float(v) for k, v in part.items()}
                lo, hi = bootstrap_interval(
                    primary,
                    labels[mask],
                    preds[mask],
                    samples=task.metrics.bootstrap_samples,
                    seed=task.metrics.bootstrap_seed,
                )
                view_intervals[view] = {primary.name: [lo, hi]}
        result.details["view_intervals"] = view_intervals
    return result
