"""Count the weights: the declared file as safetensors (a ``.pt`` file is converted in a
sandbox with a weights-only load, never on the host), counted from its header."""

from __future__ import annotations

from pathlib import Path

from .. import integrity
from ..errors import UserError
from ..jobs import convert_job_spec
from ..params import count_from_header, to_params
from ..safefs import NotPlain, plain_file
from ..safetensors_header import read_header
from ..verdicts import Failed, interpret_run
from .records import Admitted, Counted, Ended, Grading


def count_weights(admitted: Admitted) -> Counted:
    g = admitted.grading
    assert g.sub.manifest is not None
    g.stage("count")
    name = g.sub.manifest.model.weights
    timing: dict[str, float] = {}
    try:
        own = name.endswith(".safetensors")
        path = g.sub.path / name if own else _convert(g, name, timing)
        header = read_header(path)
    except UserError as exc:
        failed = Failed(
            "failed", f"the weights file is not valid safetensors: {exc.message}", "weights"
        )
        raise Ended(failed, admitted.notes.add(timing=timing)) from None
    except Failed as failed:
        raise Ended(failed, admitted.notes.add(timing=timing)) from None
    count = count_from_header(header)
    notes = admitted.notes.add(
        params=to_params(count, g.task.parameter_limit),
        timing=timing,
        evidence=integrity.weights_evidence(header),
    )
    return Counted(admitted=admitted, notes=notes, weights=path, declared=name, count=count)


def _convert(g: Grading, name: str, timing: dict[str, float]) -> Path:
    """Convert .pt weights in the sandbox (weights-only load): the converted file's path."""
    ws = g.workspace
    sub_dir = ws.stage("convert-sub", g.sub.path, [name])
    job = ws.job("convert-job", convert_job_spec(name))
    out = ws.output("convert-out")
    no_inputs = ws.stage("convert-inputs", g.sub.path, [])
    outcome = g.run_code(g.sandbox_job(sub_dir, job, out, code=True, inputs=no_inputs, gpu=False))
    timing["convert_s"] = round(outcome.wall_seconds, 4)
    verdict = interpret_run(outcome, "convert")
    if verdict is not None:
        raise verdict.failed()
    try:
        return plain_file(out, out / "weights.safetensors")
    except NotPlain as exc:
        raise Failed("failed", f"the converted weights: {exc}", "weights") from None
