"""The batch's warm sandboxes, one per kind and sandbox policy (a task's limits):

- phase B of every submission goes through the backend's predictor, so bwrap and docker
  start one interpreter (and, on a GPU, one CUDA context) per batch rather than per
  submission; it runs only host-checked programs, never submission code;
- the submissions' own runs (convert, export, rebuild) go through the backend's runner,
  for bwrap and docker a zygote that imports torch once and forks each run into the
  sandbox on its own (``sandbox/zygote.py``).

A program or a submission that crashes or hangs a warm sandbox costs only its own team:
the next job starts a fresh one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from .sandbox import Backend, RunJob, Runner, RunOutcome, SandboxPolicy


class _Closable(Protocol):
    def close(self) -> None: ...


W = TypeVar("W", bound=_Closable)


class _Pool(Generic[W]):
    """One warm sandbox per policy, opened on first use."""

    def __init__(self, open_one: Callable[[SandboxPolicy], W]) -> None:
        self._open_one = open_one
        self._open: dict[SandboxPolicy, W] = {}
        self._lock = threading.Lock()

    def opened(self, policy: SandboxPolicy) -> bool:
        with self._lock:
            return policy in self._open

    def get(self, policy: SandboxPolicy) -> W:
        with self._lock:
            warm = self._open.get(policy)
            if warm is None:
                warm = self._open[policy] = self._open_one(policy)
            return warm

    def close(self) -> None:
        with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for warm in open_now:
            warm.close()


class _Runners:
    """Up to ``size`` runners per policy, each serving one run at a time: a run takes an
    idle one, else opens one while fewer than ``size`` are open, else waits."""

    def __init__(self, open_one: Callable[[SandboxPolicy], Runner], size: int) -> None:
        self._open_one, self.size = open_one, max(1, size)
        self._idle: dict[SandboxPolicy, list[Runner]] = {}
        self._all: dict[SandboxPolicy, list[Runner]] = {}
        self._free = threading.Condition()

    def run(self, job: RunJob) -> RunOutcome:
        runner = self._take(job.policy)
        try:
            return runner.run(job)
        finally:
            with self._free:
                self._idle[job.policy].append(runner)
                self._free.notify()

    def _take(self, policy: SandboxPolicy) -> Runner:
        with self._free:
            idle, every = self._idle.setdefault(policy, []), self._all.setdefault(policy, [])
            while not idle and len(every) >= self.size:
                self._free.wait()
            if idle:
                return idle.pop()
            runner = self._open_one(policy)
            every.append(runner)
            return runner

    def close(self) -> None:
        with self._free:
            open_now = [r for runners in self._all.values() for r in runners]
            self._idle, self._all = {}, {}
        for runner in open_now:
            runner.close()


def _quietly(start: Callable[[], None]) -> None:
    """A start in the background: what fails here fails again, and is reported, on use."""
    with contextlib.suppress(Exception):
        start()


class WarmSandboxes:
    """``predict`` for phase-B jobs (one predictor per policy: one CUDA context), ``run``
    for the submissions' own runs (``runners`` zygotes per policy at most: each imports
    torch once, so a few serve a batch; more let runs of big models overlap)."""

    def __init__(self, backend: Backend, runners: int = 1) -> None:
        self.backend = backend
        self._predictors = _Pool(backend.predictor)
        self._runners = _Runners(backend.runner, runners)

    def predict(self, job: RunJob) -> RunOutcome:
        return self._predictors.get(job.policy).predict(job)

    def prewarm(self, policy: SandboxPolicy) -> None:
        """Start the predictor for ``policy`` in the background, if none is open: its
        sandbox imports torch while the first submissions' own runs go on."""
        if not self._predictors.opened(policy):
            predictor = self._predictors.get(policy)
            threading.Thread(target=_quietly, args=(predictor.start,), daemon=True).start()

    def run(self, job: RunJob) -> RunOutcome:
        return self._runners.run(job)

    def close(self) -> None:
        self._runners.close()
        self._predictors.close()

    def __enter__(self) -> WarmSandboxes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
