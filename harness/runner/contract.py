"""The contract between the host and the runner: standard library only, imported by both
sides (the host, the runner inside the sandbox, the tests and the benchmarks).

It names the one torch release every part of the harness runs (the host's pin in
``pyproject.toml``, the offline evaluation image and the Dockerfile all install exactly
this), the files that cross the sandbox boundary, and the rule that refuses a program
written by another torch: ``torch.export`` archives are read on the host exactly as the
host's torch writes them (this release, wherever the harness was installed as packaged),
so a runner on any other release is a configuration error, not a submission's fault.
And it types the job: ``job.json`` is one of the frozen ``*Job`` dataclasses below
(``JobSpec``), written with ``to_json`` and read with ``from_json``, which refuses an
unknown, missing or mistyped key with one sentence.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

_T = TypeVar("_T")

TORCH = "2.14.1"
# libraries a warm runner (the fork server, a zygote) may import ahead of its runs, when
# the batch's own code imports them (the host reads its import lines: harness/preloads.py)
OPTIONAL_PRELOADS = ("torchvision", "timm")
TORCHVISION = "0.29.1"

JOB_FILE = "job.json"
REPORT_FILE = "report.json"
PROGRAM = "program.pt2"
PREDICTIONS = "predictions.npy"


def torch_release(version: str) -> str:
    """``2.14.1+cu128`` -> ``2.14.1``: the local build tag does not change the format."""
    return version.split("+", 1)[0].strip()


def torch_mismatch(version: object, reader: str = TORCH) -> str | None:
    """None when a runner reported the torch release of the host that reads its program
    (``reader``: the host's own ``torch.__version__``, the pin wherever the harness was
    installed as packaged), else the sentence that says why not."""
    expected = torch_release(reader)
    if isinstance(version, str) and torch_release(version) == expected:
        return None
    shown = version if isinstance(version, str) and len(version) < 40 else "an unknown version"
    if expected != TORCH:  # the host is off the pin: the image cannot follow it
        return (
            f"the sandbox ran torch {shown}, but this host runs torch {expected}, not the "
            f"harness's pin {TORCH}, and a program is read only by the torch that wrote it: "
            f"install torch=={TORCH} on the host (`pip install -e .`), or grade with a "
            f"sandbox that runs the host's own Python (--sandbox bwrap)"
        )
    return (
        f"the sandbox ran torch {shown}, but this harness reads programs with torch "
        f"{expected}, and a program is read only by the torch that wrote it: rebuild the "
        f"evaluation image (`grade image build --force`) or install torch=={expected} where "
        f"the runner runs"
    )


# -- the job ---------------------------------------------------------------------------
# ``job.json`` is one flat JSON object: ``phase`` picks the dataclass below, every other key
# is one of its fields. Reading refuses an unknown key, a missing one and a wrong type with
# one sentence, so host and runner cannot drift apart silently.


class JobError(ValueError):
    """A ``job.json`` that does not match the contract: a harness bug, never a student's."""


@dataclass(frozen=True)
class Normalize:
    """Per-channel ``(x / 255 - mean) / std``, as the submission's manifest declares."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Probe:
    """The memorization probe: the first ``count`` inputs again, with seeded noise."""

    count: int
    seed: int
    amplitude: int  # gray levels


@dataclass(frozen=True, kw_only=True)
class ModelIO:
    """What every phase that runs the model needs: its inputs, outputs and device."""

    kind: str
    num_classes: int
    input_shape: tuple[int, ...]
    normalize: Normalize | None
    device: str
    threads: int


@dataclass(frozen=True, kw_only=True)
class ConvertJob:
    """Read ``.pt`` weights weights-only and write ``weights.safetensors``."""

    PHASE: ClassVar[str] = "convert"
    weights: str


@dataclass(frozen=True, kw_only=True)
class RebuildJob:
    """Build the model twice from its code alone; report the buffers both made alike."""

    PHASE: ClassVar[str] = "rebuild"
    entrypoint: str
    threads: int


@dataclass(frozen=True, kw_only=True)
class ExportJob(ModelIO):
    """Phase A: build, load, one dry batch, ``torch.export`` at ``export_batch``."""

    PHASE: ClassVar[str] = "export"
    entrypoint: str
    weights: str
    export_batch: int


@dataclass(frozen=True, kw_only=True)
class EagerJob(ModelIO):
    """The fallback: the submission's own code predicts the inputs (count unverified)."""

    PHASE: ClassVar[str] = "eager"
    entrypoint: str
    weights: str
    batch_size: int
    probe: Probe | None


@dataclass(frozen=True, kw_only=True)
class PredictJob(ModelIO):
    """Phase B: the host-checked program predicts; no submission code is mounted."""

    PHASE: ClassVar[str] = "predict"
    program: str
    batch_size: int
    probe: Probe | None
    # predict the whole split again in another order and batch composition; false when
    # the host proved from the graph that each image's output depends on it alone
    recheck: bool


JobSpec = ConvertJob | RebuildJob | ExportJob | EagerJob | PredictJob
JOBS: dict[str, type[JobSpec]] = {
    cls.PHASE: cls for cls in (ConvertJob, RebuildJob, ExportJob, EagerJob, PredictJob)
}


def to_json(job: JobSpec) -> str:
    """The ``job.json`` text: ``phase`` and every field, tuples as lists."""
    return json.dumps({"phase": job.PHASE, **asdict(job)})


def from_json(text: str) -> JobSpec:
    """The job ``text`` describes, or ``JobError`` naming the key or value it refuses."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise JobError(f"{JOB_FILE} is not valid JSON ({exc})") from None
    return from_dict(data)


def from_dict(data: object) -> JobSpec:
    """The job a decoded ``job.json`` object describes (see ``from_json``)."""
    if not isinstance(data, dict):
        raise JobError(f"{JOB_FILE} must hold one JSON object, not {type(data).__name__}")
    phase = data.get("phase")
    if phase not in JOBS:
        raise JobError(
            f"{JOB_FILE}: unknown phase {phase!r}; the phases are {', '.join(sorted(JOBS))}"
        )
    fields = {k: v for k, v in data.items() if k != "phase"}
    return _build(JOBS[phase], fields, f"{JOB_FILE} (phase {phase!r})")


def _build(cls: type[_T], data: dict[str, Any], where: str) -> _T:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise JobError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(names)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise JobError(f"{where}: missing key {missing[0]!r}")
    values = {n: _value(hints[n], data[n], f"{where} key {n!r}") for n in names}
    return cls(**values)


def _value(hint: Any, value: Any, where: str) -> Any:
    """``value`` as ``hint`` types it (lists become tuples), or ``JobError``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (UnionType, Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise JobError(f"{where} must be a list, not {_name(value)}")
        return tuple(_value(args[0], v, where) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise JobError(f"{where} must be an object, not {_name(value)}")
        return _build(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise JobError(f"{where} must be {hint.__name__}, not {_name(value)}")
    return value


def _name(value: object) -> str:
    return "null" if value is None else type(value).__name__
