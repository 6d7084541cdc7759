"""The report's figures as PNG files (matplotlib's object API with the Agg canvas).

Each function draws one figure from plain numbers and writes it to ``path``; none
keeps global pyplot state, so they are safe to call from worker threads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .curves import Curves, Findings

P = ParamSpec("P")

DPI = 100
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d95f02"
STYLE: dict[str, Any] = {
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _styled(draw: Callable[P, Path]) -> Callable[P, Path]:
    """Draw under the report's style without touching the global rcParams."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Path:
        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
            return draw(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


@_styled
def confusion(matrix: Sequence[Sequence[float]], classes: Sequence[str], path: Path) -> Path:
    """Row-normalized confusion matrix as a heatmap, each cell labelled when it fits."""
    counts = np.asarray(matrix, dtype=float)
    sums = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    n = len(classes)
    side = min(max(4.4, 0.42 * n + 2.2), 11)
    fig = _figure(side + 0.9, side)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Normalized confusion matrix (each row sums to 1)")
    ax.spines[:].set_visible(False)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = norm[i, j]
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8 if n > 10 else 9,
                    color="white" if value > 0.55 else "#222222",
                )
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("Fraction of the true class")
    return _save(fig, path)


@_styled
def per_class(accuracy: Sequence[float], classes: Sequence[str], path: Path) -> Path:
    """Per-class accuracy as horizontal bars (percent), with the mean marked."""
    values = np.asarray(accuracy, dtype=float) * 100
    n = len(classes)
    fig = _figure(7.2, max(3.0, 0.38 * n + 1.4))
    ax = fig.add_subplot()
    y = np.arange(n)
    ax.barh(y, values, color="#4c72b0", height=0.7)
    ax.set_yticks(y, labels=classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 109)
    ax.set_xticks(range(0, 101, 20))
    mean = float(np.nanmean(values)) if n else math.nan
    ax.axvline(mean, color="#c44e52", linestyle="--", linewidth=1.2, label=f"mean {mean:.1f} %")
    for yi, v in zip(y.tolist(), values.tolist(), strict=True):
        if not math.isfinite(v):
            ax.text(0.8, yi, "no test images", va="center", fontsize=8.5)
        elif v >= 20:  # inside the bar's end, clear of the mean line
            ax.text(v - 1.2, yi, f"{v:.1f} %", va="center", ha="right", fontsize=8.5, color="white")
        else:
            ax.text(v + 0.8, yi, f"{v:.1f} %", va="center", fontsize=8.5)
    ax.set_xlabel("Accuracy on the hidden test split (%)")
    ax.set_ylabel("Class")
    ax.set_title("Per-class accuracy")
    ax.legend(loc="lower right", framealpha=0.9)
    return _save(fig, path)


@_styled
def scatter(true: Sequence[float], pred: Sequence[float], path: Path, *, target: str) -> Path:
    """Predicted against true value, with the identity line."""
    t, p = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    lo = float(np.nanmin(np.concatenate([t, p]))) if t.size else 0.0
    hi = float(np.nanmax(np.concatenate([t, p]))) if t.size else 1.0
    pad = 0.04 * (hi - lo or 1.0)
    fig = _figure(6.0, 5.6)
    ax = fig.add_subplot()
    ax.scatter(
        t,
        p,
        s=7,
        alpha=0.35,
        color="#4c72b0",
        edgecolors="none",
        rasterized=True,
        label=f"test images (n = {t.size:,})",
    )
    ax.plot(
        [lo - pad, hi + pad],
        [lo - pad, hi + pad],
        color="#c44e52",
        linewidth=1.4,
        linestyle="--",
        label="perfect prediction (y = x)",
    )
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"True {target}")
    ax.set_ylabel(f"Predicted {target}")
    ax.set_title("Predicted against true value")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", framealpha=0.9, markerscale=2.5)
    return _save(fig, path)


