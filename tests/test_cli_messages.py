"""What the CLI prints keeps its text: brackets are not eaten as console markup, unknown
verbs get a suggestion, notes shared by a batch are printed once, stored gradings show as
cached with their time, and the progress display names each team's stage."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kit import make_submission, write_task
from rich.console import Console

from harness.api import GradeOptions, grade
from harness.console import print_results
from harness.progress import STAGES, Progress, eta_seconds, eta_text
from harness.results import Flag, ResultDocument, Violation


def _grade(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def _printed(docs: list[ResultDocument], **kw: object) -> str:
    out = io.StringIO()
    print_results(docs, mode="grade", console=Console(file=out, width=200), **kw)  # type: ignore[arg-type]
    return out.getvalue()


def test_a_typo_gets_did_you_mean_and_an_unknown_verb_no_other_help(tmp_path: Path) -> None:
    out = _grade(["chek"], tmp_path)
    assert out.returncode == 2 and "did you mean `grade check`?" in out.stderr
    for verb in ("export", "publish"):  # no such verbs: never another verb's help
        out = _grade([verb, "--help"], tmp_path)
        assert out.returncode == 2, out.stdout
        assert "Usage: grade run" not in out.stdout + out.stderr
        assert f"`{verb}` is neither a grade verb" in out.stderr and "the verbs are" in out.stderr
    out = _grade(["gradebook", "--help"], tmp_path)  # a real verb: its own help
    assert out.returncode == 0 and "Usage: grade gradebook" in out.stdout
    (tmp_path / "chek").mkdir()  # a folder by that name is a path, not a typo
    assert "neither a grade verb" not in _grade(["chek"], tmp_path).stderr


def test_brackets_in_messages_survive_and_invalid_shows_the_limit(
    env: Path, tmp_path: Path
) -> None:
    write_task(env, "needs", required=("optimizer", "epochs", "loss"))
    folder = make_submission(tmp_path / "subs", "team1", task="needs")
    out = _grade([str(folder), "--sandbox", "process", "--results", str(tmp_path / "r")], tmp_path)
    assert out.returncode == 1
    printed = out.stdout + out.stderr
    assert "submission.toml: [training] lacks optimizer, epochs, loss" in printed
    assert "- / 2,000,000" in printed  # the task is known, so is its limit


def test_violations_and_flags_keep_their_brackets() -> None:
    doc = ResultDocument(
        task="t",
        team="[team]",
        status="invalid",
        message="submission.toml: [training] lacks optimizer",
        violations=[
            Violation(rule="manifest.training", message="[training] lacks optimizer"),
            Violation(rule="folder.symlink", message="data.bin is a symlink"),
        ],
        flags=[Flag(code="x", message="see [red]this[/red]", audience="student")],
    )
    text = _printed([doc])
    assert "submission.toml: [training] lacks optimizer" in text
    assert "- [folder.symlink] data.bin is a symlink" in text
    assert "see [red]this[/red]" in text and "[team]" in text


def test_a_note_every_team_shares_is_printed_once() -> None:
    seed = Flag(code="public_seed", message="the hidden split used the public fallback seed")
    docs = [
        ResultDocument(task="t", team=f"team{i}", status="graded", flags=[seed]) for i in range(5)
    ]
    docs[0].flags.append(Flag(code="own", message="only team0's note"))
    text = _printed(docs)
    assert text.count("public fallback seed") == 1 and "(all 5 teams)" in text
    assert "team0: only team0's note" in text


def test_stored_gradings_are_marked_cached_with_their_time() -> None:
    since = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    old = ResultDocument(
        task="t",
        team="old",
        status="graded",
        graded_at=(since - timedelta(days=1)).isoformat(timespec="seconds"),
        timing={"total_s": 12.3},
    )
    new = ResultDocument(
        task="t",
        team="new",
        status="graded",
        graded_at=(since + timedelta(seconds=5)).isoformat(timespec="seconds"),
        timing={"total_s": 4.0},
    )
    text = _printed([old, new], since=since)
    assert "cached (12.3 s on 2026-11-25 12:00 UTC)" in text
    assert "4.0 s" in text and text.count("cached") == 1


def test_eta_comes_from_the_gradings_done() -> None:
    assert eta_seconds([], 5, 1) is None
    assert eta_text(None, 5) == "ETA after the first grading"
    assert eta_seconds([10.0, 20.0], 4, 2) == 30.0  # 15 s each, 4 left, 2 at a time
    assert eta_text(3725.0, 4) == "ETA 1:02:05"
    assert eta_text(0.0, 0) == "done"


def test_the_progress_display_shows_each_teams_stage() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    since = datetime.now(UTC) - timedelta(seconds=1)
    with Progress(total=2, console=console, since=since, jobs=1) as shown:
        shown.stage("tiny", "team1", "validate")
        shown.stage("tiny", "team1", "export")
        assert shown._bar is not None
        rows = {t.description: t.fields["info"] for t in shown._bar.tasks}
        assert rows["  team1 [dim](tiny)[/]"] == "export"
        doc = ResultDocument(task="tiny", team="team1", status="graded", timing={"total_s": 8.0})
        shown.advance(doc)
        infos = [t.fields["info"] for t in shown._bar.tasks]
        assert infos == ["ETA 0:00:08"]  # team1's row is gone, the estimate is from its 8 s
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "team1: graded (8.0 s)" in plain and "ETA after the first grading" in plain


def test_the_pipeline_reports_every_stage_in_order(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1")
    seen: list[tuple[str, str, str]] = []
    options = GradeOptions(
        sandbox="process", results_dir=tmp_path / "r", tasks_dir=env, reports=False
    )
    [doc] = grade([folder], options=options, on_stage=lambda *a: seen.append(a))
    assert doc.status == "graded", doc.message
    assert seen == [("tiny", "team1", stage) for stage in STAGES]
    seen.clear()
    [again] = grade([folder], options=options, on_stage=lambda *a: seen.append(a))
    assert again.graded_at == doc.graded_at and seen == [("tiny", "team1", "validate")]


def test_the_cli_prints_the_students_error_not_the_harness_traceback(
    env: Path, tmp_path: Path
) -> None:
    from test_student_errors import MNIST_MLP

    folder = make_submission(tmp_path / "subs", "team1", model_src=MNIST_MLP)
    out = _grade(
        ["check", str(folder), "--sandbox", "process", "--results", str(tmp_path / "r")], tmp_path
    )
    assert out.returncode == 1
    printed = out.stdout + out.stderr
    assert "mat1 and mat2 shapes cannot be multiplied (2x22500 and 784x32)" in printed
    assert "model.py, line 13, in forward" in printed
    assert "the model was given a batch of shape (2, 1, 150, 150)" in printed
    assert "hint: a layer is sized for other inputs" in printed
    for leaked in ("Traceback", "harness/runner", "site-packages", str(tmp_path)):
        assert leaked not in printed


def test_what_the_harness_logs_for_the_operator_prints_as_a_cli_warning(capsys) -> None:
    """A warm sandbox that could not import its stack logs a warning (the sandbox package
    cannot import the console); the CLI prints it like its own warnings."""
    from harness import cli

    harness_log = logging.getLogger("harness")
    saved = harness_log.handlers[:], harness_log.propagate
    cli.print_harness_warnings()
    try:
        logging.getLogger("harness.sandbox.zygote").warning("the %s zygote could not", "bwrap")
        logging.getLogger("harness.sandbox.zygote").info("not for the operator")
    finally:
        harness_log.handlers[:], harness_log.propagate = saved
    err = capsys.readouterr().err
    assert err == "warning: the bwrap zygote could not\n", err
