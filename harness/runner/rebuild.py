"""Phase ``rebuild``: build the submission's model twice from its code alone (no weights
file is mounted) under two different random seeds, and report a digest of every buffer
and tensor attribute both builds made bit-identically.

The host compares these digests with the exported program's stored tensors: a tensor
the code regenerates without the weights (an index table, a mask, a normalisation
constant) is structural, not learned. Nothing here is trusted beyond that: a run that
lies can only claim a digest it can compute from its own source, and the source's
literals are counted on the host (``harness.counting.source_values``).
"""

from __future__ import annotations

import argparse
import hashlib
import random
from typing import Any

import torch

from .contract import RebuildJob
from .load import build_model, import_entrypoint
from .report import Report

SEEDS = (12345, 67890)


def digest(tensor: torch.Tensor) -> str:
    """SHA-256 of ``dtype|shape|`` and the tensor's values as contiguous raw bytes."""
    t = tensor.detach().cpu().contiguous().reshape(-1)
    raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    head = f"{str(tensor.dtype).removeprefix('torch.')}|{list(tensor.shape)}|".encode()
    return hashlib.sha256(head + raw).hexdigest()


def tensors(model: torch.nn.Module) -> dict[str, str]:
    """Digests of the model's buffers and plain tensor attributes, by state name."""
    out = {name: digest(b) for name, b in model.named_buffers(remove_duplicate=False)}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                out.setdefault(f"{prefix}.{attr}" if prefix else attr, digest(value))
    return out


def _fresh(factory: Any, seed: int) -> dict[str, str]:
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is in every image
        pass
    return tensors(build_model(factory))


def phase_rebuild(job: RebuildJob, a: argparse.Namespace, report: Report) -> None:
    torch.set_num_threads(max(1, job.threads))
    t = report.start("import")
    factory = import_entrypoint(a.submission, job.entrypoint)
    report.done("import", t)
    t = report.start("build")
    first, second = (_fresh(factory, seed) for seed in SEEDS)
    report.data["regenerated"] = {n: d for n, d in first.items() if second.get(n) == d}
    report.done("build", t)
