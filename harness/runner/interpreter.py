"""Run a host-checked exported program: a small interpreter of its JSON graph.

The archive is the one ``torch.export.save`` wrote in phase A, checked and rewritten by
the host (``harness/program/check.py``): every node calls an allowed ATen operator with
plain arguments, every stored tensor is raw bytes, shapes are static. Interpreting that
graph directly, instead of ``torch.export.load``, keeps phase B free of the general
deserializer (sympy expressions, pytree specs, guard code, pickled sample inputs) and of
its import cost; the results are the same (the tests compare them).

Node kinds: an ATen call binding one output, several, or none (``_assert_tensor_metadata``
checks a tensor and returns nothing); and the higher-order wrappers the host allows
(``wrap_with_autocast``, ``wrap_with_set_grad_enabled``), whose body runs in a scope of
its own under the wrapper's mode.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# torch/_export/serde/schema.py enums
SCALAR_TYPES = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    12: torch.bool,
    13: torch.bfloat16,
}
MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
LAYOUTS = {7: torch.strided}
PREFIX = "torch.ops.aten."
PLAIN = ("as_int", "as_ints", "as_bool", "as_bools", "as_string", "as_strings")
SPECIAL = ("Infinity", "-Infinity", "NaN")  # how the serializer writes those floats


class ProgramError(Exception):
    """The program holds something this interpreter does not run (the host check missed it)."""


def _ints(values: list[dict[str, int]]) -> list[int]:
    return [int(v["as_int"]) for v in values]


class Program:
    """A checked program: ``Program(path, device)(x)`` returns the model's output."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.device = device
        with zipfile.ZipFile(path) as zf:
            root = zf.namelist()[0].partition("/")[0]
            model = json.loads(zf.read(f"{root}/models/model.json"))
            stores = {
                "weights": self._tensors(zf, root, "weights", "model_weights_config.json"),
                "constants": self._tensors(zf, root, "constants", "model_constants_config.json"),
            }
        graph = model["graph_module"]["graph"]
        self.state: dict[str, torch.Tensor] = {}
        self.input = ""
        for spec in model["graph_module"]["signature"]["input_specs"]:
            ((kind, body),) = spec.items()
            if kind == "user_input":
                self.input = body["arg"]["as_tensor"]["name"]
                continue
            name = body.get("parameter_name") or body.get("buffer_name")
            name = name or body.get("tensor_constant_name")
            persistent = kind == "parameter" or body.get("persistent", True)
            store = stores["weights" if kind != "tensor_constant" and persistent else "constants"]
            self.state[body["arg"]["name"]] = store[name].to(device)
        self.nodes = graph["nodes"]
        self.output = graph["outputs"][0]["as_tensor"]["name"]
        self.ops = {n["target"]: self._op(n["target"]) for n in self.nodes}
        self.drops: dict[int, list[list[str]]] = {}  # per node list: names freed after each

    @staticmethod
    def _tensors(zf: zipfile.ZipFile, root: str, folder: str, config: str) -> dict[str, Any]:
        entries = json.loads(zf.read(f"{root}/data/{folder}/{config}"))["config"]
        storages: dict[str, torch.Tensor] = {}
        out = {}
        for name, entry in entries.items():
            meta = entry["tensor_meta"]
            dtype = SCALAR_TYPES[meta["dtype"]]
            member = f"{root}/data/{folder}/{entry['path_name']}"
            if member not in storages:
                raw = bytearray(zf.read(member))
                storages[member] = (
                    torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                )
            out[name] = torch.as_strided(
                storages[member],
                _ints(meta["sizes"]),
                _ints(meta["strides"]),
                int(meta["storage_offset"]["as_int"]),
            )
        return out

    @staticmethod
    def _op(target: str) -> Any:
        if target in HIGHER_ORDER:
            return None  # run by ``_higher_order``
        if not target.startswith(PREFIX):
            raise ProgramError(f"operator {target} is not an ATen operator")
        name, _, overload = target[len(PREFIX) :].partition(".")
        return getattr(getattr(torch.ops.aten, name), overload)

    def _arg(self, arg: dict[str, Any], env: dict[str, Any]) -> Any:
        ((kind, value),) = arg.items()
        if kind in PLAIN:
            return value
        if kind == "as_float":
            return float(value) if value in SPECIAL else value
        if kind == "as_floats":
            return [float(v) if v in SPECIAL else v for v in value]
        if kind == "as_none":
            return None
        if kind == "as_tensor":
            return env[value["name"]]
        if kind == "as_tensors":
            return [env[t["name"]] for t in value]
        if kind == "as_optional_tensors":
            return [env[t["as_tensor"]["name"]] if "as_tensor" in t else None for t in value]
        if kind == "as_optional_tensor":
            return env[value["as_tensor"]["name"]] if "as_tensor" in value else None
        if kind == "as_scalar_type":
            return SCALAR_TYPES[value]
        if kind == "as_memory_format":
            return MEMORY_FORMATS[value]
        if kind == "as_layout":
            return LAYOUTS[value]
        if kind == "as_device":
            return self.device  # tensors made in the graph go where the program runs
        raise ProgramError(f"argument kind {kind} is not supported")

    @staticmethod
    def _bind(out: dict[str, Any], value: Any, env: dict[str, Any]) -> None:
        ((kind, ref),) = out.items()
        if kind == "as_tensor":
            env[ref["name"]] = value
        elif kind == "as_tensors":
            for item, v in zip(ref, value, strict=True):
                env[item["name"]] = v
        elif kind != "as_none":
            raise ProgramError(f"output kind {kind} is not supported")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = dict(self.state)
        env[self.input] = x
        self._run(self.nodes, env)
        output: torch.Tensor = env[self.output]
        return output

    def _run(
        self, nodes: list[dict[str, Any]], env: dict[str, Any], keep: frozenset[str] = frozenset()
    ) -> None:
        drops = self.drops.get(id(nodes))
        if drops is None:
            drops = self.drops[id(nodes)] = _last_uses(nodes, keep | {self.output})
        for node, drop in zip(nodes, drops, strict=True):
            self._node(node, env)
            for name in drop:  # as eager PyTorch frees a value after its last use: the
                env.pop(name, None)  # allocator reuses warm memory instead of new pages

    def _node(self, node: dict[str, Any], env: dict[str, Any]) -> None:
        target = node["target"]
        if target in HIGHER_ORDER:
            self._higher_order(node, env)
            return
        args, kwargs = [], {}
        for named in node["inputs"]:
            value = self._arg(named["arg"], env)
            if named.get("kind") == 2:
                kwargs[named["name"]] = value
            else:
                args.append(value)
        op = self.ops.get(target) or self.ops.setdefault(target, self._op(target))
        result = op(*args, **kwargs)
        outputs = node["outputs"]
        if not outputs:  # e.g. aten._assert_tensor_metadata: a check, no value
            return
        if len(outputs) == 1:
            self._bind(outputs[0], result, env)
        else:
            for out, value in zip(outputs, result, strict=True):
                self._bind(out, value, env)

    def _higher_order(self, node: dict[str, Any], env: dict[str, Any]) -> None:
        """A wrapper node (checked by the host): its body runs in a scope of its own, on
        the tensors passed in, under the wrapper's mode; its outputs bind in order."""
        inputs = [named["arg"] for named in node["inputs"]]
        at = next(i for i, arg in enumerate(inputs) if "as_graph" in arg)
        plain = [self._arg(arg, env) for arg in inputs[:at]]
        body = inputs[at]["as_graph"]["graph"]
        scope = {
            ref["as_tensor"]["name"]: self._arg(arg, env)
            for ref, arg in zip(body["inputs"], inputs[at + 1 :], strict=True)
        }
        results = frozenset(ref["as_tensor"]["name"] for ref in body["outputs"])
        with HIGHER_ORDER[node["target"]](self.device, *plain):
            self._run(body["nodes"], scope, results)
        for out, ref in zip(node["outputs"], body["outputs"], strict=True):
            self._bind(out, scope[ref["as_tensor"]["name"]], env)


