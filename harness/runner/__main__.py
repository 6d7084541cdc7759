"""``python -m harness.runner --job DIR --submission DIR --inputs DIR --output DIR``, or
``python -m harness.runner serve SPOOL`` (phase B for a batch: ``serve.py``), or
``python -m harness.runner zygote LIMITS`` (phase-A runs for a batch: ``zygote.py``).

Phases (``job.json`` field ``phase``):
- ``convert``: read ``.pt`` weights weights-only and write ``weights.safetensors``; runs
  before, and apart from, any submission code.
- ``eager``: import the submission, build, load strictly, predict, write
  ``predictions.npy`` (the fallback when a task allows an unverified count).
- ``export`` (phase A): import, build, load strictly, one dry batch, ``torch.export``
  with static shapes, write ``program.pt2``; sees no test inputs.
- ``rebuild``: build the model twice from its code alone (no weights mounted), report
  digests of the buffers both builds made identically (``rebuild.py``).
- ``predict`` (phase B): load the host-checked program from the job folder (no
  submission code mounted), write ``predictions.npy`` (and probe outputs).
Exit status 0 when the phase succeeded, 3 when the submission failed (see report.json), 2
when ``job.json`` breaks the contract (``contract.py``; one line on stderr, no report).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .contract import JOB_FILE, ConvertJob, EagerJob, JobError, from_json
from .report import Report


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness.runner")
    for name in ("job", "submission", "inputs", "output"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    return parser.parse_args(argv)


def phase_convert(job: ConvertJob, a: argparse.Namespace, report: Report) -> None:
    from .load import convert_to_safetensors

    t = report.start("convert")
    info = convert_to_safetensors(a.submission / job.weights, a.output / "weights.safetensors")
    report.data["convert"] = info
    report.done("convert", t)


def phase_eager(job: EagerJob, a: argparse.Namespace, report: Report) -> None:
    import numpy as np
    import torch

    from .inventory import inventory
    from .load import built_and_loaded, pick_device
    from .predict import determinism, run_batches

    device = pick_device(job)
    report.data["device"] = str(device)
    model = built_and_loaded(a.submission, job, report)
    report.data["model"] = inventory(model)
    model.to(device)

    images = np.load(a.inputs / "inputs.npy", mmap_mode="r", allow_pickle=False)
    t = report.start("predict")
    predictions = run_batches(model, images, job, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    report.done("predict", t)
    report.data["images"] = len(images)

    t = report.start("determinism")
    report.data["determinism"] = determinism(model, images, predictions, job, device)
    report.done("determinism", t)

    tmp = a.output / ".predictions.npy"
    with open(tmp, "wb") as fh:
        np.save(fh, predictions, allow_pickle=False)
    os.replace(tmp, a.output / "predictions.npy")

    from .phase_b import run_probe

    run_probe(model, images, job, device, a, report)


def phase_export(job: Any, a: argparse.Namespace, report: Report) -> None:
    from .phase_a import phase_export as run

    run(job, a, report)


def phase_predict(job: Any, a: argparse.Namespace, report: Report) -> None:
    from .phase_b import phase_predict as run

    run(job, a, report)


def phase_rebuild(job: Any, a: argparse.Namespace, report: Report) -> None:
    from .rebuild import phase_rebuild as run

    run(job, a, report)


PHASES: dict[str, Callable[[Any, argparse.Namespace, Report], None]] = {
    "convert": phase_convert,
    "eager": phase_eager,
    "export": phase_export,
    "predict": phase_predict,
    "rebuild": phase_rebuild,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:  # the warm predictor: phase B for a batch (serve.py)
        from .serve import serve

        return serve(args[1:], run)
    if args[:1] == ["zygote"]:  # the submissions' own runs for a batch (zygote.py)
        from .zygote import zygote

        return zygote(args[1:], run)
    return run(_args(args))


def run(a: argparse.Namespace) -> int:
    """One job: its phase, its report.json; 0 when it succeeded, 3 when it failed (2 when
    the job itself breaks the contract: the host's mistake, no report)."""
    try:
        job = from_json((a.job / JOB_FILE).read_text())
    except (OSError, JobError) as exc:  # the host's mistake: say so, write no report
        print(f"harness.runner: {exc}", file=sys.stderr)
        return 2
    report = Report(a.output, job.PHASE, a.submission)
    try:
        PHASES[job.PHASE](job, a, report)
    except BaseException as exc:  # the submission's error is data for the host
        report.data["torch"] = _torch_version()
        report.fail(report.data["stage"], exc)
        return 3
    report.data["torch"] = _torch_version()
    report.finish()
    return 0


def _torch_version() -> str | None:
    """The torch this runner ran (the host refuses a program written by another)."""
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None) if torch is not None else None


if __name__ == "__main__":
    sys.exit(main())
