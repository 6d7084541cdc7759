"""Build the submission's model and load its weights strictly."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.nn.parameter import is_lazy


class ContractError(Exception):
    """The submission broke the contract in a way its own code did not raise."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors``, or ``.pt``/``.pth`` loaded weights-only (no code runs)."""
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ContractError(
            f"{path.name} is not a state_dict (a dict of tensor names to tensors); "
            "save it with torch.save(model.state_dict(), path)"
        )
    return obj


def convert_to_safetensors(source: Path, target: Path) -> dict[str, Any]:
    """Write ``source`` as safetensors; tensors sharing storage are stored once."""
    state = read_state_dict(source)
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        key = (
            tensor.untyped_storage().data_ptr(),
            int(tensor.storage_offset()),
            tuple(int(d) for d in tensor.shape),
        )
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous().clone()
    save_file(unique, str(target), metadata={"converted_from": source.name})
    return {"tensors": len(unique), "aliases": aliases}


def import_entrypoint(submission: Path, entrypoint: str) -> Any:
    module_name, _, attr = entrypoint.partition(":")
    sys.path.insert(0, str(submission))
    sys.dont_write_bytecode = True
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ContractError(
            f"{module_name}.py has no `{attr}` (the manifest's model.entrypoint)"
        ) from None


def build_model(factory: Any) -> torch.nn.Module:
    if inspect.isclass(factory) and not issubclass(factory, torch.nn.Module):
        raise ContractError(f"entrypoint {factory.__name__} is a class but not a torch.nn.Module")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ContractError(
            f"the entrypoint returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _alias_of(model: torch.nn.Module) -> dict[str, list[str]]:
    """Groups of state_dict names that share one tensor (tied weights)."""
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if is_lazy(tensor) or tensor.numel() == 0:  # lazy: shaped by load_state_dict
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(key, []).append(name)
    return {n: names for names in groups.values() if len(names) > 1 for n in names}


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)``, except that one copy of tied weights suffices."""
    expected = model.state_dict(keep_vars=True)
    aliases = _alias_of(model)
    state = dict(state)
    for name in expected.keys() - state.keys():
        present = [a for a in aliases.get(name, []) if a in state]
        if present:
            state[name] = state[present[0]]
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}")
        raise ContractError(
            "the weights do not load strictly into the network: " + "; ".join(parts)
        )
    for name, tensor in expected.items():
        if not is_lazy(tensor) and tuple(state[name].shape) != tuple(tensor.shape):
            raise ContractError(
                f"the weights do not load strictly: {name} is {tuple(state[name].shape)} in the "
                f"file but {tuple(tensor.shape)} in the network"
            )
    model.load_state_dict(state, strict=True)


def built_and_loaded(submission: Path, job: dict[str, Any], report: Any) -> torch.nn.Module:
    """The stages every phase that runs student code shares: import, build, load strictly.
    The model is returned in eval mode; each stage is recorded in ``report``."""
    torch.set_num_threads(max(1, int(job.get("threads", 1))))
    report.data["torch_version"] = torch.__version__

    t = report.start("import")
    factory = import_entrypoint(submission, job["entrypoint"])
    report.done("import", t)

    t = report.start("build")
    model = build_model(factory)
    report.done("build", t)

    t = report.start("load")
    load_strict(model, read_state_dict(submission / job["weights"]))
    model.eval()
    report.done("load", t)
    return model


def pick_device(job: dict[str, Any]) -> torch.device:
    if job.get("device", "auto") == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
