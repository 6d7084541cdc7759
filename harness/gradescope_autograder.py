"""A Gradescope autograder folder for one task, and the program it runs per submission.

``build_autograder`` writes what Gradescope's autograder specification asks for
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): ``setup.sh`` (run once,
as root, when Gradescope builds the image) and ``run_autograder`` (run once per
submission, in ``/autograder``, with the submission in ``/autograder/submission``; it must
leave ``/autograder/results/results.json``). Beside them: the harness package itself
(put on ``PYTHONPATH``, not installed), the task's ``task.toml``, its reference
solutions, ``requirements.txt``, optionally the secret seed (``config.toml``), a data
folder and a wheelhouse for an offline install.

``python -m harness.gradescope_autograder`` is what ``run_autograder`` calls: it grades
the submission with the ordinary pipeline and always writes a ``results.json``, even when
the submission or the harness fails (score 0 and the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .tasks import TaskSpec

SOURCE = "/autograder/source"
# what the harness needs to grade beside torch (which setup.sh installs apart, CPU build)
REQUIREMENTS = (
    "numpy>=1.26",
    "pandas>=2.1",
    "pydantic>=2.6",
    "click>=8.1",
    "rich>=13",
    "jinja2>=3.1",
    "safetensors>=0.4",
    "pillow>=10",
    "matplotlib>=3.8",
)

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image.
set -euo pipefail
cd {source}
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if ! command -v python3 >/dev/null || ! python3 -c 'import sys; assert sys.version_info >= (3, 11)'
then
    echo "the harness needs Python 3.11 or newer: pick Gradescope's Ubuntu 24.04 base image" >&2
    exit 1
fi
PIP=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && apt-get install -y python3-pip >/dev/null 2>&1; then
        :
    elif ls wheels/pip-*.whl >/dev/null 2>&1; then
        PIP=(python3 "$(ls wheels/pip-*.whl | head -n 1)/pip")  # pip runs from its own wheel
    else
        echo "no pip: install python3-pip or put a pip wheel in wheels/" >&2
        exit 1
    fi
fi
FROM=(--no-compile)  # byte-compiling pandas and matplotlib costs more than it saves here
if [ -d wheels ]; then FROM+=(--no-index --find-links wheels); fi
if ! python3 -c 'import torch' 2>/dev/null; then
    if [ -d wheels ]; then
        "${{PIP[@]}}" install "${{FROM[@]}}" torch
    else
        "${{PIP[@]}}" install "${{FROM[@]}}" torch --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"${{PIP[@]}}" install "${{FROM[@]}}" -r requirements.txt
# prepare the hidden split once, so that each submission only reads it
source ./environment.sh
python3 -m harness.cli data prepare {task} --split {hidden} {data_arg}
chmod -R go-rwx {source}/cache {source}/config.toml 2>/dev/null || true
echo "autograder for {task} ready"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this once per submission, in /autograder; it always writes
# /autograder/results/results.json (score 0 and the reason when grading fails).
cd /autograder
source {source}/environment.sh
mkdir -p /autograder/results
exec python3 -m harness.gradescope_autograder run --task {task} \\
    --submission /autograder/submission --out /autograder/results/results.json \\
    --sandbox {sandbox} {data_arg}
"""

ENVIRONMENT_SH = """# the harness's settings inside the autograder image (sourced by both scripts)
export PYTHONPATH={source}${{PYTHONPATH:+:$PYTHONPATH}}
export HARNESS_HOME={source} HARNESS_TASKS={source}/tasks HARNESS_CACHE={source}/cache
export HARNESS_CONFIG={source}/config.toml
"""


