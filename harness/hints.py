"""Hints for the mistakes students make most, read from their error (``StudentError``).

Each rule is a pure function of the error, the stage it happened in and the submission's
folder (read as text, never imported); the first rule that matches gives the hint.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable
from pathlib import Path

from .results import StudentError
from .student_error import only_files
from .submission import Submission

Rule = Callable[[StudentError, str, Submission], str | None]

SAVE_STATE_DICT = (
    "save the weights, not the model: torch.save(model.state_dict(), 'weights.pt'), or "
    "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
)
KEYS = re.compile(r"(missing|unexpected) (\d+) key\(s\): ([^;]*)")
NO_ATTR = re.compile(r"(\w+)\.py has no `([^`]+)`")
CUDA_TEXT = (
    "torch not compiled with cuda",
    "no nvidia driver",
    "no cuda gpus are available",
    "cuda driver",
    "cuda error",
    "expected all tensors to be on the same device",
    "cudaGetDeviceCount".lower(),
)
SHAPE_TEXT = ("mat1 and mat2 shapes cannot be multiplied", "size mismatch", "shape '[")


def _pickled_model(error: StudentError, stage: str, sub: Submission) -> str | None:
    """``torch.save(model)``: the weights-only load finds classes, not only tensors."""
    text = error.message.lower()
    if stage != "convert" or not (
        error.type == "UnpicklingError" or "weights only load failed" in text
    ):
        return None
    return f"the .pt file holds pickled Python objects (a whole model?); {SAVE_STATE_DICT}"


def _data_parallel(error: StudentError, stage: str, sub: Submission) -> str | None:
    keys = _keys(error.message)
    unexpected = keys.get("unexpected", [])
    if stage != "load" or not unexpected or not all(k.startswith("module.") for k in unexpected):
        return None
    return (
        "the weights were saved from nn.DataParallel or DistributedDataParallel (every name "
        "starts with `module.`): save model.module.state_dict() instead, or strip the prefix: "
        "{k.removeprefix('module.'): v for k, v in state.items()}"
    )


def _keys_mismatch(error: StudentError, stage: str, sub: Submission) -> str | None:
    keys = _keys(error.message)
    if stage != "load" or not keys:
        return None
    parts = []
    if keys.get("missing"):
        parts.append(
            "missing keys are in the network the entrypoint builds but not in the weights file "
            "(a layer added or renamed after saving, or default arguments that differ)"
        )
    if keys.get("unexpected"):
        parts.append(
            "unexpected keys are in the file but not in the network (weights of another "
            "version of the model, or an optimizer or checkpoint dict saved instead)"
        )
    return (
        "; ".join(parts)
        + ": build the model exactly as the entrypoint does, then save its state_dict()"
    )


def _entrypoint(error: StudentError, stage: str, sub: Submission) -> str | None:
    found = NO_ATTR.search(error.message)
    if stage != "import" or found is None:
        return None
    module, wanted = found.groups()
    names = _top_level_names(sub.path / f"{module}.py")
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
    if not close:
        close = [n for n in names if n.lower() == wanted.lower()][:1]
    if close:
        return (
            f'did you mean `{close[0]}`? set entrypoint = "{module}:{close[0]}" under '
            "[model] in submission.toml"
        )
    shown = ", ".join(f"`{n}`" for n in names[:8]) or "none"
    return (
        f"{module}.py defines {shown}; model.entrypoint names the class or function that "
        "builds the model"
    )


def _cuda(error: StudentError, stage: str, sub: Submission) -> str | None:
    text = error.message.lower()
    code = " ".join(f.code for f in error.frames).lower()
    if not any(t in text for t in CUDA_TEXT) and not (
        "cuda" in text and ("cuda" in code or "device" in code)
    ):
        return None
    return (
        "the model moves tensors to the GPU itself (.cuda() or .to('cuda')), but it is built "
        "and exported on a machine without one: leave devices to the harness, and make any "
        "tensor you create follow the input (device=x.device) or register it as a buffer"
    )


def _shape(error: StudentError, stage: str, sub: Submission) -> str | None:
    if not any(t in error.message for t in SHAPE_TEXT) or stage not in ("dry_run", "export"):
        return None
    given = error.input_shape
    size = f"{given[-2]}x{given[-1]}" if given and len(given) >= 3 else "the task's size"
    return (
        f"a layer is sized for other inputs than this task's ({size} images, see the task's "
        "input_shape): compute the size the first Linear layer receives from the input, or "
        "use nn.AdaptiveAvgPool2d before it"
    )


RULES: tuple[Rule, ...] = (
    _pickled_model,
    _data_parallel,
    _keys_mismatch,
    _entrypoint,
    _cuda,
    _shape,
)


def explain(error: StudentError | None, stage: str, sub: Submission) -> StudentError | None:
    """The error with frames of the submission's declared files only and the first
    matching rule's hint."""
    error = only_files(error, sub.files)
    if error is None:
        return None
    for rule in RULES:
        hint = rule(error, stage, sub)
        if hint:
            return error.model_copy(update={"hint": hint})
    return error


def _keys(message: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, _, names in KEYS.findall(message):
        out[kind] = [n.strip() for n in names.split(",") if n.strip()]
    return out


def _top_level_names(path: Path) -> list[str]:
    """Classes, functions and assigned names at the top of a module (parsed, not run)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]
