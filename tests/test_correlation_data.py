"""The correlation provider: generated scatter plots, the assignment's folder layout."""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import SplitSource, prepare_split, providers
from harness.data.correlation import (
    CHUNK,
    SIZE,
    generate,
    generate_plots,
    read_layout,
    write_layout,
)
from harness.errors import UserError
from harness.settings import settings
from harness.tasks import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
TASK_FILE = ROOT / "tasks" / "correlation" / "task.toml"


def small_task(**sizes: int) -> TaskSpec:
    """The real task spec with small split sizes."""
    data = tomllib.loads(TASK_FILE.read_text())
    data["dataset"]["options"].update(
        {"train_size": 40, "validation_size": 30, "test_size": 20, **sizes}
    )
    return TaskSpec.model_validate(data)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_SECRET_SEED", raising=False)
    monkeypatch.setenv("HARNESS_CONFIG", str(tmp_path / "no-config.toml"))
    settings.cache_clear()
    yield tmp_path / "cache"
    settings.cache_clear()


def dark_pixel_r(images: np.ndarray) -> np.ndarray:
    """Pearson r of each picture's ink, weighted by darkness, x right and y up."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    w = 255.0 - images.reshape(len(images), SIZE, SIZE).astype(np.float64)
    total = w.sum((1, 2))
    dx = cols - ((w * cols).sum((1, 2)) / total)[:, None, None]
    dy = (SIZE - 1 - rows) - ((w * (SIZE - 1 - rows)).sum((1, 2)) / total)[:, None, None]
    sxy, sxx, syy = ((w * a * b).sum((1, 2)) for a, b in ((dx, dy), (dx, dx), (dy, dy)))
    return sxy / np.sqrt(sxx * syy)


# --- generation -----------------------------------------------------------------------


def test_generation_is_deterministic_and_independent_of_the_range() -> None:
    images, labels = generate(7, "train", 0, CHUNK + 300)
    again, again_labels = generate(7, "train", 0, CHUNK + 300)
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    # a range that straddles a chunk boundary gives the same plots
    part, part_labels = generate(7, "train", CHUNK - 40, CHUNK + 60)
    assert np.array_equal(part, images[CHUNK - 40 : CHUNK + 60])
    assert np.array_equal(part_labels, labels[CHUNK - 40 : CHUNK + 60])
    assert images.shape == (CHUNK + 300, 1, SIZE, SIZE) and images.dtype == np.uint8
    assert labels.dtype == np.float32


def test_seed_and_split_change_the_plots() -> None:
    _, base = generate(7, "train", 0, 50)
    _, other_seed = generate(8, "train", 0, 50)
    _, other_split = generate(7, "validation", 0, 50)
    assert not np.allclose(base, other_seed)
    assert not np.allclose(base, other_split)


def test_plots_look_like_the_game() -> None:
    images, labels = generate(3, "validation", 0, 2000)
    plots = generate_plots(3, "validation", 0, 2000)
    assert images.max() == 255 and images.min() < 100  # white background, dark dots
    assert np.mean(images == 255) > 0.8
    assert plots.counts.min() >= 20 and plots.counts.max() <= 400
    assert plots.counts.max() - plots.counts.min() > 300
    # correlations cover [-1, 1] about uniformly
    hist, _ = np.histogram(labels, bins=4, range=(-1, 1))
    assert hist.min() > 0.2 * len(labels), hist
    assert labels.min() < -0.95 and labels.max() > 0.95


def test_label_is_the_pearson_r_of_the_drawn_points() -> None:
    images, labels = generate(11, "test", 0, 40)
    plots = generate_plots(11, "test", 0, 40)
    for i in range(40):
        n = plots.counts[i]
        cols, rows = plots.cols[i, :n], plots.rows[i, :n]
        expected = np.corrcoef(cols, SIZE - 1 - rows)[0, 1]
        assert labels[i] == pytest.approx(expected, abs=1e-6)
        # every point's centre is inked in the picture
        assert np.all(images[i, 0, rows, cols] == plots.ink[i])


def test_label_can_be_read_back_from_the_dark_pixels() -> None:
    images, labels = generate(5, "validation", 0, 600)
    plots = generate_plots(5, "validation", 0, 600)
    errors = np.abs(dark_pixel_r(images) - labels)
    # points on the same pixel and touching dots blur it a little, most in dense plots
    assert errors.mean() < 0.03
    sparse = plots.counts <= 40
    assert sparse.sum() >= 10
    assert np.median(errors[sparse]) < 0.01
    assert errors[sparse].max() < 0.08


# --- the assignment's layout ------------------------------------------------------------


def test_layout_round_trip(tmp_path: Path) -> None:
    images, labels = generate(2, "train", 0, 12)
    write_layout(tmp_path, images, labels)
    assert (tmp_path / "images" / "000011.png").is_file()
    with (tmp_path / "responses.csv").open() as handle:
        assert next(csv.reader(handle)) == ["id", "corr"]
    back, back_labels = read_layout(tmp_path)
    assert np.array_equal(back, images)
    assert np.array_equal(back_labels, labels)


def test_layout_converts_rgb_and_rgba_to_grayscale(tmp_path: Path) -> None:
    images, labels = generate(2, "train", 0, 2)
    write_layout(tmp_path, images, labels, ids=["rgb", "rgba"])
    Image.fromarray(images[0, 0]).convert("RGB").save(tmp_path / "images" / "rgb.png")
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)  # transparent background, opaque dots
    rgba[..., 3] = np.where(images[1, 0] < 255, 255, 0)
    rgba[..., :3] = images[1, 0][..., None]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "images" / "rgba.png")
    back, _ = read_layout(tmp_path)
    assert np.array_equal(back, images)


def _layout(tmp_path: Path, n: int = 3) -> Path:
    images, labels = generate(2, "train", 0, n)
    write_layout(tmp_path, images, labels)
    return tmp_path


@pytest.mark.parametrize(
    ("csv_text", "words"),
    [
        ("id,correlation\n000000,0.5\n", "lacks the column 'corr'"),
        ("id,corr\n", "has no rows"),
        ("id,corr\n000000,high\n", "line 2"),
        ("id,corr\n000000,1.7\n", "line 2"),
        ("id,corr\n000000,0.1\n000000,0.2\n", "more than once"),
    ],
)
def test_bad_responses_csv_names_the_file(tmp_path: Path, csv_text: str, words: str) -> None:
    folder = _layout(tmp_path)
    (folder / "responses.csv").write_text(csv_text)
    with pytest.raises(UserError) as err:
        read_layout(folder)
    assert str(folder / "responses.csv") in err.value.message
    assert words in err.value.message
    assert err.value.hint


def test_missing_responses_csv(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="responses.csv: file not found"):
        read_layout(tmp_path)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    folder = _layout(tmp_path)
    (folder / "images" / "000001.png").unlink()
    with pytest.raises(UserError) as err:
        read_layout(folder)
    assert str(folder / "images" / "000001.png") in err.value.message
    assert "not found" in err.value.message


def test_wrong_image_size_names_the_file(tmp_path: Path) -> None:
    folder = _layout(tmp_path)
    Image.new("L", (100, 120), 255).save(folder / "images" / "000002.png")
    with pytest.raises(UserError) as err:
        read_layout(folder)
    assert str(folder / "images" / "000002.png") in err.value.message
    assert "100x120, expected 150x150" in err.value.message


def test_unsupported_mode_and_garbled_png(tmp_path: Path) -> None:
    folder = _layout(tmp_path)
    Image.new("I;16", (SIZE, SIZE)).save(folder / "images" / "000000.png")
    with pytest.raises(UserError, match=r"000000\.png: image mode 'I;16' is not supported"):
        read_layout(folder)
    (folder / "images" / "000000.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"000000\.png: not a readable image"):
        read_layout(folder)


# --- the provider and the data layer ------------------------------------------------------


def test_task_spec_is_valid_and_its_splits_prepare() -> None:
    spec = TaskSpec.model_validate(tomllib.loads(TASK_FILE.read_text()))
    assert spec.dataset.provider in providers
    assert spec.dataset.options["test_size"] == 5000
    assert set(spec.required_training) >= {"optimizer", "learning_rate", "loss", "history"}
    task = small_task()
    provider = providers.get("correlation")
    images, labels = provider.prepare(SplitSource(task, "validation", 1729, None))
    assert images.shape == (30, 1, SIZE, SIZE) and labels.shape == (30,)


def test_missing_split_size_is_a_user_error() -> None:
    data = tomllib.loads(TASK_FILE.read_text())
    del data["dataset"]["options"]["train_size"]
    task = TaskSpec.model_validate(data)
    with pytest.raises(UserError, match=r"dataset\.options\.train_size"):
        providers.get("correlation").prepare(SplitSource(task, "train", 1, None))


def test_hidden_split_uses_the_seed_it_is_given(cache: Path) -> None:
    task = small_task()
    prepared = prepare_split(task, "test")
    assert prepared.public_fallback_seed
    _, expected = generate(424242, "test", 0, 20)
    assert np.array_equal(prepared.labels(), expected)
    assert prepared.images().shape == (20, 1, SIZE, SIZE)


def test_data_root_folder_replaces_the_hidden_split(tmp_path: Path, cache: Path) -> None:
    task = small_task()
    images, labels = generate(99, "elsewhere", 0, 6)
    folder = tmp_path / "root" / "correlation" / "test"
    write_layout(folder, images, labels, ids=[f"plot{i}" for i in range(6)])
    prepared = prepare_split(task, "test", data_root=tmp_path / "root")
    assert prepared.count == 6
    assert np.array_equal(prepared.images(), images)
    assert np.array_equal(prepared.labels(), labels)
    # the public splits, absent from the folder, are still generated
    train = prepare_split(task, "train", data_root=tmp_path / "root")
    assert train.count == 40
    # editing responses.csv changes the fingerprint, so the cache is not reused
    write_layout(folder, images[:4], labels[:4], ids=[f"plot{i}" for i in range(4)])
    assert prepare_split(task, "test", data_root=tmp_path / "root").count == 4


def test_data_root_without_the_hidden_folder_is_a_user_error(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(UserError) as err:
        prepare_split(small_task(), "test", data_root=tmp_path)
    assert str(tmp_path / "correlation" / "test" / "responses.csv") in err.value.message


# --- the shipped models for this task -------------------------------------------------------


@pytest.mark.parametrize("folder", ["reference_solutions/correlation", "submissions/team42"])
def test_shipped_models_load_and_beat_predicting_zero(folder: str) -> None:
    import importlib.util

    import torch
    from safetensors.torch import load_file

    path = ROOT / folder
    manifest = tomllib.loads((path / "submission.toml").read_text())
    assert manifest["task"] == "correlation"
    spec = importlib.util.spec_from_file_location(f"model_{path.name}", path / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(load_file(str(path / manifest["model"]["weights"])), strict=True)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    images, labels = generate(1729, "validation", 0, 250)
    model.eval()
    with torch.inference_mode():
        pred = model(torch.from_numpy(images).float() / 255.0).reshape(-1).numpy()
    assert np.mean((pred - labels) ** 2) < 0.01 < np.mean(labels**2)
