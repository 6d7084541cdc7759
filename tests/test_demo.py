"""The README's main job: `grade submissions/team42` on the generated correlation data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_grades_and_beats_predicting_zero(shared_cache: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["HARNESS_CACHE"] = str(shared_cache)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "submissions/team42",
            "--sandbox",
            "process",
            "--json",
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    [doc] = json.loads(out.stdout)
    assert doc["status"] == "graded" and doc["team"] == "team42"
    mse = doc["metrics"]["mse"]
    assert math.isfinite(mse)
    # labels are about uniform on [-1, 1]: predicting 0 scores about 1/3
    assert mse < 0.33 / 10
    assert doc["params"]["counted"] == 299_841 and doc["params"]["limit"] == 2_000_000
    assert any(f["code"] == "public_seed" for f in doc["flags"])  # no secret seed set here
    # the document says which hidden split and sandbox it came from (the ranking policy)
    assert doc["hidden_split"]["public_seed"] and len(doc["hidden_split"]["fingerprint"]) == 16
    assert doc["sandbox"]["backend"] == "process" and not doc["sandbox"]["isolated"]
    assert doc["sandbox"]["device"] == "cpu"  # where phase B ran, as the runner reported it
    assert (tmp_path / "results" / "correlation" / "team42" / "report.html").is_file()
