"""``grade gradescope`` writes an autograder folder that works the way Gradescope runs it.

The folder is run in a container laid out like Gradescope's: the folder's contents in
``/autograder/source``, ``setup.sh`` run once as root, ``run_autograder`` copied to
``/autograder/run_autograder`` and run with the upload in ``/autograder/submission``; it
must leave ``/autograder/results/results.json``. No Ubuntu image can be pulled here (no
registry), so the container is the offline evaluation image (Debian bookworm, Python
3.11, torch; no pip): ``setup.sh`` installs the harness's other requirements from a
wheelhouse that ``--wheels`` copies in, bootstrapping pip from its own wheel, exactly the
path it takes on any image without pip. The network is off (``--network none``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.sandbox.docker.image import default_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "submissions" / "team42"
WHEELS = ("pip", "pandas>=2.1", "pydantic>=2.6", "click>=8.1", "rich>=13", "jinja2>=3.1")
WHEELS += ("pillow>=10", "matplotlib>=3.8", "numpy>=1.26", "safetensors>=0.4")

# the documented results.json fields (gradescope-autograders.readthedocs.io/en/latest/specs/)
TOP = {
    "score": (int, float),
    "max_score": (int, float),
    "execution_time": (int, float),
    "output": str,
    "output_format": str,
    "test_output_format": str,
    "test_name_format": str,
    "visibility": str,
    "stdout_visibility": str,
    "extra_data": dict,
    "tests": list,
    "leaderboard": list,
}
TEST = {
    "score": (int, float),
    "max_score": (int, float),
    "status": str,
    "name": str,
    "name_format": str,
    "number": str,
    "output": str,
    "output_format": str,
    "tags": list,
    "visibility": str,
    "extra_data": dict,
}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}


def validate(results: dict[str, Any]) -> None:
    """Raise AssertionError unless ``results`` follows Gradescope's documented format."""
    assert set(results) <= set(TOP), f"unknown fields: {set(results) - set(TOP)}"
    for key, kind in TOP.items():
        if key in results:
            assert isinstance(results[key], kind), key
    for key in ("visibility", "stdout_visibility"):
        if key in results:
            assert results[key] in VISIBILITY, key
    for key in ("output_format", "test_output_format", "test_name_format"):
        if key in results:
            assert results[key] in FORMATS, key
    tests = results.get("tests", [])
    # "score": optional, but required if not on each test case
    assert "score" in results or all("score" in t for t in tests)
    for test in tests:
        assert set(test) <= set(TEST), f"unknown test fields: {set(test) - set(TEST)}"
        for key, kind in TEST.items():
            if key in test:
                assert isinstance(test[key], kind), key
        assert test.get("status", "passed") in ("passed", "failed")
        assert test.get("visibility", "visible") in VISIBILITY
    for entry in results.get("leaderboard", []):
        assert set(entry) <= {"name", "value", "order"} and {"name", "value"} <= set(entry)
        assert entry.get("order", "desc") in ("asc", "desc")
        assert isinstance(entry["value"], (int, float, str))


def test_validator_rejects_what_the_spec_does_not_allow() -> None:
    good = {"score": 1.0, "tests": [{"name": "a", "score": 1.0, "visibility": "visible"}]}
    validate(good)
    for bad in (
        {**good, "visibilty": "visible"},
        {**good, "visibility": "later"},
        {"tests": [{"name": "a"}]},
        {**good, "leaderboard": [{"name": "x", "value": 1, "order": "up"}]},
    ):
        with pytest.raises(AssertionError):
            validate(bad)


