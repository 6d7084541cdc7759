"""The strict safetensors reader: real files from the safetensors library, and broken ones."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from harness.errors import UserError
from harness.safetensors_header import HEADER_CAP, read_header, read_tensor


def craft(
    path: Path,
    header: dict[str, Any] | bytes,
    data: bytes = b"",
    *,
    length: int | None = None,
    tail: bytes = b"",
) -> Path:
    """Write a safetensors file byte by byte: length prefix, header, data, extra tail."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    prefix = struct.pack("<Q", len(raw) if length is None else length)
    path.write_bytes(prefix + raw + data + tail)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def broken(path: Path, *args: Any, **kwargs: Any) -> str:
    craft(path, *args, **kwargs)
    with pytest.raises(UserError) as info:
        read_header(path)
    message = info.value.message
    assert str(path) in message
    assert info.value.hint
    return message


# --- files written by the safetensors library ---------------------------------------


def test_numpy_file_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "fc.bias": rng.normal(size=(7,)).astype(np.float64),
        "half": rng.normal(size=(2, 5)).astype(np.float16),
        "ints": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
        "i32": np.array([1, -2, 3], dtype=np.int32),
        "i16": np.array([-300, 300], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "bytes": np.array([0, 255], dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np", "epoch": "3"})
    header = read_header(path)
    assert header.metadata == {"format": "np", "epoch": "3"}
    assert sorted(t.name for t in header.tensors) == sorted(arrays)
    for t in header.tensors:
        got = read_tensor(path, t)
        want = arrays[t.name]
        assert t.shape == want.shape
        assert t.numel == want.size
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    begins = [t.begin for t in header.tensors]
    assert begins == sorted(begins) and header.tensors[0].begin == 0


def test_torch_state_dict_with_bf16_and_float8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bits = torch.arange(256, dtype=torch.uint8)
    tensors = {
        "w": torch.randn(3, 4, dtype=torch.bfloat16),
        "e4m3": bits.clone().view(torch.float8_e4m3fn),
        "e5m2": bits.clone().view(torch.float8_e5m2),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    by_name = read_header(path).by_name()
    assert by_name["w"].dtype == "BF16" and by_name["e4m3"].dtype == "F8_E4M3"
    for name, tensor in tensors.items():
        got = read_tensor(path, by_name[name])
        want = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN == NaN here, infinities included
    assert read_tensor(path, by_name["w"]).dtype == np.float32


def test_no_tensors_is_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    safetensors.numpy.save_file({}, str(path))
    assert read_header(path).tensors == []


def test_read_tensor_notices_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"a": np.ones(8, dtype=np.float32)}, str(path))
    (entry_a,) = read_header(path).tensors
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(UserError, match="truncated"):
        read_tensor(path, entry_a)


def test_module_does_not_import_torch() -> None:
    code = (
        "import sys, harness.safetensors_header, harness.params, harness.metrics\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --- broken files, one rule each --------------------------------------------------------

F32_4 = entry("F32", [4], 0, 16)


def test_shorter_than_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x00")
    with pytest.raises(UserError, match="shorter than the 8-byte header length"):
        read_header(path)


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(UserError, match="not a regular file"):
        read_header(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_header(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_header(tmp_path / "absent.safetensors")


def test_header_over_cap(tmp_path: Path) -> None:
    msg = broken(tmp_path / "f", b"{}", length=HEADER_CAP + 1)
    assert "header larger than cap" in msg


def test_header_past_end_of_file(tmp_path: Path) -> None:
    assert "past the end of the file" in broken(tmp_path / "f", b"{}", length=1000)


def test_header_not_utf8(tmp_path: Path) -> None:
    assert "not UTF-8" in broken(tmp_path / "f", b'{"\xff": 1}')


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"a": NaN}', b"[" * 100_000 + b"]" * 100_000, b"\xef\xbb\xbf{}"],
)
def test_header_not_json(tmp_path: Path, raw: bytes) -> None:
    assert "not valid JSON" in broken(tmp_path / "f", raw)


def test_header_not_an_object(tmp_path: Path) -> None:
    assert "JSON list, not an object" in broken(tmp_path / "f", b"[1, 2]")


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    raw = b'{"w": %s, "w": %s}' % (json.dumps(F32_4).encode(), json.dumps(F32_4).encode())
    assert "duplicate key w" in broken(tmp_path / "f", raw, bytes(16))


def test_duplicate_key_inside_an_entry(tmp_path: Path) -> None:
    raw = b'{"w": {"dtype": "F32", "dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    assert "duplicate key dtype" in broken(tmp_path / "f", raw, bytes(16))


@pytest.mark.parametrize(
    ("meta", "rule"),
    [
        ("text", "__metadata__ is not an object"),
        (None, "__metadata__ is not an object"),
        ({"epochs": 3}, "__metadata__ value for epochs is not a string"),
    ],
)
def test_metadata_must_map_strings_to_strings(tmp_path: Path, meta: Any, rule: str) -> None:
    assert rule in broken(tmp_path / "f", {"__metadata__": meta, "w": F32_4}, bytes(16))


@pytest.mark.parametrize("dtype", ["F128", "C64", "U64", "OBJECT", 4, None])
def test_dtype_not_allowed(tmp_path: Path, dtype: Any) -> None:
    msg = broken(tmp_path / "f", {"w": {**F32_4, "dtype": dtype}}, bytes(16))
    assert f"tensor w: dtype {dtype!r} not allowed" in msg


@pytest.mark.parametrize("shape", [[-4], [4.0], [True, 4], "4", None, [[4]]])
def test_shape_not_non_negative_ints(tmp_path: Path, shape: Any) -> None:
    msg = broken(tmp_path / "f", {"w": {**F32_4, "shape": shape}}, bytes(16))
    assert "tensor w: shape" in msg and "not a list of non-negative integers" in msg


@pytest.mark.parametrize("offsets", [[0], [0, 16, 32], [16, 0], [-1, 15], [0.0, 16], "0-16"])
def test_bad_data_offsets(tmp_path: Path, offsets: Any) -> None:
    msg = broken(tmp_path / "f", {"w": {**F32_4, "data_offsets": offsets}}, bytes(16))
    assert "tensor w: data_offsets" in msg


def test_bytes_do_not_match_shape(tmp_path: Path) -> None:
    msg = broken(tmp_path / "f", {"W": entry("F32", [4], 0, 12)}, bytes(12))
    assert "tensor W: 12 bytes for 4 values of F32 (expected 16)" in msg


@pytest.mark.parametrize(
    ("keys", "shown"),
    [({"extra": 1}, "data_offsets, dtype, extra, shape"), (None, "data_offsets, dtype")],
)
def test_entry_keys_exact(tmp_path: Path, keys: Any, shown: str) -> None:
    info = dict(F32_4)
    if keys is None:
        del info["shape"]
    else:
        info.update(keys)
    msg = broken(tmp_path / "f", {"w": info}, bytes(16))
    assert f"tensor w: keys are {shown}, not dtype, shape, data_offsets" in msg


def test_entry_not_an_object(tmp_path: Path) -> None:
    assert "tensor w: entry is not an object" in broken(tmp_path / "f", {"w": [1, 2]})


def test_empty_tensor_name(tmp_path: Path) -> None:
    assert "empty name" in broken(tmp_path / "f", {"": F32_4}, bytes(16))


def test_gap_between_tensors(tmp_path: Path) -> None:
    header = {"a": entry("F32", [4], 0, 16), "b": entry("F32", [2], 20, 28)}
    msg = broken(tmp_path / "f", header, bytes(28))
    assert "gap of 4 bytes between tensor a and tensor b" in msg


def test_data_does_not_start_at_zero(tmp_path: Path) -> None:
    msg = broken(tmp_path / "f", {"a": entry("F32", [4], 8, 24)}, bytes(24))
    assert "gap of 8 bytes between the start of the data and tensor a" in msg


def test_overlapping_tensors(tmp_path: Path) -> None:
    header = {"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}
    assert "tensor b overlaps tensor a" in broken(tmp_path / "f", header, bytes(24))


def test_two_names_for_the_same_bytes(tmp_path: Path) -> None:
    header = {"a": F32_4, "b": F32_4}
    assert "overlaps" in broken(tmp_path / "f", header, bytes(16))


def test_offsets_out_of_order_in_json_are_fine(tmp_path: Path) -> None:
    header = {"b": entry("I8", [2], 4, 6), "a": entry("I32", [1], 0, 4)}
    path = craft(tmp_path / "f", header, struct.pack("<i", -5) + bytes([1, 2]))
    parsed = read_header(path)
    assert [t.name for t in parsed.tensors] == ["a", "b"]
    assert read_tensor(path, parsed.tensors[0]).tolist() == [-5]


def test_trailing_bytes_after_data(tmp_path: Path) -> None:
    msg = broken(tmp_path / "f", {"w": F32_4}, bytes(16), tail=b"hidden")
    assert "but 8 + header" in msg and "data 16" in msg


def test_data_shorter_than_offsets(tmp_path: Path) -> None:
    assert "data 16" in broken(tmp_path / "f", {"w": F32_4}, bytes(10))


def test_long_or_odd_names_are_shortened_in_messages(tmp_path: Path) -> None:
    name = "x\n" + "y" * 500
    msg = broken(tmp_path / "f", {name: entry("F32", [4], 0, 12)}, bytes(12))
    assert "\n" not in msg and len(msg) < 300 + len(str(tmp_path))