@_styled
def residuals(true: Sequence[float], pred: Sequence[float], path: Path, *, target: str) -> Path:
    """Residual (predicted − true) against the true value, with the binned mean."""
    t, p = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    r = p - t
    fig = _figure(7.2, 4.4)
    ax = fig.add_subplot()
    ax.scatter(
        t,
        r,
        s=7,
        alpha=0.3,
        color="#4c72b0",
        edgecolors="none",
        rasterized=True,
        label="one test image",
    )
    ax.axhline(0, color="#333333", linewidth=1)
    if t.size >= 20:
        edges = np.linspace(np.nanmin(t), np.nanmax(t), 13)
        which = np.clip(np.digitize(t, edges[1:-1]), 0, 11)
        centers = [(edges[k] + edges[k + 1]) / 2 for k in range(12) if np.any(which == k)]
        means = [float(np.mean(r[which == k])) for k in range(12) if np.any(which == k)]
        ax.plot(
            centers,
            means,
            color="#c44e52",
            marker="o",
            linewidth=1.8,
            label="mean residual per bin",
        )
    bound = float(np.nanmax(np.abs(r))) if r.size else 1.0
    ax.set_ylim(-1.08 * bound or -1, 1.08 * bound or 1)
    ax.set_xlabel(f"True {target}")
    ax.set_ylabel("Residual (predicted − true)")
    ax.set_title("Residuals by true value")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", framealpha=0.9, markerscale=2.0)
    return _save(fig, path)


@_styled
def training(c: Curves, found: Findings, path: Path) -> Path:
    """Loss (and accuracy, when logged) per epoch, with the findings marked."""
    panels = 2 if c.has_acc else 1
    fig = _figure(6.2 * panels, 4.4)
    ax = fig.add_subplot(1, panels, 1)
    _loss_panel(ax, c, found)
    if c.has_acc:
        _acc_panel(fig.add_subplot(1, panels, 2), c)
    return _save(fig, path)


def _loss_panel(ax: object, c: Curves, found: Findings) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    ax.plot(
        c.epochs, c.train_loss, color=TRAIN_COLOR, marker="o", markersize=3, label="training loss"
    )
    if c.has_val:
        ax.plot(
            c.epochs, c.val_loss, color=VAL_COLOR, marker="o", markersize=3, label="validation loss"
        )
    values = [v for v in (*c.train_loss, *c.val_loss) if math.isfinite(v)]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 30
    if log:
        ax.set_yscale("log")
    if found.best_epoch is not None and found.best_val_loss is not None:
        ax.plot(
            [found.best_epoch],
            [found.best_val_loss],
            marker="*",
            markersize=15,
            color="#2ca02c",
            linestyle="none",
            label=f"lowest validation loss (epoch {found.best_epoch:g})",
        )
    if found.overfit_after is not None:
        ax.axvspan(
            found.overfit_after,
            c.epochs[-1],
            color="#d62728",
            alpha=0.08,
            label="overfitting (validation loss rising)",
        )
    if found.train_rise_after is not None:
        ax.axvspan(
            found.train_rise_after,
            c.epochs[-1],
            color="#ff7f0e",
            alpha=0.10,
            label="training loss rising",
        )
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (log scale)" if log else "Loss")
    ax.set_title("Loss per epoch")
    ax.grid(alpha=0.3)
    if len(c.epochs) <= 20:
        ax.set_xticks(c.epochs)
    _legend_below(ax)


def _acc_panel(ax: object, c: Curves) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    values = [v for v in (*c.train_acc, *c.val_acc) if math.isfinite(v)]
    scale = 100.0 if values and max(values) <= 1.0 else 1.0
    if any(math.isfinite(v) for v in c.train_acc):
        ax.plot(
            c.epochs,
            [v * scale for v in c.train_acc],
            color=TRAIN_COLOR,
            marker="o",
            markersize=3,
            label="training accuracy",
        )
    if any(math.isfinite(v) for v in c.val_acc):
        ax.plot(
            c.epochs,
            [v * scale for v in c.val_acc],
            color=VAL_COLOR,
            marker="o",
            markersize=3,
            label="validation accuracy",
        )
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title("Accuracy per epoch")
    ax.grid(alpha=0.3)
    if len(c.epochs) <= 20:
        ax.set_xticks(c.epochs)
    _legend_below(ax)


