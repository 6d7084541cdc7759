"""Real architectures graded end to end (``tests/model_zoo.py``): torchvision and timm
models built without pretrained weights, and the hand-written styles students hand in.

Each model gets random weights (a few training-mode batches set its normalization
statistics, then every parameter is perturbed), is saved as a real submission folder and
graded by ``grade()`` on small fixture data in the public CIFAR-10 / MNIST layouts. Each
must end ``graded`` with a verified count equal to ``sum(p.numel() for p in
model.parameters())`` and predictions equal to an eager ``model.eval()`` run on the same
hidden inputs.

Tolerance: a prediction is the argmax of the logits (the contract), compared exactly with
the eager argmax; an image whose two largest eager logits are within 1e-5 x max |logit| of
each other is not compared (the order of float additions, which a batch's size may change,
decides such a tie: random weights make many). At least half of each model's images must
be compared.

The count: ``sum(p.numel())`` exactly, for every model (index tables the code rebuilds
without its weights are structural, whatever their dtype; eval-mode caches of values
derived from the weights are computed from the parameters in the exported program).

The process backend grades the whole zoo; bwrap grades a subset that covers every kind of
node the suite exists for (in-place activations, RNNs, unfold, grid sampling, higher-order
wrappers, ``_assert_tensor_metadata``, MNASNet's versioned loading, a > 50 MiB folder):
every bwrap run starts a fresh Python and the suite must fit CI's time.
``HARNESS_ZOO_FULL=1`` grades the whole zoo on bwrap too.
"""

from __future__ import annotations

import base64
import os
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from model_zoo import Entry, entries

from harness.api import GradeOptions, grade
from harness.fixtures import write_cifar10, write_mnist
from harness.results import ResultDocument
from harness.settings import settings

pytestmark = pytest.mark.slow

TEST_IMAGES = 6  # the hidden split; batch size 4, so the last batch is padded
TASK = """
id = "{id}"
title = "real-model conformance ({id})"
kind = "classification"
input_shape = {shape}
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
batch_size = 4
parameter_limit = {limit}

[dataset]
provider = "{provider}"
[dataset.options]
validation_size = 4

[metrics]
primary = "accuracy"
report = ["accuracy", "macro_f1"]
bootstrap_samples = 100

[limits]
time_seconds = 300
memory_mb = 4096
cpus = 1

[grading]
full_marks_at = 0.9
zero_marks_at = 0.1

[integrity]
probe_count = 0
allow_eager_fallback = {fallback}
"""
SHAPES = {"cifar": (3, 32, 32), "mnist": (1, 28, 28)}
# 20 M parameters: 4 bytes each plus a margin raises the folder cap to 88 MiB
LIMITS = {"cifar": 20_000_000, "mnist": 2_000_000}
BWRAP_SUBSET = {
    "tv_mobilenet_v2",
    "tv_mnasnet0_5",
    "tv_mnasnet0_5_pt",
    "timm_efficientvit_b0",
    "timm_edgenext_xx_small",
    "timm_levit_128s",
    "timm_dla_simple",
    "timm_mobilevit_xxs",
    *(e.name for e in entries() if e.family == "student"),
}


@dataclass
class Built:
    entry: Entry
    folder: Path
    params: int
    predictions: np.ndarray  # eager argmax per hidden image
    compared: np.ndarray  # bool: images whose eager top two logits are not a near tie


