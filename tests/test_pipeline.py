"""The pipeline end to end on the process backend: graded, failed stages, over the
limit, .pt conversion, and a batch where one broken submission leaves the others graded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kit import TINY_MODEL, make_submission, write_task

from harness.api import GradeOptions, grade


def _options(tmp_path: Path, tasks: Path, **kw: object) -> GradeOptions:
    return GradeOptions(
        sandbox="process", results_dir=tmp_path / "results", reports=False, tasks_dir=tasks, **kw
    )  # type: ignore[arg-type]


def test_mse_matches_an_independent_computation_on_the_public_layout(
    env: Path, tmp_path: Path
) -> None:
    """The hidden split read from DATA_ROOT/<task>/test/ (images/<id>.png + responses.csv)
    and scored by the harness equals MSE computed here from the PNG files with PIL."""
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from harness.data.correlation import generate, write_layout

    images, labels = generate(12345, "test", 0, 30)
    root = tmp_path / "data"
    write_layout(root / "tiny" / "test", images, labels)
    # the tiny task's provider is "correlation": point its layout folder at our files
    (root / "correlation").symlink_to(root / "tiny")
    folder = make_submission(tmp_path / "subs", "team1", seed=3)
    [doc] = grade([folder], options=_options(tmp_path, env, data_root=root))
    assert doc.status == "graded", doc.message

    ns: dict = {}
    exec(TINY_MODEL, ns)
    model = ns["build_model"]()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    model.eval()
    rows = (root / "correlation" / "test" / "responses.csv").read_text().splitlines()[1:]
    ids = [r.split(",")[0] for r in rows]
    truth = np.array([float(r.split(",")[1]) for r in rows])
    pixels = np.stack(
        [np.asarray(Image.open(root / "correlation" / "test" / "images" / f"{i}.png")) for i in ids]
    )
    with torch.no_grad():
        pred = model(torch.from_numpy(pixels).float().div(255).unsqueeze(1)).numpy()
    expected = float(np.mean((pred.astype(np.float64) - truth) ** 2))
    assert doc.metrics["mse"] == pytest.approx(expected, rel=1e-5)
    assert doc.metrics["mae"] == pytest.approx(float(np.mean(np.abs(pred - truth))), rel=1e-5)
    low, high = doc.intervals["mse"]
    assert low <= doc.metrics["mse"] <= high
    assert doc.params.counted == sum(p.numel() for p in model.parameters())
    # the graph proves each image independent: phase B predicts the split once
    assert doc.details["integrity"]["batch_independent"]["proven"] is True
    assert "inference_s" in doc.timing and "determinism_s" not in doc.timing


def test_one_broken_submission_leaves_the_others_graded(env: Path, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    good = make_submission(subs, "good", seed=1)
    make_submission(
        subs, "crash", model_src=TINY_MODEL + "\nraise RuntimeError('boom')\n", save=False
    )
    (subs / "crash" / "weights.safetensors").write_bytes(
        (good / "weights.safetensors").read_bytes()
    )
    make_submission(subs, "shape", model_src=TINY_MODEL.replace(".squeeze(1)", ".repeat(1, 3)"))
    alone = grade([good], options=_options(tmp_path / "alone", env))[0]
    docs = {d.team: d for d in grade([subs], options=_options(tmp_path, env))}
    assert docs["good"].status == "graded"
    assert docs["good"].metrics == alone.metrics
    assert docs["crash"].status == "failed" and docs["crash"].stage == "import"
    assert "RuntimeError: boom" in docs["crash"].message  # the student's own error (#16)
    crash = docs["crash"].error
    assert crash is not None and crash.message == "boom"
    assert [f.file for f in crash.frames] == ["model.py"]
    assert "boom" in docs["crash"].student_output  # with the full traceback, instructor's view
    assert docs["shape"].status == "failed" and "shape" in docs["shape"].message


def test_weights_that_do_not_load_strictly_fail_at_load(env: Path, tmp_path: Path) -> None:
    folder = make_submission(
        tmp_path / "subs",
        "team1",
        model_src=TINY_MODEL.replace("hidden: int = 8", "hidden: int = 9"),
        save=False,
    )
    from kit import save_weights

    save_weights(TINY_MODEL, folder)
    [doc] = grade([folder], options=_options(tmp_path, env))
    assert doc.status == "failed" and doc.stage == "load"
    assert "strictly" in doc.message


def test_nan_output_fails_the_output_contract(env: Path, tmp_path: Path) -> None:
    src = TINY_MODEL.replace(".squeeze(1)", ".squeeze(1) * float('nan')")
    folder = make_submission(tmp_path / "subs", "team1", model_src=src)
    [doc] = grade([folder], options=_options(tmp_path, env))
    assert doc.status == "failed" and "NaN" in doc.message


def test_over_the_parameter_limit(env: Path, tmp_path: Path) -> None:
    write_task(env, "small", limit=100)
    folder = make_submission(tmp_path / "subs", "team1", task="small")
    [doc] = grade([folder], options=_options(tmp_path, env))
    assert doc.status == "over_limit"
    assert doc.params.counted == 36 * 8 + 8 + 8 + 1 and doc.params.limit == 100
    assert {layer.name for layer in doc.params.per_layer} == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }
    assert "305" in doc.message and "100" in doc.message


def test_pt_weights_are_converted_in_the_sandbox(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1", weights="weights.pt", seed=1)
    ref = make_submission(tmp_path / "subs", "team2", seed=1)
    docs = {d.team: d for d in grade([folder, ref], options=_options(tmp_path, env))}
    assert docs["team1"].status == "graded", docs["team1"].message
    assert docs["team1"].metrics == docs["team2"].metrics
    assert docs["team1"].params.counted == docs["team2"].params.counted == 305


def test_a_pickle_that_runs_code_is_refused(env: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = make_submission(tmp_path / "subs", "team1", weights="weights.pt", save=False)
    payload = (
        "import os, pickle\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"pickle.dump({{'fc1.weight': Evil()}}, open(r'{folder / 'weights.pt'}', 'wb'))\n"
    )
    exec(payload, {})
    [doc] = grade([folder], options=_options(tmp_path, env))
    assert doc.status == "failed" and doc.stage == "convert"
    assert not marker.exists()


def test_regrading_unchanged_returns_the_stored_result(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1")
    first = grade([folder], options=_options(tmp_path, env))[0]
    again = grade([folder], options=_options(tmp_path, env))[0]
    assert again.graded_at == first.graded_at and again.metrics == first.metrics
    forced = grade([folder], options=_options(tmp_path, env, force=True))[0]
    assert forced.metrics == first.metrics and forced.cache_key == first.cache_key


def test_check_uses_the_public_validation_split(env: Path, tmp_path: Path) -> None:
    from harness.api import check

    folder = make_submission(tmp_path / "subs", "team1")
    [doc] = check([folder], options=_options(tmp_path, env))
    assert doc.status == "graded" and doc.mode == "check" and doc.split == "validation"
    assert doc.views == {}  # no public/private parts outside the hidden split
    path = tmp_path / "results" / "check" / "tiny" / "team1" / "result.json"
    assert json.loads(path.read_text())["split"] == "validation"
