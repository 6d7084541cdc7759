"""Score the predictions against the labels, which only the host reads."""

from __future__ import annotations

import time

from ..scoring import score as metrics_of
from .records import Predicted, Scored


def score(predicted: Predicted) -> Scored:
    g = predicted.grading
    g.stage("score")
    labels = g.split.labels()
    t = time.perf_counter()
    scores = metrics_of(g.task, labels, predicted.outputs, views=g.mode == "grade")
    notes = predicted.notes.add(timing={"scoring_s": round(time.perf_counter() - t, 4)})
    return Scored(g, notes, scores)
