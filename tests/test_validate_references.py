"""Grading MNIST and CIFAR-10 submissions from the real layouts, checked against accuracy
computed here from the files themselves, and ``grade validate-references`` end to end.

Submissions are real folders: the mnist reference trained for a few epochs on a fixture
by its own ``train.py``, and a small student-style CNN with a manifest normalization.
Grading runs the real pipeline with ``--sandbox process``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file

from harness.api import GradeOptions, grade
from harness.fixtures import write_cifar10, write_mnist, write_private_test
from harness.settings import settings
from harness.tasks import load_task
from harness.validate import Row, exit_code, render, validate_references

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HARNESS_TASKS", str(TASKS))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_SECRET_SEED", "11")
    settings.cache_clear()
    yield tmp_path / "cache"
    settings.cache_clear()


@pytest.fixture(scope="module")
def trained_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mnist reference trained 8 epochs on the seed-0 fixture by its own train.py."""
    out = tmp_path_factory.mktemp("mnist-ref") / "reference-mnist"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "reference_solutions/mnist/train.py"),
            "--fixture",
            "--epochs",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "215,370 parameters" in done.stdout
    return out


def _grade(folder: Path, data_root: Path, tmp_path: Path, tasks: Path = TASKS):
    options = GradeOptions(
        sandbox="process",
        data_root=data_root,
        tasks_dir=tasks,
        results_dir=tmp_path / "results",
        reports=False,
        force=True,
    )
    [doc] = grade([folder], options=options)
    return doc


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file read here with numpy alone: big-endian header, then the bytes."""
    raw = path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _module(folder: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"m_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accuracy(model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray) -> tuple[float, list]:
    model.eval()
    with torch.inference_mode():
        pred = model(x).argmax(1).numpy()
    per_class = [
        float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else None for c in range(10)
    ]
    return float(np.mean(pred == labels)), per_class


def test_mnist_graded_from_the_torchvision_layout_matches_an_independent_accuracy(
    cache: Path, tmp_path: Path, trained_mnist: Path
) -> None:
    root = tmp_path / "data"
    write_mnist(root, seed=0)
    doc = _grade(trained_mnist, root, tmp_path)
    assert doc.status == "graded", doc.message
    assert doc.split == "test" and doc.params.counted == 215_370

    raw = root / "MNIST" / "raw"
    images = _read_idx(raw / "t10k-images-idx3-ubyte")
    labels = _read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64)
    model = _module(trained_mnist).build_model()
    model.load_state_dict(load_file(str(trained_mnist / "weights.safetensors")))
    x = torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)
    expected, per_class = _accuracy(model, x, labels)
    assert 0.2 < expected < 1.0  # trained a little: the check can tell predictions apart
    assert doc.metrics["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert doc.details["per_class_accuracy"] == pytest.approx(per_class)
    confusion = np.array(doc.details["confusion_matrix"])
    assert confusion.sum() == len(labels) and np.trace(confusion) == round(expected * len(labels))
    assert doc.training["learning_rate"] == 0.0005 and len(doc.history) == 8


STUDENT_CNN = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 4)
        return self.head(x.flatten(1))


def build_model():
    return Small()
"""

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _student_cifar(folder: Path, train_images: np.ndarray, train_labels: np.ndarray) -> None:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(STUDENT_CNN)
    ns: dict = {}
    exec(STUDENT_CNN, ns)
    torch.manual_seed(0)
    model = ns["build_model"]()
    x = _normalized(train_images)
    y = torch.from_numpy(train_labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    rows = []
    for epoch in range(1, 6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        rows.append(f"{epoch},{float(loss.detach()):.4f},{float(loss.detach()):.4f}")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "weights.safetensors"),
    )
    (folder / "history.csv").write_text("epoch,train_loss,val_loss\n" + "\n".join(rows) + "\n")
    (folder / "submission.toml").write_text(
        textwrap.dedent(f"""
        task = "cifar10"
        team = "team-npy"
        [model]
        weights = "weights.safetensors"
        normalize = {{ mean = {list(MEAN)}, std = {list(STD)} }}
        [training]
        learning_rate = 0.01
        batch_size = {len(train_labels)}
        epochs = 5
        history = "history.csv"
    """)
    )


