"""The data the export check passes around: checked payloads, the checked program, what
the task expects, and the serialized tensor description's validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

# ScalarType (torch/_export/serde/schema.py) -> (name, itemsize); complex/fp8 not allowed
DTYPES: dict[int, tuple[str, int]] = {
    1: ("uint8", 1),
    2: ("int8", 1),
    3: ("int16", 2),
    4: ("int32", 4),
    5: ("int64", 8),
    6: ("float16", 2),
    7: ("float32", 4),
    8: ("float64", 8),
    12: ("bool", 1),
    13: ("bfloat16", 2),
}
FLOATS = {6, 7, 8, 13}
STRIDED = 7


class CheckError(Exception):
    """The exported program breaks a rule; ``message`` names it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Payload:
    """One weight or constant tensor as the archive describes it."""

    name: str  # the state_dict / constant name
    member: str  # the archive member holding its storage
    dtype: int
    shape: tuple[int, ...]
    storage_numel: int  # values in the member (the whole storage)
    strides: tuple[int, ...] = ()
    offset: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Program:
    """A checked program: its graph, signature and payloads, all from validated JSON."""

    nodes: list[dict[str, Any]]
    parameters: list[str]
    buffers: dict[str, bool]  # name -> persistent
    constants: list[str]
    placeholders: dict[str, str]  # state/constant name -> graph input name
    payloads: dict[str, Payload]
    operators: list[str] = field(default_factory=list)
    uses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # tensor -> (op, arg)
    user_input: str = ""  # the graph's name of the model's input
    output: str = ""  # the graph's name of the model's output
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # value -> static sizes


def _fail(rule: str) -> NoReturn:
    raise CheckError(rule)


def _int(value: Any, what: str) -> int:
    if isinstance(value, dict) and set(value) == {"as_int"}:
        value = value["as_int"]
    else:
        _fail(f"{what} is symbolic: shapes must be static")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(f"{what} is not a non-negative integer")
    return int(value)


def tensor_meta(meta: Any, what: str) -> tuple[int, tuple[int, ...], tuple[int, ...], int]:
    """(dtype, sizes, strides, storage offset) of a serialized TensorMeta, all checked."""
    keys = {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"}
    if not isinstance(meta, dict) or set(meta) != keys:
        _fail(f"{what}: malformed tensor description")
    dtype = meta["dtype"]
    if dtype not in DTYPES:
        _fail(f"{what}: dtype {dtype!r} is not allowed")
    if meta["layout"] != STRIDED or meta["device"] not in ({"type": "cpu", "index": None},):
        _fail(f"{what}: only dense CPU tensors may be stored")
    if not isinstance(meta["sizes"], list) or not isinstance(meta["strides"], list):
        _fail(f"{what}: malformed sizes")
    sizes = tuple(_int(s, f"{what}: a size") for s in meta["sizes"])
    strides = tuple(_int(s, f"{what}: a stride") for s in meta["strides"])
    if len(sizes) != len(strides) or len(sizes) > 8:
        _fail(f"{what}: sizes and strides do not match")
    return dtype, sizes, strides, _int(meta["storage_offset"], f"{what}: storage offset")


@dataclass(frozen=True)
class Expect:
    """What the task's contract says the program's input and output look like."""

    input_shape: tuple[int, ...]  # (batch, C, H, W)
    kind: str
    num_classes: int
    max_bytes: int
    extra_ops: tuple[str, ...] = ()


def _short(target: str) -> str:
    return target.removeprefix("torch.ops.")[:80]
