"""Canaries: fresh images drawn from the secret seed, mixed into the hidden inputs.

A model that memorized the hidden split (a lookup of answers, e.g. nearest neighbours
on pooled images) scores far better on the hidden images than on images it has never
seen. Canaries are such images: drawn by the task's own generator from a seed derived
from the secret seed (never from public data or the task's public seed), shuffled into
the hidden inputs at secret positions, so a submission cannot tell them apart. The host
separates the outputs again and flags a score gap (``integrity.probe_flags``).

A task whose hidden split is a public test set (MNIST, CIFAR-10) has no generator for
fresh labelled images: memorization cannot be excluded there unless the instructor
gives a private test set, and the result says so.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .data import PreparedSplit
from .errors import UserError
from .results import Flag
from .settings import settings
from .staging import process_temp
from .tasks import TaskSpec

GENERATED = ("correlation",)  # providers that draw fresh labelled images from a seed
PUBLIC_TEST_SETS = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


@dataclass(frozen=True)
class Mixed:
    """The hidden inputs with canaries shuffled in, and where each part went."""

    inputs_dir: Path  # holds inputs.npy: hidden and canary images, mixed
    hidden_at: np.ndarray  # position of hidden image i in the mixed inputs
    canary_at: np.ndarray  # position of canary j
    canary_labels: np.ndarray

    @property
    def count(self) -> int:
        return len(self.hidden_at) + len(self.canary_at)

    def labels(self, hidden: np.ndarray) -> np.ndarray:
        """The labels of the mixed inputs, in their order."""
        out = np.empty(self.count, dtype=hidden.dtype)
        out[self.hidden_at] = hidden
        out[self.canary_at] = self.canary_labels.astype(hidden.dtype)
        return out


def _seed(*parts: object) -> int:
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def draw(
    task: TaskSpec, count: int, data_root: Path | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``count`` fresh labelled images from the secret seed, or None when the task's
    data is not generated, or its hidden split is an instructor's folder (generated
    canaries would not look like those images)."""
    if count <= 0 or task.dataset.provider not in GENERATED:
        return None
    secret, _ = settings().hidden_seed()
    seed = _seed("canary", secret, task.id) % 2**63
    from .data import SplitSource
    from .data.correlation import SIZE, layout_folder

    if tuple(task.input_shape) != (1, SIZE, SIZE):
        return None
    hidden = SplitSource(task, task.splits.hidden, secret, data_root)
    try:
        if data_root is not None and layout_folder(hidden) is not None:
            return None
    except UserError:  # no instructor folder for the hidden split
        return None
    return _generated(seed, count)


