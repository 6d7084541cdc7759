"""One torch everywhere: the host's pin, the offline image and the Dockerfile install the
release named in ``harness/runner/contract.py``, and a program written by another torch
is refused as the grader's configuration error, never blamed on the submission."""

from __future__ import annotations

import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import pytest
from kit import make_submission

import harness
from harness.options import GradeOptions
from harness.pipeline import grade_submission
from harness.runner.contract import TORCH, TORCHVISION, ModelIO, torch_mismatch
from harness.sandbox.docker.image import DOCKERFILE_DIR, OFFLINE_REQUIREMENTS, default_tag

ROOT = Path(harness.__file__).resolve().parent.parent


def test_the_host_pin_is_the_contracts() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={TORCH}" in deps
    assert f"torchvision=={TORCHVISION}" in deps
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == TORCH
    assert torchvision.__version__.split("+")[0] == TORCHVISION


def test_both_image_builds_install_the_contracts_torch() -> None:
    assert f"torch=={TORCH}" in OFFLINE_REQUIREMENTS
    assert f"torchvision=={TORCHVISION}" in OFFLINE_REQUIREMENTS
    dockerfile = (DOCKERFILE_DIR / "Dockerfile").read_text()
    assert re.search(rf"^ARG TORCH={re.escape(TORCH)}$", dockerfile, re.M)
    assert re.search(rf"^ARG TORCHVISION={re.escape(TORCHVISION)}$", dockerfile, re.M)
    assert TORCH in default_tag()


def test_another_torch_release_is_named_with_the_fix() -> None:
    assert torch_mismatch(f"{TORCH}+cu128") is None
    assert torch_mismatch(TORCH) is None
    message = torch_mismatch("2.13.0+cpu")
    assert message is not None
    assert "2.13.0+cpu" in message and TORCH in message and "grade image build" in message
    assert torch_mismatch(None) is not None


def test_the_release_that_counts_is_the_one_reading_the_program() -> None:
    # a GPU machine whose host and runner share another build reads its own programs
    assert torch_mismatch("2.11.0+cu130", reader="2.11.0+cu130") is None
    # the docker image installs the pin, so a host off the pin is what must change
    message = torch_mismatch(TORCH, reader="2.11.0+cu130")
    assert message is not None
    assert f"this host runs torch 2.11.0, not the harness's pin {TORCH}" in message
    assert f"install torch=={TORCH} on the host" in message and "grade image build" not in message


@pytest.mark.docker
def test_the_evaluation_image_runs_the_contracts_torch() -> None:
    import docker

    script = "import torch, torchvision; print(torch.__version__, torchvision.__version__)"
    out = docker.from_env().containers.run(default_tag(), ["python3", "-c", script], remove=True)
    torch_version, vision_version = out.decode().split()
    assert torch_version.split("+")[0] == TORCH
    assert vision_version.split("+")[0] == TORCHVISION


@pytest.mark.docker
def test_a_program_written_by_another_torch_is_refused(env: Path, tmp_path: Path) -> None:
    """An image whose torch says it is another release: the export is refused as the
    grader's setup (stage ``harness``, so it is graded again once the image is fixed)."""
    import docker

    from harness.sandbox.docker.backend import DockerBackend

    client = docker.from_env()
    tag = f"harness-eval:test-other-torch-{secrets.token_hex(3)}"
    context = tmp_path / "ctx"
    context.mkdir()
    version_py = "/usr/local/lib/python3.11/dist-packages/torch/version.py"
    (context / "Dockerfile").write_text(
        f"FROM {default_tag()}\nUSER root\n"
        f"RUN sed -i \"s/^__version__ = .*/__version__ = '2.13.0+cpu'/\" {version_py}\n"
        "USER 1000:1000\n"
    )
    client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    try:
        folder = make_submission(tmp_path / "subs", "team-a")
        options = GradeOptions(results_dir=tmp_path / "results", reports=False)
        doc = grade_submission(folder, options=options, backend=DockerBackend(image=tag))
    finally:
        client.images.remove(tag, force=True)
    assert (doc.status, doc.stage) == ("failed", "harness")
    assert "torch 2.13.0+cpu" in doc.message and f"torch {TORCH}" in doc.message


