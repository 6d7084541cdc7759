"""Phase A (``export``): build the submission's model, load its weights strictly, run one
dry batch, and write the model as a ``torch.export`` program with static shapes.

The run sees no test inputs: the dry batch is uniform noise drawn here with a fixed seed,
and the export's example an uninitialized batch (``torch.export`` traces on fake tensors:
it reads only the shape and dtype). What it writes (``program.pt2`` and the report) is
checked on the host before anything uses it; the model's own parameter count in the
report is only compared with the host's count, never used as the count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .contract import ExportJob, ModelIO
from .load import built_and_loaded
from .predict import OutputError
from .report import Report

PROGRAM = "program.pt2"
DRY_BATCH = 2
EXPORT_LINES = 4  # lines of torch's export error kept in the message


class ExportError(Exception):
    """``torch.export`` could not capture the model; the text is the error's first lines."""


def example(job: ModelIO, batch: int) -> torch.Tensor:
    """A normalized batch of seeded uniform noise with the task's input shape."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *job.input_shape), generator=generator)
    norm = job.normalize
    if norm is not None:
        shape = (1, -1, 1, 1)
        x = (x - torch.tensor(norm.mean).view(shape)) / torch.tensor(norm.std).view(shape)
    return x


def placeholder(job: ModelIO, batch: int) -> torch.Tensor:
    """The export's example: the task's input shape, values left unset. ``torch.export``
    traces the model on a fake tensor made from it (shape, dtype and strides, never its
    values), so filling it (seeded noise: 30 ms and 22.5 MB for 250 images of 150 x 150,
    a tenth of a run) bought nothing; ``save`` drops it from the program too."""
    return torch.empty((batch, *job.input_shape))


def check_shape(out: Any, n: int, job: ModelIO) -> None:
    """The output contract's shape and dtype rules (finiteness is checked on real inputs)."""
    if not isinstance(out, torch.Tensor):
        raise OutputError(f"the model returned {type(out).__name__}; it must return one tensor")
    if not out.is_floating_point():
        raise OutputError(f"the model returned dtype {out.dtype}; a floating dtype is required")
    want = [(n,), (n, 1)] if job.kind == "regression" else [(n, job.num_classes)]
    if tuple(out.shape) not in want:
        expected = " or ".join(str(w) for w in want)
        raise OutputError(
            f"the output has shape {tuple(out.shape)} for a batch of {n}; expected {expected}"
        )


def own_count(model: torch.nn.Module) -> dict[str, Any]:
    """What the model says of itself (only compared with the host's count, never used)."""
    try:
        return {"parameters_sum": int(sum(p.numel() for p in model.parameters()))}
    except Exception as exc:  # a patched counting function may raise: that is data too
        return {"parameters_sum": None, "error": f"{type(exc).__name__}"}


def export_error(exc: BaseException) -> ExportError:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()][:EXPORT_LINES]
    text = " / ".join(line.strip() for line in lines)[:400] or type(exc).__name__
    return ExportError(f"{type(exc).__name__}: {text}")


def phase_export(job: ExportJob, a: argparse.Namespace, report: Report) -> None:
    model = built_and_loaded(a.submission, job, report)

    t = report.start("dry_run")
    x = example(job, DRY_BATCH)
    report.data["input_shape"] = list(x.shape)  # shown with an error the batch caused
    with torch.no_grad():
        check_shape(model(x), DRY_BATCH, job)
    report.data["model"] = own_count(model)  # after the dry batch: lazy modules are built
    report.done("dry_run", t)

    t = report.start("export")
    fresh_eval(model)
    x = placeholder(job, job.export_batch)
    report.data["input_shape"] = list(x.shape)
    save(model, x, a.output / PROGRAM)
    report.done("export", t)


def fresh_eval(model: torch.nn.Module) -> None:
    """Eval mode as after loading, without what the dry batch cached: ``train()`` then
    ``eval()``. Models that cache values derived from their weights in eval mode (timm's
    LeViT and EfficientFormerV2 attention-bias caches) drop them on ``train()`` (the
    PyTorch convention), so the export computes them from the parameters instead of
    freezing the dry batch's copy as a constant, which the count would charge as a
    tensor created in ``forward``."""
    with torch.no_grad():
        model.train()
        model.eval()


def save(model: torch.nn.Module, x: torch.Tensor, target: Path | IO[bytes]) -> None:
    try:
        with torch.no_grad():
            program = torch.export.export(model, (x,), strict=False)
    except Exception as exc:
        raise export_error(exc) from exc
    # not the export's example batch (pickled: 22.5 MB for 250 images of 150 x 150),
    # which the host's check drops unread (``program/check.py``)
    program.example_inputs = None
    with _no_canonical_form_test():
        torch.export.save(program, target)


@contextlib.contextmanager
def _no_canonical_form_test() -> Iterator[None]:
    """``torch.export.save`` without its test of the canonical form: torch 2.14's
    serializer canonicalizes a deep copy of the serialized program only to see that it
    can, and discards the copy (``ExportedProgramSerializer.serialize``, its only caller).
    On timm's models that test is a sixth of a run's time; the archive is the same, byte
    for byte, without it (``tests/test_one_torch.py``)."""
    from torch._export.serde import serialize

    test = getattr(serialize, "canonicalize", None)
    if test is None:  # another torch: save as it does
        yield
        return
    serialize.canonicalize = lambda ep, constants=None: ep
    try:
        yield
    finally:
        serialize.canonicalize = test


class _Tiny(torch.nn.Module):
    """The runner's own model for ``warm_up``: a convolution, batch norm and linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def warm_up() -> None:
    """Export and save the runner's own tiny model, in memory, once in a process that
    forks runs (the fork server, a zygote): ``torch.export``'s first call imports more of
    its stack and fills its first-call caches (about 0.2 s of each run's export and save,
    measured in ``benchmarks/README.md``), which each forked run then finds done. No
    submission is involved, no file is written, and it starts no thread (runs are forked
    after it: ``tests/test_forkserver.py``)."""
    save(_Tiny().eval(), torch.zeros(2, 3, 8, 8), io.BytesIO())
