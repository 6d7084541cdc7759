"""The tiny regression task every test corpus grades against, as ``task.toml``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kit.toml import table, value

SIZES = (32, 24, 40)  # train, validation, test images of the generated correlation set
REPORT = ("mse", "mae", "rmse", "r2", "pearson")


def task_toml(
    task_id: str = "tiny",
    *,
    title: str = "tiny regression task for tests",
    limit: int = 2_000_000,
    required: tuple[str, ...] = (),
    time: float = 120,
    memory_mb: int = 2048,
    batch_size: int = 16,
    public_seed: int = 7,
    sizes: tuple[int, int, int] = SIZES,
    report: tuple[str, ...] = REPORT,
    bootstrap: int = 200,
    limits: Mapping[str, Any] | None = None,
    grading: Mapping[str, Any] | None = None,
    integrity: Mapping[str, Any] | None = None,
) -> str:
    """The text of a tiny task: 1x150x150 correlation plots, MSE primary. ``limits``,
    ``grading`` and ``integrity`` add keys to those tables (``integrity`` only if given)."""
    train, validation, test = sizes
    head: dict[str, Any] = {
        "id": task_id,
        "title": title,
        "kind": "regression",
        "input_shape": [1, 150, 150],
        "parameter_limit": limit,
        "batch_size": batch_size,
    }
    if required:
        head["required_training"] = list(required)
    parts = [
        "".join(f"{k} = {value(v)}\n" for k, v in head.items()),
        '[dataset]\nprovider = "correlation"\n',
        table(
            "dataset.options",
            {
                "public_seed": public_seed,
                "train_size": train,
                "validation_size": validation,
                "test_size": test,
            },
        ),
        table(
            "metrics",
            {"primary": "mse", "report": list(report), "bootstrap_samples": bootstrap},
        ),
        table(
            "limits", {"time_seconds": time, "memory_mb": memory_mb, "cpus": 1, **(limits or {})}
        ),
        table("grading", {"full_marks_at": 0.01, "zero_marks_at": 0.3, **(grading or {})}),
    ]
    if integrity is not None:
        parts.append(table("integrity", integrity))
    return "\n".join(parts)


def write_task(tasks_dir: Path, task_id: str = "tiny", **options: Any) -> Path:
    """Write ``tasks_dir/<task_id>/task.toml`` (see ``task_toml``); returns the folder."""
    folder = tasks_dir / task_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.toml").write_text(task_toml(task_id, **options))
    return folder
