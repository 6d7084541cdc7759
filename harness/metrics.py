"""Metrics: each one pure function registered once in ``METRICS`` with all its facts.

A metric's ``fn(labels, predictions)`` reduces the last axis, so the same function scores
one prediction vector (shape ``(N,)``, a 0-d result) and a stack of bootstrap resamples
(shape ``(B, N)``, a ``(B,)`` result). ``Metric.__call__`` returns a plain float.

Regression predictions are floats; classification predictions are class indices.
Conventions for degenerate inputs (no NaN leaves this module for finite inputs):

- ``r2`` with constant labels: 1.0 when the predictions equal them exactly, else 0.0;
- ``pearson`` when labels or predictions are constant: 0.0 (no linear relation to measure);
- ``macro_f1`` averages F1 over the classes present in the labels or the predictions;
  a class absent from both has no F1 and is left out (not counted as 0 or 1);
- ``balanced_accuracy`` (mean per-class accuracy) averages recall over the classes
  present in the labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .registry import Registry

Kind = Literal["classification", "regression"]
MetricFn = Callable[[np.ndarray, np.ndarray], Any]  # (labels, predictions) -> value(s)


@dataclass(frozen=True)
class Metric:
    name: str  # "mse"
    label: str  # "MSE"
    kind: Kind
    direction: Literal["min", "max"]
    fn: MetricFn  # reduces the last axis: (N,) -> 0-d, (B, N) -> (B,)
    fmt: str = "{:.4f}"
    # where ``fn`` is the mean over the pairs of this (elementwise, float64 or bool): the
    # bootstrap resamples its values instead of the pairs, with the same numbers
    per_pair: MetricFn | None = None

    def __call__(self, labels: np.ndarray, predictions: np.ndarray) -> float:
        return float(self.fn(np.asarray(labels), np.asarray(predictions)))

    def format(self, value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else self.fmt.format(value)


METRICS: Registry[Metric] = Registry("metric")


def metric(
    name: str,
    label: str,
    kind: Kind,
    direction: Literal["min", "max"],
    fmt: str = "{:.4f}",
    *,
    per_pair: MetricFn | None = None,
) -> Callable[[MetricFn], MetricFn]:
    """Register the decorated function as a metric; the function stays usable as is.
    ``per_pair``: the decorated function is ``np.mean(per_pair(labels, predictions),
    axis=-1)``, exactly (``Metric.per_pair``)."""

    def decorate(fn: MetricFn) -> MetricFn:
        METRICS.add(name, Metric(name, label, kind, direction, fn, fmt, per_pair))
        return fn

    return decorate


def _float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _squared_error(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return (_float(predictions) - _float(labels)) ** 2


def _absolute_error(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return np.abs(_float(predictions) - _float(labels))


def _hit(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return np.asarray(labels) == np.asarray(predictions)


@metric("mse", "MSE", "regression", "min", "{:.4g}", per_pair=_squared_error)
def mse(labels: np.ndarray, predictions: np.ndarray) -> Any:
    return np.mean(_squared_error(labels, predictions), axis=-1)


@metric("rmse", "RMSE", "regression", "min", "{:.4g}")
def rmse(labels: np.ndarray, predictions: np.ndarray) -> Any:
    return np.sqrt(mse(labels, predictions))


@metric("mae", "MAE", "regression", "min", "{:.4g}", per_pair=_absolute_error)
def mae(labels: np.ndarray, predictions: np.ndarray) -> Any:
    return np.mean(_absolute_error(labels, predictions), axis=-1)


@metric("r2", "R²", "regression", "max")
def r2(labels: np.ndarray, predictions: np.ndarray) -> Any:
    y = _float(labels)
    ss_res = np.sum((_float(predictions) - y) ** 2, axis=-1)
    ss_tot = np.sum((y - y.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    return np.where(ss_tot > 0, 1.0 - ss_res / safe, np.where(ss_res == 0, 1.0, 0.0))


@metric("pearson", "Pearson r", "regression", "max")
def pearson(labels: np.ndarray, predictions: np.ndarray) -> Any:
    y = _float(labels)
    p = _float(predictions)
    dy = y - y.mean(axis=-1, keepdims=True)
    dp = p - p.mean(axis=-1, keepdims=True)
    denom = np.sqrt(np.sum(dy**2, axis=-1) * np.sum(dp**2, axis=-1))
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, np.clip(np.sum(dy * dp, axis=-1) / safe, -1.0, 1.0), 0.0)


@metric("accuracy", "Accuracy", "classification", "max", "{:.2%}", per_pair=_hit)
def accuracy(labels: np.ndarray, predictions: np.ndarray) -> Any:
    return np.mean(_hit(labels, predictions), axis=-1)


def _class_counts(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row of (..., N) inputs: counts per class of labels, predictions and hits, (B, K)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    y2, p2 = y.reshape(-1, y.shape[-1]), p.reshape(-1, p.shape[-1])
    k = int(max(y2.max(initial=0), p2.max(initial=0))) + 1
    offset = np.arange(y2.shape[0])[:, None] * k
    size = y2.shape[0] * k
    y2 = y2 + offset
    p2 = p2 + offset
    true = np.bincount(y2.ravel(), minlength=size).reshape(-1, k)
    pred = np.bincount(p2.ravel(), minlength=size).reshape(-1, k)
    hit = np.bincount(y2[y2 == p2], minlength=size).reshape(-1, k)
    return true, pred, hit


def _mean_where(values: np.ndarray, mask: np.ndarray, batch: tuple[int, ...]) -> Any:
    total = np.where(mask, values, 0.0).sum(axis=1)
    return (total / np.maximum(mask.sum(axis=1), 1)).reshape(batch)


@metric("macro_f1", "Macro F1", "classification", "max")
def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> Any:
    true, pred, hit = _class_counts(labels, predictions)
    support = true + pred  # 2*tp + fp + fn
    present = support > 0
    f1 = 2 * hit / np.where(present, support, 1)
    return _mean_where(f1, present, np.shape(labels)[:-1])


@metric("balanced_accuracy", "Mean per-class accuracy", "classification", "max", "{:.2%}")
def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> Any:
    true, _, hit = _class_counts(labels, predictions)
    present = true > 0
    recall = hit / np.where(present, true, 1)
    return _mean_where(recall, present, np.shape(labels)[:-1])


METRICS.freeze()


def _check(kind: Kind, labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1 or labels.shape != predictions.shape or labels.size == 0:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must be equal, 1-D, "
            "non-empty"
        )
    if kind == "classification":
        for what, a in (("labels", labels), ("predictions", predictions)):
            if a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= num_classes:
                raise ValueError(f"{what} must be class indices in [0, {num_classes})")
    elif not (np.isfinite(labels).all() and np.isfinite(predictions).all()):
        raise ValueError("regression labels and predictions must be finite")


def compute(
    kind: Kind,
    names: Sequence[str],
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int = 0,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The named metrics and the details the report plots.

    Classification details: ``per_class_accuracy`` (None for a class with no examples) and
    ``confusion_matrix`` (rows true class, columns predicted). Regression details:
    ``scatter`` with at most 1000 (true, pred) pairs, a fixed-seed subsample.
    Raises ValueError for inputs the caller should have validated (a harness bug).
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    _check(kind, labels, predictions, num_classes)
    values = {}
    for name in names:
        m = METRICS.get(name)
        if m.kind != kind:
            raise ValueError(f"metric {name!r} is a {m.kind} metric, not {kind}")
        values[name] = m(labels, predictions)
    if kind == "classification":
        return values, _classification_details(labels, predictions, num_classes)
    return values, {"scatter": scatter_sample(labels, predictions)}


def _classification_details(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> dict[str, Any]:
    k = num_classes
    flat = labels.astype(np.int64) * k + predictions.astype(np.int64)
    confusion = np.bincount(flat, minlength=k * k).reshape(k, k)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(k)]
    return {"per_class_accuracy": per_class, "confusion_matrix": confusion.tolist()}


def scatter_sample(
    labels: np.ndarray, predictions: np.ndarray, limit: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """At most ``limit`` (true, pred) pairs in their original order, rounded to 5 decimals."""
    n = len(labels)
    index = np.arange(n)
    if n > limit:
        index = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return {
        "true": np.round(_float(labels)[index], 5).tolist(),
        "pred": np.round(_float(predictions)[index], 5).tolist(),
    }


_CHUNK_VALUES = 250_000  # resampled values held at once (2 MB of int64 indices)


def bootstrap_values(
    metric: Metric,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    samples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The metric on ``samples`` resamples (with replacement) of the N pairs. A metric
    that is a mean over the pairs (``Metric.per_pair``) resamples its per-pair values,
    computed once: the same draws and the same values, so the same numbers, for one
    gather instead of two and no per-resample arithmetic."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    n = len(labels)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // max(n, 1))
    out = np.empty(samples, dtype=np.float64)
    per_pair = None if metric.per_pair is None else metric.per_pair(labels, predictions)
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        if per_pair is None:
            out[start:stop] = metric.fn(labels[index], predictions[index])
        else:
            out[start:stop] = np.mean(per_pair[index], axis=-1)
    return out


def bootstrap_interval(
    metric: Metric,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` at ``level``, reproducible for a seed."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    values = bootstrap_values(metric, labels, predictions, samples=samples, seed=seed)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def better(metric: Metric, a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` for this metric's direction."""
    return a < b if metric.direction == "min" else a > b


def sort_key(metric: Metric, value: float | None) -> tuple[int, float]:
    """Sort ascending with this key to rank best first; missing or NaN values go last."""
    if value is None or math.isnan(value):
        return (1, 0.0)
    return (0, value if metric.direction == "min" else -value)
