"""The grading process's own folders in the temporary folder (``staging.owned_temp``): the
runner's code, the shared canary mixes, the workspaces, the predictors' spools and the
zygotes' folders. Each names its process, so a process killed before it removed them
leaves nothing the next one does not remove."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import staging
from harness.sandbox.layout import runner_root
from harness.staging import Workspace


def test_a_killed_process_runner_folder_goes_with_the_next_process_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    runner_root.cache_clear()
    monkeypatch.setattr(staging, "_swept", set())  # as in a process that made none yet
    try:
        orphan = tmp_path / f"harness-runner-{int(ended.stdout)}-abc"
        kept = tmp_path / f"harness-runner-{alive.pid}-def"
        unnamed = tmp_path / "harness-runner-xyz"  # an older harness's: no pid, left alone
        for folder in (orphan, kept, unnamed):
            (folder / "harness").mkdir(parents=True)
        root = runner_root()
        assert not orphan.exists() and kept.exists() and unnamed.exists()
        assert root.parent == tmp_path and root.name.startswith(f"harness-runner-{os.getpid()}-")
        assert (root / "harness" / "runner" / "__main__.py").is_file()
        mode = root.stat().st_mode & 0o777
        assert mode == (0o755 if os.geteuid() == 0 else 0o700)  # sandboxes of root's: others
    finally:
        alive.kill()
        alive.wait()
        runner_root.cache_clear()


def test_a_killed_commands_workspaces_go_with_the_next_commands_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command stopped with SIGTERM ends without its exit handlers: its workspaces (the
    submissions' staged files, their outputs) stay until the next command makes one."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(staging, "_swept", set())
    killed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, tempfile, time; tempfile.tempdir = sys.argv[1]\n"
            "from harness.staging import Workspace\n"
            "print(Workspace.create().root, flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdout is not None
    left = Path(killed.stdout.readline().strip())
    live = Workspace.create()  # while the other lives: its folder stays
    assert left.is_dir() and live.root.name.startswith(f"harness-ws-{os.getpid()}-")
    killed.terminate()
    killed.wait()
    monkeypatch.setattr(staging, "_swept", set())  # the next command's first workspace
    Workspace.create()
    assert not left.exists() and live.root.exists()
