"""Build real submission folders and tiny tasks for tests (shared by test modules)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

TINY_REGRESSION_TASK = """
id = "{id}"
title = "tiny regression task for tests"
kind = "regression"
input_shape = [1, 150, 150]
parameter_limit = {limit}
batch_size = 16
required_training = {required}

[dataset]
provider = "correlation"
[dataset.options]
public_seed = 7
train_size = 32
validation_size = 24
test_size = 40

[metrics]
primary = "mse"
report = ["mse", "mae", "rmse", "r2", "pearson"]
bootstrap_samples = 200

[limits]
time_seconds = {time}
memory_mb = 2048
cpus = 1

[grading]
full_marks_at = 0.01
zero_marks_at = 0.3
"""

# A small regression CNN: mean-pools the plot, then a linear head.
TINY_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.fc1 = nn.Linear(36, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1)))).squeeze(1)


def build_model():
    return Net()
"""


def write_task(
    tasks_dir: Path,
    task_id: str = "tiny",
    *,
    limit: int = 2_000_000,
    required: tuple[str, ...] = (),
    time: float = 120,
) -> Path:
    folder = tasks_dir / task_id
    folder.mkdir(parents=True, exist_ok=True)
    text = TINY_REGRESSION_TASK.format(
        id=task_id, limit=limit, required=list(required).__repr__().replace("'", '"'), time=time
    )
    (folder / "task.toml").write_text(text)
    return folder


def save_weights(
    model_src: str,
    folder: Path,
    name: str = "weights.safetensors",
    factory: str = "build_model",
    seed: int = 0,
) -> dict[str, Any]:
    """Build the model from ``model_src`` in this (trusted test) process and save weights."""
    import torch
    from safetensors.torch import save_file

    namespace: dict[str, Any] = {}
    exec(compile(model_src, "<model>", "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace[factory]()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if name.endswith(".safetensors"):
        save_file(state, str(folder / name))
    else:
        torch.save(state, str(folder / name))
    return {"model": model, "params": sum(p.numel() for p in model.parameters())}


def make_submission(
    root: Path,
    team: str,
    *,
    task: str = "tiny",
    model_src: str = TINY_MODEL,
    weights: str = "weights.safetensors",
    manifest_extra: str = "",
    training: str = "",
    save: bool = True,
    seed: int = 0,
) -> Path:
    folder = root / team
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(model_src))
    if save:
        save_weights(textwrap.dedent(model_src), folder, weights, seed=seed)
    (folder / "submission.toml").write_text(
        f'task = "{task}"\nteam = "{team}"\nmembers = ["Ada"]\n{manifest_extra}\n'
        f'[model]\nentrypoint = "model:build_model"\nweights = "{weights}"\n'
        f"[training]\n{training}\n"
    )
    return folder
