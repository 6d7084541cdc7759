"""What a student's training curves show, in words: a pure function of ``history.csv`` rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# the whole curve decides: the last epoch's validation loss against its lowest value.
# This much above it (relative) while the training loss still fell reads as overfitting;
# between SLIGHT_RISE and OVERFIT_RISE it is named as a slight rise
OVERFIT_RISE = 0.10
SLIGHT_RISE = 0.02
# a training loss this much above its lowest value at the end reads as a rising loss
TRAIN_RISE = 0.10


@dataclass(frozen=True)
class Curves:
    epochs: list[float]
    train_loss: list[float]
    val_loss: list[float]
    train_acc: list[float]
    val_acc: list[float]

    @property
    def has_val(self) -> bool:
        return any(math.isfinite(v) for v in self.val_loss)

    @property
    def has_acc(self) -> bool:
        return any(math.isfinite(v) for v in (*self.train_acc, *self.val_acc))


@dataclass(frozen=True)
class Findings:
    best_epoch: float | None = None  # epoch of the lowest validation loss
    best_val_loss: float | None = None
    overfit_after: float | None = None  # last good epoch before validation loss rose
    train_rise_after: float | None = None  # epoch of the lowest training loss before it rose
    diverged_at: float | None = None  # first epoch with a non-finite training loss
    statements: list[str] = field(default_factory=list)


def curves(history: Sequence[Mapping[str, Any]]) -> Curves:
    rows = sorted(history, key=lambda r: _num(r.get("epoch")))

    def col(name: str) -> list[float]:
        return [_num(r.get(name)) for r in rows]

    epochs = [e if math.isfinite(e) else float(i + 1) for i, e in enumerate(col("epoch"))]
    return Curves(epochs, col("train_loss"), col("val_loss"), col("train_acc"), col("val_acc"))


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ep(epoch: float) -> str:
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:g}"


def _v(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def analyse(history: Sequence[Mapping[str, Any]], learning_rate: Any = None) -> Findings:
    """Findings on the curves, each with one plain sentence for the report."""
    c = curves(history)
    if not c.epochs:
        return Findings(statements=["No training history was submitted (history.csv)."])
    said: list[str] = []
    diverged = _diverged(c)
    best_epoch = best_val = overfit = None
    if c.has_val:
        i = min(
            (i for i, v in enumerate(c.val_loss) if math.isfinite(v)), key=c.val_loss.__getitem__
        )
        best_epoch, best_val = c.epochs[i], c.val_loss[i]
        said.append(f"Validation loss was lowest at epoch {_ep(best_epoch)} ({_v(best_val)}).")
        overfit = _overfit(c, i, said)
    else:
        said.append("history.csv has no validation loss, so overfitting cannot be judged.")
    rise = _train_rise(c, said, learning_rate)
    if diverged is not None:
        said.append(
            f"Training loss became NaN or infinite at epoch {_ep(diverged)}: the run diverged "
            "(a learning rate too high is the usual cause)."
        )
    first = next((v for v in c.train_loss if math.isfinite(v)), None)
    last = next((v for v in reversed(c.train_loss) if math.isfinite(v)), None)
    if first is not None and last is not None and len(c.epochs) > 1:
        said.append(
            f"Training loss went from {_v(first)} at epoch {_ep(c.epochs[0])} "
            f"to {_v(last)} at epoch {_ep(c.epochs[-1])}."
        )
    return Findings(best_epoch, best_val, overfit, rise, diverged, said)


def _diverged(c: Curves) -> float | None:
    """The first epoch with a NaN or infinite training loss, when others were finite."""
    if not any(math.isfinite(v) for v in c.train_loss):
        return None
    return next(
        (e for e, v in zip(c.epochs, c.train_loss, strict=True) if not math.isfinite(v)), None
    )


def _overfit(c: Curves, best: int, said: list[str]) -> float | None:
    """Overfitting judged on the whole curve: the best epoch against the last one."""
    finite = [i for i, v in enumerate(c.val_loss) if math.isfinite(v)]
    last = finite[-1]
    if last == best:
        said.append(
            "Validation loss was still at its lowest in the last epoch: no sign of overfitting."
        )
        return None
    best_val, end_val = c.val_loss[best], c.val_loss[last]
    if best_val > 0:
        rise = (end_val - best_val) / best_val
    else:
        rise = math.inf if end_val > best_val else 0.0
    b, e = _ep(c.epochs[best]), _ep(c.epochs[last])
    pct = "more than 1000 %" if rise > 10 else f"{rise * 100:.0f} %"
    if rise < SLIGHT_RISE:
        said.append(
            f"Validation loss ended within {SLIGHT_RISE * 100:.0f} % of its lowest point: "
            "no sign of overfitting."
        )
        return None
    if rise < OVERFIT_RISE:
        said.append(
            f"Validation loss ended {pct} above its lowest (epoch {b}): a slight rise, "
            "not clear overfitting."
        )
        return None
    train_best, last_train = c.train_loss[best], c.train_loss[last]
    if not (math.isfinite(train_best) and math.isfinite(last_train) and last_train < train_best):
        said.append(
            f"Validation loss rose {pct} after epoch {b} while training loss did not fall: "
            "training as a whole stopped improving."
        )
        return None
    said.append(
        f"Overfitting: after epoch {b} validation loss rose to {_v(end_val)} (epoch {e}), "
        f"{pct} above its lowest ({_v(best_val)}), while training loss kept falling "
        f"({_v(train_best)} to {_v(last_train)}); the weights from epoch {b} would "
        "generalize better."
    )
    return c.epochs[best]


def _train_rise(c: Curves, said: list[str], learning_rate: Any) -> float | None:
    finite = [(e, v) for e, v in zip(c.epochs, c.train_loss, strict=True) if math.isfinite(v)]
    if len(finite) < 3:
        return None
    low_i = min(range(len(finite)), key=lambda i: finite[i][1])
    low_epoch, low = finite[low_i]
    rises = sum(1 for a, b in zip(finite[low_i:], finite[low_i + 1 :], strict=False) if b[1] > a[1])
    end_epoch, end = finite[-1]
    if low_i >= len(finite) - 2 or rises < 2 or end <= low * (1 + TRAIN_RISE) + 1e-12:
        return None
    lr = f" (learning_rate = {learning_rate})" if learning_rate is not None else ""
    said.append(
        f"Training loss rose from {_v(low)} at epoch {_ep(low_epoch)} to {_v(end)} at epoch "
        f"{_ep(end_epoch)}: a rising training loss usually means the learning rate is too "
        f"high{lr}."
    )
    return low_epoch
