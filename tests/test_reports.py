"""Per-submission reports (HTML, Markdown, plots), curve findings and Gradescope results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import report_docs as rd
from PIL import Image

from harness.report import gradescope_results, write_submission_report
from harness.report.curves import analyse
from harness.results import ResultDocument
from harness.tasks import TaskSpec


@pytest.fixture(scope="module")
def specs() -> dict[str, TaskSpec]:
    return {"cifar10": rd.task("cifar10"), "correlation": rd.task("correlation")}


def doc_for(specs, task: str, team: str) -> ResultDocument:
    teams = rd.CIFAR_TEAMS if task == "cifar10" else rd.CORRELATION_TEAMS
    return rd.document(specs[task], next(t for t in teams if t.team == team))


def reference(specs, task: str) -> ResultDocument:
    teams = rd.CIFAR_TEAMS if task == "cifar10" else rd.CORRELATION_TEAMS
    return rd.document(specs[task], next(t for t in teams if t.reference))


def names(files: list[Path], folder: Path) -> set[str]:
    return {f.relative_to(folder).as_posix() for f in files}


def check_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= 400 and img.height >= 250
        # not a blank canvas: a drawn figure has many distinct colours
        assert len(img.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20


def test_classification_report(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "cifar10", "bravo")
    files = write_submission_report(
        doc, specs["cifar10"], tmp_path, references=[reference(specs, "cifar10")]
    )
    assert names(files, tmp_path) == {
        "plots/confusion.png",
        "plots/per_class_accuracy.png",
        "plots/training_curves.png",
        "report.html",
        "report.md",
        "results.json",
    }
    for png in tmp_path.glob("plots/*.png"):
        check_png(png)
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "Accuracy" in text and "Macro F1" in text
        lo, hi = doc.intervals["accuracy"]
        assert f"[{lo:.2%}, {hi:.2%}]" in text  # the interval in the metric's own format
        assert "seed-cnn" in text and "better" in text  # compared with the reference
        assert "Validation loss was lowest at epoch 6" in text
        assert "Overfitting: after epoch 6" in text
        assert "features.3.weight" in text and "features.1.running_mean" in text
        assert "ignored_files" in text  # a flag meant for the student
        assert "instructor-only flag text" not in text
        assert "SECRET-STUDENT-OUTPUT" not in text
    # buffers are listed apart from the parameters
    params_table = html.split('id="layers"')[1].split("</table>")[0]
    buffers_table = html.split('id="buffers"')[1].split("</table>")[0]
    assert "running_mean" not in params_table and "running_mean" in buffers_table
    assert html.count('<img src="plots/') == 3 and "![" in md and "(plots/confusion.png)" in md
    timing = html.split('id="timing-table"')[1].split("</table>")[0]
    assert "Predicted on</th><td" in timing and "the CPU" in timing
    assert "- Predicted on: the CPU" in md


def test_the_report_says_where_the_predictions_ran(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "correlation", "sigma")
    doc.sandbox = doc.sandbox.model_copy(update={"device": "cuda"}) if doc.sandbox else None
    write_submission_report(doc, specs["correlation"], tmp_path / "gpu")
    assert "- Predicted on: the GPU (CUDA)" in (tmp_path / "gpu" / "report.md").read_text()
    doc.sandbox = doc.sandbox.model_copy(update={"device": None}) if doc.sandbox else None
    write_submission_report(doc, specs["correlation"], tmp_path / "old")
    md = (tmp_path / "old" / "report.md").read_text()
    assert "Predicted on" not in md and "Inference on the hidden split" in md  # not recorded


def test_regression_report_has_scatter_and_residuals(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "correlation", "rho")
    files = write_submission_report(doc, specs["correlation"], tmp_path)
    got = names(files, tmp_path)
    assert {"plots/scatter.png", "plots/residuals.png", "plots/training_curves.png"} <= got
    assert "plots/confusion.png" not in got
    for png in tmp_path.glob("plots/*.png"):
        check_png(png)
    html = (tmp_path / "report.html").read_text()
    assert "predicted against true values with the identity line" in html  # the scatter's alt text
    assert 'src="plots/residuals.png"' in html
    # no reference documents given: the spec's expected value is the comparison
    assert "(expected)" in html


def test_failed_report_explains_the_failure_without_the_students_output(specs, tmp_path) -> None:
    doc = doc_for(specs, "cifar10", "delta")
    files = write_submission_report(doc, specs["cifar10"], tmp_path)
    assert not any(p.name in ("confusion.png", "per_class_accuracy.png") for p in files)
    html = (tmp_path / "report.html").read_text()
    assert "failed" in html and "torch.export" in html and "<code>export</code>" in html
    assert "SECRET-STUDENT-OUTPUT" not in html
    assert json.loads((tmp_path / "results.json").read_text())["score"] == 0


def test_instructor_report_shows_the_students_output(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "cifar10", "delta")
    write_submission_report(doc, specs["cifar10"], tmp_path, instructor=True)
    for name in ("report.html", "report.md"):
        text = (tmp_path / name).read_text()
        assert "SECRET-STUDENT-OUTPUT" in text and "instructor-only flag text" in text


def test_over_limit_report_shows_the_count_per_layer(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "correlation", "omega")
    write_submission_report(doc, specs["correlation"], tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert f'class="over">{doc.params.counted:,}' in html
    assert "of a limit of 2,000,000" in html
    assert "features.5.weight" in html and "2,000,000" in html
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 0 and results["leaderboard"] == []
    limit_test = next(t for t in results["tests"] if t["name"] == "Parameter count")
    assert limit_test["status"] == "failed"


def test_missing_training_items_are_named(specs, tmp_path: Path) -> None:
    team = rd.Team("iota", 0.05, seed=4, training={"optimizer": "SGD", "learning_rate": 0.01})
    doc = rd.document(specs["correlation"], team)
    write_submission_report(doc, specs["correlation"], tmp_path)
    html = (tmp_path / "report.html").read_text()
    missing = html.split("Missing from <code>[training]</code>")[1].split("</p>")[0]
    for key in ("batch_size", "epochs", "loss", "history"):
        assert f"<code>{key}</code>" in missing
    assert "<code>optimizer</code>" not in missing
    record = next(
        t
        for t in gradescope_results(doc, specs["correlation"])["tests"]
        if t["name"] == "Training record"
    )
    assert record["status"] == "failed" and "epochs" in record["output"]


def test_a_new_grading_removes_the_old_plots(specs, tmp_path: Path) -> None:
    write_submission_report(doc_for(specs, "cifar10", "bravo"), specs["cifar10"], tmp_path)
    assert (tmp_path / "plots" / "confusion.png").is_file()
    write_submission_report(doc_for(specs, "cifar10", "echo"), specs["cifar10"], tmp_path)
    assert not (tmp_path / "plots" / "confusion.png").exists()


def test_team_names_are_escaped(specs, tmp_path: Path) -> None:
    doc = doc_for(specs, "correlation", "rho").model_copy(update={"team": "<script>x</script>|a"})
    write_submission_report(doc, specs["correlation"], tmp_path)
    assert "<script>x</script>" not in (tmp_path / "report.html").read_text()
    assert "&lt;script&gt;" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("where", "points"), [(-0.5, 100.0), (0.0, 100.0), (0.5, 50.0), (1.0, 0.0), (6.0, 0.0)]
)
def test_points_are_linear_between_the_thresholds_lower_is_better(specs, where, points) -> None:
    """``where`` places the MSE on the task's own scale: 0 at full marks, 1 at zero marks."""
    task = specs["correlation"]
    full, zero = task.grading.full_marks_at, task.grading.zero_marks_at
    mse = max(0.0, full + where * (zero - full))
    doc = doc_for(specs, "correlation", "rho")
    doc = doc.model_copy(update={"metrics": {**doc.metrics, "mse": mse}})
    assert gradescope_results(doc, task)["score"] == pytest.approx(points)


