"""The jobs a runner gets, as the typed contract of ``runner/contract.py``: ``convert``
(``.pt`` weights to safetensors), ``rebuild`` (the code alone, twice), ``export`` (phase A),
``predict`` (phase B) and ``eager`` (the fallback that runs the submission's code on the
test inputs, count unverified)."""

from __future__ import annotations

from pathlib import Path

from .runner.contract import (
    PROGRAM,
    ConvertJob,
    EagerJob,
    ExportJob,
    JobSpec,
    Normalize,
    PredictJob,
    Probe,
    RebuildJob,
)
from .staging import Workspace
from .submission import Manifest
from .tasks import TaskSpec


def _threads(task: TaskSpec) -> int:
    return max(1, int(task.limits.cpus))


def _io(task: TaskSpec, manifest: Manifest) -> dict[str, object]:
    """The ``ModelIO`` fields every phase that runs the model shares."""
    norm = manifest.model.normalize
    return {
        "normalize": Normalize(tuple(norm.mean), tuple(norm.std)) if norm else None,
        "kind": task.kind,
        "num_classes": task.num_classes,
        "input_shape": tuple(task.input_shape),
        "device": task.device,
        "threads": _threads(task),
    }


def convert_job_spec(weights: str) -> ConvertJob:
    return ConvertJob(weights=weights)


def rebuild_job_spec(task: TaskSpec, manifest: Manifest) -> RebuildJob:
    return RebuildJob(entrypoint=manifest.model.entrypoint, threads=_threads(task))


def eager_job_spec(
    task: TaskSpec, manifest: Manifest, weights: str, probe: Probe | None = None
) -> EagerJob:
    return EagerJob(
        **_io(task, manifest),  # type: ignore[arg-type]
        entrypoint=manifest.model.entrypoint,
        weights=weights,
        batch_size=task.batch_size,
        probe=probe,
    )


def export_batch(task: TaskSpec, count: int) -> int:
    """The static batch size a program is exported (and run) with."""
    return max(1, min(task.batch_size, count))


def export_job_spec(task: TaskSpec, manifest: Manifest, weights: str, batch: int) -> ExportJob:
    return ExportJob(
        **_io(task, manifest),  # type: ignore[arg-type]
        entrypoint=manifest.model.entrypoint,
        weights=weights,
        export_batch=batch,
    )


def predict_job_spec(
    task: TaskSpec, manifest: Manifest, batch: int, probe: Probe | None, recheck: bool = True
) -> PredictJob:
    return PredictJob(
        **_io(task, manifest),  # type: ignore[arg-type]
        program=PROGRAM,
        batch_size=batch,
        probe=probe,
        recheck=recheck,
    )


def job_with_files(workspace: Workspace, name: str, spec: JobSpec, files: dict[str, Path]) -> Path:
    """A read-only job folder holding ``job.json`` and ``files`` (``Workspace.job``)."""
    return workspace.job(name, spec, files)
