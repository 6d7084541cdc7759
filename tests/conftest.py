from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import write_task

from harness.settings import settings


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


# The longest xdist scopes first (``--dist loadscope`` hands scopes out in collection
# order): a long scope started last would hold one worker while the other sits idle.
# Longest-first, from the `--durations` of a whole run (tests/README.md).
SLOW_FIRST = (
    "tests/test_real_models.py::TestProcessZoo",
    "tests/test_new_task_doc.py",
    "tests/test_hostile.py::TestDocker",
    "tests/test_hostile.py::TestBwrap",
    "tests/test_real_models.py::TestBwrapZoo",
    "tests/test_integrity.py",
    "tests/test_trust.py::TestDocker",
    "tests/test_validate_references.py",
    "tests/test_fashion_mnist.py",
    "tests/test_trust.py::TestBwrap",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, scope in enumerate(SLOW_FIRST) if item.nodeid.startswith(scope)),
            len(SLOW_FIRST),
        )

    items.sort(key=rank)  # stable: the rest keep their order
