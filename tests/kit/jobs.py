"""A phase-B run of a checked program, as the predict stage builds it: the test modules and
the benchmarks that drive a backend or a predictor directly build their runs here;
``kill_sandbox``, a warm sandbox killed from the host; and ``eager_run``, the runner's
``eager`` phase on a tiny submission whose ``model.py`` runs a given line when imported
(a crash, a hang, a flood, ...), with ``assert_serves``: a normal one predicts right."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from harness.jobs import job_with_files
from harness.runner.contract import PROGRAM, EagerJob
from harness.sandbox import Backend, RunJob, RunOutcome, SandboxPolicy
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


def kill_sandbox(backend: str, sandbox: str) -> None:
    """SIGKILL a warm sandbox from the host (``sandbox``: its ``ident``): bwrap's process
    group, docker's container."""
    if backend == "docker":
        import docker

        docker.from_env().containers.get(sandbox).kill()
    else:
        os.killpg(int(sandbox), signal.SIGKILL)


EAGER_MODEL = """\
import json, os, signal, sys, time
{behaviour}
from torch import nn


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
"""


def eager_spec(**fields: Any) -> EagerJob:
    """An eager phase's job: ``model:build_model`` with ``weights.safetensors`` on one
    CPU thread, a classifier of 3 classes on 1 x 8 x 8 images in batches of 4, but for
    ``fields``."""
    defaults: dict[str, Any] = {
        "entrypoint": "model:build_model",
        "weights": "weights.safetensors",
        "normalize": None,
        "kind": "classification",
        "num_classes": 3,
        "input_shape": (1, 8, 8),
        "batch_size": 4,
        "device": "cpu",
        "threads": 1,
        "probe": None,
    }
    return EagerJob(**(defaults | fields))


def eager_inputs(folder: Path) -> Path:
    """Six seeded 1 x 4 x 4 images in ``folder/inputs.npy``; ``folder``."""
    images = np.random.default_rng(0).integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)
    np.save(folder / "inputs.npy", images)
    return folder


def eager_run(
    root: Path, inputs: Path, behaviour: str, *, wall: float = 120, log_kb: int = 64
) -> RunJob:
    """The eager run of ``EAGER_MODEL`` with ``behaviour``, staged in ``root``."""
    ws = Workspace(root)
    source = root / "source"
    source.mkdir()
    (source / "model.py").write_text(EAGER_MODEL.format(behaviour=behaviour))
    save_file({"1.weight": torch.ones(1, 16), "1.bias": torch.zeros(1)}, source / "w.safetensors")
    spec = eager_spec(
        weights="w.safetensors",
        kind="regression",
        num_classes=0,
        input_shape=(1, 4, 4),
        batch_size=2,
    )
    policy = SandboxPolicy(
        wall_seconds=wall,
        memory_bytes=2**30,
        pids=64,
        cpus=1,
        tmpfs_bytes=2**20,
        output_bytes=2**20,
        log_bytes=log_kb * 1024,
    )
    return RunJob(
        submission_dir=ws.stage("sub", source, ["model.py", "w.safetensors"]),
        inputs_dir=inputs,
        job_dir=ws.job("job", spec),
        output_dir=ws.output("out"),
        policy=policy,
    )


def run_eager(
    backend: Backend, root: Path, inputs: Path, behaviour: str, **kw: float
) -> RunOutcome:
    root.mkdir(parents=True, exist_ok=True)
    return backend.run(eager_run(root, inputs, behaviour, **kw))  # type: ignore[arg-type]


def assert_serves(backend: Backend, root: Path, inputs: Path) -> None:
    """A run with no misbehaviour succeeds and predicts each image's sum of pixels."""
    outcome = run_eager(backend, root, inputs, "")
    assert (outcome.status, outcome.exit_code) == ("ok", 0), outcome.log
    predictions = np.load(outcome.output_dir / "predictions.npy")
    images = np.load(inputs / "inputs.npy").reshape(6, 16).astype(np.float32) / 255
    np.testing.assert_allclose(predictions, images.sum(axis=1), rtol=1e-5)
