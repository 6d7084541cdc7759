"""``grade data prepare``: build a task's cached splits once, optionally export them.

``--export DIR`` writes each public split for students, for every task, as
``DIR/<task>/<split>/images.npy`` (uint8, N x C x H x W: the layout the model receives,
before the division by 255 and the manifest's ``normalize``) and ``labels.npy`` (int64
class indices, or float32 targets for regression), plus ``DIR/<task>/dataset.json``
(shapes, classes, how to load them). A provider with a native layout of its own writes
it beside them (correlation: ``images/<id>.png`` and ``responses.csv``, the seed's
layout). Hidden splits are never exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .console import say, warn
from .data import PreparedSplit, prepare_split, providers
from .errors import UserError
from .tasks import TaskSpec, load_task


def prepare_task(
    task_id: str,
    *,
    splits: list[str],
    data_root: Path | None,
    download: bool,
    export_dir: Path | None,
    force: bool,
) -> None:
    task = load_task(task_id)
    names = splits or [*task.splits.public, task.splits.hidden]
    if download:
        provider = providers.get(task.dataset.provider)
        fetch = getattr(provider, "download", None)
        if fetch is None:
            raise UserError(f"task {task_id}'s data is generated or provided; nothing to download")
        fetch(task, data_root)
    exported: dict[str, int] = {}
    for split in names:
        prepared = prepare_split(task, split, data_root=data_root, force=force)
        say(f"{task.id}/{split}: {prepared.count} images in {prepared.folder}")
        if split == task.splits.hidden:
            _say_where_hidden_comes_from(prepared)
        if export_dir is not None and split in task.splits.public:
            export_split(task, prepared, export_dir / task.id / split)
            exported[split] = prepared.count
    if export_dir is not None and exported:
        write_dataset_info(task, export_dir / task.id, exported)


def _say_where_hidden_comes_from(prepared: PreparedSplit) -> None:
    """The fallback-seed warning only for a split drawn from it; a fixed split says so."""
    if prepared.public_fallback_seed:
        warn(
            "the hidden split was drawn with the PUBLIC fallback seed (students can "
            "regenerate it); set HARNESS_SECRET_SEED or secret_seed in "
            "~/.config/harness/config.toml"
        )
    elif prepared.fixed is not None:
        say(
            f"  the hidden split is fixed: {prepared.fixed} (no seed is involved; keep "
            "its labels away from students)"
        )


def export_split(task: TaskSpec, prepared: PreparedSplit, folder: Path) -> None:
    """One public split as the model receives it, plus the provider's own layout if any."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = np.asarray(prepared.images()), prepared.labels()
    np.save(folder / "images.npy", np.ascontiguousarray(images))
    np.save(folder / "labels.npy", labels)
    native = getattr(providers.get(task.dataset.provider), "export_layout", None)
    if native is not None:
        native(images, labels, folder)
    say(f"  exported to {folder} (images.npy: {_shape(images)} uint8)")


def _shape(images: np.ndarray) -> str:
    return " x ".join(str(n) for n in images.shape)


def write_dataset_info(task: TaskSpec, folder: Path, counts: dict[str, int]) -> Path:
    """``dataset.json``: what the exported arrays are, for a student's training script."""
    c, h, w = task.input_shape
    info = {
        "task": task.id,
        "kind": task.kind,
        "splits": counts,
        "images": f"<split>/images.npy: uint8, N x {c} x {h} x {w} (N x C x H x W)",
        "labels": (
            "<split>/labels.npy: int64 class indices into `classes`"
            if task.kind == "classification"
            else "<split>/labels.npy: float32 targets"
        ),
        "classes": list(task.classes),
        "model_input": (
            "float32 images / 255 (values in [0, 1]), then submission.toml's "
            "[model].normalize if given"
        ),
        "load": "np.load('train/images.npy'), np.load('train/labels.npy')",
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path