@pytest.mark.parametrize(("acc", "points"), [(0.95, 100.0), (0.675, 50.0), (0.4, 0.0)])
def test_points_are_linear_between_the_thresholds_higher_is_better(specs, acc, points) -> None:
    doc = doc_for(specs, "cifar10", "alpha")
    doc = doc.model_copy(update={"metrics": {**doc.metrics, "accuracy": acc}})
    assert gradescope_results(doc, specs["cifar10"])["score"] == pytest.approx(points)


def test_gradescope_results_shape(specs) -> None:
    doc = doc_for(specs, "correlation", "rho")
    out = gradescope_results(doc, specs["correlation"])
    assert out["max_score"] == 100
    assert math.isclose(sum(t["score"] for t in out["tests"]), out["score"])
    assert sum(t["max_score"] for t in out["tests"]) == out["max_score"]
    for test in out["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed")
    board = {e["name"]: e for e in out["leaderboard"]}
    assert board["MSE"]["order"] == "asc" and "order" not in board["Pearson r"]
    # before the deadline the board shows the public part only
    assert board["MSE"]["value"] == pytest.approx(doc.views["public"]["mse"], rel=1e-5)
    assert board["Parameters"]["value"] == doc.params.counted
    json.dumps(out)  # plain JSON


def test_curves_overfitting() -> None:
    found = analyse(rd.history("overfit"))
    assert found.best_epoch == 6 and found.overfit_after == 6
    assert found.train_rise_after is None
    assert any(s.startswith("Overfitting: after epoch 6") for s in found.statements)


def test_curves_rising_training_loss_points_at_the_learning_rate() -> None:
    found = analyse(rd.history("high_lr"), learning_rate=0.5)
    assert found.train_rise_after == 3 and found.overfit_after is None
    assert any("learning rate is too high (learning_rate = 0.5)" in s for s in found.statements)


def test_curves_healthy_run() -> None:
    found = analyse(rd.history("good"))
    assert found.best_epoch == 10
    assert found.overfit_after is None and found.train_rise_after is None
    assert any("no sign of overfitting" in s for s in found.statements)


def test_curves_divergence_and_missing_columns() -> None:
    rows = [
        {"epoch": 1.0, "train_loss": 0.9},
        {"epoch": 2.0, "train_loss": 0.7},
        {"epoch": 3.0, "train_loss": float("nan")},
    ]
    found = analyse(rows)
    assert found.diverged_at == 3
    assert any("no validation loss" in s for s in found.statements)
    assert analyse([]).statements == ["No training history was submitted (history.csv)."]
