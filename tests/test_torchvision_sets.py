"""The mnist and cifar10 providers on small sets written in torchvision's real layouts.

The fixture writers serialize known arrays themselves (IDX bytes, CIFAR pickles, npy);
the providers read them back through torchvision's own classes. Every test compares
what a provider returns with the arrays that were written.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torchvision

from harness.data import prepare_split, providers
from harness.data.torchvision_sets import (
    CIFAR10_PROVIDER,
    FIXTURE_MARKER,
    MNIST_PROVIDER,
    carve,
)
from harness.errors import UserError
from harness.fixtures import write_cifar10, write_mnist, write_private_test
from harness.settings import settings
from harness.tasks import TaskSpec, load_task

REPO_TASKS = Path(__file__).resolve().parent.parent / "tasks"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The repository's tasks, a private prepared-data cache and a fixed secret seed."""
    monkeypatch.setenv("HARNESS_TASKS", str(REPO_TASKS))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_SECRET_SEED", "5")
    settings.cache_clear()
    yield tmp_path / "cache"
    settings.cache_clear()


def _task(task_id: str) -> TaskSpec:
    return load_task(task_id, REPO_TASKS)


def test_both_providers_are_registered() -> None:
    """Registered lazily (torchvision is imported on first use), they are these providers."""
    assert providers.get("mnist").load() is MNIST_PROVIDER
    assert providers.get("cifar10").load() is CIFAR10_PROVIDER
    assert providers.get("cifar10").name == "cifar10"


def test_mnist_fixture_is_read_back_by_torchvision_unchanged(tmp_path: Path) -> None:
    written = write_mnist(tmp_path, train=40, test=30, seed=3)
    raw = torchvision.datasets.MNIST(str(tmp_path), train=True)  # the real class, directly
    assert np.array_equal(raw.data.numpy(), written.train_images[:, 0])
    images, labels = MNIST_PROVIDER.load(tmp_path, train=True)
    assert images.dtype == np.uint8 and images.shape == (40, 1, 28, 28)
    assert np.array_equal(images, written.train_images)
    assert np.array_equal(labels, written.train_labels) and labels.dtype == np.int64
    images, labels = MNIST_PROVIDER.load(tmp_path, train=False)
    assert np.array_equal(images, written.test_images)
    assert np.array_equal(labels, written.test_labels)


def test_mnist_gzipped_files_are_decompressed_like_the_download(tmp_path: Path) -> None:
    written = write_mnist(tmp_path, train=20, test=10, gz=True)
    folder = tmp_path / "MNIST" / "raw"
    packed = folder / "train-images-idx3-ubyte.gz"
    assert gzip.decompress(packed.read_bytes()) == (folder / "train-images-idx3-ubyte").read_bytes()
    for name in MNIST_PROVIDER.train_files + MNIST_PROVIDER.test_files:
        (folder / name).unlink()
    assert MNIST_PROVIDER.availability(tmp_path) == "fixture"
    images, labels = MNIST_PROVIDER.load(tmp_path, train=True)
    assert np.array_equal(images, written.train_images)
    assert np.array_equal(labels, written.train_labels)


def test_cifar10_fixture_is_read_through_torchvision_in_chw_order(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, train=53, test=17, seed=1)
    images, labels = CIFAR10_PROVIDER.load(tmp_path, train=True)
    assert images.shape == (53, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images, written.train_images)  # all five batches, in order
    assert np.array_equal(labels, written.train_labels)
    images, labels = CIFAR10_PROVIDER.load(tmp_path, train=False)
    assert np.array_equal(images, written.test_images)
    assert np.array_equal(labels, written.test_labels)
    # channel order: the red plane is the first 1024 values of a row, as in the real files
    assert images[0, 0, 0, 0] == written.test_images[0, 0, 0, 0]
    assert images[0, 2, 31, 31] == written.test_images[0, 2, 31, 31]


