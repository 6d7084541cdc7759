"""The batch's warm predictors: phase B of every submission in a batch goes through one
predictor per sandbox policy (a task's limits), so bwrap and docker start one interpreter
(and, on a GPU, one CUDA context) per batch rather than per submission. Phase B runs only
host-checked programs, never submission code; a program that crashes or hangs a
predictor costs only its own team (the backend's predictor restarts for the next)."""

from __future__ import annotations

import threading
from types import TracebackType

from .sandbox import Backend, Predictor, RunJob, RunOutcome, SandboxPolicy


class Predictors:
    """Callable as ``predict_with``: routes each phase-B job to its policy's predictor."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._open: dict[SandboxPolicy, Predictor] = {}
        self._lock = threading.Lock()

    def __call__(self, job: RunJob) -> RunOutcome:
        with self._lock:
            predictor = self._open.get(job.policy)
            if predictor is None:
                predictor = self._open[job.policy] = self.backend.predictor(job.policy)
        return predictor.predict(job)

    def close(self) -> None:
        with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for predictor in open_now:
            predictor.close()

    def __enter__(self) -> Predictors:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
