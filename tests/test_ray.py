"""The Ray executor on a real local Ray instance (one per module, 2 CPUs): its documents
equal the local executor's, the node prepares a split once for all its gradings, and the
CLI joins a running cluster by address and takes stored gradings from the store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from kit import TINY_MODEL, make_submission, write_task

from harness.api import GradeOptions, grade
from harness.executors import RayExecutor
from harness.store import ResultsStore
from harness.submission import find_submissions

pytestmark = pytest.mark.slow

# what may differ between two gradings of one submission: when, how long, and the
# submission's own traceback text (it names temporary folders)
VOLATILE = {"graded_at", "timing", "student_output"}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    import ray

    node_cache = tmp_path_factory.mktemp("node-cache")
    with pytest.MonkeyPatch.context() as mp:  # the node's environment, inherited by workers
        mp.setenv("HARNESS_CACHE", str(node_cache))  # its own cache, not the driver's
        mp.setenv("HARNESS_SECRET_SEED", "99")  # the same secret as the driver (conftest)
        info = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield SimpleNamespace(address=info.address_info["address"], cache=node_cache)
    ray.shutdown()


def _options(results: Path, tasks: Path, **kw: object) -> GradeOptions:
    return GradeOptions(
        sandbox="process",
        results_dir=results,
        reports=False,
        tasks_dir=tasks,
        **kw,  # type: ignore[arg-type]
    )


def test_a_ray_batch_equals_the_local_executor(
    env: Path, tmp_path: Path, ray_cluster: SimpleNamespace
) -> None:
    write_task(env, "tinyray")  # a task of its own: the node has not prepared it yet
    subs = tmp_path / "subs"
    make_submission(subs, "good0", task="tinyray", seed=0)
    make_submission(subs, "good1", task="tinyray", seed=1)
    crash = make_submission(subs, "crash", task="tinyray", save=False,
                            model_src=TINY_MODEL + "\nraise RuntimeError('boom')\n")  # fmt: skip
    (crash / "weights.safetensors").write_bytes(
        (subs / "good0" / "weights.safetensors").read_bytes()
    )
    make_submission(subs, "invalid", task="tinyray", save=False)  # no weights file
    folders = find_submissions([subs])

    t0 = time.monotonic()
    local = grade([subs], options=_options(tmp_path / "local", env))
    t1 = time.monotonic()
    executor = RayExecutor()
    rayed = executor.run(
        folders, options=_options(tmp_path / "ray", env, executor="ray"), mode="grade",
        on_done=None,
    )  # fmt: skip
    print(f"\n4 submissions: local {t1 - t0:.1f} s, ray {time.monotonic() - t1:.1f} s")

    assert [d.team for d in rayed] == [d.team for d in local]
    assert {d.team: d.status for d in rayed} == {
        "crash": "failed", "good0": "graded", "good1": "graded", "invalid": "invalid"}  # fmt: skip
    for ours, theirs in zip(rayed, local, strict=True):
        assert ours.model_dump(exclude=VOLATILE) == theirs.model_dump(exclude=VOLATILE)
    assert "boom" in next(d for d in rayed if d.team == "crash").student_output
    # three gradings ran on the one node; it prepared the hidden split once, in its cache
    assert list(executor.prepared.values()) == [1]
    assert len(list((ray_cluster.cache / "tinyray").glob("test-*/prepared.json"))) == 1
    store = ResultsStore(tmp_path / "ray")
    for doc in rayed:
        [row] = store.history(doc.team)
        assert row.executor == "ray" and row.document() == doc
        assert row.document().submission_path == str(subs / doc.team)  # type: ignore[union-attr]


def test_the_cli_joins_a_cluster_by_address_and_reuses_stored_gradings(
    env: Path, tmp_path: Path, ray_cluster: SimpleNamespace
) -> None:
    subs = tmp_path / "subs"
    make_submission(subs, "team0", seed=0)
    make_submission(subs, "team1", seed=1)
    results = tmp_path / "results"
    [stored] = grade([subs / "team0"], options=_options(results, env))
    argv = [sys.executable, "-m", "harness.cli", str(subs), "--executor", "ray",
            "--address", ray_cluster.address, "--sandbox", "process", "--no-reports",
            "--results", str(results), "--json"]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    docs = {d["team"]: d for d in json.loads(run.stdout)}  # stdout holds only the JSON
    assert docs["team0"]["graded_at"] == stored.graded_at  # from the store: not sent to Ray
    assert docs["team1"]["status"] == "graded"
    store = ResultsStore(results)
    assert [r.executor for r in store.history("team0")] == ["local"]
    assert [r.executor for r in store.history("team1")] == ["ray"]