def test_cifar10_files_not_canonical_and_not_marked_are_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path, train=10, test=10)
    (tmp_path / "cifar-10-batches-py" / FIXTURE_MARKER).unlink()
    assert CIFAR10_PROVIDER.availability(tmp_path) == "real"
    with pytest.raises(UserError) as err:
        CIFAR10_PROVIDER.load(tmp_path, train=True)
    assert "data_batch_1: does not match the canonical CIFAR-10 checksum" in err.value.message
    assert "images.npy" in err.value.hint


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        (MNIST_PROVIDER, "MNIST/raw/train-images-idx3-ubyte"),
        (CIFAR10_PROVIDER, "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_missing_data_names_the_file_and_the_download_command(
    tmp_path: Path, provider: object, missing: str
) -> None:
    assert provider.availability(tmp_path) == "missing"  # type: ignore[attr-defined]
    with pytest.raises(UserError) as err:
        provider.load(tmp_path, train=True)  # type: ignore[attr-defined]
    assert str(tmp_path / missing) in err.value.message
    name = provider.name  # type: ignore[attr-defined]
    assert f"grade data prepare {name} --download" in err.value.hint


def test_a_truncated_idx_file_is_a_clear_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, train=10, test=10)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:9])
    with pytest.raises(UserError) as err:
        MNIST_PROVIDER.load(tmp_path, train=True)
    assert "MNIST files cannot be read" in err.value.message