@dataclass
class Bench:
    root: Path
    tasks: Path
    data: Path
    hidden: dict[str, np.ndarray]  # shape -> hidden images, uint8 N x C x H x W


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """The zoo's tasks and data, once per module (on each xdist worker that runs a class)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # building the zoo: one thread (the machine is shared)
    root = tmp_path_factory.mktemp("zoo")
    tasks = root / "tasks"
    data = root / "data"
    for shape, provider in (("cifar", "cifar10"), ("mnist", "mnist")):
        for fallback in (False, True):
            task_id = f"zoo-{shape}" + ("-eager" if fallback else "")
            (tasks / task_id).mkdir(parents=True)
            (tasks / task_id / "task.toml").write_text(
                TASK.format(
                    id=task_id,
                    shape=list(SHAPES[shape]),
                    limit=LIMITS[shape],
                    provider=provider,
                    fallback=str(fallback).lower(),
                )
            )
    hidden = {
        "cifar": write_cifar10(data, train=12, test=TEST_IMAGES, seed=5).test_images,
        "mnist": write_mnist(data, train=12, test=TEST_IMAGES, seed=6).test_images,
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("HARNESS_TASKS", str(tasks))
        monkeypatch.setenv("HARNESS_CACHE", str(root / "cache"))
        monkeypatch.setenv("HARNESS_SECRET_SEED", "1234")
        settings.cache_clear()
        yield Bench(root, tasks, data, hidden)
    settings.cache_clear()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(bench: Bench) -> dict[str, Built]:
    """Each zoo model's folder and eager predictions, built once for every test that
    grades it (filled on first use: a worker that runs only the bwrap class builds only
    its subset)."""
    return {}


def built_zoo(bench: Bench, cache: dict[str, Built], chosen: list[Entry]) -> list[Built]:
    for entry in chosen:
        if entry.name not in cache:
            cache[entry.name] = build(bench, entry)
    return [cache[e.name] for e in chosen]


@pytest.fixture(scope="module")
def zoo_docs(bench: Bench, built: dict[str, Built]) -> dict[str, ResultDocument]:
    """The whole zoo graded once on the process backend, for every test that asserts on
    one of its models."""
    return grade_all(bench, built_zoo(bench, built, zoo()), "process")


def _random_model(entry: Entry, seed: int) -> torch.nn.Module:
    """The model with random weights: training-mode batches set its normalization
    statistics (and build lazy modules), then every parameter moves by 10 % of its spread."""
    namespace: dict[str, object] = {}
    exec(compile(entry.source, f"<{entry.name}>", "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace["build_model"]()  # type: ignore[operator]
    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.rand(8, *SHAPES[entry.shape]))
        for p in model.parameters():
            spread = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn_like(p) * 0.1 * (spread if spread > 0 else 0.02))
    return model.eval()


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with tied tensors stored once (safetensors refuses shared storage)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().clone().contiguous()
    return state


def build(bench: Bench, entry: Entry, *, fallback: bool = False, seed: int = 0) -> Built:
    """A submission folder for ``entry`` and the eager predictions on the hidden split."""
    from safetensors.torch import save_file

    model = _random_model(entry, seed)
    folder = bench.root / "submissions" / entry.name.replace("_", "-")
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(entry.source)
    weights = "weights.pt" if entry.name.endswith("_pt") else "weights.safetensors"
    if weights.endswith(".pt"):
        torch.save(model.state_dict(), folder / weights)  # keeps `_metadata` (versions)
    else:
        save_file(_unique_state(model), str(folder / weights))
    task = f"zoo-{entry.shape}" + ("-eager" if fallback else "")
    (folder / "submission.toml").write_text(
        f'task = "{task}"\nteam = "{folder.name}"\n\n[model]\n'
        f'entrypoint = "model:build_model"\nweights = "{weights}"\n'
    )
    x = torch.from_numpy(bench.hidden[entry.shape]).float().div(255)
    with torch.inference_mode():
        logits = model(x).float()
    assert bool(torch.isfinite(logits).all()), f"{entry.name}: eager logits are not finite"
    top2 = logits.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]) > 1e-5 * logits.abs().max()
    return Built(
        entry,
        folder,
        sum(p.numel() for p in model.parameters()),
        logits.argmax(1).numpy(),
        margin.numpy(),
    )


def graded_predictions(doc: ResultDocument) -> np.ndarray:
    """The hidden-set predictions a grading recorded (class indices)."""
    text = doc.details["integrity"]["predictions"]
    return np.frombuffer(base64.b64decode(text), dtype=np.uint16).astype(np.int64)


def problems_of(built: Built, doc: ResultDocument) -> list[str]:
    """What is wrong with one model's grading (empty: graded, verified, equal to eager)."""
    name = built.entry.name
    if doc.status != "graded":
        return [f"{name}: {doc.status} at {doc.stage}: {doc.message}"]
    found = []
    if not doc.params.verified:
        found.append(f"{name}: count not verified")
    parameters = sum(row.numel for row in doc.params.per_layer if row.kind == "parameter")
    if parameters != built.params:  # the program's parameters are always exactly the model's
        found.append(f"{name}: parameters in the program {parameters:,}, model {built.params:,}")
    if doc.params.counted != built.params:
        found.append(f"{name}: counted {doc.params.counted:,}, parameters {built.params:,}")
    got = graded_predictions(doc)
    same = got[built.compared] == built.predictions[built.compared]
    if not same.all() or built.compared.sum() < len(same) // 2:
        found.append(f"{name}: predictions {got.tolist()} != eager {built.predictions.tolist()}")
    return found


