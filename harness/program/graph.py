"""Check an exported program's ``model.json`` (parsed JSON, never torch): its keys, its
graph's nodes and tensors, its signature, and how they match the stored payloads.

Returns the checked ``Program``, the float literals its nodes hold, and the JSON phase B
gets: the same program with node metadata (stack traces, source names) dropped.
"""

from __future__ import annotations

import re
from typing import Any

from .hop import hop_call
from .ops import ARG_KINDS, allowed_target, denial, higher_order
from .records import (
    FLOATS,
    CheckError,
    Expect,
    Payload,
    Program,
    _fail,
    _short,
    tensor_meta,
)

MODEL_KEYS = {
    "graph_module",
    "opset_version",
    "range_constraints",
    "schema_version",
    "verifiers",
    "torch_version",
    "guards_code",
}
GRAPH_KEYS = {
    "inputs",
    "outputs",
    "nodes",
    "tensor_values",
    "sym_int_values",
    "sym_bool_values",
    "is_single_tensor_return",
    "custom_obj_values",
    "sym_float_values",
}
NODE_KEYS = {"target", "inputs", "outputs", "metadata", "is_hop_single_tensor_return", "name"}
# the pytree specs of ``forward(x) -> tensor``, exactly as torch 2.14 writes them
IN_SPEC = (
    '[1, {"type": "builtins.tuple", "context": "null", "children_spec": [{"type": '
    '"builtins.tuple", "context": "null", "children_spec": [{"type": null, "context": null, '
    '"children_spec": []}]}, {"type": "builtins.dict", "context": "[]", "children_spec": []}]}]'
)
OUT_SPEC = '[1, {"type": null, "context": null, "children_spec": []}]'
CUSTOM_OBJ = (
    "the model holds a Python object in its computation (e.g. a torch.Generator for random "
    "numbers in forward); only tensors may be stored"
)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


def _dict(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value)[:8] if isinstance(value, dict) else type(value).__name__
        _fail(f"{what} is malformed (keys {got})")
    return value


def _check_top(model: Any) -> dict[str, Any]:
    model = _dict(model, MODEL_KEYS, "model.json")
    if model["guards_code"] != []:
        _fail("the program carries guard code (Python source); export with static shapes")
    if model["range_constraints"] != {}:
        _fail("the program has symbolic shapes (range constraints); export with static shapes")
    verifiers = model["verifiers"]
    if not isinstance(verifiers, list) or not set(verifiers) <= {"TRAINING", "ATEN"}:
        _fail("model.json names an unknown verifier")
    opset = model["opset_version"]
    if not isinstance(opset, dict) or set(opset) - {"aten"}:
        _fail("the program uses operator sets other than aten")
    gm = _dict(
        model["graph_module"],
        {"graph", "signature", "module_call_graph", "metadata", "treespec_namedtuple_fields"},
        "graph_module",
    )
    if gm["metadata"] != {} or gm["treespec_namedtuple_fields"] != {}:
        _fail("the program carries module metadata")
    _check_call_graph(gm["module_call_graph"])
    return gm


def _check_call_graph(entries: Any) -> None:
    if not isinstance(entries, list) or not entries:
        _fail("the program's call graph is malformed")
    root = entries[0]
    sig = root.get("signature") if isinstance(root, dict) else None
    keys = {"inputs", "outputs", "in_spec", "out_spec", "forward_arg_names"}
    if not isinstance(sig, dict) or root.get("fqn") != "" or set(sig) != keys:
        _fail("the program's call graph is malformed")
    if sig["in_spec"] != IN_SPEC or sig["inputs"] != [] or sig["outputs"] != []:
        _fail("the model's forward must take exactly one tensor (forward(x))")
    if sig["out_spec"] != OUT_SPEC:
        _fail("the model's forward must return exactly one tensor")
    names = sig["forward_arg_names"]
    if not isinstance(names, list) or len(names) != 1 or not NAME_RE.match(str(names[0])):
        _fail("the model's forward must take exactly one tensor (forward(x))")
    for entry in entries[1:]:
        if not isinstance(entry, dict) or entry.get("signature") is not None:
            _fail("the program's call graph holds submodule signatures")


def check_arg(arg: Any, where: str, literals: list[float]) -> list[str]:
    """The tensor names an argument refers to; float literals go into ``literals``."""
    if not isinstance(arg, dict) or len(arg) != 1:
        _fail(f"{where}: malformed argument")
    ((kind, value),) = arg.items()
    if kind.startswith("as_sym"):
        _fail(f"{where}: symbolic value ({kind}); shapes must be static")
    if kind not in ARG_KINDS:
        _fail(f"{where}: argument kind {kind!r} is not allowed")
    try:
        if kind == "as_float":
            literals.append(_float(value, where))
        elif kind == "as_floats":
            literals.extend(_float(v, where) for v in value)
        if kind == "as_tensor":
            return [_name(value)]
        if kind == "as_tensors":
            return [_name(t) for t in value]
        if kind in ("as_optional_tensors", "as_optional_tensor"):
            items = value if kind == "as_optional_tensors" else [value]
            return [_name(t["as_tensor"]) for t in items if "as_tensor" in t]
    except (TypeError, KeyError, AttributeError):
        _fail(f"{where}: malformed {kind}")
    return []


