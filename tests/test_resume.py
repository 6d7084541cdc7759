"""Crash safety of real batches: a real SIGKILL of a real ``grade`` process, then the same
command again; two ``grade`` processes on one results folder; documents damaged on disk.
Every grading runs the submission on ``--sandbox process``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from kit import make_submission

from harness.api import GradeOptions, grade
from harness.cli import cli
from harness.results import read_result
from harness.store import ResultsStore


def _argv(subs: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", str(subs), "--sandbox", "process",
            "--no-reports", "--results", str(results), "--json"]  # fmt: skip


def _environ(tmp_path: Path) -> dict[str, str]:
    """The test's environment (tasks, cache, secret seed); temporary folders in tmp_path."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def _rows(store: ResultsStore, teams: list[str]) -> dict[str, list]:  # type: ignore[type-arg]
    return {team: store.history(team) for team in teams}


def test_sigkill_mid_batch_then_the_same_command_grades_only_the_rest(
    env: Path, tmp_path: Path
) -> None:
    subs = tmp_path / "subs"
    teams = [f"team{i}" for i in range(4)]
    for i, team in enumerate(teams):
        make_submission(subs, team, seed=i)
    results = tmp_path / "results"
    store = ResultsStore(results)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _argv(subs, results), env=_environ(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while store.count() < 2:
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() - t0 < 300, "no grading was recorded in time"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-batch: the next grading is under way
        proc.wait()
    killed_at = time.monotonic() - t0
    before = {t: rows for t, rows in _rows(store, teams).items() if rows}
    assert 2 <= len(before) < len(teams)
    assert all(len(rows) == 1 and rows[0].document() for rows in before.values())
    for path in results.glob("tiny/*/result.json"):  # nothing half-written is on disk
        assert read_result(path) is not None, path

    t1 = time.monotonic()
    rerun = subprocess.run(
        _argv(subs, results), env=_environ(tmp_path), capture_output=True, text=True, timeout=600
    )
    rerun_s = time.monotonic() - t1
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    docs = {d["team"]: d for d in json.loads(rerun.stdout)}
    assert sorted(docs) == teams and all(d["status"] == "graded" for d in docs.values())
    after = _rows(store, teams)
    assert all(len(rows) == 1 for rows in after.values()), "a grading was recorded twice"
    for team, [row] in before.items():  # kept, not graded again
        assert after[team][0].id == row.id
        assert docs[team]["graded_at"] == row.graded_at
    newest = max(row.id for [row] in before.values())
    assert sum(rows[0].id > newest for rows in after.values()) == len(teams) - len(before)
    for team in teams:  # one document per grading on disk, and result.json agrees
        [history] = list((results / "tiny" / team / "history").glob("*.json"))
        assert read_result(history) == read_result(results / "tiny" / team / "result.json")
    print(f"\nkilled after {killed_at:.1f} s with {len(before)}/{len(teams)} recorded; "
          f"the rerun graded {len(teams) - len(before)} in {rerun_s:.1f} s")  # fmt: skip


def test_two_concurrent_runs_on_one_results_folder_grade_each_submission_once(
    env: Path, tmp_path: Path
) -> None:
    subs = tmp_path / "subs"
    teams = [f"team{i}" for i in range(3)]
    for i, team in enumerate(teams):
        make_submission(subs, team, seed=i)
    results = tmp_path / "results"
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(_argv(subs, results), env=_environ(tmp_path), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in procs]
    elapsed = time.monotonic() - t0
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    first, second = ({d["team"]: d for d in json.loads(out)} for out, _ in outputs)
    assert sorted(first) == sorted(second) == teams
    store = ResultsStore(results)
    for team in teams:
        [row] = store.history(team)  # graded by one run, reused by the other
        assert first[team]["graded_at"] == second[team]["graded_at"] == row.graded_at
        assert first[team]["metrics"] == second[team]["metrics"] == row.metrics
        assert len(list((results / "tiny" / team / "history").glob("*.json"))) == 1
    print(f"\ntwo concurrent runs of 3 submissions: {elapsed:.1f} s, {store.count()} rows")


def test_a_damaged_document_on_disk_is_detected_and_regraded(env: Path, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    teams = ["team0", "team1", "team2"]
    for i, team in enumerate(teams):
        make_submission(subs, team, seed=i)
    results = tmp_path / "results"
    options = GradeOptions(sandbox="process", results_dir=results, reports=False, tasks_dir=env)
    first = {d.team: d for d in grade([subs], options=options)}
    assert all(d.status == "graded" for d in first.values()), [d.message for d in first.values()]
    store = ResultsStore(results)
    latest = {team: results / "tiny" / team / "result.json" for team in teams}
    # team0: its recorded document and result.json truncated (a crash of the disk, say)
    [row0] = store.history("team0")
    row0.doc_path.write_text(row0.doc_path.read_text()[:100])
    latest["team0"].write_text("{")
    # team1: the recorded document edited (valid JSON, a better score); result.json too
    [row1] = store.history("team1")
    edited = row1.doc_path.read_text().replace(str(first["team1"].metrics["mse"]), "0.0001")
    row1.doc_path.write_text(edited)
    latest["team1"].write_text(edited)
    assert read_result(row1.doc_path) is not None  # only the hash can tell
    # team2: only result.json truncated; its recorded document is intact
    latest["team2"].write_text(latest["team2"].read_text()[:30])

    again = {d.team: d for d in grade([subs], options=options)}
    for team in ("team0", "team1"):  # graded again: a second row, the true score back
        old, new = store.history(team)
        assert old.document() is None and new.document() == again[team]
        assert again[team].metrics == first[team].metrics
        assert read_result(latest[team]) == again[team]
    [row2] = store.history("team2")  # restored from the intact copy, not re-graded
    assert again["team2"] == first["team2"] == row2.document()
    assert read_result(latest["team2"]) == first["team2"]

    shown = CliRunner().invoke(cli, ["history", "team1", "--results", str(results), "--json"])
    assert shown.exit_code == 0, shown.output
    assert [r["document"] for r in json.loads(shown.output)] == ["missing or changed", "intact"]
