"""A strict reader for safetensors files that came from students (untrusted).

Never torch, never pickle: the header is parsed as JSON and every rule of the format is
checked before a single tensor byte is trusted. The rules (each failure is a ``UserError``
naming the file and the rule):

- the file starts with an 8-byte little-endian header length, at most ``HEADER_CAP`` and
  not past the end of the file;
- the header is a UTF-8 JSON object without duplicate keys (at any depth) or NaN/Infinity;
- ``__metadata__``, when present, maps strings to strings;
- every other key is a non-empty tensor name whose value has exactly the keys ``dtype``
  (from ``DTYPES``), ``shape`` (a list of non-negative integers) and ``data_offsets``
  (``[begin, end]``, non-negative integers, begin <= end);
- each tensor's byte range holds exactly numel x itemsize bytes;
- the ranges, sorted, start at 0 and follow each other with no gap and no overlap;
- the file is exactly 8 + header + data bytes long.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import UserError

HEADER_CAP = 16 * 1024 * 1024
_HINT = "write the file with safetensors.torch.save_file(model.state_dict(), path)"

# dtype -> (itemsize, numpy dtype of the stored bytes)
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "<f8"),
    "F32": (4, "<f4"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),
    "F8_E4M3": (1, "u1"),
    "F8_E5M2": (1, "u1"),
    "I64": (8, "<i8"),
    "I32": (4, "<i4"),
    "I16": (2, "<i2"),
    "I8": (1, "i1"),
    "U8": (1, "u1"),
    "BOOL": (1, "u1"),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
INT_DTYPES = frozenset({"I64", "I32", "I16", "I8", "U8"})


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section (after the header)
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: list[TensorEntry]  # in data order
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 8  # 8 + header length

    def by_name(self) -> dict[str, TensorEntry]:
        return {t.name: t for t in self.tensors}


def read_header(path: Path | str) -> SafetensorsHeader:
    """Read and validate the header of ``path``; raises ``UserError`` naming the broken rule."""
    path = Path(path)
    if path.exists() and not path.is_file():
        _fail(path, "not a regular file")
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                _fail(path, f"file is {size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > HEADER_CAP:
                _fail(path, f"header larger than cap ({length} bytes > {HEADER_CAP})")
            if 8 + length > size:
                _fail(path, f"header length {length} runs past the end of the file ({size} bytes)")
            raw = fh.read(length)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the safetensors file ({exc.strerror})") from None
    obj = _parse_json(path, raw)
    metadata = _metadata(path, obj.pop("__metadata__", {}))
    tensors = [_entry(path, name, info) for name, info in obj.items()]
    tensors.sort(key=lambda t: (t.begin, t.end))
    data_len = _check_layout(path, tensors)
    if size != 8 + length + data_len:
        _fail(
            path,
            f"file is {size} bytes but 8 + header {length} + data {data_len} = "
            f"{8 + length + data_len}",
        )
    return SafetensorsHeader(path, tensors, metadata, 8 + length)


def read_tensor(path: Path | str, entry: TensorEntry) -> np.ndarray:
    """The values of ``entry`` (from ``read_header(path)``) as a numpy array of its shape.

    BF16 and F8 come back as float32, BOOL as ``bool``; other dtypes as stored.
    """
    path = Path(path)
    itemsize, stored = DTYPES[entry.dtype]
    count = entry.numel
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            fh.seek(8 + length + entry.begin)
            raw = fh.read(entry.nbytes)
    except (OSError, struct.error) as exc:
        raise UserError(f"{path}: cannot read tensor {_show(entry.name)} ({exc})") from None
    if len(raw) != count * itemsize or entry.nbytes != count * itemsize:
        _fail(
            path,
            f"tensor {_show(entry.name)}: the file changed or is truncated since it was checked",
        )
    flat = np.frombuffer(raw, dtype=stored, count=count)
    return _decode(entry.dtype, flat).reshape(entry.shape)


def _decode(dtype: str, flat: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return (flat.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E5M2":  # the top byte of an IEEE half
        return (flat.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    if dtype == "F8_E4M3":
        return _e4m3_table()[flat]
    if dtype == "BOOL":
        return flat != 0
    return flat.astype(flat.dtype.newbyteorder("="), copy=False)  # a copy only to swap bytes


@cache
def _e4m3_table() -> np.ndarray:
    """float8 E4M3FN: bias 7, subnormals, no infinities, NaN at S.1111.111."""
    bits = np.arange(256, dtype=np.int64)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exp = (bits >> 3) & 0xF
    man = (bits & 0x7).astype(np.float64)
    value = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * np.exp2(exp - 7.0))
    value = sign * value
    value[(bits & 0x7F) == 0x7F] = np.nan
    return value.astype(np.float32)


def _fail(path: Path, rule: str) -> NoReturn:
    raise UserError(f"{path}: not a valid safetensors file: {rule}", _HINT)


def _show(name: str) -> str:
    """A tensor name as it appears in a message: short and printable."""
    short = name if len(name) <= 80 else name[:77] + "..."
    return short if short.isprintable() else repr(short)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(path, f"header is not UTF-8 (byte {exc.start})")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        _fail(path, f"duplicate key {_show(exc.args[0])} in the header")
    except (ValueError, RecursionError) as exc:
        _fail(path, f"header is not valid JSON ({str(exc)[:200]})")
    if not isinstance(obj, dict):
        _fail(path, f"header is a JSON {type(obj).__name__}, not an object")
    return obj


def _metadata(path: Path, meta: Any) -> dict[str, str]:
    if not isinstance(meta, dict):
        _fail(path, "__metadata__ is not an object of strings")
    for key, value in meta.items():
        if not isinstance(value, str):
            _fail(path, f"__metadata__ value for {_show(key)} is not a string")
    return meta


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(path: Path, key: str, info: Any) -> TensorEntry:
    name = _show(key)
    if not key:
        _fail(path, "a tensor has an empty name")
    if not isinstance(info, dict):
        _fail(path, f"tensor {name}: entry is not an object")
    keys = set(info)
    if keys != {"dtype", "shape", "data_offsets"}:
        want = "dtype, shape, data_offsets"
        _fail(path, f"tensor {name}: keys are {', '.join(sorted(keys)) or 'none'}, not {want}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _fail(path, f"tensor {name}: dtype {dtype!r} not allowed ({', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        _fail(path, f"tensor {name}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_uint(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        _fail(path, f"tensor {name}: data_offsets {offsets!r} is not [begin, end] with begin<=end")
    entry = TensorEntry(key, dtype, tuple(shape), offsets[0], offsets[1])
    expected = entry.numel * DTYPES[dtype][0]
    if entry.nbytes != expected:
        _fail(
            path,
            f"tensor {name}: {entry.nbytes} bytes for {entry.numel} values of {dtype} "
            f"(expected {expected})",
        )
    return entry


def _check_layout(path: Path, tensors: list[TensorEntry]) -> int:
    """Sorted ranges must tile [0, data length) exactly; returns the data length."""
    position = 0
    previous = "the start of the data"
    for t in tensors:
        name = _show(t.name)
        if t.begin > position:
            _fail(path, f"gap of {t.begin - position} bytes between {previous} and tensor {name}")
        if t.begin < position:
            _fail(path, f"tensor {name} overlaps {previous}")
        position, previous = t.end, f"tensor {name}"
    return position
