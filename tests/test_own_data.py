"""The ``arrays`` and ``image-folder`` providers (an instructor's own data), the export for
students, and where the fallback-seed warning belongs."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import prepare_split, providers
from harness.dataprep import prepare_task
from harness.errors import UserError
from harness.settings import settings
from harness.tasks import load_task

TASK = """
id = "{id}"
title = "own data"
kind = "{kind}"
input_shape = [{c}, 6, 5]
{classes}
batch_size = 16

[dataset]
provider = "{provider}"

[dataset.options]
validation_size = 4
{extra}

[metrics]
primary = "{primary}"
report = ["{primary}"]

[grading]
full_marks_at = 0.9
zero_marks_at = 0.1
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "tasks").mkdir()
    monkeypatch.setenv("HARNESS_TASKS", str(tmp_path / "tasks"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_SECRET_SEED", raising=False)
    monkeypatch.setenv("HARNESS_CONFIG", str(tmp_path / "no-config.toml"))
    settings.cache_clear()
    yield tmp_path
    settings.cache_clear()


def task(root: Path, provider: str, *, c: int = 1, kind: str = "classification", extra: str = ""):
    classes = 'classes = ["cat", "dog", "emu"]' if kind == "classification" else ""
    primary = "accuracy" if kind == "classification" else "mse"
    tid = f"{provider}-{kind}-{c}"
    folder = root / "tasks" / tid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.toml").write_text(
        TASK.format(
            id=tid,
            kind=kind,
            c=c,
            classes=classes,
            provider=provider,
            extra=extra,
            primary=primary,
        )
    )
    return load_task(tid, root / "tasks")


def pictures(n: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, 6, 5), dtype=np.uint8)


def save(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_arrays_in_every_layout_arrive_as_nchw(project: Path, layout: str) -> None:
    spec = task(project, "arrays")
    data = project / "data" / spec.id
    train, test = pictures(12, 1, 0), pictures(5, 1, 1)
    labels = np.arange(12) % 3
    shaped = {
        "NCHW": lambda a: a,
        "NHWC": lambda a: a.transpose(0, 2, 3, 1),
        "NHW": lambda a: a[:, 0],
    }[layout]
    save(data / "train", shaped(train), labels)
    save(data / "test", shaped(test), np.array([0, 1, 2, 0, 1]))
    val = prepare_split(spec, "validation", data_root=project / "data")
    tr = prepare_split(spec, "train", data_root=project / "data")
    hidden = prepare_split(spec, "test", data_root=project / "data")
    assert (tr.count, val.count, hidden.count) == (8, 4, 5)
    np.testing.assert_array_equal(hidden.images(), test)
    both = np.concatenate([tr.images(), val.images()])
    assert sorted(map(bytes, both)) == sorted(map(bytes, train))  # a carve, nothing lost
    assert hidden.labels().dtype == np.int64
    assert hidden.fixed is not None and not hidden.public_fallback_seed


def test_npz_regression_and_a_given_validation_split(project: Path) -> None:
    spec = task(project, "arrays", c=3, kind="regression")
    data = project / "data" / spec.id
    data.mkdir(parents=True)
    for split, n in [("train", 10), ("validation", 3), ("test", 4)]:
        images = pictures(n, 3, n).transpose(0, 2, 3, 1)
        np.savez(data / f"{split}.npz", images=images, labels=np.linspace(0, 1, n)[:, None])
    val = prepare_split(spec, "validation", data_root=project / "data")
    assert val.count == 3 and val.labels().dtype == np.float32  # given, not carved
    assert prepare_split(spec, "train", data_root=project / "data").count == 10
    np.testing.assert_allclose(val.labels(), [0, 0.5, 1])


@pytest.mark.parametrize(
    ("images", "labels", "says"),
    [
        (np.zeros((4, 6, 5, 1), np.float32), np.zeros(4, int), "dtype float32"),
        (np.zeros((4, 7, 5, 1), np.uint8), np.zeros(4, int), "shape (4, 7, 5, 1)"),
        (np.zeros((4, 6, 5, 1), np.uint8), np.zeros(3, int), "expected 4 values"),
        (np.zeros((4, 6, 5, 1), np.uint8), np.array([0, 1, 2, 3]), "labels range 0..3"),
        (np.zeros((4, 6, 5, 1), np.uint8), np.zeros(4), "expected integer class indices"),
    ],
)
def test_bad_arrays_name_the_file(
    project: Path, images: np.ndarray, labels: np.ndarray, says: str
) -> None:
    spec = task(project, "arrays")
    save(project / "data" / spec.id / "test", images, labels)
    with pytest.raises(UserError) as err:
        prepare_split(spec, "test", data_root=project / "data")
    assert says in err.value.message and "test/" in err.value.message


def test_missing_split_and_unknown_option_are_user_errors(project: Path) -> None:
    spec = task(project, "arrays")
    with pytest.raises(UserError, match="no 'test' split under"):
        prepare_split(spec, "test", data_root=project / "data")
    bad = task(project, "image-folder", extra='colour = "red"')
    with pytest.raises(UserError, match=r"dataset.options.colour"):
        prepare_split(bad, "test", data_root=project / "data")


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    Image.fromarray(image).save(path)


@pytest.mark.parametrize("c", [1, 3])
def test_image_folder_classification_uses_the_tasks_class_order(project: Path, c: int) -> None:
    spec = task(project, "image-folder", c=c)
    split = project / "data" / spec.id / "test"
    imgs = pictures(6, c, 2)
    for i, name in enumerate(["emu", "cat", "dog", "emu", "cat", "dog"]):
        write_png(split / name / f"{i}.png", imgs[i])
    hidden = prepare_split(spec, "test", data_root=project / "data")
    # the task's classes are cat, dog, emu: cat images first (files 1, 4), then dog, emu
    assert hidden.labels().tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(hidden.images(), imgs[[1, 4, 2, 5, 0, 3]])
    (split / "cow").mkdir()
    with pytest.raises(UserError, match="'cow' is not one of the task's classes"):
        prepare_split(spec, "test", data_root=project / "data", force=True)


def test_image_folder_regression_and_wrong_size(project: Path) -> None:
    spec = task(project, "image-folder", kind="regression")
    split = project / "data" / spec.id / "test"
    imgs = pictures(3, 1, 4)
    split.mkdir(parents=True)
    with (split / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "value"])
        for i in range(3):
            write_png(split / "images" / f"p{i}.png", imgs[i])
            writer.writerow([f"p{i}.png", i / 2])
    hidden = prepare_split(spec, "test", data_root=project / "data")
    np.testing.assert_array_equal(hidden.images(), imgs)
    np.testing.assert_allclose(hidden.labels(), [0, 0.5, 1])
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(split / "images" / "p1.png")
    with pytest.raises(UserError, match=r"p1.png: 5 x 7 pixels.*never resizes"):
        try:
            prepare_split(spec, "test", data_root=project / "data", force=True)
        except UserError as exc:
            raise UserError(f"{exc.message} {exc.hint}") from None


