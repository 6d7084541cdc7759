"""Count a checked exported program: the learned values its output can read.

- Parameters count as their values (each storage once: tied weights share one).
- Every other stored tensor (buffer, tensor attribute, tensor created in ``forward``)
  that reaches the output counts too, except what is provably structural:
  normalization running statistics that normalise an activation computed from the input
  by counted layers (at most as wide as those layers), and buffers the model's code
  regenerates bit-identically in a fresh build without its weights (index tables, masks,
  anchor grids; ``harness.regenerate`` finds them). Both are reported apart.
- A normalization layer applied to anything input-independent, or wider than the
  counted layers before it, has its statistics counted: that is a lookup table.
- Stored tensors the output never reads are reported apart (``unused``), not counted.
- Literals in the graph that carry values (every float except a normalization's
  ``momentum`` and ``eps``, and integers passed as values) count beyond the task's
  allowance, only the excess: there is no cliff.
- A value wider than 32 bits counts once per 32 bits (one int64 holds two int32s).

For an honest model the count equals ``sum(p.numel() for p in model.parameters())``.
The over-limit rule and its message live in ``harness.counting``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ..results import LayerCount
from .flow import Flow, analyse, literal_values, tensor_refs
from .hop import inline_bodies
from .records import DTYPES, FLOATS, Payload, Program

NORM_OPS = frozenset(
    f"torch.ops.aten.{name}"
    for name in (
        "batch_norm.default",
        "_native_batch_norm_legit_no_training.default",
        "native_batch_norm.default",
        "_batch_norm_no_update.default",
        "instance_norm.default",
    )
)
Kind = Literal["parameter", "buffer", "norm_stat", "constant", "created"]
RUNNING = ("running_mean", "running_var")

# what each group of values is called in messages
GROUPS = {
    "parameter": "parameters",
    "buffer": "buffers",
    "nonpersistent": "non-persistent buffers",
    "attribute": "tensor attributes",
    "created": "tensors created in forward or kept outside registered modules",
    "norm_table": (
        "normalization statistics used as storage (a norm layer applied to values that do "
        "not come from the input, or wider than the counted layers before it)"
    ),
    "literal": "literals in the graph (floats, and integers used as values)",
    "source_table": "buffers the code rebuilds from values written in its source or files",
}
NAMED = ("buffer", "nonpersistent", "attribute", "created", "norm_table", "source_table", "literal")
APART = ("norm_stat", "regenerated", "unused")  # reported, never counted


@dataclass(frozen=True)
class Row:
    group: str  # a key of GROUPS, or one of APART
    layer: LayerCount
    words: int = 1  # 32-bit words per value


@dataclass
class ExportCount:
    counted: int  # checked against the task's limit
    norm_stats: int  # structural normalization running statistics, apart
    parameters: int  # values in parameters alone (compared with the model's own count)
    rows: list[Row] = field(default_factory=list)
    literals: int = 0  # value-carrying literals in the graph (counted beyond the allowance)
    regenerated: int = 0  # values in buffers the code regenerates, apart
    unused: int = 0  # values in stored tensors the output never reads, apart

    def group_total(self, group: str) -> int:
        return sum(r.layer.numel for r in self.rows if r.group == group)

    def names(self, group: str, limit: int = 3) -> list[str]:
        """The first names in ``group``; a 64-bit tensor says it counts per 32 bits."""
        rows = [r for r in self.rows if r.group == group][:limit]
        return [r.layer.name + (" 64-bit, per 32 bits" if r.words > 1 else "") for r in rows]

    def uncounted(self) -> set[str]:
        """Names of stored tensors that are not counted (structural or unused)."""
        return {r.layer.name for r in self.rows if r.group in APART}

    @property
    def per_layer(self) -> list[LayerCount]:
        return [r.layer for r in self.rows]


def words(payload: Payload) -> int:
    """32-bit words per value: 2 for 64-bit dtypes, else 1."""
    return max(1, DTYPES[payload.dtype][1] // 4)


Uses = dict[str, list[tuple[str, str, dict[str, Any]]]]


def _norm_group(name: str, payload: Payload, live_uses: list[Any], flow: Flow) -> str | None:
    """``norm_stat`` for a structural statistic, ``norm_table`` for one used as storage,
    None when the tensor is not used as a running statistic at all."""
    leaf = name.rpartition(".")[2]
    if leaf not in RUNNING or payload.dtype not in FLOATS or len(payload.shape) != 1:
        return None
    if not live_uses or not all(op in NORM_OPS and arg in RUNNING for op, arg, _ in live_uses):
        return None
    for _, _, node in live_uses:
        source = next((n["arg"] for n in node["inputs"] if n.get("name") == "input"), None)
        ref = source.get("as_tensor", {}).get("name") if isinstance(source, dict) else None
        if ref is None or ref not in flow.from_input:
            return "norm_table"
        if not flow.fed_by_width(ref, payload.shape[0]):
            return "norm_table"
    return "norm_stat"


def _group(
    name: str, program: Program, flow: Flow, uses: Uses, regen: frozenset[str], params: set[str]
) -> str:
    if name in params:
        return "parameter"
    payload = program.payloads[name]
    live_uses = uses.get(program.placeholders.get(name, ""), [])
    if not live_uses:
        return "unused"
    norm = _norm_group(name, payload, live_uses, flow)
    if norm is not None:
        return norm
    if name in regen:
        return "regenerated"
    if name in program.buffers:
        return "buffer" if program.buffers[name] else "nonpersistent"
    leaf = name.rpartition(".")[2]
    created = leaf.startswith(("lifted_tensor_", "_tensor_constant"))
    return "created" if created else "attribute"


KINDS: dict[str, Kind] = {
    "parameter": "parameter",
    "norm_stat": "norm_stat",
    "norm_table": "buffer",
    "buffer": "buffer",
    "nonpersistent": "buffer",
    "regenerated": "norm_stat",  # every kind reported apart shows as "norm_stat"
    "unused": "norm_stat",
    "attribute": "constant",
    "created": "created",
    "literal": "constant",
}


def count_program(
    program: Program,
    allowance: int,
    *,
    input_width: int = 1,
    regenerated: frozenset[str] = frozenset(),
) -> ExportCount:
    """Count ``program`` (from ``export_check.check_program``), each storage once.

    ``input_width``: the input's channels (a norm layer applied straight to the input may
    be that wide); ``regenerated``: stored tensors a fresh build reproduced exactly."""
    program = dataclasses.replace(program, nodes=inline_bodies(program.nodes))
    flow = analyse(program, program.output, program.user_input, input_width)
    uses = _live_uses(program, flow)
    order = [*program.parameters, *program.buffers, *program.constants]
    parameters_set = set(program.parameters)
    seen: set[str] = set()
    rows: list[Row] = []
    for name in order:
        payload = program.payloads[name]
        if payload.member in seen:  # tied: the storage is counted with its first name
            continue
        seen.add(payload.member)
        group = _group(name, program, flow, uses, regenerated, parameters_set)
        shape = (
            list(payload.shape)
            if payload.numel == payload.storage_numel
            else [payload.storage_numel]
        )
        per = 1 if group in APART else words(payload)  # what is not counted is not widened
        n = payload.storage_numel * per
        rows.append(Row(group, LayerCount(name=name, shape=shape, numel=n, kind=KINDS[group]), per))
    literals = literal_values(program, flow, NORM_OPS)
    if literals > allowance:
        excess = literals - allowance
        layer = LayerCount(name=GROUPS["literal"], shape=[literals], numel=excess, kind="constant")
        rows.append(Row("literal", layer))
    total = sum(r.layer.numel for r in rows if r.group not in APART)
    parameters = sum(r.layer.numel for r in rows if r.group == "parameter")
    return ExportCount(
        counted=total,
        norm_stats=sum(r.layer.numel for r in rows if r.group == "norm_stat"),
        parameters=parameters,
        rows=rows,
        literals=literals,
        regenerated=sum(r.layer.numel for r in rows if r.group == "regenerated"),
        unused=sum(r.layer.numel for r in rows if r.group == "unused"),
    )


def _live_uses(program: Program, flow: Flow) -> Uses:
    """Each stored tensor's uses as (operator, argument, node), in live nodes only."""
    placeholders = set(program.placeholders.values())
    uses: Uses = {}
    for i, node in enumerate(program.nodes):
        if not flow.live[i]:
            continue
        for named in node["inputs"]:
            for ref in tensor_refs(named["arg"]):
                if ref in placeholders:
                    uses.setdefault(ref, []).append((node["target"], named.get("name", ""), node))
    return uses


def named_groups(count: ExportCount) -> list[tuple[str, int, list[str]]]:
    """Every group of counted values that are not parameters: (label, values, names)."""
    out = []
    for group in NAMED:
        total = count.group_total(group)
        if total:
            names = [] if group == "literal" else count.names(group)
            out.append((GROUPS[group], total, names))
    return out


def largest(count: ExportCount, n: int = 2) -> str:
    rows = sorted((r.layer for r in count.rows if r.group not in APART), key=lambda r: -r.numel)
    return ", ".join(f"{r.name} {r.numel:,}" for r in rows[:n])


def describe(groups: list[tuple[str, int, list[str]]]) -> str:
    """``3,000,000 values in tensors created in forward (lifted_tensor_0)``, joined."""
    parts = []
    for label, total, names in sorted(groups, key=lambda g: -g[1]):
        named = f" ({', '.join(names)})" if names else ""
        parts.append(f"{total:,} values in {label}{named}")
    return "; ".join(parts)
