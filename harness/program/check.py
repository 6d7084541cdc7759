"""Check an exported program (``program.pt2`` from phase A) on the host, without torch.

The archive came from a run of the submission's code, so nothing in it is trusted. It is
read as a zip of JSON and raw tensor bytes, and every rule is checked before phase B may
load it (each failure is a ``CheckError`` naming the rule):

- members: one root folder; exactly the files ``torch.export.save`` (torch 2.14) writes
  for one model; stored uncompressed, no duplicate names, total and per-file size caps;
- no pickles: every weight and constant is raw bytes (``use_pickle`` false); no custom or
  opaque objects; the pickled sample inputs are dropped (phase B gets an empty member);
- no symbolic expressions: every size, stride and offset is an integer, and the graph has
  no symbolic values or range constraints; no guard code (it is Python source);
- operators: every node calls an allowed ATen operator; ``aten.view.dtype`` (reading a
  tensor's bytes as another dtype, e.g. int8 packed in float32) is refused;
- one tensor input of the task's shape at the exported batch size, one output of the
  contract's shape; the model may not mutate its buffers.

``check_program`` then writes a clean archive for phase B (JSON re-serialized from what
was checked, node metadata dropped) and returns the checked program; ``harness.program.count``
counts it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

from .graph import CUSTOM_OBJ, check_model
from .records import DTYPES, CheckError, Expect, Payload, Program, _fail, tensor_meta

__all__ = ["CheckError", "Expect", "Program", "check_program"]

MAX_MEMBERS = 100_000
MAX_JSON = 64 * 2**20
ROOT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FIXED = {
    "archive_format": b"pt2",
    "archive_version": b"0",
    ".data/version": None,  # small text, copied as is
    ".data/serialization_id": None,
    "byteorder": b"little",
}
MODEL = "models/model.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
PAYLOAD_RE = re.compile(r"^data/(weights/weight|constants/tensor)_(\d{1,9})$")
HINT = (
    "export the model with ordinary modules and tensor operations "
    "(see SUBMISSION_FORMAT.md, Parameter count)"
)


def _load_json(raw: bytes, what: str) -> Any:
    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                _fail(f"{what}: duplicate key {k[:40]!r}")
            out[k] = v
        return out

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_dupes)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return _fail(f"{what} is not valid JSON ({str(exc)[:120]})")


def _members(zf: zipfile.ZipFile, max_bytes: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    infos = zf.infolist()
    if not infos or len(infos) > MAX_MEMBERS:
        _fail(f"the archive holds {len(infos)} files")
    roots = {info.filename.partition("/")[0] for info in infos}
    root = roots.pop() if len(roots) == 1 else ""
    if not ROOT_RE.match(root):
        _fail("the archive's files are not all in one plainly named folder")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        rel = info.filename[len(root) + 1 :]
        if rel in members:
            _fail(f"the archive holds {rel!r} twice")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            _fail(f"archive member {rel!r} is compressed or encrypted")
        known = rel in FIXED or rel in (MODEL, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
        if rel.startswith(("data/constants/custom_obj_", "data/constants/opaque_obj_")):
            _fail(CUSTOM_OBJ)
        if not known and not PAYLOAD_RE.match(rel):
            _fail(f"unexpected archive member {rel[:80]!r} (only one plain exported model)")
        total += info.file_size
        members[rel] = info
    if total > max_bytes:
        _fail(f"the archive holds {total:,} bytes; at most {max_bytes:,}")
    for rel in (MODEL, WEIGHTS_CONFIG, CONSTANTS_CONFIG, *FIXED):
        if rel not in members:
            _fail(f"the archive lacks {rel}")
    return root, members


def _check_fixed(zf: zipfile.ZipFile, root: str, members: dict[str, zipfile.ZipInfo]) -> None:
    for rel, expected in FIXED.items():
        data = _read(zf, root, members[rel], 128)
        if expected is not None and data.strip() != expected:
            _fail(f"archive member {rel} holds {data[:20]!r}, not {expected!r}")


def _read(zf: zipfile.ZipFile, root: str, info: zipfile.ZipInfo, cap: int) -> bytes:
    if info.file_size > cap:
        _fail(f"archive member {info.filename[len(root) + 1 :]!r} is larger than {cap:,} bytes")
    with zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) != info.file_size:
        _fail(f"archive member {info.filename!r} does not hold its declared size")
    return data


def _payloads(
    config: Any, base: str, members: dict[str, zipfile.ZipInfo], what: str
) -> dict[str, Payload]:
    if not isinstance(config, dict) or set(config) != {"config"}:
        _fail(f"{what}: malformed")
    if not isinstance(config["config"], dict):
        _fail(f"{what}: malformed")
    out: dict[str, Payload] = {}
    dtypes: dict[str, int] = {}  # member -> the dtype every tensor in it must have
    for name, meta in config["config"].items():
        keys = {"path_name", "is_param", "use_pickle", "tensor_meta"}
        if not isinstance(meta, dict) or set(meta) != keys:
            _fail(f"{what}: entry {name[:60]!r} is malformed")
        if meta["use_pickle"] is not False:
            _fail(f"tensor {name[:60]!r} is stored as a pickle; only raw tensors are allowed")
        member = f"{base}/{meta['path_name']}"
        if not isinstance(meta["path_name"], str) or member not in members:
            _fail(f"tensor {name[:60]!r} points to a missing archive member")
        if not PAYLOAD_RE.match(member):
            _fail(f"tensor {name[:60]!r} is stored in an unexpected member")
        dtype, sizes, strides, offset = tensor_meta(meta["tensor_meta"], f"tensor {name[:60]!r}")
        if dtypes.setdefault(member, dtype) != dtype:
            _fail(
                f"tensor {name[:60]!r} shares its storage with a tensor of another dtype: "
                "reading a tensor's bytes as another dtype (e.g. int8 packed in float32) "
                "is not allowed"
            )
        itemsize = DTYPES[dtype][1]
        nbytes = members[member].file_size
        if nbytes % itemsize:
            _fail(f"tensor {name[:60]!r}: {nbytes} bytes is not a whole number of {itemsize}")
        storage = nbytes // itemsize
        reach = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        if 0 not in sizes and reach >= storage:
            _fail(f"tensor {name[:60]!r} reaches past the end of its storage")
        out[name] = Payload(name, member, dtype, sizes, storage, strides, offset)
    return out


def check_program(source: Path, target: Path, expect: Expect) -> tuple[Program, list[float]]:
    """Check ``source`` and write the cleaned archive to ``target``; raise ``CheckError``."""
    if source.is_symlink() or not source.is_file():
        _fail("phase A wrote no exported program")
    if source.stat().st_size > expect.max_bytes + 2**20:
        _fail(f"the exported program is larger than {expect.max_bytes:,} bytes")
    try:
        with zipfile.ZipFile(source) as zf:
            root, members = _members(zf, expect.max_bytes)
            _check_fixed(zf, root, members)
            model = _load_json(_read(zf, root, members[MODEL], MAX_JSON), "model.json")
            weights = _payloads(
                _load_json(_read(zf, root, members[WEIGHTS_CONFIG], MAX_JSON), "weights config"),
                "data/weights",
                members,
                "weights config",
            )
            constants = _payloads(
                _load_json(_read(zf, root, members[CONSTANTS_CONFIG], MAX_JSON), "constants"),
                "data/constants",
                members,
                "constants config",
            )
            program, literals, clean = check_model(model, weights, constants, expect)
            _io_names(program, clean)
            check_purity(program)
            _write_clean(zf, root, members, clean, target)
    except (zipfile.BadZipFile, EOFError, OSError, struct.error, NotImplementedError) as exc:
        _fail(f"the exported program is not a valid zip archive ({str(exc)[:120]})")
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        _fail(f"the exported program is malformed ({type(exc).__name__}: {str(exc)[:120]})")
    return program, literals


def _write_clean(
    zf: zipfile.ZipFile,
    root: str,
    members: dict[str, zipfile.ZipInfo],
    model: dict[str, Any],
    target: Path,
) -> None:
    """The archive phase B loads: checked JSON re-serialized, payloads copied byte for byte,
    an empty sample-inputs member (nothing pickled is left)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as out:
        for rel, info in members.items():
            name = f"{root}/{rel}"
            if rel == SAMPLE_INPUTS:
                continue
            if rel == MODEL:
                out.writestr(name, json.dumps(model))
            elif rel in (WEIGHTS_CONFIG, CONSTANTS_CONFIG):
                config = _load_json(_read(zf, root, info, MAX_JSON), rel)
                out.writestr(name, json.dumps(config))
            else:
                with zf.open(info) as src, out.open(name, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 2**20)
        out.writestr(f"{root}/{SAMPLE_INPUTS}", b"")


