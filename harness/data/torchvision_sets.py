"""The ``mnist`` and ``cifar10`` providers: torchvision's public layouts under a data root.

The data root is the folder given with ``--data-root``, else ``<project>/data``
(:func:`default_data_root`). Under it each dataset sits exactly where torchvision puts
it, and is read with torchvision's own classes:

============  ==================================================================
provider      files under the data root
============  ==================================================================
``mnist``     ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
``cifar10``   ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
============  ==================================================================

Splits: ``train`` and ``validation`` are carved from the training set by a seeded
permutation (``dataset.options``: ``validation_size``, ``public_seed``); the hidden
``test`` split is the official test set, or an instructor's private set when
``DATA_ROOT/<task id>/test/images.npy`` exists (uint8, N x H x W x C, the CIFAR-10.1
layout) with ``labels.npy`` beside it. Canonical CIFAR-10 files are checked against
torchvision's checksums; a set in the public layout that is not canonical (the
harness's own fixtures) must say so with a :data:`FIXTURE_MARKER` file in its folder.
Nothing is downloaded unless ``download`` is called (``grade data prepare
<task> --download``).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.error import URLError

import numpy as np

from ..errors import UserError
from ..settings import settings
from ..tasks import TaskSpec
from . import SplitSource, dataset_options

FIXTURE_MARKER = "harness-fixture.json"  # in the dataset's folder: generated, not canonical
PRIVATE_TEST = ("test", "images.npy", "labels.npy")  # DATA_ROOT/<task>/test/...
OPTIONS = {"validation_size": 5000, "public_seed": 0}
Availability = Literal["real", "fixture", "missing"]


def default_data_root() -> Path:
    """Where datasets live when no ``--data-root`` is given: ``<project>/data``."""
    return settings().home / "data"


def data_root_of(source: SplitSource) -> Path:
    return source.data_root if source.data_root is not None else default_data_root()


# CIFAR-10's files as torchvision's CIFAR10 names them (a test compares the two): the
# layout is known without importing torchvision, which costs seconds and is needed only
# to read the files into a prepared split, never to grade from one
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR10_META = "batches.meta"


def _datasets() -> Any:
    """``torchvision.datasets``, imported when a dataset's files are read or downloaded."""
    import torchvision.datasets

    return torchvision.datasets


def _unchecked_cifar10() -> type[Any]:
    """torchvision's CIFAR10 reader with the checksums off: only for marked fixtures."""
    cifar10 = _datasets().CIFAR10

    class UncheckedCIFAR10(cifar10):  # type: ignore[misc, valid-type]
        train_list = [[name, None] for name, _ in cifar10.train_list]
        test_list = [[name, None] for name, _ in cifar10.test_list]
        meta = {**cifar10.meta, "md5": None}

    return UncheckedCIFAR10