@pytest.fixture(scope="module")
def autograder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``grade gradescope`` writes, for a small-hidden-split copy of the task."""
    root = tmp_path_factory.mktemp("gradescope")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(wheels)]
        + ["--python-version", "3.11", "--implementation", "cp"]
        + ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]
        + list(WHEELS),
        check=True,
        capture_output=True,
        timeout=300,
    )
    tasks = root / "tasks"
    (tasks / "correlation").mkdir(parents=True)
    spec = (ROOT / "tasks" / "correlation" / "task.toml").read_text()
    spec = spec.replace("test_size = 5000", "test_size = 300")
    assert "test_size = 300" in spec
    (tasks / "correlation" / "task.toml").write_text(spec + "\n[integrity]\nprobe_count = 32\n")
    env = {**os.environ, "HARNESS_TASKS": str(tasks), "HARNESS_SECRET_SEED": "8675309"}
    out = root / "source"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "gradescope", "correlation", "--out", str(out)]
        + ["--wheels", str(wheels)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_folder_has_what_gradescope_needs(autograder: Path) -> None:
    for name in ("setup.sh", "run_autograder"):
        assert os.access(autograder / name, os.X_OK), name
    assert (autograder / "run_autograder").read_text().startswith("#!")
    assert (autograder / "tasks" / "correlation" / "task.toml").is_file()
    assert (autograder / "reference_solutions" / "correlation").is_dir()
    assert (autograder / "harness" / "pipeline.py").is_file()
    assert (autograder / "config.toml").stat().st_mode & 0o077 == 0  # the seed: owner only


def test_a_broken_upload_still_gets_a_results_json(tmp_path: Path) -> None:
    """What ``run_autograder`` runs, on an upload without submission.toml (on the host)."""
    from harness.gradescope_autograder import run

    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "notes.txt").write_text("forgot everything")
    out = tmp_path / "results" / "results.json"
    assert run("correlation", tmp_path / "upload", out, sandbox="process", data_root=None) == 0
    failed = json.loads(out.read_text())
    validate(failed)
    assert failed["score"] == 0 and failed["max_score"] == 100
    assert "submission.toml" in failed["tests"][0]["output"]
    assert failed["stdout_visibility"] == "hidden"


def test_run_autograder_in_a_gradescope_like_container(autograder: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    script = (
        "set -e; mkdir -p /autograder; cp -r /mnt/source /autograder/source; "
        "cp /autograder/source/run_autograder /autograder/run_autograder; "
        "bash /autograder/source/setup.sh > /autograder/setup.log 2>&1 "
        "|| { tail -20 /autograder/setup.log; exit 1; }; "
        "cp -r /mnt/upload /autograder/submission; "
        "/autograder/run_autograder > /mnt/results/sample.stdout 2>&1; "
        "cp /autograder/results/results.json /mnt/results/sample.json"
    )
    run = subprocess.run(
        ["docker", "run", "--rm", "--user", "0", "--network", "none"]
        + ["-v", f"{autograder}:/mnt/source:ro", "-v", f"{SAMPLE}:/mnt/upload:ro"]
        + ["-v", f"{results}:/mnt/results", default_tag(), "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=400,
    )
    stdout = (results / "sample.stdout").read_text() if (results / "sample.stdout").exists() else ""
    assert run.returncode == 0, run.stdout + run.stderr + stdout

    sample = json.loads((results / "sample.json").read_text())
    validate(sample)
    assert 0 < sample["score"] <= sample["max_score"] == 100, stdout
    tests = {t["name"]: t for t in sample["tests"]}
    assert tests["Submission status"]["status"] == "passed", stdout
    # before the deadline a student sees the public part only
    final = tests["MSE on the hidden test split"]
    assert final["visibility"] == "after_due_date" and final["score"] == sample["score"]
    public = tests["MSE on the public 50 % of the hidden test split"]
    assert public["visibility"] == "visible" and public["max_score"] == 0
    assert sample["visibility"] == "after_due_date" and sample["stdout_visibility"] == "hidden"
    assert "(public part)" in sample["output"]
    assert all(t["visibility"] == "visible" for n, t in tests.items() if t is not final)
    assert {e["name"] for e in sample["leaderboard"]} >= {"MSE", "Parameters"}


def test_a_gradescope_upload_gets_its_team_from_the_manifest_or_gradescope(tmp_path) -> None:
    """Gradescope always unpacks into ``submission/``: the team is the manifest's (a label
    only: Gradescope credits its own users), else Gradescope's user ids; never a path."""
    from harness.gradescope_autograder import gradescope_team

    folder = tmp_path / "submission"
    folder.mkdir()
    meta = tmp_path / "submission_metadata.json"
    meta.write_text(json.dumps({"users": [{"id": 7, "name": "Ada"}, {"id": 3, "name": "Alan"}]}))
    (folder / "submission.toml").write_text('task = "correlation"\nteam = "team42"\n')
    assert gradescope_team(folder, meta) == ("team42", ["Ada", "Alan"])
    (folder / "submission.toml").write_text('task = "correlation"\nteam = "../../etc"\n')
    assert gradescope_team(folder, meta) == ("gs-3-7", ["Ada", "Alan"])
    assert gradescope_team(folder, tmp_path / "missing.json") == ("submission", [])
