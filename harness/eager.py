"""The job a runner gets for an eager (run the submission's code) evaluation."""

from __future__ import annotations

from typing import Any

from .submission import Manifest
from .tasks import TaskSpec


def eager_job_spec(task: TaskSpec, manifest: Manifest, weights: str) -> dict[str, Any]:
    normalize = manifest.model.normalize
    return {
        "phase": "eager",
        "entrypoint": manifest.model.entrypoint,
        "weights": weights,
        "normalize": normalize.model_dump() if normalize else None,
        "kind": task.kind,
        "num_classes": task.num_classes,
        "input_shape": list(task.input_shape),
        "batch_size": task.batch_size,
        "device": task.device,
        "threads": max(1, int(task.limits.cpus)),
        "determinism_slice": 64,
    }