@pytest.mark.parametrize("name", ["tv_mobilenet_v3_small", "timm_levit_128s", "student_lstm_rows"])
def test_phase_a_saves_the_archive_torch_saves_without_its_canonical_form_test(
    name: str,
) -> None:
    """Phase A skips torch's test of the serialized program's canonical form (a sixth of a
    run's time on timm models): on this torch the archive must be the same, byte for byte,
    as ``torch.export.save`` writes with the test, and the test must not run."""
    import io

    import torch
    from torch._export.serde import serialize

    from harness.runner import phase_a

    model, shape = _zoo_model(name)
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(4, *shape),), strict=False)
    tested, test = [], serialize.canonicalize

    def counted(*args: object, **kwargs: object) -> object:
        tested.append(1)
        return test(*args, **kwargs)

    serialize.canonicalize = counted
    try:
        plain, skipped = io.BytesIO(), io.BytesIO()
        torch.export.save(program, plain)
        with phase_a._no_canonical_form_test():
            torch.export.save(program, skipped)
        assert serialize.canonicalize is counted  # put back
    finally:
        serialize.canonicalize = test
    assert tested == [1]  # once, for the plain save
    assert plain.getvalue() == skipped.getvalue()


def test_phase_a_saves_no_example_batch() -> None:
    """The export's example batch (250 noise images of 150 x 150 here: 22.5 MB, pickled)
    stays out of the archive, which the host checks and phase B reads; the graph is the
    same as with it."""
    import io
    import zipfile

    import torch

    from harness.runner import phase_a

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(1)).eval()
    x = torch.rand(250, 1, 150, 150)
    saved = io.BytesIO()
    phase_a.save(model, x, saved)
    with zipfile.ZipFile(saved) as zf:
        sizes = {i.filename.split("/", 1)[1]: i.file_size for i in zf.infolist()}
        graph = zf.read(next(n for n in zf.namelist() if n.endswith("models/model.json")))
    assert sizes["data/sample_inputs/model.pt"] < 4096
    assert sum(sizes.values()) < 2**20
    with torch.no_grad():
        program = torch.export.export(model, (x,), strict=False)
    plain = io.BytesIO()
    torch.export.save(program, plain)
    with zipfile.ZipFile(plain) as zf:
        assert (
            zf.getinfo(f"{zf.namelist()[0].split('/')[0]}/data/sample_inputs/model.pt").file_size
            > x.numel() * 4
        )
        assert zf.read(next(n for n in zf.namelist() if n.endswith("models/model.json"))) == graph


@pytest.mark.parametrize("name", ["tv_mobilenet_v3_small", "timm_levit_128s", "student_lstm_rows"])
def test_the_export_reads_only_its_examples_shape(name: str) -> None:
    """Phase A exports on ``phase_a.placeholder`` (values left unset) rather than seeded
    noise: ``torch.export`` traces on a fake tensor, so the archive must be the same,
    byte for byte, as from a noise batch and from a batch of zeros."""
    import io

    import torch

    from harness.runner import phase_a

    model, shape = _zoo_model(name)
    job = _io(shape)
    archives = []
    for x in (phase_a.placeholder(job, 4), torch.rand(4, *shape), torch.zeros(4, *shape)):
        saved = io.BytesIO()
        phase_a.save(model, x, saved)
        archives.append(saved.getvalue())
    assert archives[0] == archives[1] == archives[2]


def test_a_model_that_reads_its_inputs_values_fails_the_export_on_any_example() -> None:
    """A forward that branches on its input's values cannot be exported from a fake
    tensor, whatever the example holds: the placeholder changes no model's outcome."""
    import io

    import torch

    from harness.runner import phase_a

    class Branches(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((1, 2, 3)) if bool(x.mean() > 0.5) else -x.mean((1, 2, 3))

    job = _io((1, 8, 8))
    errors = []
    for x in (phase_a.placeholder(job, 4), torch.rand(4, 1, 8, 8)):
        with pytest.raises(phase_a.ExportError) as caught:
            phase_a.save(Branches().eval(), x, io.BytesIO())
        errors.append(str(caught.value).split(":")[0])
    assert errors[0] == errors[1]


def _zoo_model(name: str) -> tuple[Any, tuple[int, ...]]:
    """The model zoo's ``name``, built with seed 0 in eval mode, and its input shape."""
    import torch
    from model_zoo import entries

    entry = next(e for e in entries() if e.name == name)
    namespace: dict[str, object] = {}
    exec(compile(entry.source, f"<{name}>", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["build_model"]().eval()  # type: ignore[operator]
    return model, (3, 32, 32) if entry.shape == "cifar" else (1, 28, 28)


def _io(shape: tuple[int, ...]) -> ModelIO:
    return ModelIO(
        kind="regression", num_classes=0, input_shape=shape, normalize=None, device="cpu", threads=1
    )