def grade_all(bench: Bench, built: list[Built], backend: str) -> dict[str, ResultDocument]:
    options = GradeOptions(
        sandbox=backend,
        results_dir=Path(tempfile.mkdtemp(prefix=f"results-{backend}-", dir=bench.root)),
        reports=False,
        data_root=bench.data,
    )
    docs = grade([b.folder for b in built], options=options)
    return {d.team: d for d in docs}


def zoo() -> list[Entry]:
    out = entries()
    mnasnet = next(e for e in out if e.name == "tv_mnasnet0_5")
    return [*out, Entry("tv_mnasnet0_5_pt", mnasnet.source, "cifar", "torchvision")]


class TestProcessZoo:
    """The whole zoo graded once on the process backend; each test asserts on it."""

    def test_real_models_are_graded_verified_and_equal_to_eager(
        self, bench: Bench, built: dict[str, Built], zoo_docs: dict[str, ResultDocument]
    ) -> None:
        all_built = built_zoo(bench, built, zoo())
        assert_zoo(all_built, zoo_docs, "process")
        assert sum(b.entry.family != "student" for b in all_built) >= 50

    @pytest.mark.parametrize(
        ("name", "target"),
        [
            ("student_float_cast", "aten._assert_tensor_metadata.default"),  # no outputs
            ("student_one_minus_sigmoid", "aten.rsub.Scalar"),
            ("student_lstm_rows", "aten.lstm.input"),
            ("student_relu6_inplace", "aten.hardtanh_.default"),
            ("student_autocast_block", "wrap_with_autocast"),
        ],
    )
    def test_the_operators_real_models_need_are_graded(
        self,
        bench: Bench,
        built: dict[str, Built],
        zoo_docs: dict[str, ResultDocument],
        name: str,
        target: str,
    ) -> None:
        """x.float(), 1 - x, nn.LSTM, ReLU6(inplace=True), a torch.autocast block."""
        [one] = built_zoo(bench, built, [e for e in zoo() if e.name == name])
        assert any(target in t for t in exported_targets(one.entry))
        assert problems_of(one, zoo_docs[one.folder.name]) == []

    @pytest.mark.parametrize("name", ["tv_mnasnet0_5", "tv_mnasnet0_5_pt"])
    def test_mnasnet_loads_from_both_weight_formats(
        self,
        bench: Bench,
        built: dict[str, Built],
        zoo_docs: dict[str, ResultDocument],
        name: str,
    ) -> None:
        [one] = built_zoo(bench, built, [e for e in zoo() if e.name == name])
        weights = "weights.pt" if name.endswith("_pt") else "weights.safetensors"
        assert (one.folder / weights).is_file()
        assert problems_of(one, zoo_docs[one.folder.name]) == []


@pytest.mark.bwrap
class TestBwrapZoo:
    """A subset on bwrap (every run a fresh Python): its own xdist scope, so it runs on
    the other worker while the process zoo grades."""

    def test_real_models_are_graded_verified_and_equal_to_eager(
        self, bench: Bench, built: dict[str, Built]
    ) -> None:
        chosen = zoo()
        if os.environ.get("HARNESS_ZOO_FULL") != "1":
            chosen = [e for e in chosen if e.name in BWRAP_SUBSET]
        subset = built_zoo(bench, built, chosen)
        assert_zoo(subset, grade_all(bench, subset, "bwrap"), "bwrap")


