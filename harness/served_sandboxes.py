"""bwrap's and docker's warm sandboxes kept by ``grade serve`` between commands.

A batch's warm sandboxes (``warm.py``: the zygote that forks the submissions' own runs,
the predictors of phase B) start with the command and close with it: each command pays
their start, seconds of ``import torch`` and of the export stack. With ``grade serve``
running, a command hands each run to the daemon instead (``ServedSandboxes``); the
daemon keeps one ``WarmSandboxes`` per backend and preloads (``Broker``) and runs the job
through it, exactly as the command would through its own: the same backend code (the
socket's name carries a digest of all of the harness's code, ``sandbox/served.py``), the
same policy (the job's own), the same folders (the command's; the daemon is the same
user). Runs of different commands go through one warm sandbox one after another, as runs
of different teams of one batch do; what a sandbox promises between two runs
(``sandbox/zygote.py``, ``sandbox/predictor.py``) is what it promises here.

The command falls back to sandboxes of its own, for the batch's rest, when the daemon
does not answer, fails an operation, or the job needs the GPU (a daemon holding a CUDA
context between commands would hold its memory too). The daemon enforces each run's wall
clock and caps itself; the command waits for its answer up to a bound of its own."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from .runner.emptying import empty_folder
from .sandbox import Backend, RunJob, RunOutcome, SandboxPolicy, get_backend, served
from .warm import WarmSandboxes

SERVED_BACKENDS = ("bwrap", "docker")  # the process backend's are its fork servers
ANSWER_MARGIN_SECONDS = 600.0  # over twice a run's wall clock: a slot, a sandbox's start


def warm_sandboxes(backend: Backend, jobs: int, preload: tuple[str, ...]) -> WarmSandboxes:
    """The batch's warm sandboxes: ``grade serve``'s when one answers for ``backend``."""
    if backend.name in SERVED_BACKENDS and served.may_answer():  # no describe() otherwise
        served_ones = ServedSandboxes(backend, jobs=jobs, preload=preload)
        if served_ones.answers():
            return served_ones
    return WarmSandboxes(backend, jobs=jobs, preload=preload)


class ServedSandboxes(WarmSandboxes):
    """``WarmSandboxes`` whose jobs ``grade serve`` runs; its own (the parent's) for GPU
    jobs, and for every job once the daemon failed one."""

    def __init__(self, backend: Backend, jobs: int = 1, preload: tuple[str, ...] = ()) -> None:
        super().__init__(backend, jobs=jobs, preload=preload)
        self._gone = threading.Event()
        self._described: dict[str, str] | None = None

    def answers(self) -> bool:
        """Whether the daemon serves this backend as this command would run it."""
        self._described = self.backend.describe()
        return self._ask({"op": "hello"}, 60.0) is not None

    @property
    def fell_back(self) -> bool:
        """Whether the daemon failed an operation: this batch's sandboxes are its own."""
        return self._gone.is_set()

    def predict(self, job: RunJob) -> RunOutcome:
        return self._served("predict", job) or super().predict(job)

    def run(self, job: RunJob) -> RunOutcome:
        return self._served("run", job) or super().run(job)

    def prewarm(self, policy: SandboxPolicy) -> None:
        if policy.gpu or self._gone.is_set():
            super().prewarm(policy)
        else:
            self._ask({"op": "prewarm", "policy": dataclasses.asdict(policy)}, 60.0)

    def _served(self, op: str, job: RunJob) -> RunOutcome | None:
        if job.policy.gpu or self._gone.is_set():
            return None
        bound = 2 * job.policy.wall_seconds + ANSWER_MARGIN_SECONDS
        answer = self._ask({"op": op, "job": job_to_wire(job)}, bound)
        if answer is None:
            empty_folder(job.output_dir)  # the daemon's run may have begun: start clean
            return None
        return outcome_from_wire(answer["outcome"])

    def _ask(self, message: dict[str, Any], seconds: float) -> dict[str, Any] | None:
        context = {
            "backend": self.backend.name,
            "describe": self._described,
            "jobs": self.jobs,
            "preload": list(self.preload),
        }
        answer = served.request({**message, **context}, reply_seconds=seconds)
        if answer is None:
            self._gone.set()  # the rest of the batch: sandboxes of its own
        return answer


class Broker:
    """The daemon's side: one ``WarmSandboxes`` per backend and preloads, sized when first
    asked for: this machine's cores, or the asking command's ``--jobs`` if more."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._lock = threading.Lock()
        self._backends: dict[str, tuple[Backend, dict[str, str]]] = {}  # and describe()
        self._warm: dict[tuple[str, tuple[str, ...]], WarmSandboxes] = {}

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        warm = self._sandboxes(request)
        op = request["op"]
        if op == "hello":
            return {"ok": True}
        if op == "prewarm":
            warm.prewarm(SandboxPolicy(**request["policy"]))
            return {"ok": True}
        job = job_from_wire(request["job"])
        if job.policy.gpu:
            raise ValueError("grade serve runs no GPU job")
        outcome = warm.predict(job) if op == "predict" else warm.run(job)
        return {"outcome": outcome_to_wire(outcome)}

    def _sandboxes(self, request: dict[str, Any]) -> WarmSandboxes:
        name, preload = str(request["backend"]), tuple(map(str, request["preload"]))
        if name not in SERVED_BACKENDS:
            raise ValueError(f"grade serve does not serve the {name} backend")
        with self._lock:
            if name not in self._backends:
                made = get_backend(name)
                self._backends[name] = (made, made.describe())
            backend, described = self._backends[name]
            if request["describe"] != described:  # another image, say: the command's own
                raise ValueError(f"this daemon's {name} sandbox is not the command's")
            warm = self._warm.get((name, preload))
            if warm is None:
                jobs = max(self.cores, int(request["jobs"]))
                warm = self._warm[name, preload] = WarmSandboxes(backend, jobs, preload)
            return warm

    def close(self) -> None:
        with self._lock:
            warms, self._warm = list(self._warm.values()), {}
        for warm in warms:
            warm.close()


# ---- the wire: jobs and outcomes as JSON ---------------------------------------------


_PATHS = ("submission_dir", "inputs_dir", "job_dir", "output_dir")


def job_to_wire(job: RunJob) -> dict[str, Any]:
    return {**dataclasses.asdict(job), **{k: str(getattr(job, k)) for k in _PATHS}}


def job_from_wire(wire: dict[str, Any]) -> RunJob:
    paths = {k: Path(wire[k]) for k in _PATHS}
    return RunJob(**{**wire, **paths, "policy": SandboxPolicy(**wire["policy"])})


def outcome_to_wire(outcome: RunOutcome) -> dict[str, Any]:
    return {**dataclasses.asdict(outcome), "output_dir": str(outcome.output_dir)}


def outcome_from_wire(wire: dict[str, Any]) -> RunOutcome:
    return RunOutcome(**{**wire, "output_dir": Path(wire["output_dir"])})
