"""The fashion-mnist task on the real files of Debian's ``dataset-fashion-mnist``.

CI installs the package (``scripts/system-deps``). The hidden split must be the official
10,000 test images, and the committed references' accuracy, graded by the ordinary
pipeline (``grade validate-references``), must equal an independent computation: the raw
IDX files parsed here with gzip and NumPy, the model run by plain torch.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.data import prepare_split
from harness.data.fashion_mnist import SYSTEM_DIRS
from harness.dataprep import prepare_task
from harness.settings import settings
from harness.tasks import load_task
from harness.validate import validate_references

REPO = Path(__file__).resolve().parent.parent
SRC = SYSTEM_DIRS[0]


def idx(name: str) -> np.ndarray:
    """An IDX file read from scratch: big-endian header, then uint8 data."""
    with gzip.open(SRC / f"{name}.gz") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture
def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if not (SRC / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{SRC} is missing: apt-get install dataset-fashion-mnist")
    monkeypatch.setenv("HARNESS_TASKS", str(REPO / "tasks"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_SECRET_SEED", raising=False)
    monkeypatch.setenv("HARNESS_CONFIG", str(tmp_path / "none.toml"))
    settings.cache_clear()
    yield tmp_path / "data"
    settings.cache_clear()


def test_prepare_finds_the_debian_files_and_the_official_test_set(real: Path) -> None:
    task = load_task("fashion-mnist")
    hidden = prepare_split(task, "test", data_root=real)
    assert hidden.count == 10_000
    np.testing.assert_array_equal(hidden.images()[:, 0], idx("t10k-images-idx3-ubyte"))
    np.testing.assert_array_equal(hidden.labels(), idx("t10k-labels-idx1-ubyte"))
    assert hidden.fixed == "the official Fashion-MNIST test set"
    assert not hidden.public_fallback_seed  # no secret seed here, and none needed
    assert (real / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    train = prepare_split(task, "train", data_root=real)
    val = prepare_split(task, "validation", data_root=real)
    assert (train.count, val.count) == (55_000, 5_000)
    every = np.concatenate([train.labels(), val.labels()])
    np.testing.assert_array_equal(np.bincount(every), np.bincount(idx("train-labels-idx1-ubyte")))
    out = real.parent / "exported"  # what a student gets: the model's layout, N x C x H x W
    prepare_task(
        "fashion-mnist",
        splits=["validation", "test"],
        data_root=real,
        download=False,
        export_dir=out,
        force=False,
    )
    exported = np.load(out / "fashion-mnist" / "validation" / "images.npy")
    np.testing.assert_array_equal(exported, val.images())
    assert exported.shape == (5_000, 1, 28, 28)
    assert not (out / "fashion-mnist" / "test").exists()


def independent_accuracy(folder: Path) -> float:
    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location(f"ref_{folder.name}", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    model.eval()
    images = torch.from_numpy(idx("t10k-images-idx3-ubyte").copy()).float().div(255)[:, None]
    labels = torch.from_numpy(idx("t10k-labels-idx1-ubyte").astype(np.int64))
    with torch.inference_mode():
        predicted = torch.cat([model(b).argmax(1) for b in images.split(500)])
    return int((predicted == labels).sum()) / len(labels)


@pytest.mark.slow
def test_references_score_what_the_raw_files_say_and_land_on_the_board(
    real: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    rows = validate_references(
        only=("fashion-mnist",), data_root=real, sandbox="process", results_dir=results
    )
    task = load_task("fashion-mnist")
    assert [r.reference for r in rows] == [ref.name for ref in task.references]
    assert len(rows) == 2 and all(r.ok for r in rows), [r.notes for r in rows]
    best = 0.0
    for ref, row in zip(task.references, rows, strict=True):
        folder = REPO / ref.path
        team = f"reference-fashion-mnist-{folder.name}"
        doc = json.loads((results / "fashion-mnist" / team / "result.json").read_text())
        assert doc["status"] == "graded" and doc["reference"] is True
        assert doc["metrics"]["accuracy"] == row.score == independent_accuracy(folder)
        assert ref.expected is not None and abs(row.score - ref.expected) <= ref.tolerance
        best = max(best, row.score)
    assert best >= 0.90