@dataclass(frozen=True)
class TorchvisionProvider:
    """One torchvision dataset in its public layout; ``name`` is the provider's name."""

    name: str
    title: str  # "MNIST", "CIFAR-10"
    folder: str  # the dataset's folder under the data root
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    reader: str = "MNIST"  # the class of torchvision.datasets that reads the layout
    idx: bool = True  # IDX files (MNIST and its look-alikes), maybe still gzipped

    # -- where the files are -------------------------------------------------------
    def dataset_dir(self, root: Path) -> Path:
        return root / self.folder

    def files(self, root: Path, *, train: bool) -> list[Path]:
        names = self.train_files if train else self.test_files
        return [self.dataset_dir(root) / name for name in names]

    def availability(self, root: Path) -> Availability:
        """``real`` (the dataset, unmarked), ``fixture`` (marked as generated) or ``missing``."""
        paths = self.files(root, train=True) + self.files(root, train=False)
        packed = self.idx  # IDX files may still be gzipped as downloaded
        if not all(
            p.is_file() or (packed and p.with_name(p.name + ".gz").is_file()) for p in paths
        ):
            return "missing"
        return "fixture" if (self.dataset_dir(root) / FIXTURE_MARKER).is_file() else "real"

    # -- the provider protocol -------------------------------------------------------
    def fingerprint(self, source: SplitSource) -> dict[str, object]:
        root = data_root_of(source)
        options = _options(source.task)
        private = private_test_path(root, source.task.id)
        hidden = source.split == source.task.splits.hidden
        if hidden and private.is_file():
            paths = [private, private.with_name(PRIVATE_TEST[2])]
        else:
            paths = self.files(root, train=not hidden)
        return {
            "dataset": self.name,
            "options": options if not hidden else {},
            "files": [_stat(p) for p in [*paths, self.dataset_dir(root) / FIXTURE_MARKER]],
        }

    def prepare(self, source: SplitSource) -> tuple[np.ndarray, np.ndarray]:
        task, root = source.task, data_root_of(source)
        if source.split == task.splits.hidden:
            private = private_test_path(root, task.id)
            if private.is_file():
                return load_private_test(private, task)
            return self.load(root, train=False)
        if source.split not in task.splits.public:
            raise UserError(f"task {task.id} has no split {source.split!r}")
        options = _options(task)
        images, labels = self.load(root, train=True)
        train_idx, val_idx = carve(len(images), options["validation_size"], source.seed)
        # the "train" split is every public split but the check split
        idx = val_idx if source.split == task.splits.check else train_idx
        return images[idx], labels[idx]

    # -- reading -----------------------------------------------------------------------
    def load(self, root: Path, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """The whole training or test set as (uint8 N x C x H x W, int64 labels)."""
        every = self.files(root, train=True) + self.files(root, train=False)  # torchvision
        if self.idx:  # checks all of them whichever split it reads
            _extract_gz(every)
        missing = [p for p in every if not p.is_file()]
        if missing:
            raise UserError(
                f"{self.title} not found: {missing[0]} is missing (data root {root})",
                f"run `grade data prepare {self.name} --download`, or copy the files that "
                f"torchvision.datasets.{self.reader} reads into {self.dataset_dir(root)}/",
            )
        try:
            if self.idx:
                return _read_mnist(root, train, self._cls())
            return self._read_cifar(root, train)
        except (OSError, ValueError, TypeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
            raise UserError(
                f"{self.dataset_dir(root)}: the {self.title} files cannot be read ({exc})",
                f"re-download with `grade data prepare {self.name} --download`",
            ) from None

    def _read_cifar(self, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
        try:
            ds = self._cls()(str(root), train=train, download=False)
        except RuntimeError:
            if not (self.dataset_dir(root) / FIXTURE_MARKER).is_file():
                bad = _first_bad_checksum(self.dataset_dir(root))
                raise UserError(
                    f"{bad}: does not match the canonical CIFAR-10 checksum",
                    "re-download with `grade data prepare cifar10 --download`; for your own "
                    "test set use DATA_ROOT/<task>/test/images.npy and labels.npy instead",
                ) from None
            ds = _unchecked_cifar10()(str(root), train=train, download=False)
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        labels = np.asarray(ds.targets, dtype=np.int64)
        return images, labels

    def _cls(self) -> type[Any]:
        cls: type[Any] = getattr(_datasets(), self.reader)
        return cls

    def fixed_split(self, source: SplitSource) -> str | None:
        """What a fixed hidden split is (never drawn from a seed); None for the public ones."""
        if source.split != source.task.splits.hidden:
            return None
        private = private_test_path(data_root_of(source), source.task.id)
        if private.is_file():
            return f"the private test set {private.parent}"
        return f"the official {self.title} test set"

    # -- downloading -------------------------------------------------------------
    def download(self, task: TaskSpec, data_root: Path | None) -> Path:
        """Download the dataset with torchvision (``grade data prepare <task> --download``);
        returns the dataset's folder. Without network access: a UserError, not a traceback."""
        root = data_root if data_root is not None else default_data_root()
        root.mkdir(parents=True, exist_ok=True)
        cls = self._cls()
        try:
            for train in (True, False):
                cls(str(root), train=train, download=True)
        except (RuntimeError, OSError, URLError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise UserError(
                f"could not download {self.title} into {self.dataset_dir(root)}: {reason}",
                f"this machine may have no internet access: run torchvision.datasets."
                f"{cls.__name__}(root, download=True) on one that has, then copy "
                f"root/{self.folder}/ to {self.dataset_dir(root)}/",
            ) from None
        return self.dataset_dir(root)


def _read_mnist(root: Path, train: bool, cls: type[Any]) -> tuple[np.ndarray, np.ndarray]:
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError as exc:  # torchvision's own "not found" and torch's buffer errors
        raise ValueError(str(exc)) from None
    images = ds.data.numpy()
    if images.ndim != 3:
        raise ValueError(f"images of shape {tuple(images.shape)}, expected N x 28 x 28")
    labels = ds.targets.numpy().astype(np.int64)
    return np.ascontiguousarray(images[:, None, :, :]), labels


def _extract_gz(paths: list[Path]) -> None:
    """Decompress ``name.gz`` beside each missing ``name``, as torchvision's download does."""
    from torchvision.datasets.utils import extract_archive

    for path in paths:
        packed = path.with_name(path.name + ".gz")
        if not path.is_file() and packed.is_file():
            try:
                extract_archive(str(packed), str(path.parent))
            except OSError as exc:
                raise UserError(
                    f"{packed}: cannot decompress it beside itself ({exc.strerror or exc})",
                    f"decompress it by hand (gunzip -k {packed})",
                ) from None


def _first_bad_checksum(folder: Path) -> Path:
    from torchvision.datasets.utils import check_integrity

    cifar10 = _datasets().CIFAR10
    for name, md5 in [*cifar10.train_list, *cifar10.test_list]:
        if not check_integrity(folder / name, md5):
            return folder / name
    return folder / CIFAR10_META


def _stat(path: Path) -> list[object]:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _options(task: TaskSpec) -> dict[str, int]:
    return dataset_options(task, OPTIONS)


def carve(n: int, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, validation) indices, each in ascending order.

    The validation part is ``validation_size`` images drawn by a permutation seeded with
    ``seed``, capped at half the set so that small (fixture) sets still have a train part.
    """
    size = min(validation_size, n // 2)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[size:]), np.sort(perm[:size])


def private_test_path(root: Path, task_id: str) -> Path:
    """``DATA_ROOT/<task>/test/images.npy``: an instructor's replacement for the test set."""
    return root / task_id / PRIVATE_TEST[0] / PRIVATE_TEST[1]


def load_private_test(path: Path, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read a private test set (images N x H x W x C uint8, labels N integers) as N x C x H x W."""
    labels_path = path.with_name(PRIVATE_TEST[2])
    if not labels_path.is_file():
        raise UserError(
            f"{labels_path} is missing: a private test set needs labels beside {path.name}",
            "save the labels with np.save (N integers, one per image)",
        )
    images = _load_npy(path)
    labels = _load_npy(labels_path)
    c, h, w = task.input_shape
    if images.ndim == 3 and c == 1:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (h, w, c):
        raise UserError(
            f"{path}: images of shape {images.shape} and dtype {images.dtype}, expected "
            f"N x {h} x {w} x {c} uint8 (the CIFAR-10.1 layout)",
            "store the images as uint8 in height, width, channel order",
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise UserError(
            f"{labels_path}: labels of shape {labels.shape} and dtype {labels.dtype}, "
            f"expected {len(images)} integers (one per image in {path.name})",
            "save the class indices as a 1-D integer array",
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= task.num_classes):
        raise UserError(
            f"{labels_path}: labels range {labels.min()}..{labels.max()}, "
            f"expected 0..{task.num_classes - 1}",
            "the labels must index the task's `classes`, in that order",
        )
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels.astype(np.int64)


def _load_npy(path: Path) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"{path}: not a readable .npy array ({exc})",
            "save it with np.save from a numeric array (object arrays are refused)",
        ) from None


def fixture_marker(folder: Path, info: dict[str, object]) -> Path:
    """Mark a dataset folder as generated (not canonical); returns the marker's path."""
    path = folder / FIXTURE_MARKER
    path.write_text(json.dumps({"generated_by": "harness.fixtures", **info}, indent=2) + "\n")
    return path


MNIST_PROVIDER = TorchvisionProvider(
    name="mnist",
    title="MNIST",
    folder="MNIST/raw",
    train_files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    test_files=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
CIFAR10_PROVIDER = TorchvisionProvider(
    name="cifar10",
    title="CIFAR-10",
    folder=CIFAR10_FOLDER,
    train_files=(*CIFAR10_TRAIN, CIFAR10_META),
    test_files=(*CIFAR10_TEST, CIFAR10_META),
    reader="CIFAR10",
    idx=False,
)
