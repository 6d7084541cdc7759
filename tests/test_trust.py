"""The grader, not the submission, decides who and what is graded; no submission touches
the host or stops the batch (issue #12).

The corpus (``tests/trust/build_corpus.py``) is graded as ONE batch per isolated backend,
with reports on: each case ends with its status and a message naming the rule; the honest
teams score exactly what they score alone; nothing on the host changed (the link targets'
modes and contents, ``/root``, ``/tmp``, ``/etc``, the corpus, the tasks); nothing was
written outside the results folder; the workspaces are gone, however deep. The rest are
fast checks of the same rules without a sandbox.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from kit import make_submission, write_task
from kit.served import through_grade_serve
from trust.build_corpus import (
    CASES,
    EVIL_URL,
    HONEST,
    TASK_ID,
    Case,
    build,
    make_markers,
    write_tasks,
)

from harness.api import GradeOptions, grade
from harness.errors import UserError
from harness.identity import Identity, check_unique, path_component, read_roster
from harness.results import ResultDocument, result_path
from harness.settings import seed_of, settings
from harness.store import ResultsStore
from harness.submission import load_submission

HOST_PATHS = ("/root", "/tmp", "/etc", "/")


@dataclass
class Corpus:
    root: Path
    folders: dict[str, Path]
    markers: Path
    tasks: Path
    deep_marker: str


@dataclass
class Batch:
    backend: str
    docs: dict[str, ResultDocument]
    alone: dict[str, ResultDocument]
    results: Path
    before: dict[str, str]
    after: dict[str, str]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("trust")
    markers = root / "markers"
    make_markers(markers)
    tasks = root / "tasks"
    write_tasks(tasks)
    deep_marker = "deep-" + os.urandom(6).hex()
    folders = build(root / "submissions", markers=markers, deep_marker=deep_marker)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_TASKS", str(tasks))
        mp.setenv("HARNESS_CACHE", str(root / "cache"))
        mp.setenv("HARNESS_SECRET_SEED", "trust-corpus-secret")
        settings.cache_clear()
        yield Corpus(root, folders, markers, tasks, deep_marker)
    settings.cache_clear()


def _host_state(corpus: Corpus) -> dict[str, str]:
    """Modes, owners and contents of everything the attacks aim at: ``/root``, ``/tmp``,
    ``/etc``, ``/``, and every file of the corpus outside the results folders and the
    harness's own data cache (the submissions, the tasks, the link targets)."""
    state = {}
    for path in HOST_PATHS:
        info = os.lstat(path)
        state[path] = f"{stat.filemode(info.st_mode)} {info.st_uid}"
    skip = [corpus.root / "cache", *corpus.root.glob("results-*")]  # a batch's results
    for path in sorted(corpus.root.rglob("*")):
        if any(path.is_relative_to(s) for s in skip):
            continue
        info = os.lstat(path)
        kind = f"{stat.filemode(info.st_mode)} {info.st_uid}"
        if stat.S_ISREG(info.st_mode):
            kind += " " + hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            kind += " -> " + os.readlink(path)
        state[str(path)] = kind
    return state


def _seed_quota(results: Path) -> None:
    """``over_quota`` used today's grading; its result.json is gone (no last result)."""
    store = ResultsStore(results)
    doc = ResultDocument(task=TASK_ID, team="over_quota", status="graded", cache_key="seeded")
    store.record(doc)
    (results / TASK_ID / "over_quota" / "result.json").unlink()


@pytest.fixture(scope="class")
def batch(request: pytest.FixtureRequest, corpus: Corpus) -> Iterator[Batch]:
    name = request.cls.backend
    results = corpus.root / f"results-{name}{'-served' * request.cls.served}"
    options = GradeOptions(
        sandbox=name, results_dir=results, tasks_dir=corpus.tasks, reports=True, force=True
    )
    alone_options = replace(options, results_dir=results / "alone", reports=False)
    alone = {d.team: d for d in grade([corpus.folders[n] for n in HONEST], options=alone_options)}
    _seed_quota(results)
    before = _host_state(corpus)
    # the team over its quota first: seeded "today", checked seconds later (not across 00:00 UTC)
    order = sorted(corpus.folders.values(), key=lambda p: (p.name != "over_quota", p.name))
    with through_grade_serve(request.cls.served):
        docs = grade(order, options=replace(options, jobs=2))
    after = _host_state(corpus)
    yield Batch(name, {d.team: d for d in docs}, alone, results, before, after)


