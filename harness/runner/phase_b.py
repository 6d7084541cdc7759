"""Phase B (``predict``): run the host-checked exported program on the test inputs.

No submission code is mounted in this run: the program comes from the job folder, where
the host put it after checking it (allowed operators, no pickles, no symbolic shapes, no
guard code, sample inputs removed). ``program.Program`` interprets its graph (no guards,
no general deserializer) on batches of exactly the exported (static) size; a short last
batch is padded and cut back.

Unless the host proved from the graph that each image's output depends on that image
alone (``recheck`` false), the whole split is predicted again in another order and batch
composition (the determinism check).

Writes ``predictions.npy``; with a probe, ``probe/predictions.npy`` (the first inputs
again with imperceptible noise).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .contract import EagerJob, PredictJob
from .interpreter import Program
from .load import pick_device
from .predict import determinism, run_batches
from .report import Report


def static_batches(module: Callable[[torch.Tensor], Any], size: int) -> Callable[..., Any]:
    """Call ``module`` on exactly ``size`` inputs: pad a short batch with zeros, cut back."""

    def call(x: torch.Tensor) -> Any:
        n = len(x)
        if n < size:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        out = module(x)
        if n < size and isinstance(out, torch.Tensor) and out.dim() >= 1 and len(out) == size:
            out = out[:n]
        return out

    return call


def noisy(images: np.ndarray, seed: int, amplitude: int) -> np.ndarray:
    """``images`` with every pixel moved by at most ``amplitude`` gray levels (seeded)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amplitude, amplitude + 1, size=images.shape, dtype=np.int16)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _save(folder: Path, array: np.ndarray) -> None:
    folder.mkdir(exist_ok=True)
    tmp = folder / ".predictions.npy"
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, folder / "predictions.npy")


def phase_predict(job: PredictJob, a: argparse.Namespace, report: Report) -> None:
    torch.set_num_threads(max(1, job.threads))
    device = pick_device(job)
    report.data["device"] = str(device)
    report.data["torch_version"] = torch.__version__

    t = report.start("program")
    model = static_batches(Program(a.job / job.program, device), job.batch_size)
    report.done("program", t)

    images = np.load(a.inputs / "inputs.npy", mmap_mode="r", allow_pickle=False)
    t = report.start("predict")
    predictions = run_batches(model, images, job, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    report.done("predict", t)
    report.data["images"] = len(images)
    _save(a.output, predictions)

    if job.recheck:  # else the host proved each image independent from the graph
        t = report.start("determinism")
        report.data["determinism"] = determinism(model, images, predictions, job, device)
        report.done("determinism", t)

    run_probe(model, images, job, device, a, report)


def run_probe(
    model: Callable[[torch.Tensor], Any],
    images: np.ndarray,
    job: EagerJob | PredictJob,
    device: torch.device,
    a: argparse.Namespace,
    report: Report,
) -> None:
    """The memorization probe, when the job asks: the first inputs again, with noise (the
    canaries are mixed into the inputs themselves, where a model cannot tell them apart)."""
    probe = job.probe
    if probe is None:
        return
    t = report.start("probe")
    if probe.count:
        subset = noisy(np.asarray(images[: probe.count]), probe.seed, probe.amplitude)
        _save(a.output / "probe", run_batches(model, subset, job, device))
    report.done("probe", t)
