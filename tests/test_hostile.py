"""The hostile corpus (``tests/hostile/build_corpus.py``), graded as ONE batch with honest
submissions on each isolated backend.

Per backend and case: the status the contract gives it and a message the student
understands. Per backend: the batch went on; the honest submissions score exactly what
they score alone; nothing was written outside the sandboxes' output folders (payload
targets, the corpus, the prepared data, the results folder); the host survived (a canary
process of the sandbox's own user is alive, no container is left behind).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hostile.build_corpus import CASES, QUICK_TASK_ID, TASK_ID, Case, build, write_tasks
from kit.served import through_grade_serve

from harness.api import GradeOptions, grade
from harness.results import ResultDocument
from harness.settings import settings

pytestmark = pytest.mark.slow  # two batches of 28 submissions: a few minutes

HONEST = ("upright_a", "upright_b")  # not the trust corpus's names: the docker check is by team


@dataclass
class Corpus:
    root: Path
    folders: dict[str, Path]
    markers: Path
    tasks: Path


@dataclass
class Batch:
    backend: str
    docs: dict[str, ResultDocument]
    alone: dict[str, ResultDocument]
    results: Path
    changed: list[str]  # files of the corpus or of the prepared data that changed
    canary_alive: bool


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("hostile")
    markers = root / "markers"
    markers.mkdir()
    tasks = root / "tasks"
    write_tasks(tasks)
    folders = build(root / "submissions", markers=markers, results=root / "results-docker")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_TASKS", str(tasks))
        mp.setenv("HARNESS_CACHE", str(root / "cache"))
        mp.setenv("HARNESS_SECRET_SEED", "4242")
        settings.cache_clear()
        yield Corpus(root, folders, markers, tasks)
    settings.cache_clear()


def _fingerprint(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                found[str(path)] = "link:" + os.readlink(path)
            elif path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="class")
def batch(request: pytest.FixtureRequest, corpus: Corpus) -> Iterator[Batch]:
    name = request.cls.backend
    results = corpus.root / f"results-{name}{'-served' * request.cls.served}"
    options = GradeOptions(
        sandbox=name, results_dir=results, tasks_dir=corpus.tasks, reports=False, force=True
    )
    # two at a time: the batch goes on around a submission that hangs or floods
    # the honest ones alone first (this also prepares the data the batch will use)
    alone = {
        doc.team: doc
        for doc in grade(
            [corpus.folders[n] for n in HONEST],
            options=replace(options, results_dir=results / "alone"),
        )
    }
    before = _fingerprint(corpus.root / "submissions", corpus.root / "cache")
    canary = subprocess.Popen(["sleep", "3600"], user=65534 if os.geteuid() == 0 else None)
    try:
        with through_grade_serve(request.cls.served):
            docs = grade(list(corpus.folders.values()), options=replace(options, jobs=2))
        alive = canary.poll() is None
    finally:
        canary.kill()
        canary.wait()
    after = _fingerprint(corpus.root / "submissions", corpus.root / "cache")
    # what existed must be unchanged; new files may only be the harness's own data cache
    changed = sorted(k for k in before if before[k] != after.get(k))
    changed += sorted(k for k in after.keys() - before.keys() if "/submissions/" in k)
    yield Batch(name, {d.team: d for d in docs}, alone, results, changed, alive)


class BatchChecks:
    """The assertions on one backend's batch. Each subclass is its own xdist scope
    (``--dist loadscope``): the batches grade on different workers."""

    backend: str
    served = False  # True: through a `grade serve`'s warm sandboxes

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_each_case_ends_with_its_status_and_a_plain_message(
        self, batch: Batch, case: Case
    ) -> None:
        doc = batch.docs[case.name]
        allowed = case.integrity or (case.expect,)
        assert doc.status in allowed, f"{batch.backend}/{case.name}: {doc.status}: {doc.message}"
        assert doc.stage != "harness", doc.message
        if doc.status == case.expect:
            assert case.says in doc.message
        if doc.status != "graded":
            assert doc.message and "Traceback" not in doc.message and len(doc.message) < 600
        if doc.params.counted is not None and doc.params.weights_file is not None:
            assert doc.params.counted >= doc.params.weights_file - doc.params.buffers
        assert (doc.params.counted or 0) >= case.counted_at_least

    def test_the_whole_batch_was_graded(self, batch: Batch) -> None:
        assert sorted(batch.docs) == sorted(c.name for c in CASES)
        on_disk = sorted(p.parent.name for p in batch.results.glob("*/*/result.json"))
        assert on_disk == sorted(c.name for c in CASES)

    def test_honest_submissions_score_as_they_do_alone(self, batch: Batch) -> None:
        for name in HONEST:
            together, alone = batch.docs[name], batch.alone[name]
            assert together.status == alone.status == "graded", together.message
            assert together.metrics == alone.metrics
            assert together.intervals == alone.intervals
        # the same weights give the same scores, whatever else the submission did
        same = ("honest_pt", "fake_result", "kill_parent", "write_outside", "network")
        for name in same:
            assert batch.docs[name].metrics == batch.docs["upright_a"].metrics, name

    def test_nothing_is_written_outside_the_output_folders(
        self, batch: Batch, corpus: Corpus
    ) -> None:
        assert list(corpus.markers.iterdir()) == []  # payloads aimed here
        assert batch.changed == []  # the corpus and the prepared inputs and labels
        assert not Path("/tmp/pickle_ran").exists() and not Path("/pwned").exists()
        fake = batch.results / TASK_ID / "fake_result" / "result.json"
        assert batch.docs["fake_result"].metrics["mse"] > 0
        assert ResultDocument.model_validate_json(fake.read_text()).metrics["mse"] > 0
        tasks = {p.name for p in batch.results.iterdir() if p.is_dir()} - {"alone"}
        assert tasks == {TASK_ID, QUICK_TASK_ID}

    def test_the_host_survives(self, batch: Batch) -> None:
        assert batch.canary_alive
        if batch.backend == "docker":
            import docker

            client = docker.from_env()
            left = client.containers.list(all=True, filters={"label": "harness.sandbox"})
            assert [c for c in left if c.labels.get("harness.sandbox") in batch.docs] == []


@pytest.mark.bwrap
class TestBwrap(BatchChecks):
    backend = "bwrap"


@pytest.mark.docker
class TestDocker(BatchChecks):
    backend = "docker"


@pytest.mark.bwrap
class TestBwrapServed(BatchChecks):
    backend = "bwrap"
    served = True


@pytest.mark.docker
class TestDockerServed(BatchChecks):
    backend = "docker"
    served = True
