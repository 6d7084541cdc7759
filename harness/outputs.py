"""Read what a sandbox wrote, trusting nothing: JSON and .npy only, sizes and shapes checked."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .safefs import NotPlain, read_under

MAX_REPORT = 2**20


class BadOutput(Exception):
    """The runner's output is missing or breaks the output contract."""


def read_report(output: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_under(output, "report.json", MAX_REPORT).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_predictions(output: Path, count: int, kind: str, num_classes: int) -> np.ndarray:
    """The predictions as float32: (N,) for regression, (N, classes) for classification."""
    width = 1 if kind == "regression" else num_classes
    limit = 4 * count * width + 4096
    try:
        raw = read_under(output, "predictions.npy", limit)
    except NotPlain as exc:
        if "larger than" in str(exc):
            raise BadOutput("the predictions file is larger than the outputs can be") from None
        raise BadOutput("the run wrote no predictions (as a plain file)") from None
    except OSError:
        raise BadOutput("the run wrote no predictions") from None
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadOutput(f"the predictions file is not a plain .npy array ({exc})") from None
    expected = (count,) if kind == "regression" else (count, num_classes)
    if array.dtype != np.float32 or array.shape != expected:
        raise BadOutput(
            f"the predictions are {array.dtype} {array.shape}; expected float32 {expected}"
        )
    if not np.isfinite(array).all():
        raise BadOutput("the predictions hold NaN or infinite values")
    return array
