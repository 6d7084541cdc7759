"""The grading process's own folders in the temporary folder (``staging.process_temp``):
the runner's code and the shared canary mixes. Each names its process, so a process killed
before its exit handlers leaves nothing the next one does not remove."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.sandbox.layout import runner_root


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