def _float(value: Any, where: str) -> float:
    """A float literal: a number, or "Infinity", "-Infinity", "NaN" as torch writes them."""
    if isinstance(value, str) and value in ("Infinity", "-Infinity", "NaN"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{where}: malformed float")
    return float(value)


def _name(ref: Any) -> str:
    if not isinstance(ref, dict) or set(ref) != {"name"} or not isinstance(ref["name"], str):
        _fail("a tensor reference is malformed")
    return str(ref["name"])


def check_nodes(
    graph: dict[str, Any], extra_ops: tuple[str, ...], depth: int = 0
) -> tuple[list[str], list[float], dict[str, list[tuple[str, str]]]]:
    """Operators used, float literals, and each tensor's uses as (operator, argument);
    the body of a higher-order operator is checked the same way (``depth`` 1)."""
    for key in ("sym_int_values", "sym_bool_values", "sym_float_values"):
        if graph[key]:
            _fail(f"the program holds symbolic values ({key}); shapes must be static")
    if graph["custom_obj_values"]:
        _fail(CUSTOM_OBJ)
    operators: set[str] = set()
    literals: list[float] = []
    uses: dict[str, list[tuple[str, str]]] = {}
    if not isinstance(graph["nodes"], list):
        _fail("the graph is malformed")
    for node in graph["nodes"]:
        node = _dict(node, NODE_KEYS, "a graph node")
        target = node["target"]
        if not isinstance(target, str):
            _fail("a graph node is malformed")
        reason = denial(target)
        if reason:
            _fail(f"the program {reason} ({_short(target)})")
        if higher_order(target) and depth == 0:
            _check_higher_order(node, extra_ops, operators, literals, uses)
            continue
        if not allowed_target(target, extra_ops):
            _fail(f"operator {_short(target)} is not on the allow-list")
        operators.add(_short(target))
        for named in node["inputs"]:
            arg_name = str(named.get("name")) if isinstance(named, dict) else "?"
            where = f"{_short(target)}({arg_name[:40]})"
            for ref in check_arg(
                named.get("arg") if isinstance(named, dict) else None, where, literals
            ):
                uses.setdefault(ref, []).append((target, arg_name))
        for out in node["outputs"]:
            if not isinstance(out, dict) or set(out) - {"as_tensor", "as_tensors", "as_none"}:
                _fail(f"{_short(target)}: an output that is not a tensor")
            check_arg(out, f"{_short(target)} output", [])
        node["metadata"] = {}
    return sorted(operators), literals, uses


def _check_higher_order(
    node: dict[str, Any],
    extra_ops: tuple[str, ...],
    operators: set[str],
    literals: list[float],
    uses: dict[str, list[tuple[str, str]]],
) -> None:
    """A wrapper such as ``wrap_with_autocast``: its body passes the same node check (its
    literals count, its operators are listed), and a use of a body input inside the body
    is a use of the tensor passed in (so a batch norm's statistics stay recognized)."""
    call = hop_call(node)
    where = _short(node["target"])
    graph = _dict(call.body, GRAPH_KEYS, f"{where} body")
    if not isinstance(graph["tensor_values"], dict):
        _fail(f"{where}: its body is malformed")
    for name, meta in graph["tensor_values"].items():
        tensor_meta(meta, f"graph tensor {name[:60]!r}")
    ops, lits, inner = check_nodes(graph, extra_ops, depth=1)
    operators.update([*ops, where])
    literals.extend(lits)
    outer = dict(zip(call.inputs, call.tensors, strict=True))
    for name in call.tensors:
        uses.setdefault(name, [])
    for name, used in inner.items():
        if name in outer:
            uses[outer[name]].extend(used)
    node["metadata"] = {}


def _specs(signature: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, Any]]]:
    signature = _dict(signature, {"input_specs", "output_specs"}, "the signature")
    inputs, outputs = [], []
    for spec in signature["input_specs"]:
        if not isinstance(spec, dict) or len(spec) != 1:
            _fail("the signature is malformed")
        ((kind, body),) = spec.items()
        if kind not in ("parameter", "buffer", "tensor_constant", "user_input"):
            if kind == "custom_obj":
                _fail(CUSTOM_OBJ)
            _fail(f"the program takes a {kind} input; only tensors are allowed")
        inputs.append((kind, body))
    for spec in signature["output_specs"]:
        if not isinstance(spec, dict) or len(spec) != 1:
            _fail("the signature is malformed")
        ((kind, body),) = spec.items()
        if kind in ("buffer_mutation", "parameter_mutation", "user_input_mutation"):
            _fail(
                "the model changes its own tensors while predicting; predictions must not "
                "depend on earlier calls"
            )
        if kind != "user_output":
            _fail(f"the program has a {kind} output; only the prediction is allowed")
        outputs.append((kind, body))
    return inputs, outputs


