"""What tensors a model holds, as the model itself shows them (only used to flag gaps)."""

from __future__ import annotations

from typing import Any

import torch

NORM_TYPES = (torch.nn.modules.batchnorm._NormBase,)


def words(tensor: torch.Tensor) -> int:
    """32-bit words per value (``harness.counting``'s rule: a 64-bit value counts twice)."""
    return max(1, tensor.element_size() // 4)


def inventory(model: torch.nn.Module) -> dict[str, Any]:
    params = [
        {"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in model.named_parameters()
    ]
    persistent = set(model.state_dict().keys())
    buffers = []
    modules = dict(model.named_modules())
    for name, buf in model.named_buffers():
        owner = modules.get(name.rpartition(".")[0]) if "." in name else model
        buffers.append(
            {
                "name": name,
                "shape": list(buf.shape),
                "numel": buf.numel(),
                "words": words(buf),
                "persistent": name in persistent,
                "norm": isinstance(owner, NORM_TYPES),
            }
        )
    attributes = []
    for mod_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not attr.startswith("_"):
                full = f"{mod_name}.{attr}" if mod_name else attr
                attributes.append(
                    {
                        "name": full,
                        "shape": list(value.shape),
                        "numel": value.numel(),
                        "words": words(value),
                    }
                )
    return {
        "parameters_sum": sum(p.numel() for p in model.parameters()),
        "parameters": params,
        "buffers": buffers,
        "attributes": attributes,
    }
