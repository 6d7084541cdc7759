"""Providers for an instructor's own data: ``arrays`` and ``image-folder``.

Both read ``DATA_ROOT/<task id>/`` (``dataset.options.folder`` names another folder,
relative to the data root or absolute), one sub-folder (or file) per split:

``arrays``
    ``<split>/images.npy`` and ``<split>/labels.npy``, or ``<split>.npz`` holding the
    arrays ``images`` and ``labels``. Images are uint8, N x H x W x C, N x C x H x W, or
    N x H x W for one channel; labels apart: N class indices (classification) or N numbers
    (regression; N x 1 works too).
``image-folder``
    Classification: ``<split>/<class name>/*.png`` (torchvision's ``ImageFolder`` layout;
    every folder name is one of the task's ``classes``, whose order gives the indices).
    Regression: ``<split>/images/*.png`` and ``<split>/labels.csv`` with the columns
    ``file,value``. Images are read as grayscale or RGB (the task's channel count) and must
    already have the task's height and width.

The hidden split (``test``) must be given: it is fixed, never drawn from a seed. When no
``validation`` split is given, it is carved from ``train`` (``validation_size`` images
drawn with ``public_seed``), as for MNIST.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..tasks import TaskSpec
from . import SplitSource, dataset_options
from .torchvision_sets import carve, data_root_of

OPTIONS: dict[str, Any] = {"validation_size": 5000, "public_seed": 0, "folder": "", "layout": ""}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def _options(task: TaskSpec) -> dict[str, Any]:
    merged = dataset_options(task, OPTIONS)
    if merged["layout"] not in ("", "NCHW", "NHWC"):
        raise UserError(
            f"{task.source or task.id}: field `dataset.options.layout` must be "
            f'"NCHW" or "NHWC", not {merged["layout"]!r}',
            "leave it out: the layout is read from the arrays' shape unless C, H and W are equal",
        )
    return merged


def task_folder(source: SplitSource) -> Path:
    """Where this task's files are: DATA_ROOT/<task id>/ or the ``folder`` option."""
    folder = str(_options(source.task)["folder"])
    root = data_root_of(source)
    return (root / folder if folder else root / source.task.id).expanduser()


@dataclass(frozen=True)
class OwnDataProvider:
    """One of the two layouts; ``name`` is the provider's registered name."""

    name: str

    # -- where each split comes from ----------------------------------------------------
    def _given(self, folder: Path, split: str) -> bool:
        if self.name == "arrays":
            return (folder / split / "images.npy").is_file() or (folder / f"{split}.npz").is_file()
        return (folder / split).is_dir()

    def _plan(self, source: SplitSource) -> tuple[str, str | None]:
        """(files to read, which part of a carve or None for all of them)."""
        task, folder, split = source.task, task_folder(source), source.split
        hint = (
            f"see docs/new-task.md: the {self.name} provider reads {folder}/<split>/ "
            "with the splits train and test"
        )
        if split == task.splits.hidden or self._given(folder, task.splits.check):
            if not self._given(folder, split):
                raise UserError(f"task {task.id}: no {split!r} split under {folder}", hint)
            return split, None
        pool = next(s for s in task.splits.public if s != task.splits.check)
        if not self._given(folder, pool):
            raise UserError(f"task {task.id}: no {pool!r} split under {folder}", hint)
        return pool, "validation" if split == task.splits.check else "train"

    def fixed_split(self, source: SplitSource) -> str | None:
        if source.split != source.task.splits.hidden:
            return None
        return f"the instructor's files {task_folder(source) / source.split}"

    # -- the provider protocol ------------------------------------------------------------
    def fingerprint(self, source: SplitSource) -> dict[str, object]:
        files, part = self._plan(source)
        folder = task_folder(source)
        paths = [folder / files, folder / f"{files}.npz"]
        digest = hashlib.sha256()
        for path in paths:
            for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if item.is_file():
                    st = item.stat()
                    digest.update(f"{item}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"files": digest.hexdigest(), "part": part, "options": _options(source.task)}

    def prepare(self, source: SplitSource) -> tuple[np.ndarray, np.ndarray]:
        files, part = self._plan(source)
        folder = task_folder(source)
        if self.name == "arrays":
            images, labels = read_arrays(folder, files, source.task)
        else:
            images, labels = read_image_folder(folder / files, source.task)
        if part is None:
            return images, labels
        options = _options(source.task)
        train_idx, val_idx = carve(len(images), options["validation_size"], source.seed)
        idx = val_idx if part == "validation" else train_idx
        return images[idx], labels[idx]


# --- arrays ---------------------------------------------------------------------------------


def read_arrays(folder: Path, split: str, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """``<split>/images.npy`` + ``labels.npy`` or ``<split>.npz``, as (N x C x H x W, labels)."""
    packed = folder / f"{split}.npz"
    if (folder / split / "images.npy").is_file():
        where = folder / split / "images.npy"
        images = _load(where)
        labels = _load(folder / split / "labels.npy")
        label_where = folder / split / "labels.npy"
    else:
        where = label_where = packed
        try:
            with np.load(packed, allow_pickle=False) as archive:
                missing = [k for k in ("images", "labels") if k not in archive.files]
                if missing:
                    raise UserError(
                        f"{packed}: no array named {missing[0]!r} (it holds {archive.files})",
                        "save it with np.savez(path, images=images, labels=labels)",
                    )
                images, labels = np.asarray(archive["images"]), np.asarray(archive["labels"])
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{packed}: not a readable .npz archive ({exc})") from None
    images = to_nchw(images, task, where)
    return images, check_labels(labels, len(images), task, label_where)


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(
            f"{path} is missing", "each split needs images.npy and labels.npy side by side"
        )
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"{path}: not a readable .npy array ({exc})",
            "save it with np.save from a numeric array (object arrays are refused)",
        ) from None


def to_nchw(images: np.ndarray, task: TaskSpec, where: Path) -> np.ndarray:
    """uint8 N x C x H x W from N x C x H x W, N x H x W x C or (one channel) N x H x W."""
    c, h, w = task.input_shape
    layout = _options(task)["layout"]
    expected = f"uint8 N x {c} x {h} x {w} or N x {h} x {w} x {c}"
    if images.dtype != np.uint8:
        raise UserError(
            f"{where}: images of dtype {images.dtype}, expected {expected}",
            "store pixel values 0..255 as uint8, e.g. (x * 255).round().astype(np.uint8) "
            "for images in [0, 1]",
        )
    if images.ndim == 3 and c == 1 and images.shape[1:] == (h, w):
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1:] == (c, h, w) and layout != "NHWC":
        pass
    elif images.ndim == 4 and images.shape[1:] == (h, w, c) and layout != "NCHW":
        images = images.transpose(0, 3, 1, 2)
    else:
        raise UserError(
            f"{where}: images of shape {images.shape}, expected {expected} "
            f"(the task's input_shape is {[c, h, w]})",
            "resize the images, or correct input_shape in task.toml",
        )
    return np.ascontiguousarray(images)


