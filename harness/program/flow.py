"""How values flow through a checked program's graph (JSON only, no torch).

The count (``harness.counting``) needs three facts about the graph, each computed in one
pass over its nodes:

- which nodes reach the output (``live``): a stored tensor or literal only in dead nodes
  never shapes a prediction;
- which values depend on the model's input (``from_input``): a normalization layer
  applied to anything input-independent (a constant, a buffer) is a lookup table;
- which parameter-bearing layers feed each value (``layers``), and their widths: a
  normalization layer's statistics are structural only up to the width of the counted
  layers that computed its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import Program

# the argument names of literals that carry values into the computation; every other
# integer (sizes, strides, dims, padding, kernel sizes) only shapes it
VALUE_INTS = frozenset({
    "other", "alpha", "value", "fill_value", "s", "min", "max", "exponent", "self",
    "scalar", "start", "end", "step", "index", "beta", "threshold", "negative_slope",
    "lambd", "upper", "lower", "weight", "min_val", "max_val", "divisor_override",
})  # fmt: skip
# float arguments of normalization operators that are settings, not learned values
NORM_SETTINGS = frozenset({"momentum", "eps"})
INT32 = (-(2**31), 2**31 - 1)


@dataclass
class Flow:
    """The facts the count needs (see the module docstring)."""

    live: list[bool]  # per node: reaches the output
    from_input: set[str]  # value names computed from the model's input
    layers: dict[str, int] = field(default_factory=dict)  # value -> bitmask of layer nodes
    widths: list[int] = field(default_factory=list)  # width of each layer (bit index)
    producer: dict[str, int] = field(default_factory=dict)  # value -> node index

    def fed_by_width(self, value: str, need: int) -> bool:
        """Whether the distinct parameter-bearing layers that feed ``value`` (the input
        counting as one) are at least ``need`` wide together."""
        mask, total = self.layers.get(value, 0), 0
        while mask and total < need:
            high = mask.bit_length() - 1  # the nearest layers first
            total += self.widths[high]
            mask ^= 1 << high
        return total >= need


def tensor_refs(arg: Any) -> list[str]:
    """The tensor names one (already checked) argument refers to."""
    ((kind, value),) = arg.items()
    if kind == "as_tensor":
        return [value["name"]]
    if kind == "as_tensors":
        return [t["name"] for t in value]
    if kind == "as_optional_tensors":
        return [t["as_tensor"]["name"] for t in value if "as_tensor" in t]
    if kind == "as_optional_tensor":
        return [value["as_tensor"]["name"]] if "as_tensor" in value else []
    return []


def outputs_of(node: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for out in node["outputs"]:
        names.extend(tensor_refs(out) if "as_none" not in out else [])
    return names


def analyse(program: Program, output: str, user_input: str, input_width: int = 1) -> Flow:
    """The program's flow facts; ``output``/``user_input``: the graph's value names;
    ``input_width``: the input's channels (the input counts as a layer that wide)."""
    nodes = program.nodes
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in outputs_of(node):
            producer[name] = i
    live = [False] * len(nodes)
    wanted = [output]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        i = producer[name]
        if live[i]:
            continue
        live[i] = True
        for named in nodes[i]["inputs"]:
            wanted.extend(tensor_refs(named["arg"]))
    _mark_writers(program, live, producer)
    params = {program.placeholders[p]: program.payloads[p] for p in program.parameters}
    flow = Flow(live=live, from_input={user_input}, producer=producer)
    flow.widths.append(input_width)
    flow.layers[user_input] = 1
    for node in nodes:
        refs = [r for named in node["inputs"] for r in tensor_refs(named["arg"])]
        mask = 0
        for r in refs:
            mask |= flow.layers.get(r, 0)
        shapes = [params[r].shape for r in refs if r in params]
        if shapes:
            flow.widths.append(max((s[0] if s else 1) for s in shapes))
            mask |= 1 << (len(flow.widths) - 1)
        dependent = any(r in flow.from_input for r in refs)
        for name in outputs_of(node):
            flow.layers[name] = mask
            if dependent:
                flow.from_input.add(name)
    return flow


def _mark_writers(program: Program, live: list[bool], producer: dict[str, int]) -> None:
    """In-place nodes whose written value is read by a live node are live too."""
    for i, node in enumerate(program.nodes):
        if live[i] or not node["target"].split(".")[-2].endswith("_"):
            continue
        first = next((tensor_refs(n["arg"]) for n in node["inputs"] if n["arg"]), [])
        if first and first[0] in producer and live[producer[first[0]]]:
            live[i] = True


def literal_values(program: Program, flow: Flow, norm_ops: frozenset[str]) -> int:
    """Literals in live nodes that carry values, each counted per 32 bits: every float
    (except normalization settings, momentum and eps), and integers passed as values."""
    total = 0
    for i, node in enumerate(program.nodes):
        if not flow.live[i]:
            continue
        norm = node["target"] in norm_ops or "norm" in node["target"]
        for named in node["inputs"]:
            ((kind, value),) = named["arg"].items()
            name = named.get("name", "")
            if kind == "as_float":
                total += 0 if norm and name in NORM_SETTINGS else 1
            elif kind == "as_floats":
                total += len(value)
            elif kind == "as_int" and name in VALUE_INTS:
                total += 1 if INT32[0] <= value <= INT32[1] else 2
    return total
