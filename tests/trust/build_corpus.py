"""The trust corpus: submissions that attack the grader's host side, not the sandbox.

Each case is a real submission folder in the public format, built with the test kit (``tests/kit``)
(the tiny regression task and model), whose manifest or code tries one thing the grader
must refuse or contain: a ``task`` that is a path, a ``team`` that is another team's, links
and a deep tree left in ``/output``, a full ``/dev/shm``, history values that break a plot,
spreadsheet formulas and Markdown images in the student's text, a team over its quota.
``Case.expect`` is the status the contract gives it and ``Case.says`` a phrase of its
message (or the rule it breaks). ``python tests/trust/build_corpus.py OUT`` writes the
corpus and its task.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit import TINY_MODEL, make_submission, save_weights, write_task  # noqa: E402

TASK_ID = "trust"
HONEST = ("honest_a", "honest_b")
DAILY_QUOTA = 1
DEEP_LEVELS = 1500
EVIL_URL = "http://evil.example"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # the status
    says: str  # a phrase of the message, or the rule it breaks
    rule: str | None = None  # the violated rule, for invalid ones
    same_as_honest: bool = False  # scores exactly what honest_a scores


CASES = (
    Case("honest_a", "graded", ""),
    Case("honest_b", "graded", ""),
    Case("task_relative", "invalid", "is not a task id", "manifest.task"),
    Case("task_absolute", "invalid", "is not a task id", "manifest.task"),
    Case("task_escape", "invalid", "is not a task id", "manifest.task"),
    Case("task_long", "invalid", "is not a task id", "manifest.task"),
    Case("task_unknown", "invalid", "unknown task", "manifest.task"),
    Case("impostor", "invalid", "is not this submission's team", "manifest.team"),
    Case("links_out", "graded", "", same_as_honest=True),
    Case("deep_tree", "killed", "output limit: folders nested"),
    Case("shm_fill", "killed", "disk limit"),
    Case("report_injection", "graded", "", same_as_honest=True),
    Case("over_quota", "invalid", "hidden-set grading", "quota.daily"),
)

# Model code run at import, in the export phase, before the honest model is built.
_LINKS = """
import os
for _name, _target in {targets!r}:
    try:
        os.symlink(_target, os.path.join("/output", _name))
    except OSError:
        pass
os.makedirs("/output/sub", exist_ok=True)
for _name, _target in (("up", ".."), ("loop", "."), ("root", "/")):
    try:
        os.symlink(_target, os.path.join("/output/sub", _name))
    except OSError:
        pass
"""
_DEEP = """
import os
_here = os.getcwd()
os.chdir("/output")
for _ in range({levels}):
    os.mkdir("d")
    os.chdir("d")
open("{marker}", "w").close()
os.chdir(_here)
"""
_SHM = """
with open("/dev/shm/fill", "wb") as _fh:
    for _ in range(64):
        _fh.write(bytes(2**20))
"""


def write_tasks(tasks_dir: Path) -> Path:
    """The corpus's task: the tiny regression task with a daily quota of one grading."""
    return write_task(
        tasks_dir,
        TASK_ID,
        limit=100_000,
        time=300,  # no case hangs: room for a loaded CI
        limits={"tmpfs_mb": 8, "output_mb": 16},
        grading={"daily_quota": DAILY_QUOTA},
    )


def build(root: Path, *, markers: Path, deep_marker: str) -> dict[str, Path]:
    """Write every case under ``root``; ``markers`` holds the host files the links aim at."""
    root.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    for name in HONEST + ("impostor", "over_quota"):
        folders[name] = make_submission(root, name, task=TASK_ID, seed=int(name == "honest_b"))
    _set_manifest(folders["impostor"], "team", '"honest_a"')
    task_ids = {
        "task_relative": f"../{root.name}/task_relative",
        "task_absolute": str(markers / "absolute"),
        "task_escape": "../" * 12 + str(markers).lstrip("/") + "/escape",
        "task_long": "a" * 300,
        "task_unknown": "no-such-task",
    }
    for name, task in task_ids.items():
        folders[name] = make_submission(root, name, task=task.replace("\\", "/"))
    # the relative one brings a task of its own: no limit, every submission full marks
    write_task(folders["task_relative"].parent, "task_relative", limit=10**9)
    targets = [
        ("marker_dir", str(markers / "dir")),
        ("marker_file", str(markers / "file")),
        ("host_root", "/root"),
        ("host_tmp", "/tmp"),
        ("host_etc", "/etc"),
    ]
    folders["links_out"] = _hostile(root, "links_out", _LINKS.format(targets=targets))
    folders["deep_tree"] = _hostile(
        root, "deep_tree", _DEEP.format(levels=DEEP_LEVELS, marker=deep_marker)
    )
    folders["shm_fill"] = _hostile(root, "shm_fill", _SHM)
    folders["report_injection"] = _report_injection(root)
    return folders


def _hostile(root: Path, name: str, prelude: str) -> Path:
    """The honest model and weights, with ``prelude`` run first when the sandbox imports
    model.py (never here: the weights are made from the honest source alone)."""
    folder = make_submission(root, name, task=TASK_ID, model_src=prelude + TINY_MODEL, save=False)
    save_weights(TINY_MODEL, folder)
    return folder


def _report_injection(root: Path) -> Path:
    members = f'["=HYPERLINK(\\"{EVIL_URL}/x\\",\\"click\\")", "@SUM(A1)", "+1", "-1"]'
    notes = f"![pixel]({EVIL_URL}/p.png) [link]({EVIL_URL}/l) <img src={EVIL_URL}/i.png>"
    folder = make_submission(
        root,
        "report_injection",
        task=TASK_ID,
        training=f'history = "history.csv"\nnotes = "{notes}"\noptimizer = "=1+1"\n',
    )
    _set_manifest(folder, "members", members)
    (folder / "history.csv").write_text(
        "epoch,train_loss,val_loss\n1,1e308,-1e308\n2,0.5,0.4\n3,1e-308,5e307\n"
    )
    (folder / "REPORT.md").write_text(f"# ours\n\n![]({EVIL_URL}/r.png)\n\n[click]({EVIL_URL})\n")
    return folder


def _set_manifest(folder: Path, key: str, value: str) -> None:
    manifest = folder / "submission.toml"
    lines = manifest.read_text().splitlines()
    lines = [f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in lines]
    manifest.write_text("\n".join(lines) + "\n")


def make_markers(markers: Path) -> None:
    """The host files the links aim at, with modes a chmod through a link would change."""
    (markers / "dir").mkdir(parents=True)
    (markers / "dir" / "keep.txt").write_text("keep")
    os.chmod(markers / "dir", 0o1750)
    (markers / "file").write_text("keep")
    os.chmod(markers / "file", 0o600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    markers = args.out / "markers"
    make_markers(markers)
    write_tasks(args.out / "tasks")
    build(args.out / "submissions", markers=markers, deep_marker="deep-marker")
    print(f"wrote {len(CASES)} cases to {args.out / 'submissions'}")


if __name__ == "__main__":
    main()
