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
again with imperceptible noise, predicted in the same pass: they fill the last batch).
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
    moved = rng.integers(-amplitude, amplitude + 1, size=images.shape, dtype=np.int16)
    moved += images  # in place: one int16 array, not three
    np.clip(moved, 0, 255, out=moved)
    return moved.astype(np.uint8)


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
    # 2-D convolutions channels-last on a CPU (``interpreter``): faster, same values up to rounding
    program = Program(a.job / job.program, device, channels_last=device.type == "cpu")
    model = static_batches(program, job.batch_size)
    report.done("program", t)

    images = np.load(a.inputs / "inputs.npy", mmap_mode="r", allow_pickle=False)
    probe = job.probe
    extra = None
    if probe is not None and probe.count:
        extra = noisy(np.asarray(images[: probe.count]), probe.seed, probe.amplitude)
    t = report.start("predict")
    predictions, probed = with_extra(model, images, extra, job, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    report.done("predict", t)
    report.data["images"] = len(images)
    report.data["probe_images"] = 0 if extra is None else len(extra)
    _save(a.output, predictions)
    if probed is not None:
        _save(a.output / "probe", probed)

    if job.recheck:  # else the host proved each image independent from the graph
        t = report.start("determinism")
        report.data["determinism"] = determinism(model, images, predictions, job, device)
        report.done("determinism", t)


def with_extra(
    model: Callable[[torch.Tensor], Any],
    images: np.ndarray,
    extra: np.ndarray | None,
    job: PredictJob,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict ``images``, then ``extra`` (the probe's inputs) in the same pass: they
    take the place of the zeros that would pad the last batch of ``images`` to the
    program's static size, and ``integrity.probe_size`` sizes the probe to fill it. The
    outputs are what separate passes give a batch-independent program; whether it is one
    the host proved from the graph, or the determinism check tests (``images`` again, in
    other batches)."""
    if extra is None or not len(extra):
        return run_batches(model, images, job, device), None
    head = len(images) - len(images) % job.batch_size
    first = run_batches(model, images[:head], job, device)
    tail = run_batches(model, np.concatenate([images[head:], extra]), job, device)
    cut = len(images) - head
    return np.concatenate([first, tail[:cut]]), tail[cut:]


def run_probe(
    model: Callable[[torch.Tensor], Any],
    images: np.ndarray,
    job: EagerJob,
    device: torch.device,
    a: argparse.Namespace,
    report: Report,
) -> None:
    """The eager fallback's memorization probe, when the job asks (a pass of its own: an
    eager model takes any batch size): the first inputs again, with noise (the
    canaries are mixed into the inputs themselves, where a model cannot tell them apart)."""
    probe = job.probe
    if probe is None:
        return
    t = report.start("probe")
    if probe.count:
        subset = noisy(np.asarray(images[: probe.count]), probe.seed, probe.amplitude)
        _save(a.output / "probe", run_batches(model, subset, job, device))
    report.done("probe", t)
