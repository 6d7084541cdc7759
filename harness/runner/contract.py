"""The contract between the host and the runner: standard library only, imported by both
sides (the host, the runner inside the sandbox, the tests and the benchmarks).

It names the one torch release every part of the harness runs (the host's pin in
``pyproject.toml``, the offline evaluation image and the Dockerfile all install exactly
this), the files that cross the sandbox boundary, and the rule that refuses a program
written by another torch: ``torch.export`` archives are read on the host exactly as this
release writes them, so a runner on any other release is a configuration error, not a
submission's fault.
"""

from __future__ import annotations

TORCH = "2.14.1"
TORCHVISION = "0.29.1"

JOB_FILE = "job.json"
REPORT_FILE = "report.json"
PROGRAM = "program.pt2"
PREDICTIONS = "predictions.npy"


def torch_release(version: str) -> str:
    """``2.14.1+cu128`` -> ``2.14.1``: the local build tag does not change the format."""
    return version.split("+", 1)[0].strip()


def torch_mismatch(version: object) -> str | None:
    """None when a runner reported the pinned torch, else the sentence that says why not."""
    if isinstance(version, str) and torch_release(version) == TORCH:
        return None
    shown = version if isinstance(version, str) and len(version) < 40 else "an unknown version"
    return (
        f"the sandbox ran torch {shown}, but this harness reads programs written by torch "
        f"{TORCH} only: rebuild the evaluation image (`grade image build --force`) or "
        f"install torch=={TORCH} where the runner runs"
    )
