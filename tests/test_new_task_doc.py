"""docs/new-task.md, run literally: an instructor's arrays and PNG folders become graded,
ranked tasks with their reference on the leaderboard.

Every block of the page runs in order in a fresh project folder: ``# file: PATH`` blocks
are saved, ``bash`` blocks run as written (default sandbox: Docker). Needs Debian's
``dataset-fashion-mnist`` (the page's stand-in data) and the evaluation image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "new-task.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, in the page's order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def run_page(project: Path, env: dict[str, str]) -> list[str]:
    """Run the page in ``project``; returns the shell commands it ran."""
    ran: list[str] = []
    for lang, body in blocks(DOC.read_text()):
        first = body.splitlines()[0]
        if first.startswith("# file: "):
            path = project / first.removeprefix("# file: ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif lang == "bash":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{body}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(body)
    return ran


@pytest.mark.docker
@pytest.mark.slow
def test_new_task_page_literally(tmp_path: Path) -> None:
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail("apt-get install dataset-fashion-mnist (scripts/system-deps installs it)")
    project = tmp_path / "course"
    (project / "tasks").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")  # marks the project
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    ran = run_page(project, env)
    assert any("grade validate-references --task clothes\n" in c for c in ran)

    board = json.loads((project / "leaderboard" / "leaderboard.json").read_text())
    rows = board if isinstance(board, list) else board.get("rows", board)
    text = json.dumps(rows)
    for task, team, ref in [
        ("clothes", "team-demo", "reference-clothes"),
        ("clothes-png", "team-png", "reference-clothes-png"),
    ]:
        doc = json.loads((project / "results" / task / ref / "result.json").read_text())
        assert doc["status"] == "graded" and doc["reference"] is True
        assert doc["metrics"]["accuracy"] > 0.85  # 4 easy classes, a trained tiny CNN
        assert doc["details"].get("confusion_matrix") is not None or doc["metrics"]
        student = json.loads((project / "results" / task / team / "result.json").read_text())
        assert student["status"] == "graded" and student["reference"] is False
        assert ref in text and team in text
    # the fixed hidden splits: no fallback-seed flag though no secret seed is set
    assert all(f["code"] != "public_seed" for f in student["flags"])
    # both providers read the same pictures: the same hidden split, the same labels
    arrays = json.loads((project / "results/clothes/reference-clothes/result.json").read_text())
    assert arrays["metrics"]["accuracy"] > 0.85
    exported = project / "exported" / "clothes"
    assert json.loads((exported / "dataset.json").read_text())["images"].endswith(
        "N x 1 x 28 x 28 (N x C x H x W)"
    )
