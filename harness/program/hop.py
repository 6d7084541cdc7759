"""The higher-order operators an exported program may hold (``export_ops.HIGHER_ORDER``):
a wrapper node that runs a subgraph (its body) under a mode, e.g. ``wrap_with_autocast``
for a ``with torch.autocast(...)`` block. Parsed from JSON here, never torch; the body's
nodes are checked by ``export_graph`` like the graph's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ops import HIGHER_ORDER_ARGS, higher_order
from .records import _fail, _short


@dataclass(frozen=True)
class HopCall:
    """One higher-order node: its body graph, the tensors it passes in, the body's own
    input and output names, and the node's output names."""

    body: dict[str, Any]
    tensors: list[str]
    inputs: list[str]
    outputs: list[str]
    results: list[str]


def _ref(value: Any, where: str) -> str:
    if not isinstance(value, dict) or set(value) != {"as_tensor"}:
        _fail(f"{where}: a value that is not a tensor")
    ref = value["as_tensor"]
    if not isinstance(ref, dict) or set(ref) != {"name"} or not isinstance(ref["name"], str):
        _fail(f"{where}: a tensor reference is malformed")
    return str(ref["name"])


def hop_call(node: dict[str, Any]) -> HopCall:
    """Parse a higher-order node: its plain arguments match the operator's signature, then
    one body graph, then only tensors; the body takes and returns tensors, as many as the
    node passes and binds."""
    target = node["target"]
    where = _short(target)
    plain = HIGHER_ORDER_ARGS[target]
    inputs = node["inputs"]
    if not isinstance(inputs, list) or len(inputs) < len(plain) + 1:
        _fail(f"{where}: malformed arguments")
    args = [named.get("arg") if isinstance(named, dict) else None for named in inputs]
    for arg, kinds in zip(args, plain, strict=False):
        if not isinstance(arg, dict) or len(arg) != 1 or next(iter(arg)) not in kinds:
            _fail(f"{where}: malformed arguments")
    body = args[len(plain)]
    if not isinstance(body, dict) or set(body) != {"as_graph"}:
        _fail(f"{where}: its body is not a graph")
    graph = body["as_graph"]
    if not isinstance(graph, dict) or set(graph) != {"name", "graph"}:
        _fail(f"{where}: its body is malformed")
    graph = graph["graph"]
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        _fail(f"{where}: its body is malformed")
    tensors = [_ref(a, f"{where} argument") for a in args[len(plain) + 1 :]]
    names = []
    for key in ("inputs", "outputs"):
        if not isinstance(graph.get(key), list):
            _fail(f"{where}: its body is malformed")
        names.append([_ref(r, f"{where} body {key}") for r in graph[key]])
    outs = node["outputs"]
    if not isinstance(outs, list):
        _fail(f"{where}: malformed outputs")
    results = [_ref(o, f"{where} output") for o in outs]
    if len(names[0]) != len(tensors) or len(names[1]) != len(results):
        _fail(f"{where}: its body's inputs or outputs do not match the node's")
    return HopCall(graph, tensors, names[0], names[1], results)


def inline_bodies(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``nodes`` with every higher-order node replaced by its body's nodes, their values
    renamed into the outer graph: the body's inputs are the tensors passed in, its outputs
    the node's results, every other name gets a prefix of its own. The count then sees
    through an autocast or grad-mode block as if it were not there (a norm layer inside
    one is still fed by the input, a literal inside one still a literal)."""
    flat: list[dict[str, Any]] = []
    for k, node in enumerate(nodes):
        if not higher_order(node["target"]):
            flat.append(node)
            continue
        call = hop_call(node)
        names = dict(zip(call.inputs, call.tensors, strict=True))
        names.update(zip(call.outputs, call.results, strict=True))
        tag = f"hop{k}."
        flat.extend(_renamed(n, names, tag) for n in inline_bodies(call.body["nodes"]))
    return flat


def _renamed(value: Any, names: dict[str, str], tag: str) -> Any:
    """A copy of a node's JSON with its tensor references (``{"name": ...}``) renamed."""
    if isinstance(value, dict):
        if set(value) == {"name"} and isinstance(value["name"], str):
            return {"name": names.get(value["name"], tag + value["name"])}
        return {key: _renamed(v, names, tag) for key, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names, tag) for v in value]
    return value
