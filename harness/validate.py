"""``grade validate-references``: every task's reference solutions, checked end to end.

For each reference a task declares (``[[references]]`` in its ``task.toml``):

1. the folder is graded by the ordinary pipeline on a small generated set written in the
   task's public layout (:mod:`harness.fixtures`): so the reference builds, its weights
   load strictly, its parameter count is within the limit and it runs on that layout.
   When no trained weights are committed, seeded initial weights are made in a
   temporary copy (built in a subprocess, never in this process) and the row says so;
2. when the real dataset is under the data root (or the task's data is generated, as for
   ``correlation``) and trained weights are committed, it is graded on the hidden split
   and its primary metric compared with the spec's ``expected`` within ``tolerance``.
   That grading is stored in the results folder (``results_dir``) like any other, marked
   as a reference: so every listed reference appears on the leaderboard, unranked.

A reference whose expectation is "not yet measured" reports its score, or "not measured"
when it has none; only a broken reference or a missed expectation fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.markup import escape
from rich.table import Table

from .api import GradeOptions, grade
from .counting import over_limit
from .data import providers
from .errors import UserError
from .identity import TEAM_RE
from .metrics import METRICS
from .results import ResultDocument
from .tasks import ReferenceSpec, TaskSpec, all_tasks

Weights = Literal["committed", "initial", "none"]
DataState = Literal["real", "generated", "fixture", "missing", "private"]


@dataclass
class Row:
    """One reference of one task: what was checked and what it scored."""

    task: str
    reference: str
    limit: int | None
    metric: str
    params: int | None = None
    score: float | None = None  # the primary metric on the hidden split, when measured
    expected: float | None = None
    tolerance: float = 0.0
    measured: str = "not yet measured"  # where the expectation comes from
    weights: Weights = "none"
    fixture: str = ""  # "graded" or what went wrong; "" when the task has no public layout
    data: DataState = "missing"
    ok: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def score_text(self) -> str:
        return "not measured" if self.score is None else METRICS.get(self.metric).format(self.score)

    @property
    def expected_text(self) -> str:
        if self.expected is None:
            return self.measured
        fmt = METRICS.get(self.metric).format
        return f"{fmt(self.expected)} ± {fmt(self.tolerance)}"


def validate_references(
    *,
    tasks_dir: Path | None = None,
    data_root: Path | None = None,
    sandbox: str | None = None,
    only: tuple[str, ...] = (),
    results_dir: Path | None = None,
) -> list[Row]:
    """Check every reference of every task (or of the tasks in ``only``); one row each.
    With ``results_dir``, the hidden-split gradings of trained references are stored there
    (and so shown on the leaderboard); without it they are thrown away."""
    from .settings import settings

    tasks_dir = tasks_dir or settings().tasks_dir
    rows: list[Row] = []
    for task in all_tasks(tasks_dir):
        if only and task.id not in only:
            continue
        if not task.references:
            rows.append(_row(task, None, notes=["no [[references]] in task.toml"]))
            continue
        for ref in task.references:
            row = _row(task, ref)
            with tempfile.TemporaryDirectory(prefix=f"validate-{task.id}-") as tmp:
                try:
                    where = Where(tasks_dir, data_root, sandbox, Path(tmp), results_dir)
                    _validate_one(row, task, ref, where)
                except UserError as exc:
                    row.ok = False
                    row.notes.append(str(exc))
            rows.append(row)
    return rows


def _row(task: TaskSpec, ref: ReferenceSpec | None, notes: list[str] | None = None) -> Row:
    return Row(
        task=task.id,
        reference=ref.name if ref else "(none)",
        limit=task.parameter_limit,
        metric=task.metrics.primary,
        expected=ref.expected if ref else None,
        tolerance=ref.tolerance if ref else 0.0,
        measured=ref.measured if ref else "",
        notes=notes or [],
    )


@dataclass(frozen=True)
class Where:
    """Where one validation reads and writes."""

    tasks_dir: Path
    data_root: Path | None
    sandbox: str | None
    tmp: Path
    results_dir: Path | None  # the hidden-split gradings of trained references go here


def _validate_one(row: Row, task: TaskSpec, ref: ReferenceSpec, where: Where) -> None:
    tasks_dir, data_root, sandbox, tmp = where.tasks_dir, where.data_root, where.sandbox, where.tmp
    folder = task.reference_folder(ref)
    if not (folder / "submission.toml").is_file():
        raise UserError(f"{folder}/submission.toml is missing", f"check `path` of {ref.name!r}")
    submission, row.weights = _submission(folder, tmp / "submission")
    roster = _roster(folder, submission, tmp / "roster.csv")

    def run(root: Path | None, name: str) -> ResultDocument:
        publish = where.results_dir if name == "data" and row.weights == "committed" else None
        options = GradeOptions(
            sandbox=sandbox,
            data_root=root,
            results_dir=publish or tmp / f"results-{name}",
            tasks_dir=tasks_dir,
            force=publish is None,  # a stored grading of the same inputs is the same result
            reports=publish is not None,
            roster=roster,
        )
        [doc] = grade([submission], options=options)
        return doc

    from .fixtures import write_for_task

    has_fixture = write_for_task(task, tmp / "fixture-data") is not None
    if has_fixture:
        doc = run(tmp / "fixture-data", "fixture")
        row.fixture, row.params = _verdict(doc, task), doc.params.counted
        if row.fixture != "graded":
            row.notes.append(f"on the fixture: {doc.status}: {doc.message}")
            return
    row.data = _data_state(task, data_root)
    if row.data not in ("real", "generated", "private"):
        row.notes.append(_absent_note(task, row.data, data_root))
    elif row.weights == "committed" or not has_fixture:  # generated data: the one run
        doc = run(data_root, "data")
        row.params = doc.params.counted
        if _verdict(doc, task) != "graded":
            row.notes.append(f"on the {row.data} data: {doc.status}: {doc.message}")
            return
        if not _scored(row, doc, task):
            return
    else:
        row.notes.append("no trained weights committed: score not measured")
    row.ok = True


def _scored(row: Row, doc: ResultDocument, task: TaskSpec) -> bool:
    """Record the score of a graded run; False when it misses the expectation."""
    if row.weights != "committed":
        row.notes.append("no trained weights committed: score not measured")
        return True
    row.score = doc.metrics.get(task.metrics.primary)
    if row.data == "private":
        row.notes.append("graded on the private test set: not compared with `expected`")
        return True
    if not _meets(row):
        row.notes.append(f"expected {row.expected_text}, scored {row.score_text}")
        return False
    return True


def _verdict(doc: ResultDocument, task: TaskSpec) -> str:
    """The status, with a graded run over the limit counted as ``over_limit``."""
    if doc.status == "graded" and over_limit(doc.params.counted, task.parameter_limit):
        return "over_limit"
    return doc.status


def _meets(row: Row) -> bool:
    if row.expected is None:
        return True
    if row.score is None:
        return False
    if METRICS.get(row.metric).direction == "max":
        return row.score >= row.expected - row.tolerance
    return row.score <= row.expected + row.tolerance


def _data_state(task: TaskSpec, data_root: Path | None) -> DataState:
    from .data.torchvision_sets import default_data_root, private_test_path

    provider = providers.get(task.dataset.provider)
    availability = getattr(provider, "availability", None)
    if availability is None:
        return "generated"  # e.g. correlation: the provider draws its own splits
    root = data_root if data_root is not None else default_data_root()
    state: DataState = availability(root)
    if state == "real" and private_test_path(root, task.id).is_file():
        return "private"
    return state


def _absent_note(task: TaskSpec, state: DataState, data_root: Path | None) -> str:
    from .data.torchvision_sets import default_data_root

    if state == "fixture":
        return "the data root holds a generated fixture, not the dataset: score not measured"
    where = data_root if data_root is not None else default_data_root()
    return (
        f"no {task.dataset.provider} dataset under {where}: score not measured "
        f"(`grade data prepare {task.id} --download`)"
    )


_INIT = """
import importlib, sys, torch
folder, entry, out = sys.argv[1:4]
sys.path.insert(0, folder)
module, _, name = entry.partition(":")
torch.manual_seed(0)
model = getattr(importlib.import_module(module), name)()
state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
if out.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file(state, out)
else:
    torch.save(state, out)