def _refs(node: dict[str, Any]) -> list[str]:
    """The value names a node reads."""
    names: list[str] = []
    for named in node["inputs"]:
        ((kind, value),) = named["arg"].items()
        if kind == "as_tensor":
            names.append(value["name"])
        elif kind == "as_tensors":
            names.extend(t["name"] for t in value)
        elif kind == "as_optional_tensors":
            names.extend(t["as_tensor"]["name"] for t in value if "as_tensor" in t)
        elif kind == "as_optional_tensor" and "as_tensor" in value:
            names.append(value["as_tensor"]["name"])
    return names


def _last_uses(nodes: list[dict[str, Any]], keep: frozenset[str]) -> list[list[str]]:
    """For each node, the names it reads for the last time (never those in ``keep``)."""
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in _refs(node):
            last[name] = i
    drops: list[list[str]] = [[] for _ in nodes]
    for name, i in last.items():
        if name not in keep:
            drops[i].append(name)
    return drops


def _autocast(
    device: torch.device, _type: Any, dtype: Any, enabled: Any, cache: Any
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` as exported, on the device the program runs on (a program is
    exported on the CPU); disabled when it was disabled (timm's EfficientViT)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=bool(cache))


def _grad_mode(device: torch.device, enabled: Any) -> contextlib.AbstractContextManager[Any]:
    """Grad mode changes no value, and phase B runs in inference mode: nothing to enter."""
    return contextlib.nullcontext()


HIGHER_ORDER: dict[str, Callable[..., contextlib.AbstractContextManager[Any]]] = {
    "torch.ops.higher_order.wrap_with_autocast": _autocast,
    "torch.ops.higher_order.wrap_with_set_grad_enabled": _grad_mode,
}
