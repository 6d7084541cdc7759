"""The runner's typed job contract (``harness/runner/contract.py``): every job the host
builds survives ``job.json`` unchanged, and a ``job.json`` that breaks the contract is
refused, by the host before writing and by the runner before running, with one sentence
that names the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.jobs import (
    convert_job_spec,
    eager_job_spec,
    export_job_spec,
    predict_job_spec,
    rebuild_job_spec,
)
from harness.runner.contract import (
    JOB_FILE,
    JOBS,
    EagerJob,
    JobError,
    JobSpec,
    Normalize,
    PredictJob,
    Probe,
    from_json,
    to_json,
)
from harness.staging import Workspace
from harness.submission import Manifest
from harness.tasks import load_task

REPO = Path(__file__).resolve().parents[1]


def _every_job() -> list[JobSpec]:
    """One job of each phase, as the host builds them for a real task."""
    task = load_task("mnist")
    manifest = Manifest.model_validate(
        {"task": "mnist", "model": {"normalize": {"mean": [0.1307], "std": [0.3081]}}}
    )
    probe = Probe(count=16, seed=7, amplitude=2)
    return [
        convert_job_spec("model.pt"),
        rebuild_job_spec(task, manifest),
        export_job_spec(task, manifest, "weights.safetensors", 32),
        eager_job_spec(task, manifest, "weights.safetensors", probe),
        predict_job_spec(task, manifest, 32, None),
    ]


def _eager() -> dict[str, object]:
    return json.loads(to_json(_every_job()[3]))


def test_every_phase_round_trips_through_job_json() -> None:
    jobs = _every_job()
    assert sorted(j.PHASE for j in jobs) == sorted(JOBS)
    for job in jobs:
        text = to_json(job)
        assert json.loads(text)["phase"] == job.PHASE
        assert from_json(text) == job
    eager = jobs[3]
    assert isinstance(eager, EagerJob)
    assert eager.probe == Probe(count=16, seed=7, amplitude=2)
    assert eager.normalize == Normalize(mean=(0.1307,), std=(0.3081,))
    assert eager.input_shape == tuple(load_task("mnist").input_shape)
    predict = jobs[4]
    assert isinstance(predict, PredictJob) and predict.probe is None


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"determinism_slice": 4}, "unknown key 'determinism_slice'"),
        ({"batch_size": None}, "key 'batch_size' must be int, not null"),
        ({"num_classes": True}, "key 'num_classes' must be int, not bool"),
        ({"input_shape": "1x28x28"}, "key 'input_shape' must be a list, not str"),
        ({"probe": {"count": 1, "seed": 2}}, "key 'probe': missing key 'amplitude'"),
        ({"phase": "train"}, "unknown phase 'train'; the phases are convert, eager,"),
    ],
)
def test_a_job_that_breaks_the_contract_is_refused_naming_the_key(
    change: dict[str, object], sentence: str
) -> None:
    with pytest.raises(JobError, match="^job.json") as info:
        from_json(json.dumps({**_eager(), **change}))
    assert sentence in str(info.value)


def test_a_missing_key_and_broken_json_are_refused() -> None:
    data = _eager()
    del data["weights"]
    with pytest.raises(JobError, match=r"job.json \(phase 'eager'\): missing key 'weights'"):
        from_json(json.dumps(data))
    with pytest.raises(JobError, match="not valid JSON"):
        from_json("{'phase': 'eager'")
    with pytest.raises(JobError, match="one JSON object, not list"):
        from_json("[]")


def test_the_host_refuses_to_write_a_job_that_breaks_the_contract(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    with pytest.raises(JobError, match="unknown key 'weight'"):
        ws.job("bad", {"phase": "convert", "weight": "model.pt"})
    assert not (tmp_path / "bad").exists()
    folder = ws.job("good", {"phase": "convert", "weights": "model.pt"})  # a mapping is checked
    assert from_json((folder / JOB_FILE).read_text()) == convert_job_spec("model.pt")
    assert (folder / JOB_FILE).stat().st_mode & 0o777 == 0o444


def _runner(tmp_path: Path, job_text: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The real runner, as a sandbox starts it, on a ``.pt`` weights file."""
    sub, inputs, job, out = (tmp_path / n for n in ("sub", "inputs", "job", "out"))
    for folder in (sub, inputs, job, out):
        folder.mkdir()
    torch.save({"fc.weight": torch.ones(2, 3)}, sub / "model.pt")
    (job / JOB_FILE).write_text(job_text)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--job", job, "--submission", sub, "--inputs", inputs, "--output", out]
    run = subprocess.run(
        [sys.executable, "-m", "harness.runner", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return run, out


def test_the_runner_reads_a_typed_job(tmp_path: Path) -> None:
    run, out = _runner(tmp_path, to_json(convert_job_spec("model.pt")))
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["phase"] == "convert" and report["ok"] is True
    assert load_file(str(out / "weights.safetensors"))["fc.weight"].shape == (2, 3)


def test_the_runner_refuses_a_job_with_an_unknown_key_in_one_sentence(tmp_path: Path) -> None:
    text = json.dumps({"phase": "convert", "weights": "model.pt", "pickle": True})
    run, out = _runner(tmp_path, text)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "harness.runner: job.json (phase 'convert'): unknown key 'pickle'; the keys are weights"
    ]
    assert "Traceback" not in run.stderr
    assert not (out / "report.json").exists()  # no report: nothing ran
    assert not (out / "weights.safetensors").exists()