def _arg_name(body: Any, kind: str) -> str:
    arg = body.get("arg") if isinstance(body, dict) else None
    if kind == "user_input" or kind == "user_output":
        if not isinstance(arg, dict) or set(arg) != {"as_tensor"}:
            _fail(f"the model's {kind.replace('_', ' ')} must be one tensor")
        return _name(arg["as_tensor"])
    return _name(arg)


def check_model(
    model: Any, weights: dict[str, Payload], constants: dict[str, Payload], expect: Expect
) -> tuple[Program, list[float], dict[str, Any]]:
    gm = _check_top(model)
    graph = _dict(gm["graph"], GRAPH_KEYS, "the graph")
    metas = graph["tensor_values"]
    if not isinstance(metas, dict):
        _fail("the graph is malformed")
    for name, meta in metas.items():
        tensor_meta(meta, f"graph tensor {name[:60]!r}")
    operators, literals, uses = check_nodes(graph, expect.extra_ops)
    inputs, outputs = _specs(gm["signature"])
    program = Program(
        nodes=graph["nodes"],
        parameters=[],
        buffers={},
        constants=[],
        placeholders={},
        payloads={},
        operators=operators,
        uses=uses,
        shapes={name: tensor_meta(meta, name)[1] for name, meta in metas.items()},
    )
    _link(program, inputs, weights, constants, metas)
    if [_arg_name(b, k) for k, b in inputs] != [_name(a.get("as_tensor")) for a in graph["inputs"]]:
        _fail("the graph's inputs do not match its signature")
    _check_io(inputs, outputs, graph, metas, expect)
    return program, literals, model


def _link(
    program: Program,
    inputs: list[tuple[str, dict[str, Any]]],
    weights: dict[str, Payload],
    constants: dict[str, Payload],
    metas: dict[str, Any],
) -> None:
    used_w: set[str] = set()
    used_c: set[str] = set()
    for kind, body in inputs:
        if kind == "user_input":
            continue
        arg = _arg_name(body, kind)
        if kind == "parameter":
            name, store, used = body.get("parameter_name"), weights, used_w
            program.parameters.append(str(name))
        elif kind == "buffer":
            persistent = body.get("persistent") is True
            name = body.get("buffer_name")
            store, used = (weights, used_w) if persistent else (constants, used_c)
            program.buffers[str(name)] = persistent
        else:
            name, store, used = body.get("tensor_constant_name"), constants, used_c
            program.constants.append(str(name))
        if not isinstance(name, str) or name not in store:
            _fail(f"the program's tensor {str(name)[:60]!r} has no stored value")
        payload = store[name]
        dtype, sizes, _, _ = tensor_meta(metas.get(arg), f"graph tensor {arg[:60]!r}")
        if (dtype, sizes) != (payload.dtype, payload.shape):
            _fail(f"the program's tensor {name[:60]!r} does not match its stored value")
        program.placeholders[name] = arg
        program.payloads[name] = payload
        used.add(name)
    for store, used in ((weights, used_w), (constants, used_c)):
        extra = sorted(set(store) - used)
        if extra:
            _fail(f"the archive stores tensors the program does not take ({extra[0][:60]!r})")


# operators whose output may share memory with their first tensor argument (the write
# rule that uses them: ``export_check.check_purity``)
# fmt: off
VIEWS = frozenset({
    "view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "t", "expand", "expand_as", "slice", "select", "narrow", "split",
    "split_with_sizes", "chunk", "unbind", "alias", "detach", "contiguous", "movedim", "to",
    "type_as", "view_as", "reshape_as", "swapaxes", "swapdims", "unfold",
})
# fmt: on


def _op_name(target: str) -> str:
    return target.removeprefix("torch.ops.aten.").partition(".")[0]


def _check_io(
    inputs: list[tuple[str, dict[str, Any]]],
    outputs: list[tuple[str, Any]],
    graph: dict[str, Any],
    metas: dict[str, Any],
    expect: Expect,
) -> None:
    users = [b for k, b in inputs if k == "user_input"]
    if len(users) != 1 or len(outputs) != 1 or len(graph["outputs"]) != 1:
        _fail("the model must take one tensor and return one tensor")
    x = _arg_name(users[0], "user_input")
    dtype, sizes, _, _ = tensor_meta(metas.get(x), "the model's input")
    if dtype != 7 or sizes != expect.input_shape:
        _fail(f"the program was exported for input {sizes}, not {expect.input_shape} float32")
    y = _arg_name(outputs[0][1], "user_output")
    dtype, sizes, _, _ = tensor_meta(metas.get(y), "the model's output")
    n = expect.input_shape[0]
    want = [(n,), (n, 1)] if expect.kind == "regression" else [(n, expect.num_classes)]
    if dtype not in FLOATS or sizes not in want:
        raise CheckError(f"the model's output is {sizes}; the contract wants one of {want}")