def _io_names(program: Program, model: dict[str, Any]) -> None:
    """Record the graph's names of the model's input and output (both checked)."""
    signature = model["graph_module"]["signature"]
    for spec in signature["input_specs"]:
        if "user_input" in spec:
            program.user_input = spec["user_input"]["arg"]["as_tensor"]["name"]
    program.output = signature["output_specs"][0]["user_output"]["arg"]["as_tensor"]["name"]


# -- phase B is a pure function: which writes are safe ----------------------------------
# overloads whose schema writes into an argument but whose name does not say so
# (tests/test_counting.py checks this list against torch's schemas for every allowed name)
WRITES = frozenset({
    "max.dim_max", "min.dim_min", "sort.values", "sort.values_stable", "topk.values",
    "sort.int", "sort.float", "sort.Tensor", "sort.bool", "sort.str", "sort.any",
})  # fmt: skip


def writes_into_argument(target: str) -> bool:
    """Whether the overload ``torch.ops.aten.<name>.<overload>`` writes into an argument
    that is not its first (``.out`` variants and their kin): never allowed."""
    name, _, overload = target.removeprefix("torch.ops.aten.").partition(".")
    outish = (
        overload == "out" or overload.startswith(("out_", "values")) or overload.endswith("_out")
    )
    return outish or f"{name}.{overload}" in WRITES