def assert_zoo(chosen: list[Built], docs: dict[str, ResultDocument], backend: str) -> None:
    problems = [p for b in chosen for p in problems_of(b, docs[b.folder.name])]
    graded = sum(docs[b.folder.name].status == "graded" for b in chosen)
    report = "\n".join(problems)
    assert not problems, f"{graded}/{len(chosen)} graded on {backend}:\n{report}"
    assert len({b.entry.family for b in chosen}) == 3


def _one(
    bench: Bench, name: str, source: str | None = None, *, fallback: bool = False
) -> tuple[Built, ResultDocument]:
    base = next(e for e in zoo() if e.name == name)
    text = textwrap.dedent(source) if source else base.source
    entry = Entry(name if source is None else f"{name}_variant", text, base.shape, "student")
    built = build(bench, entry, fallback=fallback)
    doc = grade_all(bench, [built], "process")[built.folder.name]
    return built, doc


def exported_targets(entry: Entry) -> set[str]:
    """The operators torch.export writes for ``entry`` (to show what a test exercises)."""
    model = _random_model(entry, 0)
    with torch.no_grad():
        program = torch.export.export(model, (torch.rand(2, *SHAPES[entry.shape]),))
    return {str(node.target) for node in program.graph.nodes if node.op == "call_function"}


def test_an_inplace_write_into_a_weight_is_still_refused(bench: Bench) -> None:
    writes = """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3 * 32 * 32, 10)

            def forward(self, x):
                torch.nn.functional.relu6(self.fc.weight, inplace=True)  # into a parameter
                return self.fc(x.flatten(1))


        def build_model():
            return Net()
    """
    _, bad = _one(bench, "student_relu6_inplace", writes)
    assert bad.status == "failed" and bad.stage == "check", bad.message
    assert "changes its stored tensors" in bad.message and "relu6_" in bad.message


REFUSED_BY_CHECK = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3))).cumprod(1)  # cumprod is not on the allow-list
"""
FAILS_IN_PHASE_B = """
import torch
from torch import nn


class Net(nn.Module):
    \"\"\"Indexes out of range on an all-zero image: only phase B's padded batches hold one.\"\"\"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.table = nn.Parameter(torch.zeros(1, 10))

    def forward(self, x):
        blank = (x.flatten(1).abs().amax(1) == 0).long() * 7
        return self.fc(x.mean((2, 3))) + self.table.index_select(0, blank)
"""


def test_the_eager_fallback_covers_check_and_phase_b_marked_unverified(bench: Bench) -> None:
    """Refused by the host check, or failing in phase B: ``failed`` naming the stage (phase
    B's error is never blamed on the submission); where the task allows the eager
    fallback, ``graded`` with an unverified count and predictions equal to eager."""
    built = {}
    for name, source in (("check", REFUSED_BY_CHECK), ("phase_b", FAILS_IN_PHASE_B)):
        for fallback in (False, True):
            entry = Entry(f"{name}_{fallback}", source + MAKE, "cifar", "student")
            built[(name, fallback)] = build(bench, entry, fallback=fallback)
    docs = grade_all(bench, list(built.values()), "process")
    doc = {key: docs[b.folder.name] for key, b in built.items()}

    assert doc["check", False].status == "failed" and doc["check", False].stage == "check"
    assert "aten.cumprod.default is not on the allow-list" in doc["check", False].message
    refused = doc["phase_b", False]
    assert refused.status == "failed" and refused.stage == "predict", refused.message
    assert "phase B" in refused.message and "raised by the submission" not in refused.message

    for key, why in ((("check", True), "check refused"), (("phase_b", True), "could not be run")):
        graded = doc[key]
        assert graded.status == "graded", graded.message
        assert graded.params.verified is False
        assert graded.params.counted == built[key].params
        codes = {f.code: f.message for f in graded.flags}
        assert why in codes["unverified_count"]
        assert f"{'check' if key[0] == 'check' else 'predict'}_failed" in codes
        got = graded_predictions(graded)
        assert (got == built[key].predictions)[built[key].compared].all()


MAKE = "\n\ndef build_model():\n    return Net()\n"
