"""Small datasets written in the real public layouts, for tests and ``validate-references``.

Each writer draws a seeded, learnable set (every class has its own coarse pattern, plus
noise), writes it byte for byte in the layout its reader expects, and returns the arrays
it wrote as uint8 N x C x H x W, so a test can compare a reader's output with them.

* :func:`write_mnist`: ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (big-endian IDX files, optionally also gzipped as the download leaves them);
* :func:`write_cifar10`: ``ROOT/cifar-10-batches-py/`` with ``data_batch_1..5``,
  ``test_batch`` and ``batches.meta``, the python pickles torchvision reads;
* :func:`write_private_test`: ``ROOT/<task>/test/images.npy`` (N x H x W x C uint8, the
  CIFAR-10.1 layout) and ``labels.npy``.

The torchvision layouts get a marker file saying they are generated, so the harness
never mistakes them for the canonical datasets (whose checksums they do not match).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.torchvision_sets import (
    CIFAR10_PROVIDER,
    MNIST_PROVIDER,
    PRIVATE_TEST,
    fixture_marker,
)
from .tasks import TaskSpec

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class FixtureSet:
    """What a writer wrote: the folder and the arrays, images as uint8 N x C x H x W."""

    root: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def draw(
    count: int, shape: tuple[int, int, int], num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of ``shape`` (C, H, W) and their labels; class k has pattern k."""
    c, h, w = shape
    patterns = np.random.default_rng(12345).integers(0, 256, (num_classes, c, 4, 4))
    coarse = patterns.repeat(-(-h // 4), axis=2).repeat(-(-w // 4), axis=3)[:, :, :h, :w]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count).astype(np.int64)
    noise = rng.integers(0, 256, (count, c, h, w))
    images = (0.35 * coarse[labels] + 0.65 * noise).round().clip(0, 255).astype(np.uint8)
    return images, labels


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (the MNIST format): magic 0x0000 0x08 ndim, big-endian sizes, the bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(
    root: Path, *, train: int = 600, test: int = 200, seed: int = 0, gz: bool = False
) -> FixtureSet:
    """Write an MNIST-shaped set where ``torchvision.datasets.MNIST(root)`` reads it."""
    folder = MNIST_PROVIDER.dataset_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    sets = {
        "train": draw(train, (1, 28, 28), 10, seed),
        "t10k": draw(test, (1, 28, 28), 10, seed + 1),
    }
    for prefix, (images, labels) in sets.items():
        for kind, array in (("images-idx3", images[:, 0]), ("labels-idx1", labels)):
            data = _idx_bytes(array.astype(np.uint8))
            path = folder / f"{prefix}-{kind}-ubyte"
            path.write_bytes(data)
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, mtime=0))
    fixture_marker(folder, {"dataset": "mnist", "seed": seed, "train": train, "test": test})
    return FixtureSet(root, *sets["train"], *sets["t10k"])


def _cifar_batch(name: str, images: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    return {
        "batch_label": name,
        "labels": [int(v) for v in labels],
        "data": images.reshape(len(images), -1),  # rows of 1024 red, 1024 green, 1024 blue
        "filenames": [f"fixture_{i:05d}.png" for i in range(len(images))],
    }


def write_cifar10(root: Path, *, train: int = 500, test: int = 200, seed: int = 0) -> FixtureSet:
    """Write a CIFAR-10-shaped set where ``torchvision.datasets.CIFAR10(root)`` reads it."""
    folder = CIFAR10_PROVIDER.dataset_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = draw(train, (3, 32, 32), 10, seed)
    test_images, test_labels = draw(test, (3, 32, 32), 10, seed + 1)
    bounds = np.linspace(0, train, 6).round().astype(int)
    batches = {
        f"data_batch_{i + 1}": (train_images[lo:hi], train_labels[lo:hi])
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    }
    batches["test_batch"] = (test_images, test_labels)
    for name, (images, labels) in batches.items():
        with open(folder / name, "wb") as fh:
            pickle.dump(_cifar_batch(name, images, labels), fh, protocol=2)
    meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    fixture_marker(folder, {"dataset": "cifar10", "seed": seed, "train": train, "test": test})
    return FixtureSet(root, train_images, train_labels, test_images, test_labels)


def write_private_test(
    root: Path, task: TaskSpec, *, count: int = 150, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``ROOT/<task>/test/{images,labels}.npy``; returns (images N x C x H x W, labels)."""
    images, labels = draw(count, task.input_shape, task.num_classes, seed)
    folder = root / task.id / PRIVATE_TEST[0]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / PRIVATE_TEST[1], np.ascontiguousarray(images.transpose(0, 2, 3, 1)))
    np.save(folder / PRIVATE_TEST[2], labels)
    return images, labels


def write_for_task(task: TaskSpec, root: Path, *, seed: int = 0) -> FixtureSet | None:
    """A fixture in the public layout of ``task``'s provider, or None when it has none
    (a generated dataset such as ``correlation`` needs no files)."""
    if task.dataset.provider == "mnist":
        return write_mnist(root, seed=seed)
    if task.dataset.provider == "cifar10":
        return write_cifar10(root, seed=seed)
    return None
