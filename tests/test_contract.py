"""Each rule of shared/SUBMISSION_FORMAT.md broken by one submission: the right status
and a message naming the rule. These fail before any code runs, so they are fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kit import make_submission, write_task

from harness.api import GradeOptions, grade


def _grade_one(folder: Path, tmp_path: Path, tasks: Path):
    options = GradeOptions(
        sandbox="process", results_dir=tmp_path / "results", reports=False, tasks_dir=tasks
    )
    [doc] = grade([folder], options=options)
    return doc


def _break_manifest(text: str):
    def apply(folder: Path) -> None:
        (folder / "submission.toml").write_text(text)

    return apply


CASES = {
    "manifest.present": lambda f: (f / "submission.toml").unlink(),
    "manifest.toml": _break_manifest('task = "tiny\n'),
    "manifest.task": _break_manifest('task = "tinny"\n'),
    "manifest.team": _break_manifest('task = "tiny"\nteam = "../../etc"\n'),
    "manifest.model": _break_manifest('task = "tiny"\n[model]\nentry = "model:build_model"\n'),
    "manifest.members": _break_manifest('task = "tiny"\nmembers = "Ada"\n'),
    "model.entrypoint": _break_manifest('task = "tiny"\n[model]\nentrypoint = "nomodule:build"\n'),
    "model.weights": _break_manifest('task = "tiny"\n[model]\nweights = "missing.safetensors"\n'),
    "model.normalize": _break_manifest(
        'task = "tiny"\n[model]\nnormalize = { mean = [0.5, 0.5, 0.5], std = [0.2, 0.2, 0.2] }\n'
    ),
    "folder.symlink": lambda f: (f / "data.csv").symlink_to("/etc/passwd"),
    "folder.executable": lambda f: (
        (f / "run.sh").write_text("#!/bin/sh\necho hi\n"),
        os.chmod(f / "run.sh", 0o755),
    ),
    "folder.python_size": lambda f: (f / "big.py").write_text("x = 1\n" * 200_000),
    "folder.size": lambda f: _sparse(f / "blob.bin", 51 * 2**20),
    "training.history": lambda f: (
        (f / "history.csv").write_text("epoch,loss\n1,0.5\n"),
        (f / "submission.toml").write_text(
            (f / "submission.toml").read_text() + 'history = "history.csv"\n'
        ),
    ),
}


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_gives_invalid_with_its_name(rule: str, env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1")
    CASES[rule](folder)
    doc = _grade_one(folder, tmp_path, env)
    assert doc.status == "invalid"
    assert rule in {v.rule for v in doc.violations}, doc.violations
    assert doc.message  # one sentence for the student
    assert (tmp_path / "results").rglob("result.json"), "a document is written even so"


def test_required_training_keys_are_enforced(env: Path, tmp_path: Path) -> None:
    write_task(env, "strict", required=("optimizer", "learning_rate", "epochs", "history"))
    folder = make_submission(
        tmp_path / "subs", "team1", task="strict", training='optimizer = "Adam"\n'
    )
    doc = _grade_one(folder, tmp_path, env)
    assert doc.status == "invalid"
    [v] = [v for v in doc.violations if v.rule == "training.required"]
    assert "learning_rate" in v.message and "epochs" in v.message and "history" in v.message


def test_unreadable_manifest_still_writes_a_document_under_the_folder_name(
    env: Path, tmp_path: Path
) -> None:
    folder = make_submission(tmp_path / "subs", "Team Seven")
    (folder / "submission.toml").write_bytes(b"\xff\xfe not toml")
    doc = _grade_one(folder, tmp_path, env)
    # a folder name that is no team name: its own quarantined team, never another's
    assert doc.status == "invalid" and doc.team.startswith("Team_Seven-")
    assert {"folder.name", "manifest.toml"} <= {v.rule for v in doc.violations}
    assert (tmp_path / "results" / "unknown" / doc.team / "result.json").is_file()


def test_symlink_inside_the_folder_is_allowed(env: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1")
    (folder / "alias.py").symlink_to("model.py")
    from harness.submission import load_submission

    sub = load_submission(folder, tasks_dir=env)
    assert not [v for v in sub.violations if v.rule == "folder.symlink"]


def test_undeclared_files_are_not_read(env: Path, tmp_path: Path) -> None:
    from harness.submission import load_submission

    folder = make_submission(tmp_path / "subs", "team1")
    (folder / "extra.safetensors").write_bytes(b"x" * 100)
    (folder / "notes.txt").write_text("hi")
    sub = load_submission(folder, tasks_dir=env)
    assert not sub.violations
    assert sorted(sub.ignored) == ["extra.safetensors", "notes.txt"]
    assert "extra.safetensors" not in sub.files


def test_content_hash_changes_with_any_declared_file(env: Path, tmp_path: Path) -> None:
    from harness.submission import load_submission

    folder = make_submission(tmp_path / "subs", "team1")
    before = load_submission(folder, tasks_dir=env).hash
    (folder / "model.py").write_text((folder / "model.py").read_text() + "\n# tweak\n")
    after = load_submission(folder, tasks_dir=env).hash
    (folder / "notes.txt").write_text("undeclared")
    assert before != after == load_submission(folder, tasks_dir=env).hash
