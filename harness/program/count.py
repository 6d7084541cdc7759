"""Count a checked exported program: every stored value the computation can reach.

Parameters, buffers, tensor attributes and tensors created in ``forward`` (lifted
constants) all count, each storage once (tied weights share one). Normalization running
statistics are reported apart, but only when the graph uses them as running statistics
(the ``running_mean``/``running_var`` argument of a batch-norm operator) or, for
``num_batches_tracked``, not at all: a name alone does not make a tensor a statistic.
Float literals in the graph (``x * 0.5``, ``eps``) are free up to the task's allowance
and count in full beyond it.

For an honest model the count equals ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..results import LayerCount
from .records import FLOATS, Payload, Program

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
TRACKED = "num_batches_tracked"
INTS = {1, 2, 3, 4, 5}

# what each group of values is called in messages
GROUPS = {
    "parameter": "parameters",
    "buffer": "buffers",
    "nonpersistent": "non-persistent buffers",
    "attribute": "tensor attributes",
    "created": "tensors created in forward or kept outside registered modules",
    "literal": "float literals in the graph",
}
NAMED = ("buffer", "nonpersistent", "attribute", "created", "literal")


@dataclass(frozen=True)
class Row:
    group: str  # a key of GROUPS, or "norm_stat"
    layer: LayerCount


@dataclass
class ExportCount:
    counted: int  # checked against the task's limit
    norm_stats: int  # normalization running statistics, apart
    parameters: int  # values in parameters alone (compared with the model's own count)
    rows: list[Row] = field(default_factory=list)
    literals: int = 0  # float literals in the graph (counted only beyond the allowance)

    def group_total(self, group: str) -> int:
        return sum(r.layer.numel for r in self.rows if r.group == group)

    def names(self, group: str, limit: int = 3) -> list[str]:
        return [r.layer.name for r in self.rows if r.group == group][:limit]

    @property
    def per_layer(self) -> list[LayerCount]:
        return [r.layer for r in self.rows]


def _is_norm_stat(name: str, payload: Payload, program: Program) -> bool:
    leaf = name.rpartition(".")[2]
    uses = program.uses.get(program.placeholders.get(name, ""), [])
    if leaf == TRACKED:
        return payload.dtype in INTS and payload.numel <= 1 and not uses
    if leaf not in RUNNING or payload.dtype not in FLOATS or len(payload.shape) != 1:
        return False
    return bool(uses) and all(op in NORM_OPS and arg == leaf for op, arg in uses)


def _group(name: str, program: Program) -> str:
    if name in program.buffers:
        payload = program.payloads[name]
        if _is_norm_stat(name, payload, program):
            return "norm_stat"
        return "buffer" if program.buffers[name] else "nonpersistent"
    if name in program.constants:
        leaf = name.rpartition(".")[2]
        created = leaf.startswith(("lifted_tensor_", "_tensor_constant"))
        return "created" if created else "attribute"
    return "parameter"


def _kind(group: str) -> Kind:
    kinds: dict[str, Kind] = {
        "parameter": "parameter",
        "norm_stat": "norm_stat",
        "buffer": "buffer",
        "nonpersistent": "buffer",
        "attribute": "constant",
        "created": "created",
        "literal": "constant",
    }
    return kinds[group]


def count_program(program: Program, literals: list[float], allowance: int) -> ExportCount:
    """Count ``program`` (from ``program.check.check_program``), each storage once."""
    order = [*program.parameters, *program.buffers, *program.constants]
    seen: set[str] = set()
    rows: list[Row] = []
    for name in order:
        payload = program.payloads[name]
        if payload.member in seen:  # tied: the storage is counted with its first name
            continue
        seen.add(payload.member)
        group = _group(name, program)
        shape = (
            list(payload.shape)
            if payload.numel == payload.storage_numel
            else [payload.storage_numel]
        )
        layer = LayerCount(name=name, shape=shape, numel=payload.storage_numel, kind=_kind(group))
        rows.append(Row(group, layer))
    if len(literals) > allowance:
        layer = LayerCount(
            name="float literals in the graph",
            shape=[len(literals)],
            numel=len(literals),
            kind="constant",
        )
        rows.append(Row("literal", layer))
    norm = sum(r.layer.numel for r in rows if r.group == "norm_stat")
    total = sum(r.layer.numel for r in rows)
    parameters = sum(r.layer.numel for r in rows if r.group == "parameter")
    return ExportCount(total - norm, norm, parameters, rows, len(literals))


def named_groups(count: ExportCount) -> list[tuple[str, int, list[str]]]:
    """Every group of counted values that are not parameters: (label, values, names)."""
    out = []
    for group in NAMED:
        total = count.group_total(group)
        if total:
            out.append((GROUPS[group], total, count.names(group)))
    return out


def largest(count: ExportCount, n: int = 2) -> str:
    rows = sorted((r.layer for r in count.rows if r.group != "norm_stat"), key=lambda r: -r.numel)
    return ", ".join(f"{r.name} {r.numel:,}" for r in rows[:n])


def describe(groups: list[tuple[str, int, list[str]]]) -> str:
    """``3,000,000 values in tensors created in forward (lifted_tensor_0)``, joined."""
    parts = []
    for label, total, names in sorted(groups, key=lambda g: -g[1]):
        if label.startswith("float literals"):
            parts.append(f"{total:,} {label}")
            continue
        named = f" ({', '.join(names)})" if names else ""
        parts.append(f"{total:,} values in {label}{named}")
    return "; ".join(parts)
