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