def build_autograder(
    task: TaskSpec,
    out: Path,
    *,
    data_root: Path | None = None,
    wheels: Path | None = None,
    sandbox: str = "auto",
    include_seed: bool = True,
) -> list[Path]:
    """Write the autograder folder for ``task`` into ``out`` (emptied first); returns the
    files at its top. Zip the folder's *contents* (not the folder) and upload the zip."""
    from .settings import settings

    if out.exists() and any(out.iterdir()):
        if not (out / "run_autograder").is_file():
            raise UserError(
                f"{out}: folder is not empty and is not an autograder folder",
                "give an empty or new folder with --out",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    package = Path(__file__).resolve().parent
    shutil.copytree(package, out / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(task.source).parent, out / "tasks" / task.id)
    home = settings().home
    for ref in task.references:
        folder = (home / ref.path).resolve()
        if folder.is_dir():
            shutil.copytree(folder, out / ref.path, ignore=shutil.ignore_patterns("__pycache__"))
    data_arg = ""
    if data_root is not None:
        shutil.copytree(data_root, out / "data")
        data_arg = f"--data-root {SOURCE}/data"
    if wheels is not None:
        shutil.copytree(wheels, out / "wheels")
    seed = settings().secret_seed
    if include_seed and seed is not None:
        (out / "config.toml").write_text(f"secret_seed = {seed}\n")
        (out / "config.toml").chmod(0o600)
    (out / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    (out / "environment.sh").write_text(ENVIRONMENT_SH.format(source=SOURCE))
    fill = {"source": SOURCE, "task": task.id, "hidden": task.splits.hidden, "data_arg": data_arg}
    _script(out / "setup.sh", SETUP_SH.format(**fill))
    _script(out / "run_autograder", RUN_AUTOGRADER.format(**fill, sandbox=sandbox))
    return sorted(out.iterdir())


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _submission_folder(root: Path) -> Path:
    """Gradescope unpacks an upload into ``root``; a zip of the folder adds one level."""
    if (root / "submission.toml").is_file():
        return root
    inner = [p for p in root.iterdir() if p.is_dir() and (p / "submission.toml").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise UserError(
        "no submission.toml in the upload",
        "upload the submission folder's files (submission.toml at the top), or one zip of it",
    )


def gradescope_team(folder: Path, metadata: Path) -> tuple[str, list[str]]:
    """The team and members of a Gradescope upload. Gradescope credits the score to its own
    users, and each run grades one upload alone, so the manifest's ``team`` (when it is a
    safe name) is only a label here; else the Gradescope user ids, else the folder name.
    Members are Gradescope's names when its metadata is there."""
    import tomllib

    from .identity import TEAM_RE

    members: list[str] = []
    users: list[dict[str, object]] = []
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(metadata.read_text())
        users = [u for u in meta.get("users", []) if isinstance(u, dict)]
        members = [str(u.get("name", "")).strip() for u in users if u.get("name")]
    team = ""
    with contextlib.suppress(OSError, ValueError):
        named = tomllib.loads((folder / "submission.toml").read_text()).get("team")
        team = named if isinstance(named, str) and TEAM_RE.fullmatch(named) else ""
    if not team and users:
        ids = sorted(str(u.get("id", "")) for u in users)
        team = ("gs-" + "-".join(ids))[:64]
    if not TEAM_RE.fullmatch(team):
        team = folder.name
    return team, members


def _write_roster(path: Path, folder: Path, metadata: Path) -> None:
    """The one-line roster that gives the upload its team (see ``gradescope_team``)."""
    import csv

    team, members = gradescope_team(folder, metadata)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["folder", "team", "members"])
        writer.writerow([folder.name, team, ";".join(members)])


def _choose_sandbox(wanted: str) -> str:
    """``auto``: bubblewrap when it can make namespaces here, else the process backend
    (Gradescope's container is then the only isolation)."""
    if wanted != "auto":
        return wanted
    from .sandbox import backends

    try:
        reason = backends.get("bwrap")().unavailable_reason()
    except Exception:  # bwrap's backend cannot even be made here
        return "process"
    return "bwrap" if reason is None else "process"


def _failure(task: TaskSpec | None, message: str) -> dict[str, object]:
    max_score = task.grading.max_score if task else 0.0
    return {
        "score": 0.0,
        "max_score": max_score,
        "output": f"Not graded: {message}",
        "stdout_visibility": "hidden",
        "tests": [
            {
                "name": "Submission status",
                "score": 0.0,
                "max_score": 0.0,
                "status": "failed",
                "output": message,
                "visibility": "visible",
            }
        ],
    }


def run(task_id: str, submission: Path, out: Path, *, sandbox: str, data_root: Path | None) -> int:
    """Grade one Gradescope submission and write its ``results.json``; returns 0."""
    from .report.gradescope import gradescope_results
    from .tasks import load_task

    task: TaskSpec | None = None
    try:
        task = load_task(task_id)
        folder = _submission_folder(submission)
        backend = _choose_sandbox(sandbox)
        print(f"grading {folder} on {task_id} with --sandbox {backend}", flush=True)
        from .api import GradeOptions, grade

        with tempfile.TemporaryDirectory(prefix="harness-gs-") as tmp:
            roster = Path(tmp) / "roster.csv"
            _write_roster(roster, folder, submission.parent / "submission_metadata.json")
            options = GradeOptions(
                sandbox=backend,
                data_root=data_root,
                results_dir=Path(tmp) / "results",
                reports=False,
                task=task.id,
                roster=roster,
            )
            docs = grade([folder], options=options)
        if len(docs) != 1:
            raise UserError(f"expected one submission in the upload, found {len(docs)}")
        doc = docs[0]
        if doc.task != task.id:
            raise UserError(
                f"submission.toml names task {doc.task!r}, but this assignment is {task.id!r}",
                "fix `task` in submission.toml",
            )
        results = gradescope_results(doc, task)
        print(f"{doc.team}: {doc.status} {doc.message}", flush=True)
    except UserError as exc:
        results = _failure(task, f"{exc.message}{f' ({exc.hint})' if exc.hint else ''}")
    except Exception as exc:  # a harness bug: still a result, the instructor sees stdout
        import traceback

        traceback.print_exc()
        results = _failure(task, f"the grader failed ({type(exc).__name__}); staff can see why")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gradescope_autograder")
    sub = parser.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="grade /autograder/submission, write results.json")
    r.add_argument("--task", required=True)
    r.add_argument("--submission", type=Path, default=Path("/autograder/submission"))
    r.add_argument("--out", type=Path, default=Path("/autograder/results/results.json"))
    r.add_argument("--sandbox", default="auto", choices=("auto", "docker", "bwrap", "process"))
    r.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args(argv)
    return run(args.task, args.submission, args.out, sandbox=args.sandbox, data_root=args.data_root)


if __name__ == "__main__":
    sys.exit(main())
