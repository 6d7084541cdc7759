"""Count parameters from a weights file's header, per SUBMISSION_FORMAT.md "Parameter count".

Every stored value counts (a 64-bit value twice: per 32 bits), except normalization
layers' running statistics, which are reported apart (``buffers``). A tensor is a
running statistic only when its name *and* its shape say so, so capacity cannot hide
behind a name:

- ``<prefix>.running_mean`` / ``<prefix>.running_var``: a 1-D floating tensor with a
  sibling of the same prefix and the same shape: ``weight``, ``bias`` or the other
  running statistic (BatchNorm with ``affine=False`` has only the two statistics);
- ``<prefix>.num_batches_tracked``: a scalar or one-element integer tensor.

Safetensors cannot store one tensor under two names (``safetensors.torch.save_model``
drops the duplicates of tied weights), so the file's count equals
``sum(p.numel() for p in model.parameters())`` for an honest model, which counts tied
parameters once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .results import LayerCount, Params
from .safetensors_header import FLOAT_DTYPES, INT_DTYPES, SafetensorsHeader, TensorEntry

_RUNNING = ("running_mean", "running_var")
WIDE = frozenset({"F64", "I64", "U64"})  # values wider than 32 bits count per 32 bits
_TRACKED = "num_batches_tracked"


@dataclass(frozen=True)
class ParamCount:
    counted: int  # every value except normalization running statistics
    buffers: int  # normalization running statistics, reported apart
    per_layer: list[LayerCount] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All values in the weights file."""
        return self.counted + self.buffers


def _split(name: str) -> tuple[str, str]:
    prefix, _, leaf = name.rpartition(".")
    return prefix, leaf


def _sibling(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def is_norm_stat(entry: TensorEntry, by_name: dict[str, TensorEntry]) -> bool:
    """Whether ``entry`` is shaped and named like a normalization running statistic."""
    prefix, leaf = _split(entry.name)
    if leaf == _TRACKED:
        return entry.dtype in INT_DTYPES and entry.shape in ((), (1,))
    if leaf not in _RUNNING or entry.dtype not in FLOAT_DTYPES or len(entry.shape) != 1:
        return False
    other = _RUNNING[1 - _RUNNING.index(leaf)]
    for sibling in ("weight", "bias", other):
        found = by_name.get(_sibling(prefix, sibling))
        if found is not None and found.shape == entry.shape:
            return True
    return False


def count_from_header(header: SafetensorsHeader) -> ParamCount:
    """Count the values in a validated weights file, running statistics apart."""
    by_name = header.by_name()
    counted = buffers = 0
    per_layer = []
    for entry in header.tensors:
        stat = is_norm_stat(entry, by_name)
        # what the tensor counts: per 32 bits, as in the exported program's count
        values = entry.numel * (2 if entry.dtype in WIDE and not stat else 1)
        if stat:
            buffers += values
        else:
            counted += values
        per_layer.append(
            LayerCount(
                name=entry.name,
                shape=list(entry.shape),
                numel=values,
                kind="norm_stat" if stat else "parameter",
            )
        )
    return ParamCount(counted=counted, buffers=buffers, per_layer=per_layer)


def to_params(count: ParamCount, limit: int | None) -> Params:
    """The result document's ``params`` for a count from the weights file alone."""
    return Params(
        counted=count.counted,
        limit=limit,
        weights_file=count.total,
        buffers=count.buffers,
        per_layer=list(count.per_layer),
    )
