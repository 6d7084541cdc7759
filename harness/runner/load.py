"""Build the submission's model and load its weights strictly."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.parameter import is_lazy

from .contract import EagerJob, ExportJob, ModelIO


class ContractError(Exception):
    """The submission broke the contract in a way its own code did not raise."""


# where a converted file keeps the .pt state_dict's ``_metadata`` (module versions)
METADATA_KEY = "state_dict_metadata"


def _versions(value: Any) -> dict[str, dict[str, Any]] | None:
    """A state_dict's ``_metadata`` ({module prefix: {"version": n, ...}}), plain values
    only, or None."""
    if not isinstance(value, dict):
        return None
    out: dict[str, dict[str, Any]] = {}
    for prefix, entry in value.items():
        if isinstance(prefix, str) and isinstance(entry, dict):
            out[prefix] = {
                str(k): v for k, v in entry.items() if isinstance(v, (int, float, str, bool))
            }
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors``, or ``.pt``/``.pth`` loaded weights-only (no code runs).
    The ``_metadata`` (module versions) of a ``.pt`` state_dict is kept, as PyTorch keeps it."""
    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(METADATA_KEY)
        try:
            versions = _versions(json.loads(raw)) if raw else None
        except ValueError:
            versions = None
        return _with_versions(state, versions)
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ContractError(
            f"{path.name} is not a state_dict (a dict of tensor names to tensors); "
            "save it with torch.save(model.state_dict(), path)"
        )
    return _with_versions(dict(obj), _versions(getattr(obj, "_metadata", None)))


def _with_versions(
    state: dict[str, torch.Tensor], versions: dict[str, dict[str, Any]] | None
) -> dict[str, torch.Tensor]:
    ordered: Any = OrderedDict(state)
    if versions is not None:
        ordered._metadata = versions
    result: dict[str, torch.Tensor] = ordered
    return result


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
    metadata = {"converted_from": source.name}
    versions = getattr(state, "_metadata", None)
    if versions is not None:
        metadata[METADATA_KEY] = json.dumps(versions)
    save_file(unique, str(target), metadata=metadata)
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


def _versioned(
    model: torch.nn.Module, state: dict[str, torch.Tensor], versions: Any
) -> dict[str, torch.Tensor]:
    """``state`` with the ``_metadata`` PyTorch passes to each module's
    ``_load_from_state_dict`` (torchvision's MNASNet reads its version there): the file's
    own when it has one (a ``.pt`` state_dict), else the model's (a safetensors file keeps
    none: it was saved from this code, so it has this code's versions)."""
    ordered: Any = OrderedDict(state)
    own = getattr(model.state_dict(), "_metadata", None)
    ordered._metadata = versions if versions is not None else own
    result: dict[str, torch.Tensor] = ordered
    return result


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)``, except that one copy of tied weights suffices."""
    expected = model.state_dict(keep_vars=True)
    aliases = _alias_of(model)
    versions = getattr(state, "_metadata", None)
    state = dict(state)
    for name in expected.keys() - state.keys():
        present = [a for a in aliases.get(name, []) if a in state]
        if present:
            state[name] = state[present[0]]
    state = _versioned(model, state, versions)
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


def built_and_loaded(submission: Path, job: EagerJob | ExportJob, report: Any) -> torch.nn.Module:
    """The stages every phase that runs student code shares: import, build, load strictly.
    The model is returned in eval mode; each stage is recorded in ``report``."""
    torch.set_num_threads(max(1, job.threads))
    report.data["torch_version"] = torch.__version__

    t = report.start("import")
    factory = import_entrypoint(submission, job.entrypoint)
    report.done("import", t)

    t = report.start("build")
    model = build_model(factory)
    report.done("build", t)

    t = report.start("load")
    load_strict(model, read_state_dict(submission / job.weights))
    model.eval()
    report.done("load", t)
    return model


def pick_device(job: ModelIO) -> torch.device:
    if job.device == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
