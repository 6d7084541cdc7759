"""Students see their own error: real submissions with the common mistakes, graded on the
process backend in one batch; the error's type, message and the student's own frames reach
the result, report.html, report.md and Gradescope's results.json, each with its hint."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from kit import TINY_MODEL, make_submission, save_weights, write_task
from safetensors.torch import save_file

from harness.api import GradeOptions, grade
from harness.results import ResultDocument
from harness.settings import settings
from harness.student_error import render

# built for 28x28 MNIST digits; the tiny task gives 1x150x150 plots
MNIST_MLP = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        h = torch.relu(self.fc(x.flatten(1)))
        return self.out(h).squeeze(1)


def build_model():
    return Net()
"""
CUDA_IN_FORWARD = TINY_MODEL.replace(
    "def forward(self, x):\n", "def forward(self, x):\n        x = x.cuda()\n"
)
EXTRA_LAYER = TINY_MODEL.replace(
    "self.fc2 = nn.Linear(hidden, 1)",
    "self.fc2 = nn.Linear(hidden, 1)\n        self.head = nn.Linear(1, 1)",
)


def _pickled_model(folder: Path) -> None:
    """``torch.save(model)``, as a student does: the class is pickled by reference."""
    spec = importlib.util.spec_from_file_location("model", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("model")
    sys.modules["model"] = module
    try:
        spec.loader.exec_module(module)
        torch.save(module.build_model(), folder / "weights.pt")
    finally:
        if saved is None:
            sys.modules.pop("model", None)
        else:
            sys.modules["model"] = saved


def _data_parallel(folder: Path) -> None:
    """Weights saved from ``nn.DataParallel(model).state_dict()``: every key ``module.*``."""
    model = save_weights(TINY_MODEL, folder)["model"]
    state = {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))


@pytest.fixture(scope="module")
def graded(
    tmp_path_factory: pytest.TempPathFactory, shared_cache: Path
) -> Iterator[dict[str, ResultDocument]]:
    root = tmp_path_factory.mktemp("mistakes")
    tasks = root / "tasks"
    write_task(tasks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_TASKS", str(tasks))
        mp.setenv("HARNESS_CACHE", str(shared_cache))
        mp.setenv("HARNESS_SECRET_SEED", "99")
        settings.cache_clear()
        subs = root / "subs"
        folders = [
            make_submission(subs, "mnist-mlp", model_src=MNIST_MLP),
            make_submission(subs, "cuda", model_src=CUDA_IN_FORWARD),
            make_submission(subs, "pickled", weights="weights.pt", save=False),
            make_submission(subs, "parallel", save=False),
            make_submission(subs, "extra", model_src=EXTRA_LAYER, save=False),
            make_submission(subs, "typo"),
        ]
        _pickled_model(subs / "pickled")
        _data_parallel(subs / "parallel")
        save_weights(TINY_MODEL, subs / "extra")
        manifest = subs / "typo" / "submission.toml"
        manifest.write_text(manifest.read_text().replace("model:build_model", "model:build_modle"))
        options = GradeOptions(sandbox="process", results_dir=root / "results", tasks_dir=tasks)
        docs = grade(folders, options=options)
        yield {d.team: d for d in docs} | {"_root": root}  # type: ignore[dict-item]
    settings.cache_clear()


def _report(graded: dict[str, ResultDocument], team: str, name: str) -> str:
    root: Path = graded["_root"]  # type: ignore[assignment]
    return (root / "results" / "tiny" / team / name).read_text()


def test_shape_error_shows_the_message_own_frames_and_input_shape(graded) -> None:
    doc = graded["mnist-mlp"]
    assert doc.status == "failed" and doc.stage == "dry_run"
    assert doc.error is not None
    assert doc.error.type == "RuntimeError"
    assert "mat1 and mat2 shapes cannot be multiplied (2x22500 and 784x32)" in doc.error.message
    assert "mat1 and mat2 shapes cannot be multiplied" in doc.message
    assert [(f.file, f.function) for f in doc.error.frames] == [("model.py", "forward")]
    assert doc.error.frames[0].code == "h = torch.relu(self.fc(x.flatten(1)))"
    assert doc.error.input_shape == [2, 1, 150, 150]
    assert "150x150" in doc.error.hint
    text = render(doc.error)
    # no harness frames, no host paths, nothing from site-packages
    for leaked in ("/opt/harness", "site-packages", "harness/runner", "/tmp/", "Traceback"):
        assert leaked not in text
    # the same text in every place a student reads
    html, md = (
        _report(graded, "mnist-mlp", "report.html"),
        _report(graded, "mnist-mlp", "report.md"),
    )
    gradescope = json.loads(_report(graded, "mnist-mlp", "results.json"))
    status_test = gradescope["tests"][0]
    assert "(2x22500 and 784x32)" in html and "model.py, line 13, in forward" in html
    assert "shape (2, 1, 150, 150)" in html
    assert text in md
    assert text in status_test["output"] and status_test["output_format"] == "text"


def test_cuda_in_forward_gets_a_hint(graded) -> None:
    doc = graded["cuda"]
    assert doc.status == "failed" and doc.stage == "dry_run", doc.message
    assert doc.error is not None and doc.error.frames[0].code == "x = x.cuda()"
    assert ".cuda()" in doc.error.hint and "device=x.device" in doc.error.hint


def test_torch_save_model_is_told_to_save_the_state_dict(graded) -> None:
    doc = graded["pickled"]
    assert doc.status == "failed" and doc.stage == "convert", doc.message
    assert doc.error is not None
    assert "model.state_dict()" in doc.error.hint
    everything = " ".join([doc.message, render(doc.error), _report(graded, "pickled", "report.md")])
    assert (
        "weights_only=False" not in everything and "weights_only` set to `False" not in everything
    )
    assert "model.Net" in doc.error.message  # what the file holds instead of tensors


def test_data_parallel_prefix_gets_a_hint(graded) -> None:
    doc = graded["parallel"]
    assert doc.status == "failed" and doc.stage == "load", doc.message
    assert doc.error is not None and "module." in doc.error.hint
    assert "model.module.state_dict()" in doc.error.hint


def test_missing_keys_get_a_hint(graded) -> None:
    doc = graded["extra"]
    assert doc.status == "failed" and doc.stage == "load", doc.message
    assert "missing 2 key(s): head.bias, head.weight" in doc.message
    assert doc.error is not None and "missing keys are in the network" in doc.error.hint


def test_misspelt_entrypoint_gets_did_you_mean(graded) -> None:
    doc = graded["typo"]
    assert doc.status == "failed" and doc.stage == "import", doc.message
    assert doc.error is not None
    assert "did you mean `build_model`?" in doc.error.hint
    assert 'entrypoint = "model:build_model"' in doc.error.hint


def test_unexpected_keys_get_a_hint(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1", save=False)
    save_weights(textwrap.dedent(EXTRA_LAYER), folder)
    options = GradeOptions(sandbox="process", results_dir=tmp_path / "r", tasks_dir=env)
    [doc] = grade([folder], options=options)
    assert doc.status == "failed" and doc.stage == "load"
    assert doc.error is not None and "unexpected keys are in the file" in doc.error.hint
    assert "module." not in doc.error.hint