"""


def _roster(folder: Path, submission: Path, path: Path) -> Path:
    """A reference is graded as the team its manifest names (the instructor's own word,
    given as a roster), whatever folder it is graded from."""
    manifest = tomllib.loads((folder / "submission.toml").read_text(encoding="utf-8"))
    team = manifest.get("team")
    team = team if isinstance(team, str) and TEAM_RE.fullmatch(team) else folder.name
    path.write_text(f"folder,team\n{submission.name},{team}\n", encoding="utf-8")
    return path


def _submission(folder: Path, copy: Path) -> tuple[Path, Weights]:
    """The reference itself when its weights are committed, else a temporary copy with
    seeded initial weights (and a header-only history when the manifest names one)."""
    manifest = tomllib.loads((folder / "submission.toml").read_text(encoding="utf-8"))
    model = manifest.get("model", {})
    weights = str(model.get("weights", "weights.safetensors"))
    if (folder / weights).is_file():
        return folder, "committed"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    entry = str(model.get("entrypoint", "model:build_model"))
    done = subprocess.run(
        [sys.executable, "-c", _INIT, str(copy), entry, str(copy / weights)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(
            f"{folder}: the reference does not build: {tail[0]}",
            f"run its {entry} by hand to see the traceback",
        )
    history = manifest.get("training", {}).get("history")
    if isinstance(history, str) and not (copy / history).is_file():
        (copy / history).write_text("epoch,train_loss,val_loss\n")  # no epochs: untrained
    return copy, "initial"


def render(rows: list[Row]) -> Table:
    """The table ``grade validate-references`` prints."""
    table = Table(title="Reference solutions", show_lines=False)
    for name in ("task", "limit", "reference", "parameters", "fixture", "score", "expected"):
        justify = "right" if name in ("limit", "parameters") else "left"
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("result")
    for row in rows:
        weights = {"committed": "", "initial": " (initial weights)", "none": ""}[row.weights]
        table.add_row(
            escape(row.task),
            f"{row.limit:,}" if row.limit else "none",
            escape(row.reference),
            f"{row.params:,}" if row.params is not None else "-",
            (row.fixture or "n/a (generated data)") + weights,
            f"{row.score_text} ({row.metric})",
            escape(row.expected_text),
            ("[green]ok[/green]" if row.ok else "[red]FAILED[/red]")
            + "".join(f"\n{escape(note)}" for note in row.notes),
        )
    return table


def exit_code(rows: list[Row]) -> int:
    """0 when every reference passed, else 1."""
    return 0 if rows and all(row.ok for row in rows) else 1