def check_labels(labels: np.ndarray, n: int, task: TaskSpec, where: Path) -> np.ndarray:
    """Labels as the harness stores them: int64 class indices or float32 targets."""
    if task.kind == "regression" and labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise UserError(
            f"{where}: labels of shape {labels.shape}, expected {n} values (one per image)",
            "save the labels apart as a 1-D array in the images' order",
        )
    if task.kind == "regression":
        if labels.dtype.kind not in "iuf" or not np.isfinite(labels).all():
            raise UserError(f"{where}: regression labels must be finite numbers")
        return labels.astype(np.float32)
    if labels.dtype.kind not in "iu":
        raise UserError(
            f"{where}: labels of dtype {labels.dtype}, expected integer class indices",
            "map each class name to its index in the task's `classes`",
        )
    if n and (labels.min() < 0 or labels.max() >= task.num_classes):
        raise UserError(
            f"{where}: labels range {labels.min()}..{labels.max()}, "
            f"expected 0..{task.num_classes - 1}",
            "the labels must index the task's `classes`, in that order",
        )
    return labels.astype(np.int64)


# --- image folders ----------------------------------------------------------------------------


def read_image_folder(folder: Path, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """A split folder as (uint8 N x C x H x W, labels); files in sorted order."""
    if task.kind == "classification":
        found = sorted(p for p in folder.iterdir() if p.is_dir())
        unknown = [p for p in found if p.name not in task.classes]
        if unknown:
            raise UserError(
                f"{unknown[0]}: the folder name {unknown[0].name!r} is not one of the task's "
                "classes",
                f"name each class folder after one of: {', '.join(task.classes)}",
            )
        index = {name: i for i, name in enumerate(task.classes)}
        files: list[Path] = []
        targets: list[float] = []
        for sub in sorted(found, key=lambda p: index[p.name]):
            pictures = _pictures(sub)
            files += pictures
            targets += [index[sub.name]] * len(pictures)
    else:
        files, targets = _regression_files(folder)
    if not files:
        raise UserError(f"{folder}: no images found", _FOLDER_HINT)
    images = np.stack([_read_picture(p, task) for p in files])
    return images, check_labels(np.asarray(targets), len(files), task, folder)


_FOLDER_HINT = (
    "classification: <split>/<class name>/*.png; regression: <split>/images/*.png with "
    "<split>/labels.csv (columns file,value)"
)


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _regression_files(folder: Path) -> tuple[list[Path], list[float]]:
    table = folder / "labels.csv"
    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise UserError(f"{table}: file not found", _FOLDER_HINT) from None
    if not rows or not {"file", "value"} <= set(rows[0]):
        raise UserError(f"{table}: expected the columns file,value and at least one row")
    files, values = [], []
    for line, row in enumerate(rows, start=2):
        path = folder / "images" / (row["file"] or "").strip()
        try:
            value = float(row["value"] or "")
        except ValueError:
            raise UserError(f"{table}, line {line}: {row['value']!r} is not a number") from None
        if not path.is_file():
            raise UserError(f"{table}, line {line}: {path} not found", _FOLDER_HINT)
        files.append(path)
        values.append(value)
    return files, values


def _read_picture(path: Path, task: TaskSpec) -> np.ndarray:
    c, h, w = task.input_shape
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"{path}: cannot read it as an image ({exc})") from None
    if pixels.shape[:2] != (h, w) or (c not in (1, 3)):
        raise UserError(
            f"{path}: {pixels.shape[1]} x {pixels.shape[0]} pixels, the task's input_shape "
            f"is {[c, h, w]} (width {w}, height {h})",
            "resize the images beforehand (the harness never resizes)",
        )
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


ARRAYS_PROVIDER = OwnDataProvider("arrays")
IMAGE_FOLDER_PROVIDER = OwnDataProvider("image-folder")
