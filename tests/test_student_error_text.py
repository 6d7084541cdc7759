"""The student's error crosses a trust boundary: the runner's report is written where the
submission's code ran, so the host treats it as data (types checked, text capped, paths and
environment values removed, frames of declared files only) and escapes it wherever shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import report_docs as rd

from harness.report import write_submission_report
from harness.results import StudentError
from harness.student_error import MAX_MESSAGE, from_report, only_files, render, with_error

RUNNER_ERROR = {
    "stage": "dry_run",
    "type": "RuntimeError",
    "message": "mat1 and mat2 shapes cannot be multiplied (2x3072 and 784x32)",
    "traceback": 'File "/opt/harness/harness/runner/phase_a.py", line 77\nRuntimeError: ...',
    "frames": [{"file": "model.py", "line": 12, "function": "forward", "code": "x = self.fc(x)"}],
}


def test_a_real_runner_error_renders_type_message_frames_and_shape() -> None:
    err = from_report(RUNNER_ERROR, {"input_shape": [2, 3, 32, 32]}, "", show_text=True)
    assert render(err).splitlines() == [
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3072 and 784x32)",
        "in your code (innermost last):",
        "  model.py, line 12, in forward",
        "    x = self.fc(x)",
        "the model was given a batch of shape (2, 3, 32, 32)",
    ]
    assert "/opt/harness" not in render(err)  # the harness traceback is never part of it


def test_forged_frames_are_dropped_and_text_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_SECRET_SEED", "7391")
    monkeypatch.setenv("SOME_HOST_SETTING", "/srv/grading/private-area")
    forged = {
        "type": "Boom<script>",
        "message": (
            "\x1b[31mfailed\x1b[0m in /opt/harness/harness/runner/load.py and "
            "/submission/model.py; seed 7391 at /srv/grading/private-area\u202e\n"
            + "line\n" * 30
            + "x" * 5000
        ),
        "frames": [
            {"file": "/etc/passwd.py", "line": 1},
            {"file": "../outside.py", "line": 2},
            {"file": "model.py", "line": "3"},
            {"file": "notes.txt", "line": 4},
            {"file": "model.py", "line": 5, "function": "f" * 500, "code": "y" * 900},
        ],
    }
    err = from_report(forged, {"input_shape": ["a", 3]}, "", show_text=True)
    assert err.type == "Exception"
    assert err.input_shape is None
    assert [(f.file, f.line) for f in err.frames] == [("model.py", 5)]
    assert len(err.frames[0].function) <= 80 and len(err.frames[0].code) <= 200
    text = err.message
    assert len(text) <= MAX_MESSAGE and text.count("\n") <= 13
    assert "\x1b" not in text and "\u202e" not in text
    assert "/opt/harness" not in text and ".../load.py" in text
    assert "/submission/" not in text and "model.py;" in text
    assert "7391" not in text and "private-area" not in text and "<env>" in text


def test_frames_of_undeclared_files_are_not_the_students() -> None:
    err = StudentError(
        type="E",
        message="m",
        frames=[
            {"file": "model.py", "line": 1},  # type: ignore[list-item]
            {"file": "sitecustomize.py", "line": 2},  # type: ignore[list-item]
        ],
    )
    kept = only_files(err, ["model.py", "submission.toml"])
    assert kept is not None and [f.file for f in kept.frames] == ["model.py"]


def test_text_from_a_run_that_saw_hidden_inputs_is_withheld() -> None:
    err = from_report(RUNNER_ERROR, {"input_shape": [2, 3, 32, 32]}, "leak", show_text=False)
    assert err.type == "RuntimeError" and err.message == "" and not err.frames
    assert err.output == "" and "not shown" in render(err)
    assert with_error("the model failed while predicting", err) == (
        "the model failed while predicting"
    )
    forged = {**RUNNER_ERROR, "type": "mean_of_input_0_is_0_4312"}  # a type name as a channel
    assert from_report(forged, {}, "", show_text=False).type == "Exception"


def test_error_text_is_escaped_in_html_and_fenced_in_markdown(tmp_path: Path) -> None:
    spec = rd.task("cifar10")
    doc = rd.document(spec, next(t for t in rd.CIFAR_TEAMS if t.team == "delta"))
    doc.error = StudentError(
        type="ValueError",
        message="<script>alert(1)</script> ``` [bold]x[/bold]",
        hint="a hint",
    )
    write_submission_report(doc, spec, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = (tmp_path / "report.md").read_text()
    block = md.split("Your code's error:", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
    assert "ValueError: &lt;script&gt;" not in block and "<script>alert(1)</script>" in block
    assert "```" not in block
    results = json.loads((tmp_path / "results.json").read_text())
    assert "[bold]x[/bold]" in results["tests"][0]["output"]
