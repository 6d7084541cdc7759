"""The batch's warm sandboxes, per kind and sandbox policy (a task's limits):

- phase B of every submission goes through the backend's predictors, so bwrap and docker
  start one interpreter (and, on a GPU, one CUDA context) per predictor rather than one
  per submission; they run only host-checked programs, never submission code. On a CPU a
  policy gets one predictor per grading at once (``--jobs``): each serves one request at
  a time on its share of the cores, so the cores are all busy; on a GPU one predictor
  holds the batch's one CUDA context;
- the submissions' own runs (convert, export, rebuild) go through the backend's runners,
  for bwrap and docker a zygote that imports torch once and forks each run into the
  sandbox on its own (``sandbox/zygote.py``); one per four gradings at once, since its
  runs are short and each zygote imports torch. The process backend's runs each fork from
  its one pre-imported server already (``PerRun``): they go on at once, never queued.

A program or a submission that crashes or hangs a warm sandbox costs only its own team:
the next job starts a fresh one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from .sandbox import Backend, Predictor, RunJob, Runner, RunOutcome, SandboxPolicy


class _Warm(Protocol):
    def close(self) -> None: ...


W = TypeVar("W", bound=_Warm)


class _Pool(Generic[W]):
    """Up to ``size(policy)`` warm sandboxes per policy, each given one job at a time: a
    job takes an idle one, else opens one while fewer are open, else waits. One that is
    ``parallel`` (each job its own run: ``PerRun``) serves every job of its policy at once."""

    def __init__(
        self, open_one: Callable[[SandboxPolicy], W], size: Callable[[SandboxPolicy], int]
    ) -> None:
        self._open_one, self._size = open_one, size
        self._idle: dict[SandboxPolicy, list[W]] = {}
        self._all: dict[SandboxPolicy, list[W]] = {}
        self._free = threading.Condition()

    @contextlib.contextmanager
    def one(self, policy: SandboxPolicy) -> Iterator[W]:
        warm = self._take(policy)
        try:
            yield warm
        finally:
            if not _parallel(warm):
                with self._free:
                    self._idle.setdefault(policy, []).append(warm)
                    self._free.notify()

    def open_all(self, policy: SandboxPolicy) -> list[W]:
        """Open what ``policy`` may have and has not yet (idle); the ones opened now."""
        with self._free:
            idle, every = self._lists(policy)
            opened = [self._open_one(policy) for _ in range(self._size(policy) - len(every))]
            idle.extend(opened)
            every.extend(opened)
            return opened

    def _take(self, policy: SandboxPolicy) -> W:
        with self._free:
            idle, every = self._lists(policy)
            if every and _parallel(every[0]):
                return every[0]
            while not idle and len(every) >= max(1, self._size(policy)):
                self._free.wait()
            if idle:
                return idle.pop(0)  # the longest idle: the first opened, the first ready
            warm = self._open_one(policy)
            every.append(warm)
            return warm

    def _lists(self, policy: SandboxPolicy) -> tuple[list[W], list[W]]:
        return self._idle.setdefault(policy, []), self._all.setdefault(policy, [])

    def take_all(self) -> list[W]:
        """Every sandbox opened, which the pool forgets: the caller closes them."""
        with self._free:
            open_now = [w for warms in self._all.values() for w in warms]
            self._idle, self._all = {}, {}
        return open_now


def close_all(warms: list[W]) -> None:
    """Close ``warms`` at once, one thread each: a container's kill and removal waits on
    the engine (about 0.12 s each on the benchmark's machine), so three closed in turn
    were the last 0.38 s of a docker batch. The first failure is raised once all are
    closed."""
    if not warms:
        return
    with ThreadPoolExecutor(len(warms), thread_name_prefix="warm-close") as pool:
        closing = [pool.submit(warm.close) for warm in warms]
    for done in closing:
        done.result()


def _parallel(warm: _Warm) -> bool:
    return bool(getattr(warm, "parallel", False))


IMPORT_WAIT_SECONDS = 30.0  # then the next predictor starts anyway (a loaded machine)


def _start_in_turn(predictors: list[Predictor]) -> None:
    for predictor in predictors:
        _quietly(predictor.start)
        with contextlib.suppress(Exception):
            predictor.ready(IMPORT_WAIT_SECONDS)


def _quietly(start: Callable[[], None]) -> None:
    """A start in the background: what fails here fails again, and is reported, on use."""
    with contextlib.suppress(Exception):
        start()


class WarmSandboxes:
    """``predict`` for phase-B jobs, ``run`` for the submissions' own runs; ``jobs``:
    the gradings at once (the module's docstring says how many sandboxes that opens)."""

    def __init__(self, backend: Backend, jobs: int = 1, preload: tuple[str, ...] = ()) -> None:
        """``preload``: the optional libraries the batch's code imports, which its runners
        import ahead (``harness/preloads.py``)."""
        self.backend = backend
        self.jobs = max(1, jobs)
        self.preload = preload
        self._predictors: _Pool[Predictor] = _Pool(backend.predictor, self._predictors_for)
        self._runners: _Pool[Runner] = _Pool(
            lambda p: backend.runner(p, preload), lambda p: max(1, self.jobs // 4)
        )

    def _predictors_for(self, policy: SandboxPolicy) -> int:
        return 1 if policy.gpu else self.jobs

    def predict(self, job: RunJob) -> RunOutcome:
        with self._predictors.one(job.policy) as predictor:
            return predictor.predict(job)

    def run(self, job: RunJob) -> RunOutcome:
        with self._runners.one(job.policy) as runner:
            return runner.run(job)

    def prewarm(self, policy: SandboxPolicy) -> None:
        """Start the predictors ``policy`` may have in the background, one after another:
        each imports torch while the first submissions' own runs go on, once the one
        before it has. Started at once, they and the runner's zygote (whose imports the
        first program waits for) would share the cores three ways or more."""
        opened = self._predictors.open_all(policy)
        if opened:
            threading.Thread(target=_start_in_turn, args=(opened,), daemon=True).start()

    def close(self) -> None:
        warms: list[_Warm] = [*self._runners.take_all(), *self._predictors.take_all()]
        close_all(warms)

    def __enter__(self) -> WarmSandboxes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
