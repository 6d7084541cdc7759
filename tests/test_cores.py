"""The cores a grading may use: the process's CPU affinity (taskset, a cpuset), or
``HARNESS_CPUS`` on a machine shared with other work; ``--jobs 0`` and the threads each
run gets follow from it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from kit.tasks import task_toml

from harness.errors import UserError
from harness.executors import jobs_for
from harness.options import GradeOptions
from harness.pipeline import share_cores
from harness.tasks import TaskSpec


def _task(cpus: float) -> TaskSpec:
    return TaskSpec.model_validate(tomllib.loads(task_toml(limits={"cpus": cpus})))


def test_harness_cpus_sets_the_jobs_and_each_runs_threads(monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CPUS", "3")
    assert jobs_for(GradeOptions(jobs=0), folders=10) == 3
    assert jobs_for(GradeOptions(jobs=0), folders=2) == 2  # never more than the folders
    assert jobs_for(GradeOptions(jobs=5), folders=10) == 5  # --jobs wins
    assert share_cores(_task(2), jobs=1).limits.cpus == 2
    assert share_cores(_task(4), jobs=1).limits.cpus == 3
    assert share_cores(_task(2), jobs=3).limits.cpus == 1
    assert share_cores(_task(0.5), jobs=3).limits.cpus == 0.5  # never raised
    monkeypatch.setenv("HARNESS_CPUS", "1")
    assert share_cores(_task(2), jobs=1).limits.cpus == 1
    assert share_cores(_task(1.5), jobs=2).limits.cpus == 1


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5", "²"])
def test_a_bad_harness_cpus_is_one_clear_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv("HARNESS_CPUS", value)
    for jobs in (0, 1):  # with --jobs N too: a setting the batch ignores is still wrong
        with pytest.raises(UserError, match="HARNESS_CPUS") as caught:
            jobs_for(GradeOptions(jobs=jobs), folders=4)
        assert caught.value.hint


def test_without_harness_cpus_the_affinity_counts_not_the_machine(monkeypatch) -> None:
    monkeypatch.delenv("HARNESS_CPUS", raising=False)
    script = (
        "from harness.executors import jobs_for\n"
        "from harness.options import GradeOptions\n"
        "print(jobs_for(GradeOptions(jobs=0), folders=64))\n"
    )
    one = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    )
    assert one.stdout.strip() == "1"
    every = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert every.stdout.strip() == str(len(os.sched_getaffinity(0)))
