"""How `scripts/test` spreads the suite over its xdist workers: longest work first.

xdist's ``--dist loadscope`` hands a worker a whole unit (a test class, else a module), so
the unit's class- and module-scoped fixtures (a graded corpus) are built once. Its own
order puts the units with the most tests first, which leaves the one-test units that take
minutes (the process zoo, the new-task page) for the end, on one worker while the other
waits. Here the units go out longest first, by the durations the last full run measured
(``tests/durations.json``: pytest-split's ``--store-durations``, which ``pyproject.toml``
points there), and the conformance suite's tests of one backend are a unit of their own
(one zygote each). A test the file does not know counts ``UNKNOWN_SECONDS``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS = 1.0  # a test the last run did not see
SPLIT_BY_BACKEND = ("tests/test_sandbox_conformance.py",)
BACKENDS = ("bwrap-zygote", "docker-zygote", "bwrap", "docker", "process")


def work_unit(nodeid: str) -> str:
    """The unit one worker takes whole: the test's class, else its module; in a module of
    ``SPLIT_BY_BACKEND``, a test parametrized by a backend goes with that backend's tests."""
    scope = nodeid.rsplit("::", 1)[0]
    if nodeid.split("::", 1)[0] in SPLIT_BY_BACKEND and nodeid.endswith("]"):
        param = nodeid[nodeid.rindex("[") + 1 : -1]
        for backend in BACKENDS:
            if param == backend or param.endswith(f"-{backend}"):
                return f"{scope}[{backend}]"
    return scope


def measured() -> dict[str, float]:
    """Seconds per test id (setup, call and teardown), as the last full run stored them."""
    try:
        loaded = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def longest_first(items: list[pytest.Item], seconds: dict[str, float]) -> list[pytest.Item]:
    """``items`` with whole units in order of their measured time, longest first (ties in
    collection order); each unit's tests keep their order."""
    cost: dict[str, float] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        cost[unit] = cost.get(unit, 0.0) + seconds.get(item.nodeid, UNKNOWN_SECONDS)
    rank = {unit: i for i, unit in enumerate(sorted(cost, key=lambda u: -cost[u]))}
    return sorted(items, key=lambda item: rank[work_unit(item.nodeid)])


class LongestFirst(LoadScopeScheduling):
    """``--dist loadscope`` over ``work_unit``s, in the order the workers collected them
    (``longest_first``) rather than by number of tests."""

    def __init__(self, config: pytest.Config, log: object = None) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LongestFirst | None:
    return LongestFirst(config, log) if config.getvalue("dist") == "loadscope" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler takes units in this order
        items[:] = longest_first(items, measured())
