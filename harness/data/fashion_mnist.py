"""The ``fashion-mnist`` provider: Zalando's Fashion-MNIST in torchvision's layout.

Files under the data root: ``FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
read by ``torchvision.datasets.FashionMNIST``. When they are not there, the provider
installs them from Debian's package ``dataset-fashion-mnist`` (``apt-get install
dataset-fashion-mnist`` puts Zalando's original gzipped IDX files under
:data:`SYSTEM_DIRS`), decompressing each into the data root: no network. ``grade data
prepare fashion-mnist --download`` does the same, and asks torchvision to download only
when no system copy exists.

Splits as for MNIST: ``train`` and ``validation`` carved from the 60,000 training images,
the hidden ``test`` split is the official 10,000-image test set (or a private one under
``DATA_ROOT/<task>/test/``).
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..tasks import TaskSpec
from . import SplitSource
from .torchvision_sets import Availability, TorchvisionProvider, data_root_of, default_data_root

# where Debian's dataset-fashion-mnist puts the files; HARNESS_FASHION_MNIST_DIR first
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


def system_dir() -> Path | None:
    """The folder holding the four gzipped IDX files of a system-wide copy, if any."""
    extra = os.environ.get("HARNESS_FASHION_MNIST_DIR")
    for folder in ([Path(extra)] if extra else []) + list(SYSTEM_DIRS):
        if all((folder / f"{name}.gz").is_file() for name in _NAMES):
            return folder
    return None


@dataclass(frozen=True)
class FashionMNISTProvider(TorchvisionProvider):
    """torchvision's FashionMNIST layout, filled from the Debian package when missing."""

    def availability(self, root: Path) -> Availability:
        state = super().availability(root)
        if state == "missing" and system_dir() is not None:
            return "real"  # installed into the data root on first use
        return state

    def fingerprint(self, source: SplitSource) -> dict[str, object]:
        self.install(data_root_of(source))
        return super().fingerprint(source)

    def load(self, root: Path, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        self.install(root)
        if super().availability(root) == "missing":
            raise UserError(
                f"Fashion-MNIST not found: neither {self.dataset_dir(root)}/ nor the Debian "
                f"package's {SYSTEM_DIRS[0]}/ holds its four IDX files",
                "apt-get install dataset-fashion-mnist (no network needed afterwards), or "
                "`grade data prepare fashion-mnist --download` on a machine with internet",
            )
        return super().load(root, train=train)

    def install(self, root: Path) -> Path | None:
        """Copy the system copy's files into ``root`` when the layout lacks them; returns
        the system folder they came from (None when nothing was copied)."""
        target = self.dataset_dir(root)
        missing = [
            name
            for name in _NAMES
            if not (target / name).is_file() and not (target / f"{name}.gz").is_file()
        ]
        source = system_dir()
        if not missing or source is None:
            return None
        try:
            target.mkdir(parents=True, exist_ok=True)
            for name in missing:
                tmp = target / f".{name}.part"
                with gzip.open(source / f"{name}.gz", "rb") as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                tmp.replace(target / name)
        except (OSError, EOFError) as exc:
            raise UserError(
                f"cannot copy Fashion-MNIST from {source} into {target} ({exc})",
                "give a writable --data-root, or copy the files there by hand (gunzip -k)",
            ) from None
        return source

    def download(self, task: TaskSpec, data_root: Path | None) -> Path:
        """``--download``: the Debian package's files when installed, else torchvision's
        download (which needs network access)."""
        root = data_root if data_root is not None else default_data_root()
        if system_dir() is not None:
            self.install(root)
            return self.dataset_dir(root)
        return super().download(task, data_root)


_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_PROVIDER = FashionMNISTProvider(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="FashionMNIST/raw",
    train_files=_NAMES[:2],
    test_files=_NAMES[2:],
    reader="FashionMNIST",
)