def _legend_below(ax: Any) -> None:
    """The legend under the axes, outside the plotting area: it can never cover a point."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def zoom_range(
    rows: Sequence[tuple[str, float, tuple[float, float] | None, bool]],
) -> tuple[tuple[float, float], list[int]]:
    """The x range that shows the ranked teams, and the rows left off it (outliers).

    An extreme value is left off while its gap to the next value exceeds three times the
    span of the values that remain (at least two remain, at most a third are left off):
    one team at 1.6 % must not squash twenty teams near 90 % into one column. A reference
    solution within three spans of the teams' range widens it; one farther off is left off.
    """
    ranked = sorted(v for _n, v, _i, ref in rows if not ref and math.isfinite(v))
    kept = list(ranked)
    most = max(1, len(ranked) // 3) if len(ranked) >= 3 else 0
    while len(kept) > 2 and len(ranked) - len(kept) < most:
        low_gap, high_gap = kept[1] - kept[0], kept[-1] - kept[-2]
        gap, rest = (low_gap, kept[1:]) if low_gap >= high_gap else (high_gap, kept[:-1])
        if gap <= 3 * (rest[-1] - rest[0]):
            break
        kept = rest
    if not kept:
        kept = [v for _n, v, _i, _r in rows if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(kept), max(kept)
    span = hi - lo
    for _n, v, _i, ref in rows:  # a reference near the teams stays on the chart
        if ref and lo - 3 * span <= v <= hi + 3 * span:
            lo, hi = min(lo, v), max(hi, v)
    for _n, v, interval, _ref in rows:
        if interval is not None and lo <= v <= hi:
            lo, hi = min(lo, interval[0]), max(hi, interval[1])
    pad = 0.08 * (hi - lo) if hi > lo else (abs(hi) * 0.05 or 0.05)
    lo, hi = lo - pad, hi + pad
    outside = [i for i, (_n, v, _i, _r) in enumerate(rows) if not lo <= v <= hi]
    return (lo, hi), outside


@_styled
def intervals(
    rows: Sequence[tuple[str, float, tuple[float, float] | None, bool]],
    path: Path,
    *,
    metric: str,
    title: str,
    tick_format: Callable[[float], str] | None = None,
) -> Path:
    """A forest plot: one line per team (label, value, interval, is_reference), best on top.

    The x axis spans the ranked teams (``zoom_range``); a row off that range is drawn as an
    arrow at the edge with its value, and named under the chart.
    """
    n = len(rows)
    fig = _figure(7.6, max(2.6, 0.42 * n + 1.7))
    ax = fig.add_subplot()
    (lo, hi), outside = zoom_range(rows)
    show = tick_format or (lambda x: f"{x:.4g}")
    for i, (_name, value, interval, is_ref) in enumerate(rows):
        color = "#7f7f7f" if is_ref else "#4c72b0"
        if i in outside:
            left = value < lo
            edge = lo if left else hi
            ax.annotate(
                f"{'◀ ' if left else ''}{show(value)}{'' if left else ' ▶'}",
                (edge, i),
                xytext=(4 if left else -4, 0),
                textcoords="offset points",
                ha="left" if left else "right",
                va="center",
                fontsize=9,
                color=color,
            )
            continue
        if interval is not None:
            ax.hlines(i, max(lo, interval[0]), min(hi, interval[1]), color=color, linewidth=2.2)
        ax.plot([value], [i], marker="D" if is_ref else "o", color=color, markersize=6)
    ax.set_xlim(lo, hi)
    leader = next((r for r in rows if not r[3]), None)
    if leader is not None and leader[2] is not None:
        band_lo, band_hi = leader[2]
        ax.axvspan(band_lo, band_hi, color="#4c72b0", alpha=0.10, label="leader's 95 % interval")
        fig.legend(loc="outside lower center", frameon=False)
    ax.set_yticks(range(n), labels=[_short(r[0]) for r in rows])
    ax.set_ylim(n - 0.4, -0.6)  # best on top, the last row clear of the x axis
    if tick_format is not None:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: tick_format(x)))
    label = metric
    if outside:
        names = ", ".join(f"{_short(rows[i][0], 24)} ({show(rows[i][1])})" for i in outside[:4])
        more = f" and {len(outside) - 4} more" if len(outside) > 4 else ""
        label += f"\nOff the chart's range (arrows): {names}{more}"
    ax.set_xlabel(label)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