@pytest.mark.parametrize("task_id", ["mnist", "cifar10"])
def test_download_without_network_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_id: str
) -> None:
    """torchvision's real download code, pointed at a port where nothing listens."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/c.tar.gz")
    task = _task(task_id)
    provider = providers.get(task.dataset.provider)
    with pytest.raises(UserError) as err:
        provider.download(task, tmp_path)  # type: ignore[attr-defined]
    assert err.value.message.startswith("could not download")
    assert "no internet access" in err.value.hint


def test_carve_is_deterministic_disjoint_and_capped() -> None:
    train, val = carve(100, 30, seed=4)
    again_train, again_val = carve(100, 30, seed=4)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert len(val) == 30 and len(train) == 70
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(100))
    assert not np.array_equal(val, carve(100, 30, seed=5)[1])
    assert len(carve(10, 5000, seed=0)[1]) == 5  # capped at half a small set


def test_public_splits_are_carved_from_the_training_set(tmp_path: Path, cache: Path) -> None:
    written = write_mnist(tmp_path, train=120, test=30)
    task = _task("mnist")
    train = prepare_split(task, "train", data_root=tmp_path)
    val = prepare_split(task, "validation", data_root=tmp_path)
    assert (train.count, val.count) == (60, 60)  # validation_size 5000, capped at half
    train_idx, val_idx = carve(120, 5000, int(task.dataset.options["public_seed"]))
    assert np.array_equal(val.images(), written.train_images[val_idx])
    assert np.array_equal(val.labels(), written.train_labels[val_idx])
    assert np.array_equal(train.images(), written.train_images[train_idx])
    assert not (val.folder / "inputs" / "labels.npy").exists()  # labels stay outside inputs/


def test_hidden_split_is_the_official_test_set(tmp_path: Path, cache: Path) -> None:
    written = write_cifar10(tmp_path, train=20, test=25)
    test = prepare_split(_task("cifar10"), "test", data_root=tmp_path)
    assert test.count == 25
    assert np.array_equal(test.images(), written.test_images)
    assert np.array_equal(test.labels(), written.test_labels)


@pytest.mark.parametrize("task_id", ["mnist", "cifar10", "cifar10-resnet"])
def test_a_private_npy_test_set_replaces_the_official_one(
    tmp_path: Path, cache: Path, task_id: str
) -> None:
    task = _task(task_id)
    if task.dataset.provider == "mnist":
        write_mnist(tmp_path, train=20, test=20)
    else:
        write_cifar10(tmp_path, train=20, test=20)
    images, labels = write_private_test(tmp_path, task, count=33)
    stored = np.load(tmp_path / task_id / "test" / "images.npy")
    assert stored.shape == (33, *task.input_shape[1:], task.input_shape[0])  # N x H x W x C
    test = prepare_split(task, "test", data_root=tmp_path)
    assert test.count == 33
    assert np.array_equal(test.images(), images)
    assert np.array_equal(test.labels(), labels)
    # the public splits still come from the training set
    assert prepare_split(task, "validation", data_root=tmp_path).count == 10


def test_a_private_mnist_set_may_omit_the_channel_axis(tmp_path: Path, cache: Path) -> None:
    write_mnist(tmp_path, train=10, test=10)
    folder = tmp_path / "mnist" / "test"
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", np.arange(7, dtype=np.uint8))
    test = prepare_split(_task("mnist"), "test", data_root=tmp_path)
    assert np.array_equal(test.images()[:, 0], images)
    assert test.labels().dtype == np.int64


def _private(tmp_path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    write_cifar10(tmp_path, train=10, test=10)
    folder = tmp_path / "cifar10" / "test"
    folder.mkdir(parents=True)
    np.save(folder / "images.npy", images, allow_pickle=True)
    if labels is not None:
        np.save(folder / "labels.npy", labels, allow_pickle=True)
    return folder


_GOOD = np.zeros((4, 32, 32, 3), np.uint8)


@pytest.mark.parametrize(
    ("images", "labels", "file", "words"),
    [
        (_GOOD.astype(np.float32), np.zeros(4, np.int64), "images.npy", "expected N x 32 x 32 x 3"),
        (
            _GOOD.transpose(0, 3, 1, 2),
            np.zeros(4, np.int64),
            "images.npy",
            "height, width, channel",
        ),
        (_GOOD, np.zeros(3, np.int64), "labels.npy", "expected 4 integers"),
        (_GOOD, np.zeros(4, np.float32), "labels.npy", "expected 4 integers"),
        (_GOOD, np.array([0, 1, 2, 10]), "labels.npy", "labels range 0..10"),
        (_GOOD, np.array([{}, {}, {}, {}], dtype=object), "labels.npy", "object arrays"),
        (_GOOD, None, "labels.npy", "is missing"),
    ],
)
def test_a_bad_private_test_set_names_its_file(
    tmp_path: Path,
    cache: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    file: str,
    words: str,
) -> None:
    folder = _private(tmp_path, images, labels)
    with pytest.raises(UserError) as err:
        prepare_split(_task("cifar10"), "test", data_root=tmp_path)
    assert str(folder / file) in err.value.message
    assert words in str(err.value)


def test_unknown_dataset_option_names_the_field(tmp_path: Path) -> None:
    task = _task("mnist")
    bad = task.model_copy(
        update={
            "dataset": task.dataset.model_copy(
                update={"options": {**task.dataset.options, "validation_szie": 10}}
            )
        }
    )
    write_mnist(tmp_path, train=10, test=10)
    from harness.data import SplitSource

    with pytest.raises(UserError) as err:
        MNIST_PROVIDER.prepare(SplitSource(bad, "train", 0, tmp_path))
    assert "`dataset.options.validation_szie`: unknown option" in err.value.message


def test_fingerprint_changes_when_a_private_test_set_appears(tmp_path: Path) -> None:
    from harness.data import SplitSource

    task = _task("cifar10")
    write_cifar10(tmp_path, train=10, test=10)
    source = SplitSource(task, "test", 0, tmp_path)
    before = CIFAR10_PROVIDER.fingerprint(source)
    write_private_test(tmp_path, task, count=5)
    assert CIFAR10_PROVIDER.fingerprint(source) != before


@pytest.mark.parametrize("task_id", ["mnist", "cifar10", "cifar10-resnet"])
def test_task_specs_declare_the_seed_requirements(task_id: str) -> None:
    task = _task(task_id)
    assert task.kind == "classification" and task.num_classes == 10
    assert task.metrics.primary == "accuracy"
    assert {"learning_rate", "epochs", "history"} <= set(task.required_training)
    assert int(task.dataset.options["validation_size"]) > 0
    [ref] = task.references
    assert ref.expected is None and ref.measured == "not yet measured"
    assert (REPO_TASKS.parent / ref.path / "model.py").is_file()
    if task_id == "cifar10":
        assert "batch_size" in task.required_training
    if task_id == "cifar10-resnet":
        assert task.parameter_limit == 5_000_000
