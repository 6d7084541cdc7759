"""Dataset providers and the prepared-array cache.

A provider turns its source (generated, an instructor's folder, a torchvision layout)
into two files per split: ``inputs/inputs.npy`` (uint8, N x C x H x W) and, apart,
``labels.npy`` (float32 for regression, int64 for classification). Splits are prepared
once per task and reused, memory-mapped, by every submission. Only the ``inputs/``
folder is ever handed to a sandbox.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UserError
from ..providers import providers
from ..settings import settings
from ..tasks import TaskSpec


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: the provider's options plus what the caller chose."""

    task: TaskSpec
    split: str
    seed: int  # public seed for public splits, the secret seed for the hidden one
    data_root: Path | None  # an instructor's folder with the dataset's public layout


class DatasetProvider(Protocol):
    def fingerprint(self, source: SplitSource) -> dict[str, object]:
        """What identifies this split's content (options, seed, files' sizes/mtimes)."""

    def prepare(self, source: SplitSource) -> tuple[np.ndarray, np.ndarray]:
        """The split as (uint8 images N x C x H x W, labels). Raise UserError on bad data."""

    def fixed_split(self, source: SplitSource) -> str | None:
        """What the split is when it is fixed files (an official or private test set, an
        instructor's folder), not drawn from ``source.seed``; None when it is drawn."""


# the registry of providers by name lives below the task spec (it checks names there)
__all__ = ["DatasetProvider", "PreparedSplit", "SplitSource", "prepare_split", "providers"]


@dataclass(frozen=True)
class PreparedSplit:
    task: str
    split: str
    folder: Path  # holds inputs/inputs.npy and labels.npy
    count: int
    key: str  # content key: part of every cache key downstream
    public_fallback_seed: bool = False  # drawn with the public fallback seed (hidden only)
    fixed: str | None = None  # what a fixed split is (official or private test set), if it is

    @property
    def fingerprint(self) -> str:
        """The split's identity for result documents: a slow one-way digest of ``key``."""
        return split_fingerprint(self.key)

    @property
    def inputs_dir(self) -> Path:
        return self.folder / "inputs"

    @property
    def inputs_path(self) -> Path:
        return self.inputs_dir / "inputs.npy"

    def images(self) -> np.ndarray:
        return np.load(self.inputs_path, mmap_mode="r", allow_pickle=False)

    def labels(self) -> np.ndarray:
        return np.load(self.folder / "labels.npy", allow_pickle=False)


@functools.lru_cache(maxsize=64)
def split_fingerprint(key: str) -> str:
    """A slow one-way digest of a split's content key, computed once per process (every
    document of a batch carries it). The key already holds only a digest of the seed;
    PBKDF2 on top makes guessing a small seed from a published fingerprint cost a tenth of
    a second per guess."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), b"harness hidden split", 100_000)
    return digest.hex()[:16]


def _seed_for(task: TaskSpec, split: str) -> tuple[int, bool]:
    if split == task.splits.hidden:
        return settings().hidden_seed()
    public_seed = int(task.dataset.options.get("public_seed", 0))
    return public_seed, False


def _validate(task: TaskSpec, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != task.input_shape:
        raise UserError(
            f"task {task.id}, split {split}: the provider gave images of shape "
            f"{images.shape} {images.dtype}, expected N x {task.input_shape} uint8",
            "check the dataset files' layout",
        )
    if len(labels) != len(images):
        raise UserError(
            f"task {task.id}, split {split}: {len(images)} images but {len(labels)} labels",
            "each image needs exactly one label",
        )
    if task.kind == "classification" and len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= task.num_classes:
            raise UserError(
                f"task {task.id}, split {split}: labels range {lo}..{hi}, "
                f"expected 0..{task.num_classes - 1}",
                "the labels must index the task's `classes`",
            )


def prepare_split(
    task: TaskSpec, split: str, *, data_root: Path | None = None, force: bool = False
) -> PreparedSplit:
    """Prepare (or reuse) one split of a task and return where its arrays are."""
    known = (*task.splits.public, task.splits.hidden)
    if split not in known:
        raise UserError(f"task {task.id} has no split {split!r}", f"its splits: {', '.join(known)}")
    provider = providers.get(task.dataset.provider)
    seed, fallback = _seed_for(task, split)
    source = SplitSource(task=task, split=split, seed=seed, data_root=data_root)
    fixed = fixed_split(provider, source)
    fingerprint = {
        "provider": task.dataset.provider,
        "options": task.dataset.options,
        "shape": task.input_shape,
        "split": split,
        "seed": hashlib.sha256(str(seed).encode()).hexdigest(),  # never the seed itself
        "data_root": str(data_root.resolve()) if data_root else None,
        "source": provider.fingerprint(source),
    }
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    folder = settings().cache_dir / task.id / f"{split}-{key[:16]}"
    done = folder / "prepared.json"
    if force and folder.exists():
        shutil.rmtree(folder)
    if not done.is_file():
        images, labels = provider.prepare(source)
        _validate(task, split, images, labels)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{split}-"))
        (tmp / "inputs").mkdir()
        np.save(tmp / "inputs" / "inputs.npy", np.ascontiguousarray(images))
        np.save(tmp / "labels.npy", np.ascontiguousarray(labels))
        (tmp / "prepared.json").write_text(json.dumps({"count": len(images), "key": key}))
        try:
            tmp.rename(folder)
        except OSError:  # another process prepared it first
            shutil.rmtree(tmp, ignore_errors=True)
    count = int(json.loads(done.read_text())["count"])
    return PreparedSplit(task.id, split, folder, count, key, fallback and fixed is None, fixed)


def fixed_split(provider: DatasetProvider, source: SplitSource) -> str | None:
    """What the split is when it is fixed files rather than drawn from a seed (the one
    rule for "does the secret seed matter here"); None when the provider generates it."""
    describe = getattr(provider, "fixed_split", None)
    return describe(source) if describe is not None else None


COUNT_OPTIONS = ("validation_size", "public_seed")


def dataset_options(task: TaskSpec, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``dataset.options`` over a provider's ``defaults``: an option the provider
    does not know is refused, and ``validation_size``/``public_seed`` must be non-negative
    integers (the one home of these rules for every provider)."""
    given = dict(task.dataset.options)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"{task.source or task.id}: field `dataset.options.{unknown[0]}`: unknown option",
            f"the {task.dataset.provider} provider knows: {', '.join(defaults)}",
        )
    merged = {**defaults, **given}
    for key in COUNT_OPTIONS:
        value = merged.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(
                f"{task.source or task.id}: field `dataset.options.{key}` must be a "
                f"non-negative integer, not {value!r}"
            )
    return merged
