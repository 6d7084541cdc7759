"""The house rules of issue #11, as tests: no import cycle in ``harness/``; a grading visits
each stage module once, in order, never climbing back; the records between stages are
frozen and a stage leaves what it is given unchanged; each rule has one home."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from kit import make_submission, write_task

from harness.api import GradeOptions
from harness.pipeline import grade_submission
from harness.sandbox.process import ProcessBackend
from harness.settings import settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"
STAGES = ["validate", "weights", "export", "check", "predict", "score", "document"]


def _imports() -> dict[str, set[str]]:
    """Each harness module and the harness modules it imports (any import, at any level),
    a package's ``__init__`` counted as imported with any module in it."""
    modules: dict[str, Path] = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
                found |= {n for n in names if n in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        # importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer is
        # inside them already (harness.console -> harness.sandbox.layout runs
        # harness/sandbox/__init__, which imports every backend)
        found |= {parent for dep in found for parent in _parents(dep) if parent in modules}
        graph[name] = {d for d in found if d != name and not name.startswith(d + ".")}
    return graph


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules on it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = _imports()
    assert "harness.pipeline" in graph and "harness.stages.predict" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_a_package_init_counts_as_imported() -> None:
    # the cycle one commit of this session had at import time, static edges only
    graph = _imports()
    assert "harness.sandbox" in graph["harness.student_error"]  # via harness.sandbox.layout
    assert "harness.sandbox.bwrap" in graph["harness.sandbox"]
    assert "harness" not in graph["harness.console"]  # its own package: running already


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_api_imports_the_executors_and_the_stages_import_no_later_stage() -> None:
    graph = _imports()
    users = sorted(m for m, deps in graph.items() if "harness.executors" in deps)
    assert users == ["harness.api", "harness.cli"] or users == ["harness.api"], users
    for i, stage in enumerate(STAGES):
        deps = graph[f"harness.stages.{stage}"]
        later = {f"harness.stages.{s}" for s in STAGES[i + 1 :]}
        allowed_later = {"harness.stages.document"} if stage == "validate" else set()
        assert not (deps & later) - allowed_later, (stage, deps & later)
        assert "harness.pipeline" not in deps and "harness.executors" not in deps


@pytest.fixture()
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "tasks"
    write_task(folder, "tiny")
    monkeypatch.setenv("HARNESS_TASKS", str(folder))
    settings.cache_clear()
    yield folder
    settings.cache_clear()


def _stage_trace(run: Any) -> list[str]:
    """The stage modules whose functions ``run`` calls, in order, repeats collapsed."""
    seen: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        file = Path(frame.f_code.co_filename)  # code written in a stage module, not made
        stage = file.stem if file.parent.name == "stages" and file.stem in STAGES else None
        if stage is not None and (not seen or seen[-1] != stage):  # there (dataclasses)
            seen.append(stage)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen


def test_a_grading_visits_each_stage_once_in_order(tasks: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1", task="tiny")
    options = GradeOptions(sandbox="process", results_dir=tmp_path / "results", reports=False)
    docs: list[Any] = []
    trace = _stage_trace(
        lambda: docs.append(
            grade_submission(folder, options=options, backend=ProcessBackend(fork=False))
        )
    )
    assert docs[0].status == "graded", docs[0].message
    assert trace == STAGES


def test_the_grading_process_never_imports_torch(tasks: Path, tmp_path: Path) -> None:
    """The host reads programs as JSON and raw bytes and runs no torch code, so a grading
    (reports too) must not pay torch's import: seconds of every ``grade`` command's start."""
    folder = make_submission(tmp_path / "subs", "team1", task="tiny")
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NO TORCH'))\n"
        "from harness.cli import main\n"
        "sys.argv[0] = 'grade'\n"
        "main()\n"
    )
    args = [str(folder), "--sandbox", "process", "--results", str(tmp_path / "r")]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "NO TORCH", done.stdout[-2000:]
    assert (tmp_path / "r" / "tiny" / "team1" / "report.html").is_file()


def test_an_invalid_submission_goes_from_validate_to_its_document(
    tasks: Path, tmp_path: Path
) -> None:
    folder = make_submission(tmp_path / "subs", "team1", task="tiny", save=False)
    options = GradeOptions(sandbox="process", results_dir=tmp_path / "results", reports=False)
    docs: list[Any] = []
    trace = _stage_trace(
        lambda: docs.append(
            grade_submission(folder, options=options, backend=ProcessBackend(fork=False))
        )
    )
    assert docs[0].status == "invalid"
    assert trace == ["validate", "document"]


def test_records_are_frozen_and_a_stage_leaves_its_input_unchanged(
    tasks: Path, tmp_path: Path
) -> None:
    from harness.pipeline import load_guarded
    from harness.stages import validate, weights
    from harness.stages.records import Admitted

    folder = make_submission(tmp_path / "subs", "team1", task="tiny")
    options = GradeOptions(sandbox="process", results_dir=tmp_path / "results")
    sub = load_guarded(folder, options)
    before = dataclasses.asdict(sub)
    admitted = validate.admit(
        sub, options=options, backend=ProcessBackend(fork=False), mode="grade", store=None
    )
    assert isinstance(admitted, Admitted)
    try:
        notes = admitted.notes
        counted = weights.count_weights(admitted)
        assert admitted.notes is notes and notes.params.counted is None
        assert counted.notes.params.counted == counted.count.counted > 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            counted.notes = notes  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            admitted.grading.cache_key = ""  # type: ignore[misc]
    finally:
        admitted.grading.workspace.close()
    assert dataclasses.asdict(sub) == before


def _defined(pattern: str) -> list[str]:
    """The harness files (relative) whose source matches ``pattern`` (a regex)."""
    rx = re.compile(pattern, re.M)
    return sorted(
        str(f.relative_to(ROOT)) for f in PACKAGE.rglob("*.py") if rx.search(f.read_text())
    )


@pytest.mark.parametrize(
    ("rule", "pattern", "home"),
    [
        ("over the parameter limit", r"^def (params_)?over_limit\(", ["harness/counting.py"]),
        ("the over-limit message", r"^def over_message\(", ["harness/counting.py"]),
        (
            "is a GPU here (host side)",
            r"/dev/nvidiactl",
            ["harness/devices.py"],
        ),
        ("where a reference lives", r"def reference_folder\(", ["harness/tasks.py"]),
        ("the torch release", r'^TORCH = "', ["harness/runner/contract.py"]),
        ("which operators a program may use", r"^ALLOWED\b|^ALLOWED_OPS\b", None),
        ("killing a run's process group", r"^def kill_group\(", ["harness/sandbox/confine.py"]),
    ],
)
def test_each_rule_has_one_home(rule: str, pattern: str, home: list[str] | None) -> None:
    found = _defined(pattern)
    if home is None:
        assert len(found) <= 1, (rule, found)
    else:
        assert found == home, (rule, found)


@pytest.mark.parametrize("where", ["harness.stages.validate.admit", "harness.stages.score.score"])
def test_a_harness_bug_in_a_stage_is_a_failed_result_and_the_batch_goes_on(
    where: str, tasks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.api import grade

    module, name = where.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)
    calls: list[int] = []

    def first_one_breaks(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the harness")
        return real(*args, **kwargs)

    monkeypatch.setattr(where, first_one_breaks)
    subs = [make_submission(tmp_path / "subs", f"team{i}", task="tiny") for i in (1, 2)]
    options = GradeOptions(
        sandbox="process", results_dir=tmp_path / "results", reports=False, jobs=1
    )
    docs = grade(subs, options=options)
    assert [d.status for d in docs] == ["failed", "graded"], [d.message for d in docs]
    assert docs[0].stage == "harness"
    assert docs[0].message == "internal harness error: RuntimeError: a bug in the harness"
    assert "RuntimeError" in docs[0].student_output
