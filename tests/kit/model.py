"""The small test network (305 parameters) and the writers of its weights."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

# A small regression CNN: mean-pools the plot to 6x6, then a linear head.
# 36 * 8 + 8 (fc1) + 8 + 1 (fc2) = 305 parameters.
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
TINY_PARAMS = 305


def honest_state(hidden: int = 8, seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    """The weights ``Net(hidden)`` of ``TINY_MODEL`` gets under ``torch.manual_seed(seed)``,
    made without running any model source (the corpora's cheats never run here)."""
    import torch

    torch.manual_seed(seed)
    layers = {"fc1": torch.nn.Linear(36, hidden), "fc2": torch.nn.Linear(hidden, 1)}
    return {
        f"{name}.{k}": (v * scale).detach().clone().contiguous()
        for name, layer in layers.items()
        for k, v in layer.state_dict().items()
    }


def save_state(state: dict[str, Any], path: Path) -> None:
    """A state dict as safetensors, or with ``torch.save`` for ``.pt``/``.pth``."""
    import torch
    from safetensors.torch import save_file

    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))


def save_weights(
    model_src: str,
    folder: Path,
    name: str = "weights.safetensors",
    factory: str = "build_model",
    seed: int = 0,
) -> dict[str, Any]:
    """Build the model from ``model_src`` in this (trusted test) process, seeded, and save
    its weights as ``folder/name``; returns the model and its parameter count."""
    import torch

    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(model_src), str(folder / "model.py"), "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace[factory]()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_state(state, folder / name)
    return {"model": model, "params": sum(p.numel() for p in model.parameters())}
