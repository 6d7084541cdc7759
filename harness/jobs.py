"""The jobs a runner gets: ``export`` (phase A), ``predict`` (phase B) and ``eager`` (the
fallback that runs the submission's code on the test inputs, count unverified)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .runner.contract import PROGRAM
from .staging import Workspace
from .submission import Manifest
from .tasks import TaskSpec


def _common(task: TaskSpec, manifest: Manifest) -> dict[str, Any]:
    normalize = manifest.model.normalize
    return {
        "normalize": normalize.model_dump() if normalize else None,
        "kind": task.kind,
        "num_classes": task.num_classes,
        "input_shape": list(task.input_shape),
        "device": task.device,
        "threads": max(1, int(task.limits.cpus)),
    }


def eager_job_spec(
    task: TaskSpec, manifest: Manifest, weights: str, probe: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        **_common(task, manifest),
        "phase": "eager",
        "entrypoint": manifest.model.entrypoint,
        "weights": weights,
        "batch_size": task.batch_size,
        "probe": probe,
    }


def export_batch(task: TaskSpec, count: int) -> int:
    """The static batch size a program is exported (and run) with."""
    return max(1, min(task.batch_size, count))


def export_job_spec(task: TaskSpec, manifest: Manifest, weights: str, batch: int) -> dict[str, Any]:
    return {
        **_common(task, manifest),
        "phase": "export",
        "entrypoint": manifest.model.entrypoint,
        "weights": weights,
        "export_batch": batch,
    }


def predict_job_spec(
    task: TaskSpec, manifest: Manifest, batch: int, probe: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        **_common(task, manifest),
        "phase": "predict",
        "program": PROGRAM,
        "batch_size": batch,
        "probe": probe,
    }


def job_with_files(
    workspace: Workspace, name: str, spec: dict[str, Any], files: dict[str, Path]
) -> Path:
    """A read-only job folder holding ``job.json`` and ``files`` (name -> host path): the
    checked program and canary inputs that phase B reads from ``/job``."""
    folder = workspace.root / name
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps(spec))
    os.chmod(folder / "job.json", 0o444)
    for rel, source in files.items():
        target = folder / rel
        try:
            os.link(source, target)  # same inode: leave its mode alone
        except OSError:
            shutil.copyfile(source, target)
            os.chmod(target, 0o444)
    os.chmod(folder, 0o555)
    return folder