class BatchChecks:
    """The assertions on one backend's batch. Each subclass is its own xdist scope
    (``--dist loadscope``): the batches grade on different workers."""

    backend: str
    served = False  # True: through a `grade serve`'s warm sandboxes

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_each_attack_ends_with_its_status_and_rule(self, batch: Batch, case: Case) -> None:
        doc = batch.docs[case.name]
        assert doc.status == case.expect, f"{batch.backend}/{case.name}: {doc.message}"
        assert case.says in doc.message
        if case.rule:
            assert case.rule in {v.rule for v in doc.violations}
        assert doc.stage != "harness" and "Traceback" not in doc.message
        if case.name.startswith("task_"):
            assert doc.task == "unknown"  # never the path it named

    def test_every_submission_has_its_own_result_and_nothing_else(self, batch: Batch) -> None:
        expected = {
            (TASK_ID if c.expect != "invalid" or c.rule != "manifest.task" else "unknown", c.name)
            for c in CASES
        }
        on_disk = {
            (p.parent.parent.name, p.parent.name) for p in batch.results.glob("*/*/result.json")
        }
        assert on_disk == expected
        assert sorted(p.name for p in batch.results.iterdir() if p.is_dir()) == sorted(
            {"alone", TASK_ID, "unknown"}
        )

    def test_the_honest_teams_score_exactly_as_alone(self, batch: Batch) -> None:
        for name in HONEST:
            assert batch.docs[name].metrics == batch.alone[name].metrics
            assert batch.docs[name].intervals == batch.alone[name].intervals
        stored = ResultDocument.model_validate_json(
            result_path(batch.results, TASK_ID, "honest_a").read_text()
        )
        assert stored.team == "honest_a" and stored.metrics == batch.alone["honest_a"].metrics
        for case in CASES:
            if case.same_as_honest:
                assert batch.docs[case.name].metrics == batch.alone["honest_a"].metrics, case.name

    def test_nothing_on_the_host_changed(self, batch: Batch, corpus: Corpus) -> None:
        assert batch.after == batch.before
        assert stat.S_IMODE(os.stat(corpus.markers / "dir").st_mode) == 0o1750
        assert stat.S_IMODE(os.stat(corpus.markers / "file").st_mode) == 0o600
        assert (corpus.markers / "dir" / "keep.txt").read_text() == "keep"
        # nothing named after a submission's `task` anywhere
        assert (
            not (corpus.markers / "escape").exists() and not (corpus.markers / "absolute").exists()
        )
        # Every grading workspace in the temp folder: this batch's, and any that another
        # test worker's gradings hold right now. Those come and go as we look, so find's
        # complaints about a vanished folder are ignored; it also walks the 1,500 levels
        # of deep_tree that Python's recursive walk in 3.11 cannot.
        workspaces = [str(w) for w in Path(tempfile.gettempdir()).glob("harness-ws-*")]
        found = subprocess.run(
            ["find", *workspaces, "-name", corpus.deep_marker],
            capture_output=True,
            text=True,
        )
        assert not workspaces or found.stdout.split() == []

    def test_reports_and_leaderboard_are_inert(self, batch: Batch, tmp_path: Path) -> None:
        from harness.report import render_site

        folder = batch.results / TASK_ID / "report_injection"
        markdown = (folder / "report.md").read_text()
        outside_code = re.sub(r"```.*?```", "", markdown, flags=re.S)
        assert EVIL_URL in outside_code  # the text is shown...
        assert "](" + EVIL_URL not in outside_code.replace("\\](", "")  # ...as no link or image
        assert "<img" not in outside_code
        assert (folder / "report.html").is_file() and (folder / "results.json").is_file()
        render_site(batch.results, tmp_path)
        with open(tmp_path / "leaderboard.csv", newline="") as fh:
            cells = [cell for row in csv.reader(fh) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
        assert any(c.startswith("'=HYPERLINK") for c in cells)


@pytest.mark.bwrap
@pytest.mark.slow
class TestBwrap(BatchChecks):
    backend = "bwrap"


@pytest.mark.docker
@pytest.mark.slow
class TestDocker(BatchChecks):
    backend = "docker"


# -- the same rules, fast ------------------------------------------------------------------


@pytest.fixture()
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "tasks"
    write_task(folder, "tiny")
    write_task(folder, "other")
    monkeypatch.setenv("HARNESS_TASKS", str(folder))
    settings.cache_clear()
    yield folder
    settings.cache_clear()


def test_grade_task_pins_the_task(tasks: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "team1", task="other", save=False)
    pinned = load_submission(folder, tasks_dir=tasks, identity=Identity(task="tiny"))
    assert pinned.task is None and pinned.task_id == "tiny"
    [v] = pinned.violations
    assert v.rule == "manifest.task" and "grades task 'tiny'" in v.message
    free = load_submission(folder, tasks_dir=tasks)
    assert free.task is not None and free.task.id == "other"


def test_the_team_comes_from_the_folder_or_the_roster(tasks: Path, tmp_path: Path) -> None:
    folder = make_submission(tmp_path / "subs", "f1", task="tiny", save=False)
    assert load_submission(folder, tasks_dir=tasks).team == "f1"
    roster = tmp_path / "roster.csv"
    roster.write_text("folder,team,members\nf1,red-team,Ada Lovelace;Alan Turing\n")
    sub = load_submission(folder, tasks_dir=tasks, identity=read_roster(roster))
    assert sub.team == "red-team" and sub.members == ["Ada Lovelace", "Alan Turing"]
    assert "manifest.team" in {v.rule for v in sub.violations}  # the manifest says f1
    stray = make_submission(tmp_path / "subs", "f2", task="tiny", save=False)
    sub = load_submission(stray, tasks_dir=tasks, identity=read_roster(roster))
    assert "folder.roster" in {v.rule for v in sub.violations}
    assert sub.team != "f2" and sub.team.startswith("f2-")


@pytest.mark.parametrize(
    "text",
    [
        "folder,team\nf1,a\nf2,a\n",  # one team, two folders
        "folder,team\nf1,a\nf1,b\n",
        "folder,team\nf1,../x\n",
        "name,team\nf1,a\n",
    ],
)
def test_a_roster_that_would_mix_teams_is_refused(text: str, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(text)
    with pytest.raises(UserError, match="roster.csv"):
        read_roster(roster)


def test_two_folders_can_never_write_one_teams_result(tasks: Path, tmp_path: Path) -> None:
    one = make_submission(tmp_path / "a", "same", task="tiny", save=False)
    two = make_submission(tmp_path / "b", "same", task="tiny", save=False)
    with pytest.raises(UserError, match="both be graded as team 'same'"):
        check_unique([one, two], Identity())
    results = tmp_path / "results"
    with pytest.raises(UserError):
        grade([one, two], options=GradeOptions(sandbox="process", results_dir=results))
    assert not results.exists()  # refused before anything was written
    weird = [tmp_path / "c" / "Team Seven", tmp_path / "c" / "Team_Seven"]
    teams = {Identity().team_of(p).name for p in weird}
    assert len(teams) == 2


@pytest.mark.parametrize("value", ["..", ".", "../x", "/abs", "a/b", "", "a" * 65, "-x"])
def test_no_path_is_built_from_an_unchecked_name(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        path_component(value, "team")
    with pytest.raises(ValueError):
        result_path(tmp_path, value, "team")
    with pytest.raises(ValueError):
        ResultsStore(tmp_path).record(ResultDocument(task="t", team=value, status="invalid"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".grades.sqlite.init.lock",
        "grades.sqlite",
    ]


def test_a_secret_seed_may_be_any_string() -> None:
    assert seed_of("1234") == 1234  # an integer keeps its old hidden split
    word = seed_of("course-secret-2026")
    assert word == seed_of("course-secret-2026") != seed_of("course-secret-2027")
    assert 0 <= word < 2**64


def test_the_leaderboard_renders_every_known_task_and_lists_what_it_ignored(
    tasks: Path, tmp_path: Path
) -> None:
    from harness.cli import cli
    from harness.results import write_result

    results = tmp_path / "results"
    write_result(
        results, ResultDocument(task="tiny", team="t1", status="graded", metrics={"mse": 0.1})
    )
    write_result(results, ResultDocument(task="ghost", team="t2", status="graded"))
    (results / "tiny" / "t3").mkdir()
    (results / "tiny" / "t3" / "result.json").write_text("{not json")
    out = tmp_path / "site"
    run = CliRunner().invoke(cli, ["leaderboard", "--results", str(results), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert (out / "task-tiny.html").is_file()
    assert "ignored" in run.output and "ghost" in run.output and "t3" in run.output


def test_student_visible_messages_never_carry_the_environment(
    tasks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.sandbox.process import ProcessBackend
    from harness.stages import document
    from harness.stages.records import sandbox_info

    monkeypatch.setenv("HARNESS_SECRET_SEED", "course-secret-2026")
    monkeypatch.setenv("SOME_TOKEN", "tok-8c1f2e9a")
    folder = make_submission(tmp_path / "subs", "team1", task="tiny", save=False)
    sub = load_submission(folder, tasks_dir=tasks)
    doc = document.build(
        sub,
        "grade",
        sandbox_info(ProcessBackend(fork=False)),
        document.no_notes(sub),
        status="failed",
        message="export failed: HARNESS_SECRET_SEED=course-secret-2026 tok-8c1f2e9a",
        stage="export",
    )
    assert "course-secret-2026" not in doc.message and "tok-8c1f2e9a" not in doc.message
    assert "[redacted]" in doc.message


def test_quota_never_aborts_a_batch(tasks: Path, tmp_path: Path) -> None:
    """A team over its quota with no earlier result gets a document saying so; the
    others are graded (no sandbox is needed to see it: the quota is checked first)."""
    text = (tasks / "tiny" / "task.toml").read_text()
    (tasks / "tiny" / "task.toml").write_text(
        text.replace("[grading]\n", "[grading]\ndaily_quota = 1\n")
    )
    results = tmp_path / "results"
    store = ResultsStore(results)
    for team in ("q1", "q2"):
        store.record(ResultDocument(task="tiny", team=team, status="graded", cache_key=team))
        (results / "tiny" / team / "result.json").unlink()
    folders = [make_submission(tmp_path / "subs", t) for t in ("q1", "q2")]
    docs = grade(
        folders, options=GradeOptions(sandbox="process", results_dir=results, tasks_dir=tasks)
    )
    for doc in docs:
        assert doc.status == "invalid" and doc.stage == "quota"
        assert [v.rule for v in doc.violations] == ["quota.daily"]
        assert "hidden-set grading" in doc.message
        assert doc.cache_key == ""  # a refusal is never reused as a grading


def test_a_report_that_cannot_be_drawn_is_a_note(tmp_path: Path) -> None:
    from harness.guard import guarded_step

    doc = ResultDocument(task="tiny", team="t", status="graded")

    def boom() -> None:
        raise OverflowError("cannot convert float infinity to integer")

    assert guarded_step(doc, "report", boom) is False
    [flag] = doc.flags
    assert flag.code == "step_failed" and "report stage failed: OverflowError" in flag.message


# -- the host never follows a link from a sandbox -----------------------------------------


def test_removing_a_workspace_follows_no_link_at_any_depth(tmp_path: Path) -> None:
    from harness.safefs import remove_tree
    from harness.staging import Workspace

    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o1700)
    (target / "keep").write_text("keep")
    os.chmod(target / "keep", 0o600)
    ws = Workspace.create()
    out = ws.output("out")
    (out / "link").symlink_to(target)
    (out / "file_link").symlink_to(target / "keep")
    (out / "loop").symlink_to(".")
    deep = out
    for _ in range(1500):  # deeper than any recursion limit
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "x").write_text("x")
    locked = out / "locked"
    locked.mkdir()
    (locked / "inner").write_text("x")
    os.chmod(locked, 0)
    ws.close()
    assert not ws.root.exists()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o1700
    assert stat.S_IMODE(os.stat(target / "keep").st_mode) == 0o600
    assert (target / "keep").read_text() == "keep"
    remove_tree(tmp_path / "absent")  # nothing to do


def test_output_readers_refuse_links_and_deep_trees(tmp_path: Path) -> None:
    from harness.outputs import BadOutput, read_predictions, read_report
    from harness.safefs import NotPlain, TreeTooLarge, open_under, plain_file, walk
    from harness.sandbox.confine import folder_size

    secret = tmp_path / "secret.json"
    secret.write_text('{"ok": true}')
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").symlink_to(secret)
    (out / "predictions.npy").symlink_to(secret)
    (out / "probe").symlink_to(tmp_path)
    assert read_report(out) is None
    with pytest.raises(BadOutput):
        read_predictions(out, 1, "regression", 1)
    with pytest.raises(NotPlain):
        open_under(out, "probe/secret.json")
    with pytest.raises(NotPlain):
        plain_file(out, out / "probe" / "secret.json")
    os.mkfifo(out / "fifo")
    with pytest.raises(NotPlain):
        open_under(out, "fifo")  # never blocks
    deep = out
    for _ in range(100):
        deep = deep / "d"
        os.mkdir(deep)
    with pytest.raises(TreeTooLarge, match="nested"):
        list(walk(out, max_depth=32))
    assert folder_size(out) > 2**60  # past the caps: over any output limit


def test_a_folder_too_deep_to_walk_is_invalid_not_a_stopped_batch(
    tasks: Path, tmp_path: Path
) -> None:
    deep = make_submission(tmp_path / "subs", "deep", save=False)
    other = make_submission(tmp_path / "subs", "other_team", task="nope", save=False)
    from harness.safefs import remove_tree

    level = deep / "tree"
    try:
        for _ in range(1500):
            level = level / "d"
            os.makedirs(level)
        options = GradeOptions(sandbox="process", results_dir=tmp_path / "results", tasks_dir=tasks)
        docs = {d.team: d for d in grade([deep, other], options=options)}
    finally:
        remove_tree(deep / "tree")  # pytest's own cleanup recurses: never leave it the tree
    assert docs["deep"].status == docs["other_team"].status == "invalid"
    assert docs["deep"].stage != "harness"


def test_the_gradebook_csv_neutralises_formulas_students_wrote() -> None:
    """``members`` come from the manifest: in the gradebook they are text, never a formula."""
    from harness.gradebook import COLUMNS, gradebook_csv

    row = {column: "" for column in COLUMNS}
    row.update(team="team-a", members='=HYPERLINK("http://x","y"); @SUM(1)', note="+cmd")
    text = gradebook_csv([row])
    line = text.splitlines()[1]
    assert "'=HYPERLINK" in line and "'+cmd" in line
    assert ",=" not in line and ',"=' not in line


def test_a_task_page_renders_whatever_values_its_results_hold(tasks: Path, tmp_path: Path) -> None:
    from harness.report import render_site
    from harness.results import write_result

    results = tmp_path / "results"
    for i, value in enumerate([1e308, -1e308, 1e-320, 0.1]):
        metrics = {"mse": value, "mae": value}
        write_result(
            results,
            ResultDocument(
                task="tiny",
                team=f"t{i}",
                status="graded",
                metrics=metrics,
                intervals={"mse": [value, -value]},
                views={"public": metrics},
            ),
        )
    problems: list[tuple[str, str]] = []
    written = render_site(results, tmp_path / "site", problems=problems)
    assert problems == []
    assert tmp_path / "site" / "task-tiny.html" in written


def test_the_cli_takes_task_and_roster(tasks: Path, tmp_path: Path) -> None:
    from harness.cli import cli

    make_submission(tmp_path / "subs", "f1", save=False)
    make_submission(tmp_path / "subs", "f2", save=False)
    subs, results = str(tmp_path / "subs"), str(tmp_path / "results")
    run = CliRunner().invoke(cli, ["--task", "nope", subs, "--results", results])
    assert run.exit_code == 2 and "'nope' is not a task id" not in run.output
    assert "unknown task 'nope'" in run.output
    roster = tmp_path / "roster.csv"
    roster.write_text("folder,team\nf1,same\nf2,same\n")
    run = CliRunner().invoke(cli, ["--roster", str(roster), subs, "--results", results])
    assert run.exit_code == 2 and "already the team of line 2" in run.output
    assert not (tmp_path / "results").exists()


@pytest.mark.bwrap
@pytest.mark.slow
class TestBwrapServed(BatchChecks):
    backend = "bwrap"
    served = True


@pytest.mark.docker
@pytest.mark.slow
class TestDockerServed(BatchChecks):
    backend = "docker"
    served = True
