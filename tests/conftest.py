from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import write_task

from harness.settings import settings, usable_cpus


def pytest_configure(config: pytest.Config) -> None:
    """No ``grade serve`` of the developer's serves the suite's runs (``test_served.py``
    starts its own): a folder that does not exist.

    In an xdist worker (``scripts/test``: one per core), this worker's share of the
    cores: its gradings split ``HARNESS_CPUS`` between their runs as on a shared machine,
    and its own math (and the commands it starts: train.py, the CLI) uses as many threads.
    Each worker otherwise takes every core for itself and they oversubscribe the CPU
    (tests/README.md, "Each worker's share of the cores"). A serial run is unchanged."""
    os.environ["HARNESS_SERVE_DIR"] = f"/nonexistent/harness-tests-{os.getpid()}"
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    share = str(max(1, usable_cpus() // int(workers)))  # of HARNESS_CPUS too, when set
    os.environ["HARNESS_CPUS"] = share
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, share)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared-data cache for the session: tiny splits are generated once."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture
def env(tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tasks folder with the tiny task, a shared data cache, a fixed secret seed."""
    tasks = tmp_path / "tasks"
    write_task(tasks)
    monkeypatch.setenv("HARNESS_TASKS", str(tasks))
    monkeypatch.setenv("HARNESS_CACHE", str(shared_cache))
    monkeypatch.setenv("HARNESS_SECRET_SEED", "99")
    settings.cache_clear()
    yield tasks
    settings.cache_clear()


# The longest xdist scopes (a module, or a class), in the order of their measured time
# (`--durations=0`, tests/README.md): handed out first, so that no long scope starts
# last and leaves the other worker idle at the end. The rest keep their order.
# `scripts/test` passes `--no-loadscope-reorder`: xdist's default hands scopes out by
# their number of tests, which put the one-test page run (70-100 s) near the end.
LONGEST_FIRST = (
    "tests/test_sandbox_conformance.py::",  # 310-340 s
    "tests/test_real_models.py::TestProcessZoo::",  # 120-160 s
    "tests/test_new_task_doc.py::",  # 70-100 s
    "tests/test_predictor.py::",  # 70 s
    "tests/test_hostile.py::TestBwrap::",  # 55-80 s
    "tests/test_hostile.py::TestDocker::",  # 55-65 s
    "tests/test_validate_references.py::",  # 55 s
    "tests/test_integrity.py::",  # 40 s
    "tests/test_fashion_mnist.py::",  # 30 s
    "tests/test_real_models.py::TestBwrapZoo::",  # 25-40 s
    "tests/test_trust.py::TestDocker::",  # 25 s
    "tests/test_gradescope_autograder.py::",  # 25 s
    "tests/test_trust.py::TestBwrap::",  # 20 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        found = [i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)]
        return found[0] if found else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each scope's tests stay in their order
