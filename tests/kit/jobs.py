"""A phase-B run of a checked program, as the predict stage builds it: the test modules and
the benchmarks that drive a backend or a predictor directly build their runs here."""

from __future__ import annotations

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