def test_both_own_providers_are_registered() -> None:
    assert {"arrays", "image-folder", "fashion-mnist"} <= set(providers.names())


def test_export_writes_what_the_model_receives_and_the_seed_layout(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """correlation: N x 1 x 150 x 150 arrays plus images/<id>.png and responses.csv; the
    hidden split is drawn from the fallback seed here, so the warning is printed."""
    from kit import write_task

    write_task(project / "tasks")
    out = project / "exported"
    prepare_task("tiny", splits=[], data_root=None, download=False, export_dir=out, force=False)
    train = out / "tiny" / "train"
    images, labels = np.load(train / "images.npy"), np.load(train / "labels.npy")
    assert images.shape == (32, 1, 150, 150) and images.dtype == np.uint8
    with (train / "responses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and float(rows[5]["corr"]) == pytest.approx(labels[5], abs=1e-6)
    png = np.asarray(Image.open(train / "images" / f"{rows[5]['id']}.png"))
    np.testing.assert_array_equal(png, images[5, 0])
    assert not (out / "tiny" / "test").exists()  # the hidden split is never exported
    info = json.loads((out / "tiny" / "dataset.json").read_text())
    assert info["splits"] == {"train": 32, "validation": 24}
    assert "PUBLIC fallback seed" in capsys.readouterr().err


def test_a_fixed_hidden_split_says_so_instead_of_the_seed_warning(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = task(project, "arrays")
    save(project / "data" / spec.id / "train", pictures(10, 1, 0), np.arange(10) % 3)
    save(project / "data" / spec.id / "test", pictures(3, 1, 1), np.arange(3))
    settings.cache_clear()
    assert settings().secret_seed is None
    prepare_task(
        spec.id,
        splits=[],
        data_root=project / "data",
        download=False,
        export_dir=None,
        force=False,
    )
    err = capsys.readouterr().err
    assert "fallback" not in err and "the hidden split is fixed" in err
