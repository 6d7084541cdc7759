"""The data layer reads torchvision's layouts with torchvision, but only to prepare a split:
grading from a prepared split, and fingerprinting the files it came from, import neither
torchvision nor torch (seconds of every ``grade`` command's start on the MNIST, CIFAR-10,
Fashion-MNIST and own-data tasks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.data.torchvision_sets import (
    CIFAR10_FOLDER,
    CIFAR10_META,
    CIFAR10_TEST,
    CIFAR10_TRAIN,
)
from harness.fixtures import write_cifar10, write_mnist

REPO = Path(__file__).resolve().parent.parent

# prepare every split of a task, then, in a fresh interpreter, prepare them again (the cached
# arrays) and say whether torch or torchvision was imported
SCRIPT = """
import sys
from pathlib import Path
from harness.data import prepare_split
from harness.tasks import load_task
task = load_task(sys.argv[1])
for split in (*task.splits.public, task.splits.hidden):
    prepared = prepare_split(task, split, data_root=Path(sys.argv[2]))
    assert prepared.count > 0
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


def _prepare(task: str, root: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, task, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("task", ["mnist", "cifar10", "fashion-mnist"])
def test_a_prepared_split_is_graded_without_importing_torch(tmp_path: Path, task: str) -> None:
    root = tmp_path / "data"
    if task == "mnist":
        write_mnist(root, seed=0)
    elif task == "cifar10":
        write_cifar10(root, seed=0)  # fashion-mnist: from Debian's dataset-fashion-mnist
    env = {
        **os.environ,
        "HARNESS_TASKS": str(REPO / "tasks"),
        "HARNESS_CACHE": str(tmp_path / "cache"),
        "HARNESS_SECRET_SEED": "11",
    }
    assert _prepare(task, root, env) == "['torch', 'torchvision']"  # read with torchvision
    assert _prepare(task, root, env) == "[]"  # the cached split: neither


def test_the_cifar10_layout_is_torchvisions() -> None:
    from torchvision.datasets import CIFAR10

    assert CIFAR10.base_folder == CIFAR10_FOLDER
    assert tuple(name for name, _ in CIFAR10.train_list) == CIFAR10_TRAIN
    assert tuple(name for name, _ in CIFAR10.test_list) == CIFAR10_TEST
    assert CIFAR10.meta["filename"] == CIFAR10_META
