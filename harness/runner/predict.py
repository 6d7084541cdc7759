"""Batched inference over the memory-mapped inputs, and the output contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .contract import EagerJob, ModelIO, PredictJob
from .heap import keep_freed_memory, plain_heap, room_to_keep

DETERMINISM_SEED = 0  # the other order the determinism check predicts in


class OutputError(Exception):
    """The model's output broke the contract (shape, dtype, NaN)."""


def _prepare(batch: np.ndarray, device: torch.device, norm: Any) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.to(torch.float32).div_(255.0)
    if norm is not None:
        mean, std = norm
        x = (x - mean) / std
    return x


def _check(out: Any, n: int, job: ModelIO) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        raise OutputError(f"the model returned a {type(out).__name__}; it must return one tensor")
    if not isinstance(out, torch.Tensor):
        raise OutputError(f"the model returned {type(out).__name__}, not a tensor")
    if not out.is_floating_point():
        raise OutputError(f"the model returned dtype {out.dtype}; a floating dtype is required")
    if job.kind == "regression":
        if tuple(out.shape) not in ((n,), (n, 1)):
            raise OutputError(
                f"the output has shape {tuple(out.shape)} for a batch of {n}; "
                f"a regression model returns ({n},) or ({n}, 1)"
            )
        out = out.reshape(n)
    elif tuple(out.shape) != (n, job.num_classes):
        raise OutputError(
            f"the output has shape {tuple(out.shape)} for a batch of {n}; "
            f"expected ({n}, {job.num_classes}) logits or probabilities"
        )
    if not bool(torch.isfinite(out).all()):
        raise OutputError("the output holds NaN or infinite values")
    return out.float()


def run_batches(
    model: Callable[[torch.Tensor], Any],
    images: np.ndarray,
    job: EagerJob | PredictJob,
    device: torch.device,
    order: np.ndarray | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Predict every image (in ``order`` if given), returning outputs in input order."""
    kept = keep_freed_memory()  # each batch reuses the last one's memory (``heap.py``)
    n = len(images)
    bs = batch_size or job.batch_size
    norm = None
    if job.normalize is not None:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(job.normalize.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(job.normalize.std, dtype=torch.float32).view(shape)
        norm = (mean.to(device), std.to(device))
    index = np.arange(n) if order is None else order
    width = () if job.kind == "regression" else (job.num_classes,)
    result = np.empty((n, *width), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, bs):
            idx = index[start : start + bs]
            batch = images[idx] if order is not None else images[start : start + bs]
            out = _check(model(_prepare(batch, device, norm)), len(idx), job)
            result[idx] = out.cpu().numpy()
            if kept and not room_to_keep():  # near the memory limit: keep nothing
                plain_heap()
                kept = False
    return result


def determinism(
    model: Callable[[torch.Tensor], Any],
    images: np.ndarray,
    first: np.ndarray,
    job: EagerJob | PredictJob,
    device: torch.device,
) -> dict[str, Any]:
    """Predict the whole split again in another order (a seeded permutation), so every
    image sits in another batch beside other images, at another call; when the split
    fits in one batch, in two smaller calls. Reports which images' outputs differ."""
    n = len(images)
    if n < 2:
        return {"checked": n, "max_abs_diff": 0.0, "differ": 0, "images": []}
    order = np.random.default_rng(DETERMINISM_SEED).permutation(n)
    size = job.batch_size
    other = size if n > size else max(1, (n + 1) // 2)
    again = run_batches(model, images, job, device, order=order, batch_size=other)
    diff = np.abs(again.astype(np.float64) - first).reshape(n, -1).max(axis=1)
    scale = 1.0 + float(np.abs(first).max())
    differ = np.flatnonzero(~(diff <= 1e-4 * scale))  # NaN differs too
    return {
        "checked": n,
        "max_abs_diff": float(diff.max()),
        "differ": len(differ),
        "images": [int(i) for i in differ[:20]],
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0