@functools.lru_cache(maxsize=8)
def _generated(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The canaries of ``seed``, drawn once per process: every grading of a batch mixes the
    same ones (read-only: they are shared)."""
    from .data.correlation import generate

    images, labels = generate(seed, "canary", 0, count)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def mix(
    split: PreparedSplit, images: np.ndarray, labels: np.ndarray, folder: Path, key: str
) -> Mixed:
    """Write the hidden inputs and ``images`` shuffled together to ``folder/inputs.npy``.

    Written a few rows at a time, each hidden row read from the split's file where it
    lies: the grading process never holds the mixed inputs, nor maps the whole split
    (two gradings at once would otherwise hold two copies of the test set each)."""
    secret, _ = settings().hidden_seed()
    folder.mkdir(parents=True, exist_ok=True)
    with open(split.inputs_path, "rb") as hidden:
        shape, start = _uint8_rows(hidden)
        n, k = shape[0], len(images)
        order = np.random.default_rng(_seed("mix", secret, key)).permutation(n + k)
        hidden_at, canary_at = order[:n], order[n:]
        source = np.empty_like(order)  # mixed row p is row source[p] of hidden, then images
        source[order] = np.arange(n + k)
        row_shape = shape[1:]
        canaries = np.ascontiguousarray(images, dtype=np.uint8).reshape(k, *row_shape)
        row_bytes = int(np.prod(row_shape))
        header = {"descr": "|u1", "fortran_order": False, "shape": (n + k, *row_shape)}
        with open(folder / "inputs.npy", "wb") as out:
            np.lib.format.write_array_header_1_0(out, header)
            for first in range(0, n + k, _MIX_ROWS):
                rows = source[first : first + _MIX_ROWS]
                chunk = np.empty((len(rows), *row_shape), dtype=np.uint8)
                for at, row in enumerate(rows.tolist()):
                    if row < n:
                        _read_exactly(hidden, chunk[at], start + row * row_bytes)
                    else:
                        chunk[at] = canaries[row - n]
                out.write(chunk.data)
    return Mixed(folder, hidden_at, canary_at, labels)


_MIX_ROWS = 256  # rows written at a time (150x150 gray: 5.8 MB)
_SHARED_SPLITS = 4  # shared mixes kept by a process (the last used)
_MIX_PREFIX = "harness-mix-"  # then the pid of the process that keeps it
_shared: OrderedDict[tuple[str, str, int], Mixed] = OrderedDict()
_shared_lock = threading.Lock()


def shared_mix(split: PreparedSplit, images: np.ndarray, labels: np.ndarray) -> Mixed:
    """The mix every phase-B run of this process predicts for ``split``: mixed once, in
    an order drawn from the secret seed and the split alone, kept in a folder of its own
    until the process ends.

    Phase B runs only a checked program: a pure graph that sees one batch at a time and
    keeps nothing between calls, so it cannot count its calls, and where the canaries
    sit tells it nothing beyond what each batch's images do. One secret order can serve
    every submission, and the grading process writes the split once instead of once per
    submission (112 MB for 5,000 images of 150 x 150). Its folder goes when the process
    exits, or, after a kill, with the next process's first shared mix.

    The eager fallback runs the submission's own code, which could count its calls and
    learn the order from its report: it gets an order of its own (``mix`` with the
    grading's key)."""
    key = (str(split.inputs_path), split.key, len(images))
    with _shared_lock:
        mixed = _shared.get(key)
        if mixed is not None and (mixed.inputs_dir / "inputs.npy").is_file():
            _shared.move_to_end(key)
            return mixed
        folder = process_temp(_MIX_PREFIX)  # read as a workspace is
        try:
            mixed = mix(split, images, labels, folder / "inputs", f"phase B|{split.key}")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        for shared in (mixed.hidden_at, mixed.canary_at, mixed.canary_labels):
            shared.setflags(write=False)  # every grading of the split reads them
        _shared[key] = mixed
        while len(_shared) > _SHARED_SPLITS:
            _, old = _shared.popitem(last=False)
            shutil.rmtree(old.inputs_dir.parent, ignore_errors=True)
        return mixed


def _uint8_rows(fh: BinaryIO) -> tuple[tuple[int, ...], int]:
    """The shape of the uint8, C-ordered array in the ``.npy`` file ``fh``, and where its
    data starts (``PreparedSplit`` writes its inputs so)."""
    version = np.lib.format.read_magic(fh)
    read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(fh)
    if dtype != np.uint8 or fortran:
        raise ValueError(f"{fh.name}: expected uint8 rows in C order, found {dtype}")
    return tuple(shape), fh.tell()


def _read_exactly(fh: BinaryIO, row: np.ndarray, offset: int) -> None:
    view = row.data.cast("B")
    if os.preadv(fh.fileno(), [view], offset) != len(view):
        raise ValueError(f"{fh.name}: ends before row at byte {offset}")


def public_test_set_flag(task: TaskSpec, data_root: Path | None) -> Flag | None:
    """For a task graded on a public test set: memorization cannot be excluded."""
    name = PUBLIC_TEST_SETS.get(task.dataset.provider)
    if name is None:
        return None
    where = (
        f"the test images under {data_root}/{task.id}/test/"
        if data_root
        else f"the official {name} test set"
    )
    return Flag(
        code="public_test_set",
        audience="student",
        message=(
            f"memorization cannot be excluded: the hidden split is {where}, which is "
            f"public unless the instructor gave a private one; canaries need a generator "
            "or a private test set (grade --data-root with a private test folder)"
        ),
    )