def in_place(target: str) -> bool:
    """Whether the overload writes into its first argument (``relu_``, ``add_``)."""
    name = target.removeprefix("torch.ops.aten.").partition(".")[0]
    return name.endswith("_") and not name.startswith("_")


def check_purity(program: Program) -> None:
    """Phase B must be a pure function of its input: refuse every overload that writes
    into an argument it was given (``.out`` variants, anything whose schema writes),
    except an in-place write (``relu_``, ``add_``) into a value computed in the graph
    itself, never into a stored tensor, the model's input, or a view of either; inside a
    higher-order operator's body (autocast, grad mode) the same, for what it was given."""
    shared = set(program.placeholders.values())
    if program.user_input:
        shared.add(program.user_input)
    _check_writes(program.nodes, shared)


def _check_writes(nodes: list[dict[str, Any]], shared: set[str]) -> None:
    """``shared``: the names that must not be written (grows with views of them)."""
    from .graph import VIEWS, _op_name
    from .hop import hop_call
    from .ops import higher_order
    from .records import _short

    for node in nodes:
        target = node["target"]
        if higher_order(target):
            call = hop_call(node)
            inner = {i for i, t in zip(call.inputs, call.tensors, strict=True) if t in shared}
            _check_writes(call.body["nodes"], inner)
            if shared.intersection(call.tensors):  # its outputs may share their memory
                shared.update(call.results)
            continue
        if writes_into_argument(target):
            _fail(
                f"the program writes into a tensor it was given ({_short(target)}, an out= "
                "variant): predictions must not depend on earlier calls"
            )
        args = [n["arg"]["as_tensor"]["name"] for n in node["inputs"] if "as_tensor" in n["arg"]]
        first = args[0] if args else None
        if first in shared and in_place(target):
            _fail(
                f"the model changes its stored tensors while predicting ({_short(target)} on "
                "one of them); predictions must not depend on earlier calls"
            )
        if first in shared and (_op_name(target) in VIEWS or in_place(target)):
            for out in node["outputs"]:
                for ref in out.values():
                    if isinstance(ref, dict) and "name" in ref:
                        shared.add(ref["name"])
                    elif isinstance(ref, list):
                        shared.update(r["name"] for r in ref if isinstance(r, dict))
