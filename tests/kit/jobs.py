"""A phase-B run of a checked program, as the predict stage builds it: the test modules and
the benchmarks that drive a backend or a predictor directly build their runs here; and
``kill_sandbox``, a warm sandbox killed from the host."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from harness.jobs import job_with_files
from harness.runner.contract import PROGRAM
from harness.sandbox import RunJob, SandboxPolicy
from harness.staging import Workspace


def predict_run(
    root: Path,
    name: str,
    program: Path,
    inputs: Path,
    *,
    io: dict[str, Any],
    batch: int,
    probe: dict[str, int],
    policy: SandboxPolicy,
    label: str | None = None,
) -> RunJob:
    """The run that predicts ``inputs`` with ``program`` (no submission code mounted), in
    ``root/name``; ``io``: the job's model contract (kind, classes, shape, ...)."""
    ws = Workspace(root / name)
    (root / name).mkdir(parents=True)
    spec = {
        **io,
        "phase": "predict",
        "program": PROGRAM,
        "batch_size": batch,
        "probe": probe,
        "recheck": True,
    }
    return RunJob(
        submission_dir=ws.stage("sub", program.parent, []),
        inputs_dir=inputs,
        job_dir=job_with_files(ws, "job", spec, {PROGRAM: program}),  # type: ignore[arg-type]
        output_dir=ws.output("out"),
        policy=policy,
        mount_submission=False,
        label=label or name,
    )


def kill_sandbox(backend: str, sandbox: str) -> None:
    """SIGKILL a warm sandbox from the host (``sandbox``: its ``ident``): bwrap's process
    group, docker's container."""
    if backend == "docker":
        import docker

        docker.from_env().containers.get(sandbox).kill()
    else:
        os.killpg(int(sandbox), signal.SIGKILL)
