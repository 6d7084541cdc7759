"""The `grade` command as a user runs it: a real subprocess, exit codes, --json purity,
errors as one sentence without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kit import make_submission


def _grade(args: list[str], env_tasks: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_json_prints_only_the_documents_and_exit_0(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1")
    out = _grade(
        [
            str(folder),
            "--sandbox",
            "process",
            "--json",
            "--no-reports",
            "--results",
            str(tmp_path / "r"),
        ],
        env,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)  # nothing else on stdout
    assert [d["status"] for d in docs] == ["graded"]
    assert docs[0]["schema_version"] == 2 and docs[0]["metrics"]["mse"] >= 0


def test_exit_1_when_any_submission_is_not_graded(env: Path, tmp_path: Path) -> None:
    make_submission(tmp_path / "subs", "team1")
    bad = make_submission(tmp_path / "subs", "team2")
    (bad / "submission.toml").write_text('task = "nope"\n')
    out = _grade(
        [
            str(tmp_path / "subs"),
            "--sandbox",
            "process",
            "--no-reports",
            "--results",
            str(tmp_path / "r"),
        ],
        env,
        tmp_path,
    )
    assert out.returncode == 1
    assert "graded" in out.stdout and "invalid" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_exit_2_and_one_sentence_for_a_usage_error(env: Path, tmp_path: Path) -> None:
    out = _grade([str(tmp_path / "missing"), "--sandbox", "process"], env, tmp_path)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "hint" in out.stderr
    assert "Traceback" not in out.stderr


def test_invalid_task_spec_names_file_and_field(env: Path, tmp_path: Path) -> None:
    spec = env / "tiny" / "task.toml"
    spec.write_text(spec.read_text().replace("batch_size = 16", "batch_size = -1"))
    out = _grade(["data", "prepare", "tiny"], env, tmp_path)
    assert out.returncode == 2
    assert "task.toml" in out.stderr and "batch_size" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_task_suggests_the_nearest(env: Path, tmp_path: Path) -> None:
    out = _grade(["data", "prepare", "tiyn"], env, tmp_path)
    assert out.returncode == 2 and "did you mean 'tiny'" in out.stderr
