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

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from .sandbox import Backend, RunJob, RunOutcome, SandboxPolicy


class _Closable(Protocol):
    def close(self) -> None: ...


W = TypeVar("W", bound=_Closable)


class _Pool(Generic[W]):
    """One warm sandbox per policy, opened on first use."""

    def __init__(self, open_one: Callable[[SandboxPolicy], W]) -> None:
        self._open_one = open_one
        self._open: dict[SandboxPolicy, W] = {}
        self._lock = threading.Lock()

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


class WarmSandboxes:
    """``predict`` for phase-B jobs, ``run`` for the submissions' own runs."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._predictors = _Pool(backend.predictor)
        self._runners = _Pool(backend.runner)

    def predict(self, job: RunJob) -> RunOutcome:
        return self._predictors.get(job.policy).predict(job)

    def run(self, job: RunJob) -> RunOutcome:
        return self._runners.get(job.policy).run(job)

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
