"""The parameter count's one home: what counts, when a count is over the limit, and the
message that says where the values hide.

The rule, for students (README "Parameter count"): the count is every learned value the
model's exported computation can read. Parameters count as ``numel`` (tied ones once);
any other stored tensor, tensor attribute, tensor made in ``forward`` and literal (float,
or integer used as a value) that reaches the output counts too, except what is provably
structural: batch-norm style running statistics that normalise activations the model
computed from its input with counted layers (no wider than those layers), and buffers
that the model's code rebuilds bit-identically without its weights (index tables,
masks, grids). A value wider than 32 bits counts once per 32 bits. A model over the
task's limit ends ``over_limit``. For an honest model the count is exactly
``sum(p.numel() for p in model.parameters())``.

``export_count`` counts an exported program by this rule; ``params`` counts a weights
file (the count before the program exists); everything else asks ``over_limit`` here.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from .program.count import ExportCount, Row, count_program, describe, largest, named_groups
from .program.records import Program
from .results import Flag, LayerCount, Params
from .tasks import TaskSpec

RULE = (
    "every learned value the exported computation reads counts: parameters, buffers, "
    "tensor attributes, tensors made in forward, literals; only normalization statistics "
    "of layers fed by the input and buffers the code rebuilds identically are free"
)
SOURCE = "source_table"
WEIGHTS = (".safetensors", ".pt", ".pth")  # a submission's only non-Python files of these kinds


def over_limit(counted: int | None, limit: int | None) -> bool:
    """The one over-the-limit rule: a count strictly above the task's limit."""
    return counted is not None and limit is not None and counted > limit


def params_over_limit(params: Params) -> bool:
    return over_limit(params.counted, params.limit)


def count_checked(
    program: Program, task: TaskSpec, regenerated: frozenset[str], source_values: int
) -> ExportCount:
    """The program's count under ``task``. Buffers a fresh build regenerated are free only
    up to what the files the rebuild could read could not have spelled out: when they hold
    more values (``source_values``) than the task's allowance, regenerated values count up
    to that excess (a table written in the source or a file is a table of learned values)."""
    allowance = task.integrity.allowance
    count = count_program(
        program, allowance, input_width=task.input_shape[0], regenerated=regenerated
    )
    excess = max(0, source_values - allowance)
    backed = min(count.regenerated, excess)
    if backed:
        names = ", ".join(count.names("regenerated", 3))
        layer = LayerCount(name=names, shape=[backed], numel=backed, kind="buffer")
        count.rows.append(Row(SOURCE, layer))
        count.counted += backed
    return count


def source_values(folder: Path, files: list[str]) -> int:
    """Values the files the rebuild could read spell out: in Python source, one per
    numeric literal and one per 4 characters of string and bytes literals and comments,
    however they are split (a base64 table is a table, and code can read its own file);
    any other file (the manifest, a report, a training log) one per 4 bytes, since the
    code may read it while it builds. Weights files are never mounted for the rebuild.
    Read with ``ast`` and ``tokenize`` (never run); a Python file that does not parse
    counts by its size."""
    total = 0
    for rel in files:
        path = folder / rel
        if rel.endswith(WEIGHTS):
            continue
        try:
            if not rel.endswith(".py"):
                total += path.stat().st_size // 4 if path.is_file() else 0
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            tree = ast.parse(text)
            comments = _comment_chars(text)
        except (OSError, SyntaxError, ValueError, RecursionError, tokenize.TokenError):
            total += path.stat().st_size // 4 if path.is_file() else 0
            continue
        chars = comments
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
                continue
            if isinstance(node.value, (int, float, complex)):
                total += 1
            elif isinstance(node.value, (str, bytes)):
                chars += len(node.value)
        total += chars // 4
    return total


def _comment_chars(text: str) -> int:
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return sum(len(t.string) for t in tokens if t.type == tokenize.COMMENT)


def verified_params(
    file: Params, count: ExportCount, reported: int | None, limit: int | None
) -> Params:
    """The result's ``params`` from the exported program's count, never below the weights
    file's own count (less what the program shows to be structural or unused)."""
    free = count.uncounted()
    file_counted = (file.counted or 0) - sum(
        r.numel for r in file.per_layer if r.kind == "parameter" and r.name in free
    )
    return Params(
        counted=max(count.counted, file_counted),
        limit=limit,
        weights_file=file.weights_file,
        buffers=count.norm_stats + count.regenerated + count.unused,
        model_reported=reported,
        verified=True,
        per_layer=count.per_layer,
    )


def apart_flag(count: ExportCount) -> Flag | None:
    """What was not counted and why (student-facing, informational)."""
    parts = []
    for group, label in (
        ("regenerated", "buffers the code rebuilds identically without its weights"),
        ("unused", "stored tensors the output never reads"),
    ):
        total = count.group_total(group)
        if group == "regenerated":  # less what the source spelled out (counted)
            total -= count.group_total(SOURCE)
        if total > 0:
            parts.append(f"{total:,} values in {label} ({', '.join(count.names(group))})")
    if not parts:
        return None
    return Flag(code="not_counted", audience="student", message="not counted: " + "; ".join(parts))


def over_message(
    params: Params, task: TaskSpec, count: ExportCount | None, file_counted: int
) -> str:
    """The over-limit message, naming where the values hide."""
    text = (
        f"{params.counted:,} parameters counted; task {task.id} allows at most "
        f"{task.parameter_limit:,}"
    )
    if count is not None:
        groups = named_groups(count)
        text += f", including {describe(groups)}" if groups else f" (largest: {largest(count)})"
        if count.counted > file_counted:
            text += f" (the weights file alone counts {file_counted:,})"
    reported = params.model_reported
    held = count.parameters if count is not None else file_counted  # values in parameters
    if reported is not None and reported < held:
        text += (
            f"; the model's own count says {reported:,}, but the harness counts the weights "
            "and the exported program, not what the model's code reports"
        )
    return text + f" ({RULE}; see the per-layer table)"