def _normalized(images_nchw: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_nchw)).float().div(255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_cifar10_graded_from_a_private_npy_test_set_matches_an_independent_accuracy(
    cache: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    public = write_cifar10(root, train=300, test=50)
    task = load_task("cifar10", TASKS)
    write_private_test(root, task, count=180, seed=21)
    folder = tmp_path / "subs" / "team-npy"
    _student_cifar(folder, public.train_images, public.train_labels)
    doc = _grade(folder, root, tmp_path)
    assert doc.status == "graded", doc.message
    assert doc.split == "test"

    # independent: the npy files (N x H x W x C) read here, transposed, normalized by hand
    images = np.load(root / "cifar10" / "test" / "images.npy")
    labels = np.load(root / "cifar10" / "test" / "labels.npy")
    assert images.shape == (180, 32, 32, 3)
    ns: dict = {}
    exec(STUDENT_CNN, ns)
    model = ns["build_model"]()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    expected, per_class = _accuracy(model, _normalized(images.transpose(0, 3, 1, 2)), labels)
    assert 0.2 < expected < 1.0
    assert doc.metrics["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert doc.details["per_class_accuracy"] == pytest.approx(per_class)
    # the official (fixture) test batch would give another score: the private set was used
    official, _ = _accuracy(model, _normalized(public.test_images), public.test_labels)
    assert len(labels) != len(public.test_labels) and official != doc.metrics["accuracy"]


def test_a_cifar10_manifest_without_the_labs_required_items_is_invalid(
    cache: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    public = write_cifar10(root, train=40, test=20)
    folder = tmp_path / "subs" / "team-npy"
    _student_cifar(folder, public.train_images, public.train_labels)
    manifest = folder / "submission.toml"
    manifest.write_text(manifest.read_text().replace("batch_size", "# batch_size"))
    doc = _grade(folder, root, tmp_path)
    assert doc.status == "invalid"
    assert "batch_size" in doc.message


def _table_text(rows: list[Row]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(rows))
    return console.export_text()


@pytest.mark.parametrize(
    "task_id",
    [
        "mnist",
        "cifar10",
        pytest.param("cifar10-resnet", marks=pytest.mark.slow),
    ],
)
def test_validate_references_without_the_dataset(cache: Path, tmp_path: Path, task_id: str) -> None:
    """No dataset under the data root: the reference still builds, loads strictly, fits
    its limit and runs on the fixture; its score is "not measured"."""
    rows = validate_references(
        tasks_dir=TASKS, data_root=tmp_path / "empty", sandbox="process", only=(task_id,)
    )
    [row] = rows
    task = load_task(task_id, TASKS)
    model = _module(REPO / task.references[0].path).build_model()
    assert row.ok, row.notes
    assert row.fixture == "graded" and row.weights == "initial"
    assert row.params == sum(p.numel() for p in model.parameters())
    assert row.score is None and row.data == "missing"
    assert exit_code(rows) == 0
    text = _table_text(rows)
    assert task_id in text and f"{row.params:,}" in text and "not measured" in text
    assert (f"{task.parameter_limit:,}" if task.parameter_limit else "none") in text


def _copy_project(tmp_path: Path, task_id: str, edit: dict[str, str]) -> Path:
    """tasks/<id>/task.toml and its reference copied under tmp_path, with text replaced."""
    tasks = tmp_path / "project" / "tasks"
    (tasks / task_id).mkdir(parents=True)
    text = (TASKS / task_id / "task.toml").read_text()
    for old, new in edit.items():
        assert old in text
        text = text.replace(old, new)
    (tasks / task_id / "task.toml").write_text(text)
    ref = load_task(task_id, TASKS).references[0].path
    shutil.copytree(
        REPO / ref, tmp_path / "project" / ref, ignore=shutil.ignore_patterns("__pycache__")
    )
    return tasks


def test_validate_references_fails_a_reference_over_its_limit(cache: Path, tmp_path: Path) -> None:
    tasks = _copy_project(
        tmp_path,
        "mnist",
        {
            'kind = "classification"': 'kind = "classification"\nparameter_limit = 100000',
        },
    )
    rows = validate_references(tasks_dir=tasks, data_root=tmp_path / "empty", sandbox="process")
    [row] = rows
    assert not row.ok and row.fixture == "over_limit"
    assert row.params == 215_370 and exit_code(rows) == 1
    text = _table_text(rows)
    assert "FAILED" in text and "100,000" in text and "over_limit" in text


def test_validate_references_measures_against_the_expectation(
    cache: Path, tmp_path: Path, trained_mnist: Path
) -> None:
    """With the dataset present (an unmarked set in the MNIST layout) and trained weights
    committed, the score is measured and compared with `expected` within `tolerance`."""
    root = tmp_path / "data"
    write_mnist(root, seed=0)
    (root / "MNIST" / "raw" / "harness-fixture.json").unlink()  # now it looks like MNIST
    doc = _grade(trained_mnist, root, tmp_path)
    score = doc.metrics["accuracy"]

    def run(expected: float, tolerance: float) -> Row:
        project = tmp_path / f"p{expected}"
        tasks = _copy_project(
            project,
            "mnist",
            {
                'measured = "not yet measured"': (
                    f'expected = {expected}\ntolerance = {tolerance}\nmeasured = "in a test"'
                ),
            },
        )
        ref = project / "project" / "reference_solutions" / "mnist"
        for name in ("weights.safetensors", "history.csv", "submission.toml"):
            shutil.copyfile(trained_mnist / name, ref / name)
        [row] = validate_references(tasks_dir=tasks, data_root=root, sandbox="process")
        return row

    met = run(score + 0.01, 0.02)
    assert met.ok, met.notes
    assert met.weights == "committed" and met.data == "real"
    assert met.score == pytest.approx(score)
    missed = run(min(score + 0.2, 1.0), 0.01)
    assert not missed.ok and any("expected" in note for note in missed.notes)
    assert "FAILED" in _table_text([missed])


def test_train_py_refuses_to_write_smoke_weights_into_the_reference(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "reference_solutions/mnist/train.py"), "--fixture"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "give --out" in done.stderr
    assert not (REPO / "reference_solutions/mnist/weights.safetensors").exists()


@pytest.mark.parametrize(
    ("weights", "expected", "ok"),
    [(False, None, True), (True, 10.0, True), (True, 0.0, False)],
)
def test_validate_references_on_a_generated_task(
    cache: Path, tmp_path: Path, weights: bool, expected: float | None, ok: bool
) -> None:
    """A provider with no public layout (generated data): the one run is on the generated
    hidden split; a lower-is-better metric must come in under `expected` + `tolerance`."""
    from kit import TINY_MODEL, make_submission, write_task

    tasks = tmp_path / "project" / "tasks"
    folder = write_task(tasks, "tiny")
    make_submission(tmp_path / "project" / "refs", "tiny-ref", save=weights)
    line = f"expected = {expected}\n" if expected is not None else ""
    with open(folder / "task.toml", "a") as fh:
        fh.write(f'\n[[references]]\nname = "tiny"\npath = "refs/tiny-ref"\n{line}')
    [row] = validate_references(tasks_dir=tasks, data_root=None, sandbox="process")
    ns: dict = {}
    exec(TINY_MODEL, ns)
    assert row.ok is ok, row.notes
    assert row.fixture == "" and row.data == "generated"
    assert row.weights == ("committed" if weights else "initial")
    assert row.params == sum(p.numel() for p in ns["build_model"]().parameters())
    assert (row.score is not None) is weights
    assert "n/a (generated data)" in _table_text([row])
