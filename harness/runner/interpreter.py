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

``channels_last=True`` (phase B on a CPU) runs 2-D convolutions on channels-last tensors,
which oneDNN computes in 0.5-0.75 of the time on this project's CNNs
(``benchmarks/interpreter.py``); the values are the same up to float rounding (the order
of a convolution's sums), as with another thread count. A value a convolution made
channels-last flows through the operators in ``LAYOUT_FREE`` (their kernels compute the
same values whatever the strides, and return a new tensor, or, in place, their first
argument) and is made contiguous, once, for every name bound to it, before any other
operator reads it: views, reshapes and metadata checks see the strides they were traced
with, and a view never aliases a copy.
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


# operators a channels-last value may reach as it is (see the module's docstring): each
# returns a new tensor, or its first argument (the in-place forms), never a view
def _aten(targets: str) -> frozenset[str]:
    return frozenset(PREFIX + target for target in targets.split())


LAYOUT_FREE = _aten(
    """
    convolution.default conv2d.default
    batch_norm.default _native_batch_norm_legit_no_training.default
    _batch_norm_no_update.default
    relu.default relu_.default relu6.default hardtanh.default hardtanh_.default
    leaky_relu.default leaky_relu_.default elu.default elu_.default gelu.default gelu_.default
    silu.default silu_.default mish.default mish_.default sigmoid.default sigmoid_.default
    tanh.default tanh_.default hardswish.default hardswish_.default hardsigmoid.default
    hardsigmoid_.default
    add.Tensor add_.Tensor sub.Tensor sub_.Tensor mul.Tensor mul_.Tensor div.Tensor
    div_.Tensor add.Scalar mul.Scalar
    max_pool2d.default max_pool2d_with_indices.default avg_pool2d.default
    adaptive_avg_pool2d.default _adaptive_avg_pool2d.default mean.dim cat.default
    """
)
CONVOLUTIONS = _aten("convolution.default conv2d.default")
# the in-place forms among them (``harness.program.check.in_place``, which the sandbox
# cannot import): their output is their first argument
LAYOUT_FREE_IN_PLACE = frozenset(
    t for t in LAYOUT_FREE if t.removeprefix(PREFIX).partition(".")[0].endswith("_")
)


class ProgramError(Exception):
    """The program holds something this interpreter does not run (the host check missed it)."""


def _ints(values: list[dict[str, int]]) -> list[int]:
    return [int(v["as_int"]) for v in values]


class Program:
    """A checked program: ``Program(path, device)(x)`` returns the model's output."""

    def __init__(self, path: Path, device: torch.device, channels_last: bool = False) -> None:
        self.device = device
        self.channels_last = channels_last
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
        if channels_last:
            for name in _conv_weights_only(self.nodes, self.state):
                self.state[name] = self.state[name].contiguous(memory_format=torch.channels_last)

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
        marked: set[str] = set()  # names bound to a channels-last value a convolution made
        for node, drop in zip(nodes, drops, strict=True):
            self._node(node, env, marked)
            for name in drop:  # as eager PyTorch frees a value after its last use: the
                env.pop(name, None)  # allocator reuses warm memory instead of new pages
                marked.discard(name)
        _unmark(keep | {self.output}, env, marked)

    def _node(self, node: dict[str, Any], env: dict[str, Any], marked: set[str]) -> None:
        target = node["target"]
        free = self.channels_last and target in LAYOUT_FREE
        if marked and not free:
            _unmark(_refs(node), env, marked)
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
        if free and target in CONVOLUTIONS and args[0].dim() == 4 and args[1].dim() == 4:
            args[0] = _channels_last(args[0])
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
        if free:
            _mark(node, env, marked)

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


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` with channels-last strides, which the convolution follows. With one channel
    both layouts hold the same bytes and ``contiguous`` keeps the standard strides, which
    the convolution would follow: the channel's stride must be 1."""
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def _mark(node: dict[str, Any], env: dict[str, Any], marked: set[str]) -> None:
    """After a ``LAYOUT_FREE`` node: mark its outputs that are not contiguous. A new
    tensor has no view, so its copy can take its place; an in-place form's output is its
    first argument, marked only when that was (a view of another value is never copied)."""
    if node["target"] in LAYOUT_FREE_IN_PLACE:
        first = _refs(node)[:1]
        if not (first and first[0] in marked):
            return
    for out in node["outputs"]:
        ((kind, ref),) = out.items()
        refs = [ref] if kind == "as_tensor" else ref if kind == "as_tensors" else []
        for item in refs:
            value = env.get(item["name"])
            if isinstance(value, torch.Tensor) and not value.is_contiguous():
                marked.add(item["name"])


def _unmark(names: Any, env: dict[str, Any], marked: set[str]) -> None:
    """Make the marked values among ``names`` contiguous: one copy per value, bound to
    every marked name that held it (an in-place form binds its input's value again)."""
    for name in list(names):
        if name not in marked:
            continue
        value = env[name]
        copy = value.contiguous()
        for other in [m for m in marked if env.get(m) is value]:
            env[other] = copy
            marked.discard(other)


def _conv_weights_only(nodes: list[dict[str, Any]], state: dict[str, torch.Tensor]) -> list[str]:
    """The 4-D stored tensors that only 2-D convolutions read, and only as their weight:
    stored channels-last once, for every call."""
    weights: set[str] = set()
    other: set[str] = set()
    for node in nodes:
        for at, named in enumerate(node["inputs"]):
            conv_weight = node["target"] in CONVOLUTIONS and at == 1
            (weights if conv_weight else other).update(_arg_refs(named["arg"]))
    return [n for n in weights - other if n in state and state[n].dim() == 4]


def _refs(node: dict[str, Any]) -> list[str]:
    """The value names a node reads."""
    return [name for named in node["inputs"] for name in _arg_refs(named["arg"])]


def _arg_refs(arg: dict[str, Any]) -> list[str]:
    """The value names one argument reads."""
    ((kind, value),) = arg.items()
    if kind == "as_tensor":
        return [value["name"]]
    if kind == "as_tensors":
        return [t["name"] for t in value]
    if kind == "as_optional_tensors":
        return [t["as_tensor"]["name"] for t in value if "as_tensor" in t]
    if kind == "as_optional_tensor" and "as_tensor" in value:
        return [value["as_tensor"]["name"]]
    return []


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
