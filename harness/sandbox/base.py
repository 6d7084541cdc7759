"""The sandbox boundary: one narrow interface, ``Backend.run(job) -> RunOutcome``.

The pipeline prepares a job as four host folders and a runner argument list; a backend
runs ``python -m harness.runner`` on them under its isolation and reports what happened
as data. Inside every backend the folders appear at the same fixed paths:

=================  ==========  ==================================================
inside             access      holds
=================  ==========  ==================================================
``/submission``    read-only   the submission's declared files only
``/inputs``        read-only   ``inputs.npy`` (uint8, N x C x H x W), never labels
``/job``           read-only   ``job.json``: what the runner must do
``/output``        read-write  empty at start; the runner's report and predictions
``/opt/harness``   read-only   the runner's own code (``harness/runner``)
=================  ==========  ==================================================

No backend mounts or passes labels, secret seeds, the results folder, other
submissions or the host's home.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ..tasks import LimitsSpec

MOUNTS = {
    "submission": "/submission",
    "inputs": "/inputs",
    "job": "/job",
    "output": "/output",
    "code": "/opt/harness",
}


@dataclass(frozen=True)
class SandboxPolicy:
    """All hardening settings for one run, built from the task's limits."""

    wall_seconds: float
    memory_bytes: int
    pids: int
    cpus: float
    tmpfs_bytes: int
    output_bytes: int
    log_bytes: int
    gpu: bool = False
    network: bool = False  # never True for grading; here so tests can assert it

    @classmethod
    def from_limits(cls, limits: LimitsSpec, *, gpu: bool = False) -> SandboxPolicy:
        return cls(
            wall_seconds=limits.time_seconds,
            memory_bytes=limits.memory_mb * 2**20,
            pids=limits.pids,
            cpus=limits.cpus,
            tmpfs_bytes=limits.tmpfs_mb * 2**20,
            output_bytes=limits.output_mb * 2**20,
            log_bytes=limits.log_kb * 1024,
            gpu=gpu,
        )


@dataclass(frozen=True)
class RunJob:
    """One runner invocation. Paths are host paths; backends map them to ``MOUNTS``."""

    submission_dir: Path
    inputs_dir: Path
    job_dir: Path
    output_dir: Path
    policy: SandboxPolicy
    mount_submission: bool = True  # False for runs that must not see student code
    label: str = ""  # for logs: "team42/phase-a"


RunStatus = Literal["ok", "error", "timeout", "killed"]


@dataclass
class RunOutcome:
    """What happened, as data. ``status``: ``ok`` (exit 0), ``error`` (non-zero exit),
    ``timeout`` (wall clock passed), ``killed`` (memory, process or output limits)."""

    status: RunStatus
    exit_code: int | None
    wall_seconds: float
    log: str  # stdout and stderr together, capped to policy.log_bytes
    output_dir: Path
    reason: str = ""  # which limit, for timeout and killed
    backend: str = ""
    info: dict[str, str] = field(default_factory=dict)


class Predictor(Protocol):
    """Phase B for a batch: one predictor serves many ``predict`` jobs (see ``predictor``)."""

    def predict(self, job: RunJob) -> RunOutcome:
        """Run one phase-B job (job.mount_submission is False; job.job_dir holds job.json and
        program.pt2; job.inputs_dir holds inputs.npy and any probe inputs; job.output_dir is
        empty). Same RunOutcome contract as Backend.run: never raises for what the program
        does; a timeout/crash/limit of this job is this job's outcome only."""

    def start(self) -> None:
        """Start the warm sandbox now, if there is one to start (the first ``predict``
        starts it otherwise); raises what starting raises."""

    def ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` until the started sandbox has imported what it needs;
        True when it has, or has nothing to import."""

    def close(self) -> None: ...


class Runner(Protocol):
    """The submissions' own runs for a batch (convert, export, rebuild: ``mount_submission``
    and no GPU): one runner serves many jobs (see ``zygote``), one at a time unless it says
    ``parallel = True`` (``PerRun``: each job its own run), as a predictor may too."""

    def run(self, job: RunJob) -> RunOutcome:
        """Same contract as ``Backend.run``: the job's own outcome, never another's."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    isolated: bool

    def predictor(self, policy: SandboxPolicy) -> Predictor:
        """A predictor for a batch of phase-B jobs run under ``policy``'s memory, process
        and CPU limits (each job's own policy gives its wall clock and output caps)."""

    def runner(self, policy: SandboxPolicy, preload: tuple[str, ...] = ()) -> Runner:
        """A runner for a batch of the submissions' own runs under ``policy``'s memory,
        process and CPU limits (each job's own policy gives its wall clock and caps);
        ``preload``: the optional libraries it imports ahead (``harness/preloads.py``)."""

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else one sentence saying why not."""

    def unavailable_hint(self) -> str:
        """What to do about the last ``unavailable_reason``."""

    def describe(self) -> dict[str, str]:
        """What result documents record about it (image and tag for docker)."""

    def run(self, job: RunJob) -> RunOutcome:
        """Run the runner on ``job``. Never raises for anything the submission does;
        raises ``UserError`` only when the backend itself cannot work."""
